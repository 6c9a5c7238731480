"""What a cash movement and the books' queries look like, before the database sees them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from stockledger.fields import CashAmount, RequestPartModel, Symbol
from stockledger.trading.requests import Cursor, QueryLimit, QueryTime

Reference = Annotated[
    str, Strict(), Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class CashMovement(BaseModel):
    """A deposit or a withdrawal (§1.4): amount in cents, > 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["deposit", "withdrawal"]
    amount: CashAmount
    reference: Reference | None = Field(
        default=None, description="free text: a transfer's reference"
    )


class TimeWindow(RequestPartModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: QueryTime | None = Field(default=None, description="at or after (RFC 3339)")
    until: QueryTime | None = Field(default=None, description="strictly before (RFC 3339)")


class CashFilters(TimeWindow):
    """The filters of a cash history; a cursor carries them from page to page."""


class RealizedFilters(TimeWindow):
    """The filters of a realized P&L history; a cursor carries them from page to page."""

    symbol: Symbol | None = None


class LotFilters(RequestPartModel):
    """The filters of a lots listing; a cursor carries them from page to page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol | None = None
    open: Literal["true", "false"] | None = Field(
        default=None, description="true: open lots only; false: closed lots only"
    )


class _Page(RequestPartModel):
    limit: QueryLimit = Field(100, description="page size, at most 1000")
    cursor: Cursor | None = Field(
        default=None, description="next_cursor of the previous page; it keeps that page's filters"
    )


class CashPageQuery(CashFilters, _Page):
    pass


class RealizedPageQuery(RealizedFilters, _Page):
    pass


class LotsPageQuery(LotFilters, _Page):
    pass
