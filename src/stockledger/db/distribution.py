"""Placing the schema on a Citus cluster (SPEC §1.3); on plain PostgreSQL nothing happens.

Every table of an account — keyed and uniquely constrained with ``account_id`` — is distributed
by it, all colocated, so that one account's rows (its row, trades, positions, idempotency
claims) share one shard group on one worker. The tables every account refers to are reference
tables, copied to every node. Each table of the schema is in exactly one list: a new table
without a placement makes ``distribute`` fail at once instead of staying local by accident.

Citus refuses to distribute a table that a foreign key already ties to a local table, and
refuses triggers unless told they are intended; so the foreign keys are dropped, the tables
placed (per-account tables first), and the same foreign keys added back, in one transaction.
docs/scale-out.md says what a trigger on a shard may and may not do.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from stockledger.db.boundary import translated

DISTRIBUTION_COLUMN = "account_id"
PER_ACCOUNT = (
    "accounts",
    "account_holders",
    "trades",
    "positions",
    "idempotency_keys",
    "lots",
    "lot_closures",
    "cash_movements",
)
REFERENCE = ("clients", "brokers", "stocks", "stock_prices", "tax_identities", "broker_keys")
# Tables that stay on the coordinator alone.
COORDINATOR_ONLY = ("schema_migrations",)
SHARD_SUFFIX = re.compile(r"_[0-9]+$")
# Functions that work on one account, by the argument that names it: the coordinator hands a
# call to the worker that holds the account's shards, which runs all of it there (one hop,
# no statement of it crossing the network; Citus's function call delegation).
DELEGATED = {
    "trade(bigint, bigint, text, text, numeric, numeric, timestamptz, text, numeric, jsonb)": (
        "p_account_id"
    ),
    "trade_idempotent(text, bytea, bigint, bigint, text, text, numeric, numeric, timestamptz, "
    "text, numeric, jsonb)": "p_account_id",
    "move_cash(bigint, text, numeric, text, text, bytea)": "p_account_id",
}


def citus_present(conn: psycopg.Connection[Any]) -> bool:
    with translated():
        row = conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')")
        found = row.fetchone()
    return bool(found and found[0])


def session_settings(conn: psycopg.Connection[Any]) -> None:
    """For a migrating session on a cluster: triggers on distributed tables are intended (the
    rules live in them), and DDL on tables with foreign keys to reference tables runs over one
    connection per node."""
    with translated():
        conn.execute("SET citus.enable_unsafe_triggers = on")
        conn.execute("SET citus.multi_shard_modify_mode = 'sequential'")


def unplaced_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables of the schema that no list here names."""
    named = set(PER_ACCOUNT) | set(REFERENCE) | set(COORDINATOR_ONLY)
    with translated():
        rows = conn.execute(
            "SELECT relname FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') "
            "ORDER BY relname"
        ).fetchall()
    return [row[0] for row in rows if row[0] not in named]


def shard_like(tables: list[str]) -> list[str]:
    """Names a shard's could be mistaken for: a trigger on a shard names its table by dropping
    the shard's suffix (``accounts_102009``), so no table may end in an underscore and digits."""
    return [table for table in tables if SHARD_SUFFIX.search(table)]


def distribute(conn: psycopg.Connection[Any]) -> list[str]:
    """Place every table not placed yet, and delegate the per-account functions; return the
    tables placed now."""
    placed = place_tables(conn)
    propagate_definitions(conn)
    delegate_functions(conn)
    let_writers_lock_reference_shards(conn)
    return placed


def let_writers_lock_reference_shards(conn: psycopg.Connection[Any]) -> None:
    """Before a write to a reference table, Citus locks its shard and those of every reference
    table its foreign keys reach (brokers → tax_identities) on the first worker, through a
    function that asks the writer for a table-wide write privilege on each: the application
    role, which may update only brokers.status and may not write tax_identities at all, is
    refused (42501). Those checks are skipped for this database, on every node (Citus
    propagates the setting): its privileges stay as narrow as on one PostgreSQL, and what a
    user of this database could do in exchange is take those locks, not change data."""
    with translated():
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET citus.skip_advisory_lock_permission_checks = on").format(
                sql.Identifier(name[0])
            )
        )


def propagate_definitions(conn: psycopg.Connection[Any]) -> None:
    """Put every view and function of the schema on the workers too, where the rules' triggers
    and the delegated functions run. Made while Citus was installed, they are there already;
    made before (a single node's database moved onto a cluster), Citus leaves them on the
    coordinator: a view is declared again (Citus then propagates it), a function is handed to
    create_distributed_function()."""
    with translated(), conn.transaction():
        views = conn.execute(
            "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v' "
            "AND NOT EXISTS (SELECT FROM pg_dist_object d "
            "                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid) "
            "AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_class'::regclass "
            "                AND e.objid = c.oid AND e.deptype = 'e') "  # an extension's
            "ORDER BY c.oid"
        ).fetchall()
        for name, definition in views:
            # The definition is the catalog's own text (pg_get_viewdef), never input.
            conn.execute(
                sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(
                    sql.Identifier(name), sql.SQL(definition.rstrip().rstrip(";"))
                )
            )
        functions = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "WHERE p.pronamespace = 'public'::regnamespace "
            "AND NOT EXISTS (SELECT FROM pg_dist_object d "
            "                WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid) "
            "AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass "
            "                AND e.objid = p.oid AND e.deptype = 'e') "
            "ORDER BY p.oid"
        ).fetchall()
        if functions:
            # In creation order, a SQL function may come before one its body calls (0013's
            # open_account(bigint, bigint) calls the joint form, made later): the workers check
            # no body, as pg_dump's restore does not.
            conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            conn.execute("SET LOCAL check_function_bodies = off")
        for (signature,) in functions:
            conn.execute("SELECT create_distributed_function(%s::regprocedure)", [signature])


