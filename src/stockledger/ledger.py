"""Trading and reading the books: thin calls into SQL, one statement each.

Helpers take a connection and never commit: the caller (a request, a CLI command) owns the
transaction. With the pool's autocommit connections each call here is its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from stockledger.db import plain_row
from stockledger.errors import not_found
from stockledger.models import PRICE_STEP, TradeRequest
from stockledger.queries import query


@dataclass(frozen=True)
class Trade:
    trade_id: int
    account_id: int
    broker_id: int
    symbol: str
    side: str
    quantity: int
    price: Decimal
    executed_at: datetime
    seq: int
    client_order_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "account_id": self.account_id,
            "broker_id": self.broker_id,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            # Decimals leave as strings with 4 places ("187.2500"), never as floats.
            "price": str(self.price.quantize(PRICE_STEP)),
            "executed_at": self.executed_at.isoformat(),
            "seq": self.seq,
            "client_order_id": self.client_order_id,
        }


@dataclass(frozen=True)
class TradeResult:
    trade: Trade
    position_quantity: int

    def to_json(self) -> dict[str, Any]:
        return {
            "trade": self.trade.to_json(),
            "position": {"symbol": self.trade.symbol, "quantity": self.position_quantity},
        }


def execute_trade(conn: psycopg.Connection[Any], request: TradeRequest) -> TradeResult:
    if request.broker_id is None:
        raise ValueError("a trade needs its broker")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("trade"), request.model_dump()).fetchone()
    assert row is not None, "trade() returns exactly one row or raises"
    position = row.pop("position_quantity")
    return TradeResult(Trade(**row), position)


def owner(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    """broker_id: the caller's, to see only its own accounts; None for the operator."""
    with conn.cursor(row_factory=dict_row) as cur:
        params = {"account_id": account_id, "broker_id": broker_id}
        row = cur.execute(query("account_owner"), params).fetchone()
    if row is None:
        raise not_found("account")
    return {
        "account_id": row["account_id"],
        "owner": {"client_id": row["client_id"], "name": row["name"], "email": row["email"]},
    }


def holdings(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    params = {"account_id": account_id, "broker_id": broker_id}
    rows = conn.execute(query("account_holdings"), params).fetchall()
    if not rows:
        raise not_found("account")
    return {
        "account_id": account_id,
        "holdings": [
            {"symbol": symbol, "quantity": quantity}
            for _, symbol, quantity in rows
            if symbol is not None
        ],
    }


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
)


def verify(conn: psycopg.Connection[Any]) -> list[InvariantCheck]:
    """Check every ledger invariant in one snapshot, so the checks agree with each other."""
    results = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name in INVARIANTS:
            rows = cur.execute(query(f"verify_{name}")).fetchall()
            results.append(InvariantCheck(name, [plain_row(r) for r in rows]))
    return results
