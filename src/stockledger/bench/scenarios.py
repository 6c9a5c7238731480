"""One function per scenario; each returns plain figures (dicts of numbers) for the report."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from stockledger.bench import data, pgbench
from stockledger.bench.servers import PGBENCH_DB, BenchServer
from stockledger.db.pool import connect
from stockledger.db.queries import query


@dataclass(frozen=True)
class Plan:
    """How big and how long: the full run, or --quick (a smoke test, figures not meaningful)."""

    clients: tuple[int, ...]
    seconds: int
    pgbench_scale: int
    accounts: int
    brokers: int
    big_history: int
    small_history: int
    filler_history: int
    batches: int
    batch_size: int
    # The function's large batches: the size of the per-row reference in docs/benchmarks.md.
    large_batches: int
    large_batch_size: int
    samples: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            clients=(1, 4, 16),
            seconds=15,
            pgbench_scale=16,
            accounts=1000,
            brokers=10,
            big_history=1_000_000,
            small_history=1_000,
            filler_history=1_000_000,
            batches=100,
            batch_size=1000,
            large_batches=10,
            large_batch_size=10_000,
            samples=400,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            clients=(1, 4),
            seconds=2,
            pgbench_scale=1,
            accounts=100,
            brokers=4,
            big_history=20_000,
            small_history=1_000,
            filler_history=5_000,
            batches=5,
            batch_size=1000,
            large_batches=1,
            large_batch_size=2000,
            samples=50,
        )


def db_ceiling(server: BenchServer, plan: Plan) -> list[dict[str, Any]]:
    """pgbench's own tpcb-like transaction: the reference every ratio divides by."""
    url = server.fresh_database(PGBENCH_DB)
    try:
        pgbench.initialize(url, plan.pgbench_scale)
        return [
            asdict(pgbench.run(url, c, plan.seconds, builtin="tpcb-like")) for c in plan.clients
        ]
    finally:
        server.drop_database(PGBENCH_DB)


def db_trade(url: str, plan: Plan) -> list[dict[str, Any]]:
    """trade() from pgbench: random accounts, 60% buys, 40% sells of which some are refused."""
    variables = {"accounts": plan.accounts, "brokers": plan.brokers}
    runs = []
    for clients in plan.clients:
        with connect(url) as conn:
            before = count_rows(conn, "SELECT count(*) FROM trades")
        run = pgbench.run(
            url,
            clients,
            plan.seconds,
            scripts={"buy.sql": 60, "sell.sql": 40},
            variables=variables,
        )
        with connect(url) as conn:
            executed = count_rows(conn, "SELECT count(*) FROM trades") - before
        runs.append({**asdict(run), "refused_sells": run.transactions - executed})
    return runs


def hot_account(url: str, plan: Plan) -> dict[str, Any]:
    """Every client on account 1: the account lock serializes them; refusals are expected
    (sells of an emptied position), errors are not."""
    clients = max(plan.clients)
    run = pgbench.run(url, clients, plan.seconds, scripts={"hot_buy.sql": 50, "hot_sell.sql": 50})
    return asdict(run)


def batch(url: str, plan: Plan, count: int, size: int) -> dict[str, Any]:
    """trade_batch() with ``count`` batches of ``size`` trades over random accounts of broker
    1, every rule checked per trade; trades per second at the database, including the round
    trip."""
    own = list(range(1, plan.accounts + 1, plan.brokers))  # broker 1's accounts
    rng = random.Random(7)
    batches = []
    for _ in range(count):
        accounts = [rng.choice(own) for _ in range(size // 2)]
        symbols = [rng.choice(data.SYMBOLS) for _ in accounts]
        # Each buy is followed, later in the batch, by a smaller sell of the same position.
        batches.append(
            (
                accounts + accounts,
                symbols + symbols,
                ["buy"] * len(accounts) + ["sell"] * len(accounts),
                [10] * len(accounts) + [5] * len(accounts),
                [100] * (2 * len(accounts)),
            )
        )
    # Array literals are written before the clock starts: the figure is the database's
    # (parsing the arrays included), not the Python driver's adaptation of 5,000 values.
    literals = [[_array_literal(column) for column in columns] for columns in batches]
    with connect(url) as conn:
        started = time.perf_counter()
        for params in literals:
            conn.execute(
                "SELECT count(*) FROM trade_batch(1, %s::bigint[], %s::text[], %s::text[], "
                "%s::bigint[], %s::numeric[])",
                params,
            )
        elapsed = time.perf_counter() - started
    trades = count * size
    return {
        "batch_size": size,
        "batches": count,
        "trades": trades,
        "seconds": elapsed,
        "trades_per_second": trades / elapsed,
    }


def holdings_accounts(plan: Plan) -> tuple[int, int]:
    """The account with the long history and the one with the short, both broker 1's."""
    return 1, 1 + plan.brokers


def holdings_flatness(url: str, plan: Plan) -> dict[str, Any]:
    """p50 of the holdings read (positions) and of the portfolio read (the account's cash and
    its positions' maintained cost and realized figures) for an account with a long history
    against one with a short history, and the same for the holds view computed from the
    ledger."""
    big, small = holdings_accounts(plan)
    filler = 1 + 2 * plan.brokers
    started = time.perf_counter()
    with connect(url) as conn:
        data.grow_history(conn, big, 1, plan.big_history)
        data.grow_history(conn, small, 1, plan.small_history)
        data.grow_history(conn, filler, 1, plan.filler_history)
        # What the load changed, as autovacuum would have in the time a real book took to grow:
        # every trade also rewrote its account's row (cash, latest trade) and its lots.
        for table in ("trades", "positions", "accounts", "lots", "lot_closures"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        loaded = time.perf_counter() - started
        counts = dict(
            conn.execute(data.statement("trade_counts"), {"accounts": [big, small]}).fetchall()
        )
        total = count_rows(conn, "SELECT count(*) FROM trades")

        def holdings(account: int) -> Callable[[], Any]:
            params = {"account_id": account, "broker_id": None}
            return lambda: conn.execute(query("account_holdings"), params).fetchall()

        def portfolio(account: int) -> Callable[[], Any]:
            params = {"account_id": account, "broker_id": None}
            return lambda: conn.execute(query("account_portfolio"), params).fetchall()

        def holds(account: int) -> Callable[[], Any]:
            params = {"account_id": account}
            return lambda: conn.execute(data.statement("holds_of"), params).fetchall()

        positions_big = p50_ms(holdings(big), plan.samples)
        positions_small = p50_ms(holdings(small), plan.samples)
        portfolio_big = p50_ms(portfolio(big), plan.samples)
        portfolio_small = p50_ms(portfolio(small), plan.samples)
        holds_big = p50_ms(holds(big), max(5, plan.samples // 40))
        holds_small = p50_ms(holds(small), plan.samples)
    return {
        "ledger_trades": total,
        "big_account_trades": counts.get(big, 0),
        "small_account_trades": counts.get(small, 0),
        "load_seconds": loaded,
        "positions_p50_ms": {"big": positions_big, "small": positions_small},
        "positions_ratio": positions_big / positions_small,
        "portfolio_p50_ms": {"big": portfolio_big, "small": portfolio_small},
        "portfolio_ratio": portfolio_big / portfolio_small,
        "holds_view_p50_ms": {"big": holds_big, "small": holds_small},
        "holds_view_ratio": holds_big / holds_small,
    }


def _array_literal(values: list[Any]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


def p50_ms(call: Callable[[], Any], samples: int) -> float:
    call()  # warm the cache and the plan
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def count_rows(conn: psycopg.Connection[Any], sql: Any) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0
