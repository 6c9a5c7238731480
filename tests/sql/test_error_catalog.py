"""The error catalog is complete: a new rule without a mapping fails here, not in production.

Every private SQLSTATE (SL…) that the SQL raises — in the files under sql/ and in the functions
of the migrated database — has a mapping in stockledger.db.boundary, and every constraint the
mapping names exists in the migrated database. Each check is a function of its inputs, so the
controls below show it reporting a removed mapping and a misspelt constraint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import psycopg
import pytest

from stockledger.db.boundary import (
    CONSTRAINT_CODES,
    RETRYABLE_CONSTRAINTS,
    SQLSTATE_CODES,
    unsharded_name,
)

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

_RAISED = re.compile(r"ERRCODE\s*=\s*'(SL[0-9A-Z]{3})'")


def sql_files() -> dict[str, str]:
    root = resources.files("stockledger").joinpath("sql")
    found: dict[str, str] = {}
    pending = [root]
    while pending:
        folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append(entry)
            elif entry.name.endswith(".sql"):
                found[entry.name] = entry.read_text(encoding="utf-8")
    return found


def raised_codes(texts: Iterable[str]) -> set[str]:
    return {code for text in texts for code in _RAISED.findall(text)}


def unmapped(raised: set[str], mapping: Mapping[str, Any]) -> set[str]:
    return raised - set(mapping)


def missing_constraints(named: Iterable[str], existing: set[str]) -> set[str]:
    return set(named) - existing


def database_function_sources(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
    ).fetchall()
    return [row[0] for row in rows]


def database_constraints(conn: psycopg.Connection[Any]) -> set[str]:
    """Constraint names (tables and domains) and index names: a unique index's violation
    names the index."""
    rows = conn.execute(
        """
        SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION
        SELECT relname FROM pg_class
        WHERE relkind = 'i' AND relnamespace = 'public'::regnamespace
        """
    ).fetchall()
    return {row[0] for row in rows}


def test_every_code_the_sql_files_raise_is_mapped() -> None:
    raised = raised_codes(sql_files().values())
    assert raised, "the scan found no SL code at all: the pattern is wrong"
    assert unmapped(raised, SQLSTATE_CODES) == set()


def test_every_code_the_database_raises_is_mapped(conn: psycopg.Connection[Any]) -> None:
    raised = raised_codes(database_function_sources(conn))
    assert len(raised) >= 13
    assert unmapped(raised, SQLSTATE_CODES) == set()


def test_every_mapped_code_is_raised_somewhere(conn: psycopg.Connection[Any]) -> None:
    # No mapping for a rule that no longer exists (or was never written).
    raised = raised_codes(database_function_sources(conn))
    assert set(SQLSTATE_CODES) - raised == set()


def test_every_constraint_the_mapping_names_exists(conn: psycopg.Connection[Any]) -> None:
    existing = database_constraints(conn)
    assert "trades_price_check" in existing  # domains' constraints are seen too
    named = [*CONSTRAINT_CODES, *RETRYABLE_CONSTRAINTS]
    assert missing_constraints(named, existing) == set()


def test_control_a_removed_mapping_is_reported(conn: psycopg.Connection[Any]) -> None:
    raised = raised_codes(database_function_sources(conn))
    without_sl007 = {k: v for k, v in SQLSTATE_CODES.items() if k != "SL007"}
    assert unmapped(raised, without_sl007) == {"SL007"}
    assert unmapped(raised_codes(sql_files().values()), without_sl007) == {"SL007"}


def test_control_a_misspelt_constraint_is_reported(conn: psycopg.Connection[Any]) -> None:
    existing = database_constraints(conn)
    named = [*CONSTRAINT_CODES, "clients_taxid_key"]
    assert missing_constraints(named, existing) == {"clients_taxid_key"}


def shard_like(names: Iterable[str]) -> set[str]:
    return {name for name in names if unsharded_name(name) != name}


def test_no_name_of_the_schema_ends_like_a_shards(
    conn: psycopg.Connection[Any], cluster: bool
) -> None:
    # The error boundary drops a shard's suffix from the names a cluster reports: a table,
    # constraint or index of our own ending in "_" and digits would lose it too.
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchall()
    }
    names = database_constraints(conn) | tables
    if cluster:
        # The coordinator keeps a copy of each reference table: those shards' own names.
        shards = {str(row[0]) for row in conn.execute("SELECT shardid FROM pg_dist_shard")}
        names = {name for name in names if name.rsplit("_", 1)[-1] not in shards}
    assert shard_like(names) == set()


def test_control_a_name_ending_like_a_shards_is_reported() -> None:
    assert shard_like({"clients_tax_id_key", "trades_2026"}) == {"trades_2026"}
