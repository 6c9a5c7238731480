"""Each trade is one shard (SPEC §1.3, issue 14), shown with Citus's own tooling: EXPLAIN of
the coordinator's plan, and pg_stat_statements on the workers for what actually ran there.

A single trade, a holdings read and a batch of one account each run on one worker only, and
touch only the account's shard group (its shards of accounts, trades, positions and
idempotency_keys) besides the reference tables' copies. On one PostgreSQL there is nothing to
show: these tests run in the distributed tier only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stockledger.db.distribution import PER_ACCOUNT
from stockledger.db.queries import query
from tests.support import CitusServer, Server, World

pytestmark = pytest.mark.citus

_SHARD = re.compile(r"\b[a-z_]+?_(1[0-9]{5,})\b")


@pytest.fixture
def workers(
    cluster: bool, pg_server: Server, db_url: str, conn: psycopg.Connection[Any]
) -> list[str]:
    """The workers' URLs for this test's database, with pg_stat_statements ready."""
    if not cluster:
        pytest.skip("a cluster's placement: the distributed tier (pytest -m citus)")
    assert isinstance(pg_server, CitusServer)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # on every node
    dbname = conninfo_to_dict(db_url)["dbname"]
    return [make_conninfo(node, dbname=dbname) for node in pg_server.node_urls[1:]]


def shards_touched(workers: list[str], work: Callable[[], Any]) -> list[set[int]]:
    """Per worker, the shards named by the statements it ran during ``work``."""
    for worker in workers:
        with psycopg.connect(worker, autocommit=True) as w:
            w.execute("SELECT pg_stat_statements_reset()")
    work()
    touched = []
    for worker in workers:
        with psycopg.connect(worker, autocommit=True) as w:
            rows = w.execute(
                "SELECT query FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        touched.append({int(shard) for (text,) in rows for shard in _SHARD.findall(text)})
    return touched


def shard_group(conn: psycopg.Connection[Any], account: int) -> set[int]:
    """The account's shard of every per-account table, and every reference table's shard."""
    rows = conn.execute(
        "SELECT get_shard_id_for_distribution_column(t, %s) FROM unnest(%s::regclass[]) t "
        "UNION SELECT shardid FROM pg_dist_shard s JOIN pg_dist_partition p USING (logicalrelid) "
        "WHERE p.partmethod = 'n'",
        [account, list(PER_ACCOUNT)],
    ).fetchall()
    return {row[0] for row in rows}


def on_one_worker(touched: list[set[int]], allowed: set[int]) -> bool:
    busy = [shards for shards in touched if shards]
    return len(busy) == 1 and busy[0] <= allowed


def test_control_work_on_every_account_is_seen_on_both_workers(
    conn: psycopg.Connection[Any], world: World, workers: list[str]
) -> None:
    # The measurement can fail: a read of every position runs on every shard, on both workers.
    touched = shards_touched(
        workers, lambda: conn.execute("SELECT count(*) FROM positions").fetchall()
    )
    assert all(touched) and not on_one_worker(touched, shard_group(conn, world.account))


def test_a_single_trade_is_one_task_on_one_worker(
    conn: psycopg.Connection[Any], world: World, workers: list[str]
) -> None:
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            "EXPLAIN (COSTS OFF) SELECT * FROM trade(%s, %s, 'AAPL', 'sell', 1, 10)",
            [world.account, world.broker_a],
        ).fetchall()
    )
    assert "Task Count: 1" in plan, plan  # the call is handed to the account's worker whole
    touched = shards_touched(
        workers,
        lambda: conn.execute(
            query("trade"),
            {
                "account_id": world.account,
                "broker_id": world.broker_a,
                "symbol": "AAPL",
                "side": "sell",
                "quantity": 1,
                "price": 10,
                "executed_at": None,
                "client_order_id": None,
                "fee": 0,
                "lots": None,
            },
        ),
    )
    assert on_one_worker(touched, shard_group(conn, world.account)), touched


def test_a_holdings_read_is_one_task_on_one_worker(
    conn: psycopg.Connection[Any], world: World, workers: list[str]
) -> None:
    params = {"account_id": world.account, "broker_id": world.broker_a}
    statement = query("account_holdings")
    plan = "\n".join(
        row[0] for row in conn.execute("EXPLAIN (COSTS OFF) " + statement, params).fetchall()
    )
    assert "Task Count: 1" in plan, plan
    touched = shards_touched(workers, lambda: conn.execute(statement, params).fetchall())
    assert on_one_worker(touched, shard_group(conn, world.account)), touched


def test_a_batch_of_one_account_runs_on_one_worker(
    conn: psycopg.Connection[Any], world: World, workers: list[str]
) -> None:
    batch = {
        "broker_id": world.broker_a,
        "account_ids": [world.account] * 3,
        "symbols": ["MSFT", "AAPL", "MSFT"],
        "sides": ["buy", "sell", "sell"],
        "quantities": [5, 1, 2],
        "prices": [10, 10, 10],
        "executed_ats": None,
        "client_order_ids": None,
        "fees": None,
    }
    touched = shards_touched(workers, lambda: conn.execute(query("trade_batch"), batch).fetchall())
    assert on_one_worker(touched, shard_group(conn, world.account)), touched
