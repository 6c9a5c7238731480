"""Registering clients, brokers, accounts and stocks, and changing them.

Each change is one statement; the rules (unique tax ids, no broker-owned accounts, holders,
supervision without cycles, valid statuses) are the database's, and a violation comes back as
a translated error. What a change answers is read back afterwards, as the operator sees it.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from pydantic import BaseModel

from stockledger.db.boundary import execute, fetch_existing, fetch_one, transaction
from stockledger.db.pool import plain_row
from stockledger.db.queries import query
from stockledger.json_text import money_text
from stockledger.registry.accounts import account
from stockledger.registry.keys import issue_key
from stockledger.registry.requests import (
    AccountChange,
    AccountCreate,
    BrokerChange,
    BrokerCreate,
    BrokerStatusChange,
    ClientCreate,
    PriceRecord,
    StockChange,
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


def change_account(
    conn: psycopg.Connection[Any], account_id: int, change: AccountChange
) -> dict[str, Any]:
    """The fields the change names, in one statement (a credit limit below what the account
    owes is refused by the database: insufficient_funds)."""
    given = change.model_fields_set
    params = {
        "account_id": account_id,
        "status": change.status,
        "set_credit_limit": "credit_limit" in given,
        "credit_limit": change.credit_limit,
        "lot_method": change.lot_method,
    }
    _update(conn, query("change_account"), params, "account")
    return account(conn, account_id)


def set_broker_status(
    conn: psycopg.Connection[Any], broker_id: int, change: BrokerStatusChange
) -> dict[str, Any]:
    params = {"broker_id": broker_id, "status": change.status}
    return _update(conn, query("set_broker_status"), params, "broker")


def change_broker(
    conn: psycopg.Connection[Any], broker_id: int, change: BrokerChange
) -> dict[str, Any]:
    """The status and the supervisor named in the change, in one transaction."""
    with transaction(conn):
        record: dict[str, Any] = {}
        if change.status is not None:
            record = set_broker_status(conn, broker_id, BrokerStatusChange(status=change.status))
        if "manager_id" in change.model_fields_set:
            params = {"broker_id": broker_id, "manager_id": change.manager_id}
            record = _update(conn, query("set_broker_manager"), params, "broker")
    return record


def open_account(conn: psycopg.Connection[Any], new: AccountCreate) -> dict[str, Any]:
    params = {"holders": new.holder_ids, "broker_id": new.broker_id}
    row = fetch_one(conn, query("insert_account"), params)
    assert row is not None
    return account(conn, row["account_id"])


def add_holder(conn: psycopg.Connection[Any], account_id: int, client_id: int) -> dict[str, Any]:
    params = {"account_id": account_id, "client_id": client_id}
    return _update(conn, query("add_holder"), params, "account")


def remove_holder(conn: psycopg.Connection[Any], account_id: int, client_id: int) -> dict[str, Any]:
    params = {"account_id": account_id, "client_id": client_id}
    return _update(conn, query("remove_holder"), params, "holder")


def stock(conn: psycopg.Connection[Any], symbol: str) -> dict[str, Any]:
    """A stock with its latest reference price (null when none was recorded)."""
    record = plain_row(fetch_existing(conn, query("stock"), {"symbol": symbol}, "stock"))
    record["price"] = None if record["price"] is None else money_text(record["price"], 4)
    return record


def add_stock(conn: psycopg.Connection[Any], new: StockCreate) -> dict[str, Any]:
    _insert(conn, query("insert_stock"), new)
    return stock(conn, new.symbol)


def ensure_stock(conn: psycopg.Connection[Any], new: StockCreate) -> None:
    """List a stock unless it is listed already (the listing is then left as it is)."""
    execute(conn, query("insert_stock_if_missing"), new.model_dump())


def change_stock(conn: psycopg.Connection[Any], symbol: str, change: StockChange) -> dict[str, Any]:
    params = {"symbol": symbol, **change.model_dump()}
    _update(conn, query("change_stock"), params, "stock")
    return stock(conn, symbol)


def record_price(conn: psycopg.Connection[Any], symbol: str, record: PriceRecord) -> dict[str, Any]:
    """A reference price of a stock (§1.6); the latest by as_of is the stock's price."""
    params = {"symbol": symbol, "price": record.price, "as_of": record.as_of}
    row = _update(conn, query("insert_stock_price"), params, "stock")
    return {**row, "price": money_text(row["price"], 4)}
