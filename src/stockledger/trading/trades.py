"""Trades: one, one under an idempotency key, a batch, and one looked up; one statement each.

Helpers take a connection and never commit: the caller (a request, a CLI command) owns the
transaction. With the pool's autocommit connections each call here is its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from stockledger.db.boundary import fetch_all, fetch_existing, fetch_one
from stockledger.db.queries import query
from stockledger.fields import PRICE_STEP
from stockledger.registry.keys import PresentedKey
from stockledger.trading.idempotency import request_fingerprint
from stockledger.trading.requests import TradeRequest


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
    row = fetch_one(conn, query(name), params)
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
    rows = fetch_all(conn, query("trade_batch"), {"broker_id": broker_id, **columns})
    for row in rows:
        del row["batch_id"]
    return sorted((Trade(**row) for row in rows), key=lambda t: t.trade_id)


def trade(conn: psycopg.Connection[Any], trade_id: int, broker_id: int | None) -> Trade:
    params = {"trade_id": trade_id, "broker_id": broker_id}
    return Trade(**fetch_existing(conn, query("trade_by_id"), params, "trade"))
