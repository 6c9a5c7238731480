"""Path, query and header parameters of the HTTP routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, WithJsonSchema

from stockledger.fields import IDEMPOTENCY_KEY_PATTERN, Id, QueryId, RequestPartModel, Symbol


class AccountQuery(RequestPartModel):
    """Query string of the seed's GET endpoints: exactly one account_id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: QueryId


class AccountPath(BaseModel):
    account_id: Id


class AccountHolderPath(BaseModel):
    account_id: Id
    client_id: Id


class StockPath(BaseModel):
    symbol: Symbol


class TradePath(BaseModel):
    trade_id: Id


class BrokerPath(BaseModel):
    broker_id: Id


class BrokerKeyPath(BaseModel):
    broker_id: Id
    key_id: Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{16}$")]


class IdempotencyHeader(RequestPartModel):
    # Every request header reaches this model; only this one is read.
    model_config = ConfigDict(extra="ignore", frozen=True)

    idempotency_key: Annotated[
        str | None,
        Field(pattern=IDEMPOTENCY_KEY_PATTERN),
        # Documented as the optional string it is (not "string or null").
        WithJsonSchema({"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}),
    ] = Field(
        None,
        alias="Idempotency-Key",
        description="retry with the same key and body to get the first answer back",
    )
