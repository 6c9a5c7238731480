"""Registering clients, brokers, accounts and stocks, and changing their statuses.

Each helper is one statement; the rules (unique tax ids, no broker-owned accounts, valid
statuses) are the database's, and a violation comes back as a translated error.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from pydantic import BaseModel

from stockledger.db.boundary import execute, fetch_existing, fetch_one, transaction
from stockledger.db.pool import plain_row
from stockledger.db.queries import query
from stockledger.registry.keys import issue_key
from stockledger.registry.requests import (
    AccountCreate,
    AccountStatusChange,
    BrokerCreate,
    BrokerStatusChange,
    ClientCreate,
    StockCreate,
)


def _insert(conn: psycopg.Connection[Any], sql: LiteralString, values: BaseModel) -> dict[str, Any]:
    row = fetch_one(conn, sql, values.model_dump())
    assert row is not None
    return plain_row(row)


def _update(
    conn: psycopg.Connection[Any], sql: LiteralString, params: dict[str, Any], what: str
) -> dict[str, Any]:
    return plain_row(fetch_existing(conn, sql, params, what))


def add_client(conn: psycopg.Connection[Any], client: ClientCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_client"), client)


def add_broker(conn: psycopg.Connection[Any], broker: BrokerCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_broker"), broker)


def add_broker_with_key(conn: psycopg.Connection[Any], broker: BrokerCreate) -> dict[str, Any]:
    """A new broker and its first API key, in one transaction: never a broker without a key."""
    with transaction(conn):
        record = add_broker(conn, broker)
        key = issue_key(conn, record["broker_id"])
    return {**record, "key_id": key["key_id"], "api_key": key["api_key"]}


def set_account_status(
    conn: psycopg.Connection[Any], account_id: int, change: AccountStatusChange
) -> dict[str, Any]:
    params = {"account_id": account_id, "status": change.status}
    return _update(conn, query("set_account_status"), params, "account")


def set_broker_status(
    conn: psycopg.Connection[Any], broker_id: int, change: BrokerStatusChange
) -> dict[str, Any]:
    params = {"broker_id": broker_id, "status": change.status}
    return _update(conn, query("set_broker_status"), params, "broker")


def open_account(conn: psycopg.Connection[Any], account: AccountCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_account"), account)


def add_stock(conn: psycopg.Connection[Any], stock: StockCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_stock"), stock)


def ensure_stock(conn: psycopg.Connection[Any], stock: StockCreate) -> None:
    """List a stock unless it is listed already (the listing is then left as it is)."""
    execute(conn, query("insert_stock_if_missing"), stock.model_dump())
