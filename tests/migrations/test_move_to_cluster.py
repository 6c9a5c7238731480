"""A single node's book moved onto a cluster (docs/scale-out.md, "Moving a single-node database
onto a cluster"): the database is made and filled without Citus, then Citus is installed
around it and `stockledger migrate` places every table, rows included. Distributed tier only.

Before db/distribution.py copied the rows with the rules' triggers skipped and put the schema's
views and functions on the workers, this failed twice over: the copy into the shards ran the
triggers ("relation "clients" does not exist", then "seq is assigned by the database"), and a
batch on the moved book found no future_tolerance() on the workers.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stockledger.audit.verify import verify
from stockledger.db import distribution, migrations
from stockledger.db.pool import connect
from tests.support import CitusServer, Server, buy, ledger_snapshot, make_world

pytestmark = pytest.mark.citus


def create(node: str, name: str, *, citus: bool) -> str:
    with psycopg.connect(node, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(node, dbname=name)
    if citus:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
    return url


def host_port(url: str) -> list[Any]:
    info = conninfo_to_dict(url)
    return [info["host"], int(str(info["port"]))]


def refused_code(conn: psycopg.Connection[Any], statement: str, params: list[Any]) -> str | None:
    try:
        conn.execute(statement, params).fetchall()
    except psycopg.Error as error:
        return error.sqlstate
    return None


def test_a_single_node_book_moves_onto_the_cluster(pg_server: Server, cluster: bool) -> None:
    if not cluster:
        pytest.skip("a cluster's placement: the distributed tier (pytest -m citus)")
    assert isinstance(pg_server, CitusServer)
    coordinator, *workers = pg_server.node_urls
    name = f"sl_move_{uuid.uuid4().hex[:8]}"
    try:
        # The single node: the coordinator's server, a database without the extension.
        url = create(coordinator, name, citus=False)
        with connect(url) as conn:
            migrations.migrate(conn)
            assert not distribution.citus_present(conn)
            world = make_world(conn)
            for quantity in (5, 7, 11):
                buy(conn, world.account, world.broker_a, "MSFT", quantity)
            conn.execute(
                "SELECT count(*) FROM trade_batch(%s, %s, %s, %s, %s, %s)",
                [world.broker_a, [world.account] * 2, ["MSFT", "AAPL"], ["sell", "sell"],
                 [3, 10], [10, 10]],
            )  # fmt: skip
            before = ledger_snapshot(conn)

        # The cluster around it: the extension on every node, the workers added, migrate.
        for worker in workers:
            create(worker, name, citus=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)", host_port(coordinator))
            for worker in workers:
                conn.execute("SELECT citus_add_node(%s, %s)", host_port(worker))
        with connect(url) as conn:
            migrations.migrate(conn)
            placed = conn.execute("SELECT count(*) FROM pg_dist_partition").fetchone()
            assert placed == (len(distribution.PER_ACCOUNT) + len(distribution.REFERENCE),)
            assert ledger_snapshot(conn) == before
            assert all(check.holds for check in verify(conn))

            # The rules hold on the moved book, by every path.
            buy(conn, world.account, world.broker_a, "MSFT", 1)
            oversell = [world.account, world.broker_a, "MSFT", "sell", 10**6, 10]
            assert refused_code(conn, "SELECT * FROM trade(%s, %s, %s, %s, %s, %s)", oversell) == (
                "SL001"
            )
            batch = [world.broker_a, [world.account] * 2, ["MSFT", "MSFT"], ["buy", "sell"],
                     [1, 10**6], [10, 10]]  # fmt: skip
            statement = "SELECT count(*) FROM trade_batch(%s, %s, %s, %s, %s, %s)"
            assert refused_code(conn, statement, batch) == "SL001"
            assert all(check.holds for check in verify(conn))
    finally:
        pg_server.drop_database(name)
