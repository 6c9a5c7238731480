"""Opaque cursors of keyset pagination: base64url(JSON) of where a page ended and the filters
of the walk's first page, validated by a model of the walk's own.

Opaque by contract, not by secrecy: decoding one only shows the caller its own query, and every
page is still filtered by the caller's broker.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, LiteralString, TypeVar

import psycopg
from pydantic import BaseModel, ValidationError

from stockledger.db.boundary import fetch_all
from stockledger.db.queries import query
from stockledger.errors import ErrorCode, StockledgerError

StateT = TypeVar("StateT", bound=BaseModel)


def invalid_cursor(detail: str = "cursor is not one this API issued") -> StockledgerError:
    return StockledgerError(
        ErrorCode.INVALID_REQUEST,
        detail,
        extra={"errors": [{"field": "cursor", "message": detail}]},
    )


def encode(state: BaseModel) -> str:
    raw = state.model_dump_json(exclude_none=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str, model: type[StateT]) -> StateT:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return model.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, ValidationError) as exc:
        raise invalid_cursor() from exc


def resume(
    cursor: str | None,
    model: type[StateT],
    account_id: int,
    asked: BaseModel,
) -> StateT | None:
    """The state a cursor carries, checked against the request it came back with: the same
    account, and filters that are repeated, never changed, mid-walk. None without a cursor."""
    if cursor is None:
        return None
    state = decode(cursor, model)
    carried = state.model_dump()
    if carried["account_id"] != account_id:
        raise invalid_cursor("this cursor belongs to another account's history")
    kept = carried["filters"]
    if any(kept.get(name) != value for name, value in asked.model_dump(exclude_none=True).items()):
        raise invalid_cursor("the filters differ from those this cursor was issued for")
    return state


def page_rows(
    conn: psycopg.Connection[Any], name: LiteralString, state: BaseModel, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` rows of a named keyset query, read after the position ``state`` holds
    (its fields and its filters are the query's parameters), and whether more follow."""
    carried = state.model_dump()
    params = {**carried.pop("filters"), **carried, "limit": limit + 1}
    rows = fetch_all(conn, query(name), params)
    return rows[:limit], len(rows) > limit
