"""Trading and reading the books: thin calls into SQL, one statement each.

Helpers take a connection and never commit: the caller (a request, a CLI command) owns the
transaction. With the pool's autocommit connections each call here is its own transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from stockledger.auth import PresentedKey
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
    # True when an idempotency key replayed an earlier trade instead of executing a new one.
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "trade": self.trade.to_json(),
            "position": {"symbol": self.trade.symbol, "quantity": self.position_quantity},
        }


def request_fingerprint(request: TradeRequest) -> bytes:
    """What "the same request" means for an idempotency key: the same validated trade.

    Hashing the parsed request rather than the raw bytes makes "187.25" and 187.25, key order
    and whitespace, or one instant written with two offsets, the same request.
    """
    canonical = request.model_dump(mode="json")
    if request.executed_at is not None:
        canonical["executed_at"] = request.executed_at.astimezone(UTC).isoformat()
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


def execute_trade(
    conn: psycopg.Connection[Any], request: TradeRequest, idempotency_key: str | None = None
) -> TradeResult:
    if request.broker_id is None:
        raise ValueError("a trade needs its broker")
    name: LiteralString = "trade" if idempotency_key is None else "trade_idempotent"
    result = _run_trade(conn, name, _trade_params(request, idempotency_key))
    assert result is not None, "trade() returns exactly one row or raises"
    return result


def execute_trade_for_key(
    conn: psycopg.Connection[Any],
    request: TradeRequest,
    key: PresentedKey,
    idempotency_key: str | None = None,
) -> TradeResult | None:
    """The trade, with the caller's key checked first in the same statement. request names
    the broker the key belonged to; None (nothing written) if it no longer does."""
    if request.broker_id != key.broker_id:
        raise ValueError("a trade for a key names the key's broker")
    params = _trade_params(request, idempotency_key)
    params.update(key_id=key.key_id, secret_hash=key.secret_hash)
    name: LiteralString = "trade_for_key" if idempotency_key is None else "trade_idempotent_for_key"
    return _run_trade(conn, name, params)


def _trade_params(request: TradeRequest, idempotency_key: str | None) -> dict[str, Any]:
    params = request.model_dump()
    if idempotency_key is not None:
        params.update(idempotency_key=idempotency_key, request_hash=request_fingerprint(request))
    return params


def _run_trade(
    conn: psycopg.Connection[Any], name: LiteralString, params: dict[str, Any]
) -> TradeResult | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query(name), params).fetchone()
    if row is None:
        return None
    position = row.pop("position_quantity")
    replayed = row.pop("replayed", False)
    return TradeResult(Trade(**row), position, replayed)


def execute_batch(
    conn: psycopg.Connection[Any], broker_id: int, trades: list[TradeRequest]
) -> list[Trade]:
    """All or nothing, in order: one round trip to trade_batch(), checked set-wise."""
    columns: dict[str, list[Any]] = {
        "account_ids": [t.account_id for t in trades],
        "symbols": [t.symbol for t in trades],
        "sides": [t.side for t in trades],
        "quantities": [t.quantity for t in trades],
        "prices": [t.price for t in trades],
        "executed_ats": [t.executed_at for t in trades],
        "client_order_ids": [t.client_order_id for t in trades],
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query("trade_batch"), {"broker_id": broker_id, **columns}).fetchall()
    for row in rows:
        del row["batch_id"]
    return sorted((Trade(**row) for row in rows), key=lambda t: t.trade_id)


def trade(conn: psycopg.Connection[Any], trade_id: int, broker_id: int | None) -> Trade:
    with conn.cursor(row_factory=dict_row) as cur:
        params = {"trade_id": trade_id, "broker_id": broker_id}
        row = cur.execute(query("trade_by_id"), params).fetchone()
    if row is None:
        raise not_found("trade")
    return Trade(**row)


def account(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        params = {"account_id": account_id, "broker_id": broker_id}
        row = cur.execute(query("account"), params).fetchone()
    if row is None:
        raise not_found("account")
    return plain_row(row)


def trades_after(
    conn: psycopg.Connection[Any],
    account_id: int,
    after_seq: int,
    filters: dict[str, Any],
    limit: int,
) -> list[Trade]:
    """Up to ``limit`` trades of one account after ``after_seq``, oldest first."""
    params = {**filters, "account_id": account_id, "after_seq": after_seq, "limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query("account_trades_page"), params).fetchall()
    return [Trade(**row) for row in rows]


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
