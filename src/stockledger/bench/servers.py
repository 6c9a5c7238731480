"""The PostgreSQL under test: a throwaway embedded server, or DATABASE_URL's server, with
databases of the benchmark's own (created fresh, dropped at the end)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stockledger.db import migrations
from stockledger.db.embedded import EmbeddedServer
from stockledger.db.pool import connect

LEDGER_DB = "stockledger_bench"
PGBENCH_DB = "stockledger_bench_pgbench"


@dataclass(frozen=True)
class BenchServer:
    admin_url: str  # a database from which databases can be created and dropped
    description: str

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def fresh_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(statement.format(sql.Identifier(name)))

    def ledger_database(self) -> str:
        """A fresh, migrated stockledger database."""
        url = self.fresh_database(LEDGER_DB)
        with connect(url) as conn:
            migrations.migrate(conn)
        return url

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.admin_url) as conn:
            names = ("server_version", "shared_buffers", "synchronous_commit", "fsync")
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


@contextlib.contextmanager
def bench_server(database_url: str | None) -> Iterator[BenchServer]:
    """DATABASE_URL's server (its role must be able to create databases), else a throwaway
    embedded server with default (durable) settings."""
    if database_url:
        yield BenchServer(database_url, "the server of DATABASE_URL")
        return
    with tempfile.TemporaryDirectory(prefix="stockledger-bench-") as tmp:
        # Ours: the server's own user (root runs it as another) must be able to traverse it.
        Path(tmp).chmod(0o711)
        server = EmbeddedServer(Path(tmp) / "data")
        server.start()
        try:
            yield BenchServer(server.admin_url(), "embedded PostgreSQL (throwaway data directory)")
        finally:
            server.stop()
