"""Migrations: forward-only, recorded, safe to run twice or concurrently, and equal to
sql/schema.sql (the readable schema) when applied to an empty database."""

from __future__ import annotations

import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from stockledger.db import migrations
from stockledger.db.binaries import pg_binary
from stockledger.db.pool import connect
from stockledger.db.queries import sql_text
from tests.support import Server


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[str]:
    name = f"sl_empty_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


def test_migrate_is_recorded_and_idempotent(empty_db: str) -> None:
    with connect(empty_db) as conn:
        first = migrations.migrate(conn)
        assert [m.version for m in first] == [m.version for m in migrations.available()]
        assert migrations.migrate(conn) == []
        assert migrations.applied_versions(conn) == {m.version for m in migrations.available()}


def test_concurrent_migrate_applies_each_migration_once(empty_db: str) -> None:
    applied: list[int] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        try:
            with connect(empty_db) as conn:
                barrier.wait(timeout=30)
                applied.extend(m.version for m in migrations.migrate(conn))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures
    assert sorted(applied) == [m.version for m in migrations.available()]


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations.available()]
    assert versions == list(range(1, len(versions) + 1))


_ATTVER = re.compile(r"ALTER COLUMN .* SET \(pg_attver=\d+\);$")


def schema_dump(url: str) -> str:
    output = subprocess.run(
        [
            str(pg_binary("pg_dump")),
            "--schema-only",
            "--exclude-table=schema_migrations",
            "-d",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # pg_dump 17.6+ wraps its output in \restrict lines with a random key; comments carry
    # versions. Neither is schema. Debian's PostgreSQL 15.20 gives every column a pg_attver
    # option whose value differs between any two databases: not schema either.
    lines = [
        line
        for line in output.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "--")) and not _ATTVER.search(line)
    ]
    return re.sub(r"\n{2,}", "\n\n", "\n".join(lines)).strip()


def test_fresh_migrate_equals_schema_sql(pg_server: Server, empty_db: str) -> None:
    with connect(empty_db) as conn:
        migrations.migrate(conn)
    from_schema = f"sl_schema_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(from_schema)
    try:
        with connect(url) as conn:
            conn.execute(sql_text("schema.sql"))
        migrated, declared = schema_dump(empty_db), schema_dump(url)
        assert "CREATE TABLE public.trades" in migrated
        assert migrated == declared
    finally:
        pg_server.drop_database(from_schema)


def test_schema_comparison_notices_a_difference(pg_server: Server, empty_db: str) -> None:
    # The control: a one-constraint difference must show in the dumps.
    with connect(empty_db) as conn:
        migrations.migrate(conn)
        before = schema_dump(empty_db)
        conn.execute("ALTER TABLE stocks DROP CONSTRAINT stocks_name_check")
    assert schema_dump(empty_db) != before


def test_readyz_reports_a_schema_behind(client: Any, conn: Any) -> None:
    conn.execute("DELETE FROM schema_migrations")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["code"] == "service_unavailable"
