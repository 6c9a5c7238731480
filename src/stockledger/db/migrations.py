"""Forward-only migrations: numbered .sql files in the package, applied under an advisory lock.

A migration that needs a strong lock (ALTER TABLE trades takes ACCESS EXCLUSIVE) and finds
it held (a long report, an operator's open transaction) must not wait in the lock queue:
every trade would queue behind it. So each migration runs with a short lock_timeout and, when
it times out, rolls back, waits a little and tries again, a bounded number of times; then
migrate() gives up with a service_unavailable that says so, having changed nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import psycopg.errors
import sqlparse

from stockledger.db import distribution
from stockledger.db.boundary import translated
from stockledger.errors import unavailable

# An arbitrary constant shared by every stockledger process: two concurrent migrate runs
# queue on it instead of both applying the same file.
MIGRATION_LOCK_KEY = 0x5354_4B4C_4544_4752  # "STKLEDGR"
# The application's role, created by migration 0002 (NOLOGIN: a deployment grants it to a login
# role, or the embedded server enables login on it).
APP_ROLE = "stockledger_app"
_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    folder = resources.files("stockledger").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration numbers must run 1, 2, 3… without gaps: {versions}")
    return found


def latest_version() -> int:
    return available()[-1].version


def applied_versions(conn: psycopg.Connection[Any]) -> set[int]:
    with translated():
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return set()
        return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in available() if m.version not in done]


@dataclass(frozen=True)
class LockPolicy:
    """How a migration waits for its locks: at most ``timeout_seconds`` per attempt (trades
    queued behind it wait no longer than that), ``attempts`` times, ``pause_seconds`` apart
    (doubling, up to 2 s). The default gives up after about 20 s."""

    timeout_seconds: float | None = 0.2
    attempts: int = 12
    pause_seconds: float = 0.1


def migrate(
    conn: psycopg.Connection[Any],
    *,
    locks: LockPolicy = LockPolicy(),  # frozen: one shared default is safe
    migrations: Sequence[Migration] | None = None,
) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; return those applied here.

    ``migrations`` defaults to the package's (tests pass their own)."""
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection: it manages transactions")
    with translated():
        conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        try:
            conn.execute(_CREATE_TABLE)
            on_cluster = distribution.citus_present(conn)
            if on_cluster:
                distribution.session_settings(conn)
            done = applied_versions(conn)
            applied = []
            for migration in available() if migrations is None else migrations:
                if migration.version not in done:
                    if on_cluster and migration.version > LAST_PRE_CLUSTER_MIGRATION:
                        # Everything made so far is placed before a later migration runs: it
                        # meets distributed and reference tables, as an upgrade of a running
                        # cluster does, and a table it makes is placed before the next one
                        # fills it (docs/scale-out.md, "The pattern for later rules").
                        distribution.distribute(conn)
                    _apply(conn, migration, locks)
                    applied.append(migration)
            if on_cluster:
                # Tables a migration created are placed once it is applied (SPEC §1.3).
                distribution.distribute(conn)
            return applied
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


# Migrations up to this one were written before stockledger ran on a cluster: on a new cluster
# they run on local tables, which are placed after them (some of their statements, run on
# distributed tables, Citus refuses). Every later migration must run on the placed schema.
LAST_PRE_CLUSTER_MIGRATION = 12


def statements(script: str) -> list[str]:
    """A migration's statements, to be sent one at a time (in its one transaction). Citus relays
    a DDL statement on a distributed or reference table to the workers in the text the client
    sent, over the extended protocol, and a text of several commands is refused there
    ("cannot insert multiple commands into a prepared statement"). sqlparse knows
    PostgreSQL's quoting, dollar quotes included."""
    return [
        statement
        for statement in sqlparse.split(script)
        if sqlparse.format(statement, strip_comments=True).strip()
    ]


def _apply(conn: psycopg.Connection[Any], migration: Migration, locks: LockPolicy) -> None:
    pause = locks.pause_seconds
    for attempt in range(1, locks.attempts + 1):
        try:
            with conn.transaction():
                if locks.timeout_seconds is not None:
                    milliseconds = max(1, int(locks.timeout_seconds * 1000))
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, true)", [f"{milliseconds}ms"]
                    )
                # A file from the package, never input.
                for statement in statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [migration.version, migration.name],
                )
            return
        except psycopg.errors.LockNotAvailable:
            if attempt == locks.attempts:
                break
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    raise unavailable(
        f"migration {migration.version:04d}_{migration.name} could not take its locks in "
        f"{locks.attempts} attempts (a long transaction holds them?); nothing of it was "
        "applied and trading went on; retry `stockledger migrate`"
    )
