"""Shapes of what the API answers, for its OpenAPI document.

A trade is stockledger.trading.trades.Trade, the row and its JSON in one model. The other views
build their JSON from database rows; these models describe that JSON so the published schema
can be checked against real answers (the fuzzing test does, for every response it sees).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stockledger.trading.trades import Closure, Shares, Trade

Timestamp = Field(description="RFC 3339 with a UTC offset")
# Money and prices are text with fixed places, never JSON numbers (SPEC §2).
PRICE_TEXT = r"^-?[0-9]+\.[0-9]{4}$"
CENTS_TEXT = r"^-?[0-9]+\.[0-9]{2}$"


class Problem(BaseModel):
    """An error (RFC 9457), always as application/problem+json, with a stable code."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = Field(default=None, description="field errors (422)")


class Position(BaseModel):
    symbol: str
    quantity: Shares


class TradeExecuted(BaseModel):
    trade: Trade
    position: Position = Field(description="the account's position right after the trade")
    closures: list[Closure] | None = Field(
        None, description="a sell's lot closures, in lot order (absent for a buy)"
    )


class TradeBatch(BaseModel):
    trades: list[Trade] = Field(description="in batch order")


class TradePage(BaseModel):
    trades: list[Trade] = Field(description="oldest first")
    next_cursor: str | None = Field(description="null on the last page")


class OwnerOf(BaseModel):
    client_id: int
    name: str
    email: str | None


class AccountOwner(BaseModel):
    account_id: int
    owner: OwnerOf = Field(description="the primary holder")
    owners: list[OwnerOf] = Field(description="every current holder, primary first")


class Holding(BaseModel):
    symbol: str
    quantity: Shares
    price: str | None = Field(
        None, description="the stock's latest reference price, where it has one", pattern=PRICE_TEXT
    )
    market_value: str | None = Field(
        None,
        description="round(quantity * price, 2), where the stock has a price",
        pattern=CENTS_TEXT,
    )


class AccountHoldings(BaseModel):
    account_id: int
    holdings: list[Holding] = Field(description="sorted by symbol, zero positions omitted")


class Account(BaseModel):
    account_id: int
    client_id: int = Field(description="the primary holder")
    holders: list[int] = Field(description="the current holders' client ids, primary first")
    broker_id: int
    status: Literal["open", "frozen", "closed"]
    opened_at: str = Timestamp
    cash: str = Field(description="the balance (§1.4)", pattern=CENTS_TEXT)
    credit_limit: str | None = Field(
        description="how far below zero the cash may go; null: no limit", pattern=CENTS_TEXT
    )
    lot_method: Literal["fifo", "lifo", "hifo"]


class Client(BaseModel):
    client_id: int
    name: str
    tax_id: str
    email: str | None
    address: str | None
    created_at: str = Timestamp


class Holder(BaseModel):
    account_id: int
    client_id: int
    position: int = Field(description="1 for the first holder, then in the order added")
    added_at: str = Timestamp
    removed_at: str | None = Field(description="RFC 3339; null while the client holds the account")


class Broker(BaseModel):
    broker_id: int
    name: str
    tax_id: str
    license_no: str
    status: Literal["active", "suspended"]
    manager_id: int | None = Field(description="the supervising broker, if any")
    created_at: str = Timestamp


class IssuedKey(BaseModel):
    key_id: str
    api_key: str = Field(description="shown this once; only its hash is stored")
    created_at: str = Timestamp


class BrokerWithKey(Broker):
    key_id: str
    api_key: str = Field(description="shown this once; only its hash is stored")


class RevokedKey(BaseModel):
    key_id: str
    broker_id: int
    created_at: str = Timestamp
    revoked_at: str = Timestamp


class Stock(BaseModel):
    symbol: str
    name: str
    active: bool
    fractionable: bool
    price: str | None = Field(description="the latest reference price, if any", pattern=PRICE_TEXT)
    price_as_of: str | None = Field(description="RFC 3339; when that price held")
    created_at: str = Timestamp


