"""Accounts as a caller may see them: the account and its owner.

Reads take the caller's broker_id (None for the operator): a broker sees only the accounts
whose broker of record it is, and any other account is simply not found.
"""

from __future__ import annotations

from typing import Any

import psycopg

from stockledger.db.boundary import fetch_existing
from stockledger.db.pool import plain_row
from stockledger.db.queries import query


def account(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    params = {"account_id": account_id, "broker_id": broker_id}
    return plain_row(fetch_existing(conn, query("account"), params, "account"))


def owner(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    params = {"account_id": account_id, "broker_id": broker_id}
    row = fetch_existing(conn, query("account_owner"), params, "account")
    return {
        "account_id": row["account_id"],
        "owner": {"client_id": row["client_id"], "name": row["name"], "email": row["email"]},
    }
