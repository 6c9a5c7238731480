"""Forward-only migrations: numbered .sql files in the package, applied under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

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
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in available() if m.version not in done]


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; return those applied here."""
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection: it manages transactions")
    conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
    try:
        conn.execute(_CREATE_TABLE)
        done = applied_versions(conn)
        applied = []
        for migration in available():
            if migration.version in done:
                continue
            with conn.transaction():
                # A file from the package, never input; executed as a multi-statement script.
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [migration.version, migration.name],
                )
            applied.append(migration)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
