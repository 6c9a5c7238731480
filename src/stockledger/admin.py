"""Reference data and accounts: clients, brokers, accounts, stocks.

Each helper is one INSERT; the rules (unique tax ids, no broker-owned accounts, valid
statuses) are the database's, and a violation comes back as a translated error.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from stockledger.db import plain_row
from stockledger.models import AccountCreate, BrokerCreate, ClientCreate, StockCreate
from stockledger.queries import query


def _insert(conn: psycopg.Connection[Any], sql: LiteralString, values: BaseModel) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(sql, values.model_dump()).fetchone()
    assert row is not None
    return plain_row(row)


def add_client(conn: psycopg.Connection[Any], client: ClientCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_client"), client)


def add_broker(conn: psycopg.Connection[Any], broker: BrokerCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_broker"), broker)


def open_account(conn: psycopg.Connection[Any], account: AccountCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_account"), account)


def add_stock(conn: psycopg.Connection[Any], stock: StockCreate) -> dict[str, Any]:
    return _insert(conn, query("insert_stock"), stock)
