"""A migration that cannot take its locks steps aside instead of stalling trading.

ALTER TABLE trades needs ACCESS EXCLUSIVE. Queued behind a long transaction (here: one that has
read trades and stays open), a migration without a lock timeout holds every trade behind it
in the lock queue until that transaction ends. With migrate()'s lock policy it waits at most
its short timeout per attempt, retries a bounded number of times, and gives up having changed
nothing, while trades go on. The control shows the stall without the policy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from stockledger.db import migrations
from stockledger.db.migrations import LockPolicy, Migration
from stockledger.db.pool import connect
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest
from tests.support import World, in_background, scalar, wait_until_blocked_by

PROBE = Migration(
    version=migrations.latest_version() + 1,
    name="lock_probe",
    sql="ALTER TABLE trades ADD COLUMN lock_probe integer",
)


@contextmanager
def long_reader(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A transaction that has read trades and stays open (a report, an idle psql session)."""
    with connect(db_url) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT count(*) FROM trades")
        yield holder
        holder.execute("COMMIT")


def buy_one(conn: psycopg.Connection[Any], world: World) -> None:
    request = TradeRequest(
        account_id=world.account,
        broker_id=world.broker_a,
        symbol="AAPL",
        side="buy",
        quantity=Decimal(1),
        price=Decimal("10"),
    )
    trades.execute_trade(conn, request)


def trading_connection(db_url: str, lock_timeout_ms: int) -> psycopg.Connection[Any]:
    # The application's sessions carry a lock_timeout (2 s by default) of their own.
    return psycopg.connect(db_url, autocommit=True, options=f"-c lock_timeout={lock_timeout_ms}")


def test_a_blocked_migration_gives_up_and_trading_goes_on(
    conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    policy = LockPolicy(timeout_seconds=0.1, attempts=6, pause_seconds=0.05)
    latencies: list[float] = []
    with (
        long_reader(db_url),
        connect(db_url) as migrator,
        trading_connection(db_url, 2000) as trader,
    ):
        thread, outcome = in_background(
            lambda: migrations.migrate(
                migrator, locks=policy, migrations=[*migrations.available(), PROBE]
            )
        )
        while thread.is_alive():
            started = time.monotonic()
            buy_one(trader, world)
            latencies.append(time.monotonic() - started)
        thread.join()
    error = outcome.get("error")
    assert isinstance(error, StockledgerError), outcome
    assert error.code == ErrorCode.SERVICE_UNAVAILABLE and "lock_probe" in error.detail
    assert len(latencies) >= 10, latencies
    # A trade waits behind the migration at most one lock timeout (0.1 s), never the reader.
    assert max(latencies) < 1.0, max(latencies)
    assert PROBE.version not in migrations.applied_versions(conn)
    assert scalar(conn, "SELECT count(*) FROM pg_attribute WHERE attname = 'lock_probe'") == 0


def test_a_migration_retried_after_the_reader_ends_is_applied(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    policy = LockPolicy(timeout_seconds=0.1, attempts=50, pause_seconds=0.05)
    with connect(db_url) as migrator:
        with long_reader(db_url):
            thread, outcome = in_background(
                lambda: migrations.migrate(
                    migrator, locks=policy, migrations=[*migrations.available(), PROBE]
                )
            )
            time.sleep(0.5)  # several attempts time out meanwhile
            assert thread.is_alive()
        thread.join(timeout=30)
    assert outcome.get("value") == [PROBE], outcome
    assert PROBE.version in migrations.applied_versions(conn)


def test_control_without_a_lock_timeout_the_migration_stalls_trading(
    conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    no_timeout = LockPolicy(timeout_seconds=None, attempts=1)
    with (
        connect(db_url) as migrator,
        trading_connection(db_url, 500) as trader,
    ):
        with long_reader(db_url) as holder:
            thread, outcome = in_background(
                lambda: migrations.migrate(
                    migrator, locks=no_timeout, migrations=[*migrations.available(), PROBE]
                )
            )
            wait_until_blocked_by(conn, migrator.info.backend_pid, holder.info.backend_pid)
            # The trade queues behind the waiting migration, not behind the reader it
            # does not conflict with, and times out there: trading has stopped.
            with pytest.raises(StockledgerError) as stalled:
                buy_one(trader, world)
            assert stalled.value.code == ErrorCode.SERVICE_UNAVAILABLE
            assert thread.is_alive()
        thread.join(timeout=30)
    assert outcome.get("value") == [PROBE], outcome
