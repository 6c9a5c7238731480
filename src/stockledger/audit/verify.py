"""`stockledger verify`: every ledger invariant, in one snapshot, each a named query
(sql/queries/audit.sql) returning its violations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from stockledger.db.boundary import execute, fetch_all, transaction
from stockledger.db.pool import plain_row
from stockledger.db.queries import query


@dataclass(frozen=True)
class InvariantCheck:
    name: str
    violations: list[dict[str, Any]]

    @property
    def holds(self) -> bool:
        return not self.violations


INVARIANTS = (
    "positions_match_holds",
    "no_negative_position",
    "no_oversell_in_history",
    "seq_gapless",
    "executed_at_ordered",
    "no_broker_owned_account",
    "trades_by_broker_of_record",
    "every_account_has_a_holder",
    "no_supervision_cycle",
    "cash_matches_movements_and_trades",
    "cash_within_limit",
    "latest_trade_on_account",
    "lots_match_positions",
    "lots_match_buys",
    "closures_match_lots",
    "closures_match_sells",
)


def verify(conn: psycopg.Connection[Any]) -> list[InvariantCheck]:
    """Check every ledger invariant in one snapshot, so the checks agree with each other."""
    results = []
    with transaction(conn):
        execute(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name in INVARIANTS:
            rows = fetch_all(conn, query(f"verify_{name}"))
            results.append(InvariantCheck(name, [plain_row(r) for r in rows]))
    return results
