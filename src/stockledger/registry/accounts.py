"""Accounts as a caller may see them: the account and its owner.

Reads take the caller's broker_id (None for the operator): a broker sees only the accounts
whose broker of record it is, and any other account is simply not found.
"""

from __future__ import annotations

from typing import Any

import psycopg

from stockledger.db.boundary import fetch_one
from stockledger.db.pool import plain_row
from stockledger.db.queries import query
from stockledger.errors import not_found


def account(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    row = fetch_one(conn, query("account"), {"account_id": account_id, "broker_id": broker_id})
    if row is None:
        raise not_found("account")
    return plain_row(row)


def owner(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    params = {"account_id": account_id, "broker_id": broker_id}
    row = fetch_one(conn, query("account_owner"), params)
    if row is None:
        raise not_found("account")
    return {
        "account_id": row["account_id"],
        "owner": {"client_id": row["client_id"], "name": row["name"], "email": row["email"]},
    }