class StockPrice(BaseModel):
    symbol: str
    price: str = Field(pattern=PRICE_TEXT)
    as_of: str = Timestamp
    recorded_at: str = Timestamp


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    schema_version: int | None = None


class CashMovementMade(BaseModel):
    account_id: int
    movement_id: int = Field(description="the account's movements are numbered 1, 2, 3 …")
    kind: Literal["deposit", "withdrawal"]
    amount: str = Field(pattern=CENTS_TEXT)
    reference: str | None
    created_at: str = Timestamp
    balance: str = Field(description="the account's cash right after it", pattern=CENTS_TEXT)


class CashEntry(BaseModel):
    at: str = Timestamp
    entry: Literal["trade", "deposit", "withdrawal"]
    amount: str = Field(description="signed: what it did to the balance", pattern=CENTS_TEXT)
    seq: int | None = Field(None, description="a trade's")
    trade_id: int | None = None
    symbol: str | None = None
    side: Literal["buy", "sell"] | None = None
    movement_id: int | None = Field(None, description="a movement's")
    reference: str | None = None
    balance: str | None = Field(None, description="after a movement", pattern=CENTS_TEXT)


class CashPage(BaseModel):
    account_id: int
    cash: str = Field(description="the balance now", pattern=CENTS_TEXT)
    entries: list[CashEntry] = Field(description="oldest first")
    next_cursor: str | None = Field(description="null on the last page")


class PortfolioPosition(BaseModel):
    symbol: str
    quantity: Shares
    cost_basis: str = Field(description="the cost of its open lots", pattern=CENTS_TEXT)
    average_cost: str = Field(description="cost_basis / quantity", pattern=PRICE_TEXT)
    realized: str = Field(description="what its sells realized to date", pattern=CENTS_TEXT)
    price: str | None = Field(None, pattern=PRICE_TEXT)
    market_value: str | None = Field(None, pattern=CENTS_TEXT)
    unrealized: str | None = Field(
        None, description="market_value - cost_basis", pattern=CENTS_TEXT
    )


class PortfolioTotals(BaseModel):
    cost_basis: str = Field(pattern=CENTS_TEXT)
    market_value: str = Field(description="of the priced positions", pattern=CENTS_TEXT)
    unrealized: str = Field(description="of the priced positions", pattern=CENTS_TEXT)
    priced_positions: int
    positions: int


class Portfolio(BaseModel):
    account_id: int
    cash: str = Field(pattern=CENTS_TEXT)
    credit_limit: str | None = Field(description="null: no limit", pattern=CENTS_TEXT)
    buying_power: str | None = Field(
        description="cash + credit_limit; null without a limit", pattern=CENTS_TEXT
    )
    lot_method: Literal["fifo", "lifo", "hifo"]
    positions: list[PortfolioPosition] = Field(description="held positions, by symbol")
    totals: PortfolioTotals
    realized: str = Field(description="realized P&L to date", pattern=CENTS_TEXT)


class Lot(BaseModel):
    lot_id: int = Field(description="the seq of the buy that opened it")
    symbol: str
    trade_id: int
    quantity: Shares
    remaining: Shares
    cost: str = Field(description="the buy's notional plus its fee", pattern=CENTS_TEXT)
    remaining_cost: str = Field(pattern=CENTS_TEXT)
    opened_at: str = Timestamp


class LotsPage(BaseModel):
    account_id: int
    lots: list[Lot] = Field(description="in the order they were opened")
    next_cursor: str | None


class RealizedClosure(BaseModel):
    seq: int = Field(description="the sell's")
    trade_id: int = Field(description="the sell's")
    lot_id: int
    symbol: str
    quantity: Shares
    cost_basis: str = Field(pattern=CENTS_TEXT)
    proceeds: str = Field(pattern=CENTS_TEXT)
    realized: str = Field(pattern=CENTS_TEXT)
    closed_at: str = Timestamp


class RealizedPage(BaseModel):
    account_id: int
    closures: list[RealizedClosure] = Field(description="in the order they were made")
    next_cursor: str | None
