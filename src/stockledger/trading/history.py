"""An account's trade history: keyset pagination on seq, with opaque cursors that keep the
filters (stockledger.cursors)."""

from __future__ import annotations

from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from stockledger import cursors
from stockledger.db.boundary import fetch_all
from stockledger.db.queries import query
from stockledger.fields import Id
from stockledger.registry.accounts import account
from stockledger.trading.requests import TradeFilters, TradePageQuery
from stockledger.trading.trades import Trade


class _CursorState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    after_seq: int = Field(ge=0)
    filters: TradeFilters


def encode_cursor(account_id: int, after_seq: int, filters: TradeFilters) -> str:
    return cursors.encode(_CursorState(account_id=account_id, after_seq=after_seq, filters=filters))


def decode_cursor(cursor: str) -> _CursorState:
    return cursors.decode(cursor, _CursorState)


def trade_page(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None, page: TradePageQuery
) -> dict[str, Any]:
    """One page of {"trades": [...], "next_cursor": ...}; 404 for an account not the caller's."""
    account(conn, account_id, broker_id)
    asked = TradeFilters.model_validate(page.model_dump(mode="json", exclude={"limit", "cursor"}))
    state = cursors.resume(page.cursor, _CursorState, account_id, asked)
    filters, after_seq = (asked, 0) if state is None else (state.filters, state.after_seq)
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
