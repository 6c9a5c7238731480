"""Accounts as a caller may see them: the account, its holders and its owner.

Reads take the caller's broker_id (None for the operator): a broker sees the accounts whose
broker of record it is, and a supervisor also those of every broker below it (SPEC §2.4); any
other account is simply not found. The queries filter by the broker of record, the common case,
in one round trip; a read that finds nothing for a broker asks the database whether that broker
supervises the account, and if so reads it as the operator would. (Not one query with the
supervision as a condition: on a cluster the condition would run on the account's shard, where
a function that reads another table is refused, and Citus accepts no recursive query there.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, LiteralString

import psycopg

from stockledger.db.boundary import fetch_all, fetch_value
from stockledger.db.pool import plain_row
from stockledger.db.queries import query
from stockledger.errors import not_found
from stockledger.json_text import money_text


def supervises(conn: psycopg.Connection[Any], broker_id: int, account_id: int) -> bool:
    """Whether the broker is above the account's broker of record, at any depth."""
    params = {"broker_id": broker_id, "account_id": account_id}
    return bool(fetch_value(conn, query("supervises_account"), params))


def account_rows(
    conn: psycopg.Connection[Any],
    name: LiteralString,
    params: dict[str, Any],
    account_of: Callable[[], int | None] | None = None,
) -> list[dict[str, Any]]:
    """The rows of a read of one account (params: the caller's broker_id and its account_id,
    or ``account_of`` to find the account when the read names something else, a trade), or
    none when the caller may not see the account."""
    rows = fetch_all(conn, query(name), params)
    broker_id = params["broker_id"]
    if rows or broker_id is None:
        return rows
    account_id = params["account_id"] if account_of is None else account_of()
    if account_id is None or not supervises(conn, broker_id, account_id):
        return rows
    return fetch_all(conn, query(name), {**params, "broker_id": None})


def account(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    rows = account_rows(conn, "account", {"account_id": account_id, "broker_id": broker_id})
    if not rows:
        raise not_found("account")
    record = plain_row(rows[0])
    record["cash"] = money_text(record["cash"], 2)
    if record["credit_limit"] is not None:
        record["credit_limit"] = money_text(record["credit_limit"], 2)
    return record


def owner(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    """The primary holder as "owner" (the seed's answer), and every current holder, primary
    first, as "owners"."""
    params = {"account_id": account_id, "broker_id": broker_id}
    rows = account_rows(conn, "account_owners", params)
    if not rows:
        raise not_found("account")
    owners = [
        {"client_id": row["client_id"], "name": row["name"], "email": row["email"]} for row in rows
    ]
    return {"account_id": account_id, "owner": owners[0], "owners": owners}
