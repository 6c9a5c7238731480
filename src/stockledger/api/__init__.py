"""HTTP API: one blueprint per resource; the seed's three endpoints kept exactly."""

from __future__ import annotations

from typing import Any

import psycopg
from flask import current_app, request

from stockledger import auth
from stockledger.config import Settings
from stockledger.db import Database
from stockledger.errors import StockledgerError


def database() -> Database:
    db: Database = current_app.extensions["stockledger.db"]
    return db


def settings() -> Settings:
    value: Settings = current_app.extensions["stockledger.settings"]
    return value


def caller(conn: psycopg.Connection[Any]) -> auth.Caller:
    """The authenticated caller of this request (401/403 otherwise)."""
    return auth.authenticate(conn, request.headers.get("Authorization"), settings().admin_token)


def broker_caller(conn: psycopg.Connection[Any]) -> auth.Caller:
    """Only a broker may trade: the operator's token reads and administers, it does not trade."""
    who = caller(conn)
    if who.is_admin:
        raise StockledgerError("forbidden", "trades are submitted with a broker's API key")
    return who
