"""Cash (SPEC §1.4): deposits and withdrawals through move_cash(), and the cash history — what
moved an account's balance, trades and movements merged in time order, a page at a time."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from stockledger import cursors, json_text
from stockledger.books.requests import CashFilters, CashMovement, CashPageQuery
from stockledger.db.boundary import fetch_one
from stockledger.db.pool import plain_row
from stockledger.db.queries import query
from stockledger.fields import Id
from stockledger.json_text import money_text
from stockledger.registry.accounts import account


def movement_fingerprint(movement: CashMovement) -> bytes:
    """What "the same request" means for an Idempotency-Key on a movement: the same validated
    movement ("100" and "100.00" are one amount)."""
    text = json_text.dumps(movement.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


def move_cash(
    conn: psycopg.Connection[Any],
    account_id: int,
    movement: CashMovement,
    idempotency_key: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """The movement made (or, for a repeated key, the one made the first time), and whether it
    was replayed."""
    params = {
        "account_id": account_id,
        "kind": movement.kind,
        "amount": movement.amount,
        "reference": movement.reference,
        "idempotency_key": idempotency_key,
        "request_hash": None if idempotency_key is None else movement_fingerprint(movement),
    }
    row = fetch_one(conn, query("move_cash"), params)
    assert row is not None, "move_cash() returns one row or raises"
    replayed = bool(row.pop("replayed"))
    return _movement(row), replayed


def _movement(row: dict[str, Any]) -> dict[str, Any]:
    record = plain_row(row)
    record["amount"] = money_text(row["amount"], 2)
    record["balance"] = money_text(row["balance"], 2)
    return record


class _CashCursor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    after_seq: int = Field(ge=0)
    after_movement: int = Field(ge=0)
    filters: CashFilters


def cash_page(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None, page: CashPageQuery
) -> dict[str, Any]:
    """One page of {"account_id", "cash", "entries": [...], "next_cursor"}: the balance now, and
    what moved it, oldest first; 404 for an account the caller may not read."""
    record = account(conn, account_id, broker_id)
    asked = CashFilters.model_validate(page.model_dump(mode="json", include={"since", "until"}))
    state = cursors.resume(page.cursor, _CashCursor, account_id, asked)
    if state is None:
        state = _CashCursor(account_id=account_id, after_seq=0, after_movement=0, filters=asked)
    rows, more = cursors.page_rows(conn, "account_cash_page", state, page.limit)
    next_cursor = None
    if more:
        trades = [r["number"] for r in rows if r["stream"] == 1]
        movements = [r["number"] for r in rows if r["stream"] == 0]
        next_cursor = cursors.encode(
            state.model_copy(
                update={
                    "after_seq": max(trades, default=state.after_seq),
                    "after_movement": max(movements, default=state.after_movement),
                }
            )
        )
    return {
        "account_id": account_id,
        "cash": record["cash"],
        "entries": [_entry(row) for row in rows],
        "next_cursor": next_cursor,
    }


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "at": row["at"].isoformat(),
        "entry": row["entry"],
        "amount": money_text(row["amount"], 2),
    }
    if row["stream"] == 1:
        entry.update(
            seq=row["number"], trade_id=row["trade_id"], symbol=row["symbol"], side=row["side"]
        )
    else:
        entry.update(
            movement_id=row["number"],
            reference=row["reference"],
            balance=money_text(Decimal(row["balance"]), 2),
        )
    return entry
