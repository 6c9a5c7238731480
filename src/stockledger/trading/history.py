"""An account's trade history: keyset pagination, with opaque cursors that keep the filters.

A cursor is base64url(JSON) of the account, the last seq served and the filters of the first
page. It is opaque by contract, not by secrecy: decoding one only shows the caller its own
query, and every page is still filtered by the caller's broker.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stockledger.db.boundary import fetch_all
from stockledger.db.queries import query
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.fields import Id
from stockledger.registry.accounts import account
from stockledger.trading.requests import TradeFilters, TradePageQuery
from stockledger.trading.trades import Trade


class _CursorState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    after_seq: int = Field(ge=0)
    filters: TradeFilters


def _invalid_cursor(detail: str = "cursor is not one this API issued") -> StockledgerError:
    return StockledgerError(
        ErrorCode.INVALID_REQUEST,
        detail,
        extra={"errors": [{"field": "cursor", "message": detail}]},
    )


def encode_cursor(account_id: int, after_seq: int, filters: TradeFilters) -> str:
    state = _CursorState(account_id=account_id, after_seq=after_seq, filters=filters)
    raw = state.model_dump_json(exclude_none=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> _CursorState:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return _CursorState.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, ValidationError) as exc:
        raise _invalid_cursor() from exc


def trade_page(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None, page: TradePageQuery
) -> dict[str, Any]:
    """One page of {"trades": [...], "next_cursor": ...}; 404 for an account not the caller's."""
    account(conn, account_id, broker_id)
    asked = TradeFilters.model_validate(page.model_dump(mode="json", exclude={"limit", "cursor"}))
    filters, after_seq = asked, 0
    if page.cursor is not None:
        state = decode_cursor(page.cursor)
        if state.account_id != account_id:
            raise _invalid_cursor("this cursor belongs to another account's history")
        # Filters may be repeated alongside the cursor, but not changed mid-walk.
        given = asked.model_dump(exclude_none=True)
        if any(state.filters.model_dump().get(name) != value for name, value in given.items()):
            raise _invalid_cursor("the filters differ from those this cursor was issued for")
        filters, after_seq = state.filters, state.after_seq
    trades = trades_after(conn, account_id, after_seq, filters.model_dump(), limit=page.limit + 1)
    next_cursor = None
    if len(trades) > page.limit:
        trades = trades[: page.limit]
        next_cursor = encode_cursor(account_id, trades[-1].seq, filters)
    return {"trades": [t.to_json() for t in trades], "next_cursor": next_cursor}


def trades_after(
    conn: psycopg.Connection[Any],
    account_id: int,
    after_seq: int,
    filters: dict[str, Any],
    limit: int,
) -> list[Trade]:
    """Up to ``limit`` trades of one account after ``after_seq``, oldest first."""
    params = {**filters, "account_id": account_id, "after_seq": after_seq, "limit": limit}
    rows = fetch_all(conn, query("account_trades_page"), params)
    return [Trade.from_row(row) for row in rows]
