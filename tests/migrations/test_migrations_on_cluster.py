"""A migration written after stockledger ran on a cluster runs on the placed schema, as an
upgrade of a running cluster does, and the tables it makes are placed before the next one fills
them (docs/scale-out.md, "The pattern for later rules"). Distributed tier only.

Two made-up migrations after the package's: one creates a reference table (a foreign key to
stocks) and a per-account one (a foreign key to accounts); the next fills both. And a later migration
that works only on local tables (Citus refuses its statement on a distributed one) fails in the
tier, as it would on an operator's running cluster; the control shows it passing when run the
way the migrations written before the cluster run on a new one (all local, placed at the end).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from stockledger.db import distribution, migrations
from stockledger.db.migrations import Migration
from stockledger.db.pool import connect
from stockledger.errors import StockledgerError
from tests.support import Server, World

pytestmark = pytest.mark.citus

LATER = [
    Migration(
        101,
        "tables_later",
        """
        CREATE TABLE stock_notes (
            symbol text NOT NULL REFERENCES stocks (symbol),
            note   text NOT NULL,
            CONSTRAINT stock_notes_pkey PRIMARY KEY (symbol, note)
        );
        CREATE TABLE account_notes (
            account_id bigint NOT NULL REFERENCES accounts (account_id),
            note       text NOT NULL,
            CONSTRAINT account_notes_pkey PRIMARY KEY (account_id, note)
        );
        """,
    ),
    Migration(
        102,
        "filled_later",
        """
        INSERT INTO stock_notes (symbol, note) SELECT symbol, 'listed' FROM stocks;
        INSERT INTO account_notes (account_id, note) SELECT account_id, 'opened' FROM accounts;
        """,
    ),
]


@pytest.fixture
def later_tables(monkeypatch: pytest.MonkeyPatch, cluster: bool) -> None:
    if not cluster:
        pytest.skip("a cluster's placement: the distributed tier (pytest -m citus)")
    monkeypatch.setattr(distribution, "PER_ACCOUNT", (*distribution.PER_ACCOUNT, "account_notes"))
    monkeypatch.setattr(distribution, "REFERENCE", (*distribution.REFERENCE, "stock_notes"))


@pytest.fixture
def empty_cluster_db(pg_server: Server) -> Iterator[str]:
    name = f"sl_later_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)  # the extension on every node, the workers added
    yield url
    pg_server.drop_database(name)


def placement(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str]]:
    rows = conn.execute(
        "SELECT logicalrelid::regclass::text, partmethod, repmodel FROM pg_dist_partition "
        "WHERE logicalrelid::regclass::text IN ('stock_notes', 'account_notes', 'accounts')"
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_a_later_migration_meets_the_placed_schema(
    later_tables: None, db_url: str, world: World
) -> None:
    with connect(db_url) as conn:
        applied = migrations.migrate(conn, migrations=[*migrations.available(), *LATER])
        assert [m.version for m in applied] == [101, 102]
        found = placement(conn)
        assert found["stock_notes"] == ("n", "t")  # a reference table
        assert found["account_notes"][0] == "h"  # distributed, and with accounts:
        colocated = conn.execute(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition "
            "WHERE logicalrelid::regclass::text IN ('accounts', 'account_notes')"
        ).fetchone()
        assert colocated == (1,)
        notes = conn.execute(
            "SELECT note FROM account_notes WHERE account_id = %s", [world.account]
        ).fetchall()
        assert notes == [("opened",)]


# Works on local tables; Citus refuses it on a distributed one (now() inside coalesce in an
# UPDATE): an upgrade of a running cluster would fail on it.
LOCAL_ONLY = Migration(
    101,
    "local_only",
    "UPDATE accounts SET status = coalesce(NULLIF(status, 'x'), now()::text) WHERE false",
)


def test_a_later_migration_that_only_works_on_local_tables_is_caught(
    later_tables: None, db_url: str
) -> None:
    with connect(db_url) as conn, pytest.raises(StockledgerError) as refused:
        migrations.migrate(conn, migrations=[*migrations.available(), LOCAL_ONLY])
    assert "COALESCE" in str(refused.value.__cause__), refused.value.__cause__


def test_control_run_before_placement_it_would_pass_unnoticed(
    later_tables: None, empty_cluster_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fresh database's way for the migrations written before the cluster: all on local
    # tables, placed at the end. Treated so, the same migration passes.
    monkeypatch.setattr(migrations, "LAST_PRE_CLUSTER_MIGRATION", 10**6)
    with connect(empty_cluster_db) as conn:
        applied = migrations.migrate(conn, migrations=[*migrations.available(), LOCAL_ONLY])
        assert applied[-1].version == 101
