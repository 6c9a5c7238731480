"""Connections: one pool per process, and the connection settings every session gets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from stockledger.config import Settings
from stockledger.db.boundary import connection_failure, from_database, translated
from stockledger.errors import unavailable

# Every session speaks UTC so that timestamps leave the API with a +00:00 offset.
SESSION_OPTIONS = "-c TimeZone=UTC"


def connection_kwargs(settings: Settings | None = None) -> dict[str, Any]:
    # autocommit: each business operation is one statement (one function call), so it is its
    # own transaction and costs one round trip; multi-statement work opens conn.transaction().
    kwargs: dict[str, Any] = {"autocommit": True, "options": SESSION_OPTIONS}
    if settings is not None:
        # Server-side limits for the application's sessions (not for migrations or operators).
        kwargs["options"] += (
            f" -c statement_timeout={int(settings.statement_timeout_seconds * 1000)}"
            f" -c lock_timeout={int(settings.lock_timeout_seconds * 1000)}"
        )
        kwargs["connect_timeout"] = settings.connect_timeout_seconds
    return kwargs


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values: timestamps as RFC 3339 text."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def connect(url: str) -> psycopg.Connection[Any]:
    """An operator's connection (CLI, migrations, tests). A server that cannot be reached is
    a service_unavailable that says which server and why (password, database, address)."""
    try:
        return psycopg.connect(url, **connection_kwargs())
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None:
            raise unavailable(connection_failure(exc)) from exc
        raise from_database(exc) from exc


class Database:
    """The pool of one process. Created after fork, so each gunicorn worker has its own."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=connection_kwargs(settings),
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout_seconds,
            reconnect_timeout=settings.pool_reconnect_seconds,
            name="stockledger",
            # Open without waiting: a process must start (and /healthz answer) while the
            # database is down; requests then get 503 until it is back.
            open=False,
        )
        self.pool.open(wait=False)

    def getconn(self) -> psycopg.Connection[Any]:
        """A connection for one request (503 if none comes within the pool timeout)."""
        with translated():
            return self.pool.getconn()

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        # The pool rolls back anything left open and discards a broken connection.
        self.pool.putconn(conn)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self.getconn()
        try:
            yield conn
        finally:
            self.putconn(conn)

    def close(self) -> None:
        self.pool.close()