def delegate_functions(conn: psycopg.Connection[Any]) -> None:
    """Distribute each function of DELEGATED by its account argument (again after a migration
    replaced it: CREATE OR REPLACE keeps the distribution)."""
    with translated():
        for signature, argument in DELEGATED.items():
            if conn.execute("SELECT to_regprocedure(%s)", [signature]).fetchone() == (None,):
                continue  # not made yet (an earlier migration's placement)
            row = conn.execute(
                "SELECT distribution_argument_index FROM pg_dist_object "
                "WHERE classid = 'pg_proc'::regclass AND objid = %s::regprocedure",
                [signature],
            ).fetchone()
            if row is None or row[0] is None:
                conn.execute(
                    "SELECT create_distributed_function(%s::regprocedure, %s, colocate_with => %s)",
                    [signature, argument, PER_ACCOUNT[0]],
                )


def holds_rows(conn: psycopg.Connection[Any], tables: list[str]) -> bool:
    return any(
        conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(t))).fetchone()
        == (True,)
        for t in tables
    )


def citus_local(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = %s::regclass)", [table]
    ).fetchone()
    return bool(row and row[0])


def place_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Place every table not placed yet; return the tables placed now."""
    unplaced = unplaced_tables(conn)
    if unplaced:
        raise RuntimeError(
            f"no placement is defined for {', '.join(unplaced)} (db/distribution.py)"
        )
    misleading = shard_like([*PER_ACCOUNT, *REFERENCE])
    if misleading:
        raise RuntimeError(f"{', '.join(misleading)}: a table name may not end like a shard's")
    with translated():
        existing = {
            row[0]
            for row in conn.execute(
                "SELECT relname FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
            ).fetchall()
        }
        # As its list says: hash-distributed, or a reference table. A table a migration made
        # on a running cluster with a foreign key to a reference table is a Citus local table
        # until it is placed.
        placed = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT logicalrelid::regclass::text, "
                "CASE WHEN partmethod = 'h' THEN 'distributed' "
                "     WHEN repmodel = 't' THEN 'reference' ELSE 'local' END "
                "FROM pg_dist_partition"
            ).fetchall()
        }
        pending = [
            t
            for t, kind in [
                *((t, "distributed") for t in PER_ACCOUNT),
                *((t, "reference") for t in REFERENCE),
            ]
            if t in existing and placed.get(t) != kind
        ]
        if not pending:
            return []
        with conn.transaction():
            # Those of the tables placed now (from or to them): the placed ones keep theirs.
            foreign_keys = conn.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE contype = 'f' "
                "AND connamespace = 'public'::regnamespace "
                "AND (conrelid::regclass::text = ANY (%(pending)s) "
                "     OR confrelid::regclass::text = ANY (%(pending)s)) "
                "ORDER BY conrelid, conname",
                {"pending": pending},
            ).fetchall()
            for table, name, _ in foreign_keys:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                )
            if holds_rows(conn, pending):
                # A single node's book, moved onto the cluster (docs/scale-out.md): Citus copies
                # each table's rows into its shards, where the rules' triggers would take them
                # for new trades (and refuse a stored seq). They were checked when written
                # (`stockledger verify` first); the copy, on every node, skips the triggers.
                # Superuser only, so not asked of a fresh cluster.
                conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
                conn.execute("SET LOCAL session_replication_role = replica")
            for table in pending:
                if (
                    placed.get(table) == "local"
                    and table in PER_ACCOUNT
                    and citus_local(conn, table)
                ):
                    # A Citus local table becomes a plain one again before it is distributed.
                    # (One Citus made for its foreign keys to reference tables is plain again
                    # already: it undoes its own conversion when those keys are dropped.)
                    conn.execute("SELECT undistribute_table(%s)", [table])
            for table in PER_ACCOUNT:
                if table in pending:
                    colocate = "default" if table == PER_ACCOUNT[0] else PER_ACCOUNT[0]
                    conn.execute(
                        "SELECT create_distributed_table(%s, %s, colocate_with => %s)",
                        [table, DISTRIBUTION_COLUMN, colocate],
                    )
            for table in REFERENCE:
                if table in pending:
                    conn.execute("SELECT create_reference_table(%s)", [table])
            for table, name, definition in foreign_keys:
                # The definition is the catalog's own text (pg_get_constraintdef), never input.
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
                    )
                )
    return pending
