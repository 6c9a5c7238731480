"""What a trade request and a history query look like, before the database sees them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from stockledger.fields import (
    ClientOrderId,
    ExecutedAt,
    Fee,
    Id,
    Price,
    Quantity,
    RequestPartModel,
    Symbol,
    parse_query_id,
)

MAX_LOTS = 100


class LotPick(BaseModel):
    """Part of a lot a sell closes (SPEC §1.5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lot_id: Id
    quantity: Quantity


class TradeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    # Optional over HTTP, where the caller's key names the broker; required by the database.
    broker_id: Id | None = None
    symbol: Symbol
    side: Literal["buy", "sell"]
    quantity: Quantity
    price: Price
    executed_at: ExecutedAt | None = None
    client_order_id: ClientOrderId | None = None
    fee: Fee | None = None
    lots: list[LotPick] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LOTS,
        description="a sell's lots to close, adding up to its quantity (default: the account's "
        "lot method)",
    )

    @model_validator(mode="after")
    def _lots_fit_the_sell(self) -> Self:
        if self.lots is None:
            return self
        if self.side != "sell":
            raise ValueError("only a sell names lots")
        if len({pick.lot_id for pick in self.lots}) != len(self.lots):
            raise ValueError("lots names a lot twice")
        if sum((pick.quantity for pick in self.lots), Decimal(0)) != self.quantity:
            raise ValueError("lots must add up to the sell's quantity")
        return self


MAX_BATCH = 1000


class TradeBatchRequest(BaseModel):
    """Up to 1,000 trades of the calling broker, executed all or nothing, in this order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trades: list[TradeRequest] = Field(min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _no_named_lots(self) -> Self:
        # trade_batch() closes lots by each account's lot method (SPEC §1.5).
        if any(trade.lots is not None for trade in self.trades):
            raise ValueError("a batch closes lots by each account's lot method: it names none")
        return self


MAX_PAGE = 1000
QueryLimit = Annotated[int, BeforeValidator(parse_query_id), Strict(), Field(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_-]{1,512}$")]


QueryTime = ExecutedAt  # the same RFC 3339 text, in a query string


class TradeFilters(RequestPartModel):
    """The filters of a trade history; a cursor carries them from page to page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol | None = None
    side: Literal["buy", "sell"] | None = None
    since: QueryTime | None = Field(default=None, description="executed_at at or after (RFC 3339)")
    until: QueryTime | None = Field(
        default=None, description="executed_at strictly before (RFC 3339)"
    )
    client_order_id: ClientOrderId | None = Field(default=None, description="look one trade up")


class TradePageQuery(TradeFilters):
    limit: QueryLimit = Field(100, description=f"page size, at most {MAX_PAGE}")
    cursor: Cursor | None = Field(
        None, description="next_cursor of the previous page; it keeps that page's filters"
    )
