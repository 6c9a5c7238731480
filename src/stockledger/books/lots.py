"""Lots and realized P&L (SPEC §1.5): an account's lots, open or closed, and the closures its
sells made, each a page at a time in the order they were made."""

from __future__ import annotations

from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from stockledger import cursors
from stockledger.books.requests import LotFilters, LotsPageQuery, RealizedFilters, RealizedPageQuery
from stockledger.fields import Id
from stockledger.json_text import money_text, quantity_json
from stockledger.registry.accounts import account


class _LotsCursor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    after_lot: int = Field(ge=0)
    filters: LotFilters


class _RealizedCursor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    after_seq: int = Field(ge=0)
    after_lot: int = Field(ge=0)
    filters: RealizedFilters


def lots_page(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None, page: LotsPageQuery
) -> dict[str, Any]:
    account(conn, account_id, broker_id)
    asked = LotFilters.model_validate(page.model_dump(mode="json", include={"symbol", "open"}))
    state = cursors.resume(page.cursor, _LotsCursor, account_id, asked)
    if state is None:
        state = _LotsCursor(account_id=account_id, after_lot=0, filters=asked)
    rows, more = cursors.page_rows(conn, "account_lots_page", state, page.limit)
    next_cursor = None
    if more:
        next_cursor = cursors.encode(state.model_copy(update={"after_lot": rows[-1]["lot_id"]}))
    return {"account_id": account_id, "lots": [_lot(r) for r in rows], "next_cursor": next_cursor}


def _lot(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "lot_id": row["lot_id"],
        "symbol": row["symbol"],
        "trade_id": row["trade_id"],
        "quantity": quantity_json(row["quantity"]),
        "remaining": quantity_json(row["remaining"]),
        "cost": money_text(row["cost"], 2),
        "remaining_cost": money_text(row["remaining_cost"], 2),
        "opened_at": row["opened_at"].isoformat(),
    }


def realized_page(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None, page: RealizedPageQuery
) -> dict[str, Any]:
    account(conn, account_id, broker_id)
    asked = RealizedFilters.model_validate(
        page.model_dump(mode="json", include={"symbol", "since", "until"})
    )
    state = cursors.resume(page.cursor, _RealizedCursor, account_id, asked)
    if state is None:
        state = _RealizedCursor(account_id=account_id, after_seq=0, after_lot=0, filters=asked)
    rows, more = cursors.page_rows(conn, "account_realized_page", state, page.limit)
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = cursors.encode(
            state.model_copy(update={"after_seq": last["seq"], "after_lot": last["lot_id"]})
        )
    return {
        "account_id": account_id,
        "closures": [_closure(r) for r in rows],
        "next_cursor": next_cursor,
    }


def _closure(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "trade_id": row["trade_id"],
        "lot_id": row["lot_id"],
        "symbol": row["symbol"],
        "quantity": quantity_json(row["quantity"]),
        "cost_basis": money_text(row["cost_basis"], 2),
        "proceeds": money_text(row["proceeds"], 2),
        "realized": money_text(row["realized"], 2),
        "closed_at": row["closed_at"].isoformat(),
    }
