"""PostgreSQL killed -9 (the postmaster and every process it started) over and over while
brokers trade through the API with idempotency keys: every acknowledged trade is in the ledger
exactly once.

Negative control: with synchronous_commit=off the same loop loses acknowledged trades, and the
audit reports it. (Retries without keys rarely duplicate here: a database killed between its
commit and its reply leaves a window of microseconds. The app crash test, whose window is the
whole of Flask's response, carries that control.)
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import psycopg
import pytest

from tests.faults.harness import (
    Audit,
    KillablePostgres,
    Outcomes,
    TradingClients,
    assert_books_conserved,
    audit,
    make_brokerage,
    serving,
)
from tests.faults.report import record

# A commit acknowledged before its WAL reaches the kernel: the WAL writer wakes every 10 s.
ASYNC_COMMIT = {"synchronous_commit": "off", "wal_writer_delay": "10s", "wal_buffers": "64MB"}


def crash_loop(
    tmp_path: Path,
    kills: int,
    clients: int,
    settings: dict[str, str] | None = None,
    use_keys: bool = True,
    seed: int = 1,
) -> tuple[Audit, Outcomes, KillablePostgres]:
    pg = KillablePostgres(tmp_path / "pg", settings)
    pg.start()
    try:
        brokerage = make_brokerage(pg, accounts=8)
        # The book is on disk before the first kill: with synchronous_commit=off (the
        # control) the setup itself was lost with the first kill, every later request failed
        # until the clients gave up (60 s), and the control measured a lost book rather than
        # lost acknowledged trades.
        with psycopg.connect(pg.server.admin_url(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        rng = random.Random(seed)
        with serving(brokerage, tmp_path / "serve.log") as (base, _server):
            traders = TradingClients(base, brokerage, clients, use_keys=use_keys)
            with traders:
                for _ in range(kills):
                    time.sleep(rng.uniform(0.2, 1.0))
                    pg.kill9()
                    time.sleep(rng.uniform(0.0, 0.3))
                    pg.restart()
                time.sleep(1.0)  # trading on a whole system again before the clients stop
            result = audit(brokerage, traders.outcomes)
        return result, traders.outcomes, pg
    finally:
        pg.stop()


def check_clean(name: str, result: Audit, outcomes: Outcomes, pg: KillablePostgres) -> None:
    record(name, kills=pg.kills, acknowledged=result.acknowledged, audit=result, outcomes=outcomes)
    assert pg.kills > 0 and result.acknowledged > 0
    assert outcomes.retries > 0, "no request was interrupted: the kills did not land"
    assert not outcomes.unknown, f"{len(outcomes.unknown)} requests never got a final answer"
    assert not outcomes.server_errors, outcomes.server_errors[:5]
    assert result.lost == [], f"acknowledged but lost: {result.lost[:10]}"
    assert result.duplicated == [], f"written twice: {result.duplicated[:10]}"
    assert result.refused_but_written == [] and result.wrong_trade == []
    assert result.verify_ok, result.verify_output
    assert_books_conserved(result)


def test_crash_loop_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result, outcomes, pg = crash_loop(tmp_path, kills=20, clients=16)
    check_clean("db crash loop", result, outcomes, pg)


@pytest.mark.slow
def test_crash_loop_long(tmp_path: Path) -> None:
    result, outcomes, pg = crash_loop(tmp_path, kills=100, clients=32, seed=2)
    check_clean("db crash loop (long)", result, outcomes, pg)


def test_control_async_commit_loses_acknowledged_trades(tmp_path: Path) -> None:
    result, outcomes, pg = crash_loop(tmp_path, kills=3, clients=16, settings=ASYNC_COMMIT)
    record("control: synchronous_commit=off", kills=pg.kills, audit=result, outcomes=outcomes)
    assert result.lost, "the audit did not see the trades synchronous_commit=off lost"
    # The book itself survived: what was lost is what was acknowledged after it.
    assert result.conservation["balances"] != "None"
