"""Trades: one, one under an idempotency key, a batch, and one looked up; one statement each.

Helpers take a connection and never commit: the caller (a request, a CLI command) owns the
transaction. With the pool's autocommit connections each call here is its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, LiteralString

import psycopg
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from stockledger import json_text
from stockledger.db.boundary import fetch_all, fetch_one, fetch_value
from stockledger.db.queries import query
from stockledger.errors import not_found
from stockledger.json_text import money_text, quantity_json
from stockledger.registry.accounts import account_rows
from stockledger.registry.keys import PresentedKey
from stockledger.trading.idempotency import request_fingerprint
from stockledger.trading.requests import TradeRequest


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat()  # the session speaks UTC: "+00:00"


PriceText = Annotated[
    Decimal,
    # Decimals leave as strings with 4 places ("187.2500"), never as floats.
    PlainSerializer(lambda price: money_text(price, 4), return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+\.[0-9]{4}$", "examples": ["187.2500"]}),
]
CentsText = Annotated[
    Decimal,
    # Money leaves as text with 2 places ("-1872.50").
    PlainSerializer(lambda amount: money_text(amount, 2), return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "examples": ["-1872.50"]}
    ),
]
# A JSON number with its exact digits (stockledger.json_text): 10, or 2.5.
Shares = Annotated[
    Decimal,
    PlainSerializer(quantity_json),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "examples": [10, 2.5]}),
]
Timestamp = Annotated[
    datetime,
    PlainSerializer(_rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "description": "RFC 3339 with a UTC offset"}),
]


class Trade(BaseModel):
    """A row of the view trade_rows (sql/schema.sql), the one declaration of a trade's columns,
    and the API's answer for it: its JSON form is what the routes send, and the same model is
    the OpenAPI schema. tests/sql/test_trade_row.py checks the fields against the view."""

    model_config = ConfigDict(frozen=True)

    trade_id: int
    account_id: int
    broker_id: int
    symbol: str
    side: Literal["buy", "sell"]
    quantity: Shares
    price: PriceText
    executed_at: Timestamp
    seq: int = Field(description="the account's gapless sequence number, from 1")
    client_order_id: str | None
    fee: CentsText
    amount: CentsText = Field(
        description="the trade's signed cash effect, assigned by the database: a buy pays "
        "round(quantity * price, 2) + fee, a sell receives round(quantity * price, 2) - fee"
    )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Trade:
        # The database's own values, typed by psycopg: nothing to validate.
        return cls.model_construct(**row)

    def to_json(self) -> dict[str, Any]:
        # Python mode: every field's serializer makes it JSON-ready, and the quantity stays a
        # number (JSON mode would write a Decimal as a string).
        return self.model_dump(mode="python")


class Closure(BaseModel):
    """Part of a lot that a sell closed (SPEC §1.5)."""

    model_config = ConfigDict(frozen=True)

    lot_id: int = Field(description="the seq of the buy that opened the lot")
    quantity: Shares
    cost_basis: CentsText
    proceeds: CentsText
    realized: CentsText

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Closure:
        # trade() sends the decimals as text, so that no JSON parser makes floats of them.
        return cls.model_construct(
            lot_id=item["lot_id"],
            quantity=Decimal(item["quantity"]),
            cost_basis=Decimal(item["cost_basis"]),
            proceeds=Decimal(item["proceeds"]),
            realized=Decimal(item["realized"]),
        )


@dataclass(frozen=True)
class TradeResult:
    trade: Trade
    position_quantity: Decimal
    # A sell's lot closures, in lot order; None for a buy.
    closures: list[Closure] | None = None
    # True when an idempotency key replayed an earlier trade instead of executing a new one.
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "trade": self.trade.to_json(),
            "position": {
                "symbol": self.trade.symbol,
                "quantity": quantity_json(self.position_quantity),
            },
        }
        if self.closures is not None:
            answer["closures"] = [c.model_dump(mode="python") for c in self.closures]
        return answer


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
    params["fee"] = request.fee or Decimal(0)
    params["lots"] = None if request.lots is None else lots_json(request)
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
    closures = row.pop("closures")
    return TradeResult(
        Trade.from_row(row),
        position,
        None if closures is None else [Closure.from_json(item) for item in closures],
        replayed,
    )


def lots_json(request: TradeRequest) -> str:
    """A sell's named lots as trade() takes them: JSON, quantities as exact decimal text."""
    assert request.lots is not None
    picks = [{"lot_id": p.lot_id, "quantity": str(p.quantity)} for p in request.lots]
    return json_text.dumps(picks)


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
        "fees": [t.fee or Decimal(0) for t in trades],
    }
    rows = fetch_all(conn, query("trade_batch"), {"broker_id": broker_id, **columns})
    return sorted((Trade.from_row(row) for row in rows), key=lambda t: t.trade_id)


def trade(conn: psycopg.Connection[Any], trade_id: int, broker_id: int | None) -> Trade:
    """One trade, if the caller may read its account (its broker of record, a supervisor of
    that broker, the operator)."""
    params = {"trade_id": trade_id, "broker_id": broker_id}
    rows = account_rows(
        conn,
        "trade_by_id",
        params,
        account_of=lambda: fetch_value(conn, query("account_of_trade"), params),
    )
    if not rows:
        raise not_found("trade")
    return Trade.from_row(rows[0])
