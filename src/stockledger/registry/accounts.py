"""Accounts as a caller may see them: the account, its holders and its owner.

Reads take the caller's broker_id (None for the operator): a broker sees the accounts whose
broker of record it is or supervises, and any other account is simply not found.
"""

from __future__ import annotations

from typing import Any

import psycopg

from stockledger.db.boundary import fetch_all, fetch_existing
from stockledger.db.pool import plain_row
from stockledger.db.queries import query
from stockledger.errors import not_found


def account(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    params = {"account_id": account_id, "broker_id": broker_id}
    return plain_row(fetch_existing(conn, query("account"), params, "account"))


def owner(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    """The primary holder as "owner" (the seed's answer), and every current holder, primary
    first, as "owners"."""
    params = {"account_id": account_id, "broker_id": broker_id}
    rows = fetch_all(conn, query("account_owners"), params)
    if not rows:
        raise not_found("account")
    owners = [
        {"client_id": row["client_id"], "name": row["name"], "email": row["email"]} for row in rows
    ]
    return {"account_id": account_id, "owner": owners[0], "owners": owners}
