"""No request hangs: database lock and statement timeouts answer problem+json 503."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask

from stockledger.config import Settings
from stockledger.db.pool import connect
from stockledger.http.app import create_app
from tests.support import World, bearer, ledger_snapshot

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


@pytest.fixture
def impatient_app(db_url: str, app_db_url: str) -> Any:
    app: Flask = create_app(
        Settings(
            database_url=db_url,
            data_dir=Path("/x"),
            lock_timeout_seconds=0.3,
            statement_timeout_seconds=1.0,
        ),
        database_url=app_db_url,
    )
    yield app
    app.extensions["stockledger.db"].close()


def test_trade_behind_a_held_account_lock_answers_503_quickly(
    impatient_app: Flask, db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    before = ledger_snapshot(conn)
    with connect(db_url) as operator, operator.transaction():
        # An operator's transaction sits on the account row.
        operator.execute("SELECT 1 FROM accounts WHERE account_id = %s FOR UPDATE", [world.account])
        started = time.monotonic()
        response = impatient_app.test_client().post(
            "/trade",
            json={
                "account_id": world.account,
                "symbol": "AAPL",
                "side": "sell",
                "quantity": 1,
                "price": "1",
            },
            headers=bearer(world.key_a),
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 503, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "service_unavailable"
    assert response.headers["Retry-After"]
    assert elapsed < 2.0
    assert ledger_snapshot(conn) == before


def test_sessions_carry_the_timeouts(impatient_app: Flask) -> None:
    with impatient_app.extensions["stockledger.db"].connection() as c:
        assert c.execute("SHOW lock_timeout").fetchone() == ("300ms",)
        assert c.execute("SHOW statement_timeout").fetchone() == ("1s",)


def test_without_the_lock_timeout_the_same_request_would_wait(
    db_url: str, app_db_url: str, world: World
) -> None:
    """The control: with no lock_timeout the trade blocks behind the lock (cut short here by
    the statement timeout), so the 503 above comes from the lock timeout."""
    with connect(db_url) as operator, operator.transaction():
        operator.execute("SELECT 1 FROM accounts WHERE account_id = %s FOR UPDATE", [world.account])
        with psycopg.connect(
            app_db_url, autocommit=True, options="-c statement_timeout=700"
        ) as app:
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as caught:
                app.execute(
                    "SELECT * FROM trade(%s, %s, 'AAPL', 'sell', 1, 1)",
                    [world.account, world.broker_a],
                )
            assert caught.value.sqlstate == "57014"
            assert time.monotonic() - started >= 0.6
