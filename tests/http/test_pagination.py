"""Keyset pagination of GET /v1/accounts/{id}/trades: complete, ordered, stable under writes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from stockledger.db.pool import connect
from stockledger.trading import history
from stockledger.trading.requests import TradeFilters
from tests.support import World, as_caller, bearer

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

HISTORY = 2500


def fill_history(conn: psycopg.Connection[Any], world: World) -> None:
    """2,500 more trades on the account: AAPL and MSFT alternating, one in three a sell."""
    conn.execute(
        """
        SELECT trade(%(account)s, %(broker)s,
                     CASE WHEN i %% 2 = 1 THEN 'AAPL' ELSE 'MSFT' END,
                     CASE WHEN i %% 3 = 0 THEN 'sell' ELSE 'buy' END,
                     1, 10 + i %% 7)
        FROM generate_series(1, %(n)s) AS i
        """,
        {"account": world.account, "broker": world.broker_a, "n": HISTORY},
    )


def matching(conn: psycopg.Connection[Any], world: World, symbol: str, side: str) -> list[int]:
    rows = conn.execute(
        "SELECT seq FROM trades WHERE account_id = %s AND symbol = %s AND side = %s ORDER BY seq",
        [world.account, symbol, side],
    ).fetchall()
    return [seq for (seq,) in rows]


def walk(client: FlaskClient, account: int, first_query: str) -> list[dict[str, Any]]:
    trades: list[dict[str, Any]] = []
    url = f"/v1/accounts/{account}/trades?{first_query}"
    for _ in range(HISTORY):  # bounded: a pager that never ends fails instead of hanging
        response = client.get(url)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        trades.extend(page["trades"])
        if page["next_cursor"] is None:
            return trades
        url = f"/v1/accounts/{account}/trades?limit=97&cursor={page['next_cursor']}"
    raise AssertionError("the walk did not end")


def check_walk(trades: list[dict[str, Any]], existing: list[int], symbol: str, side: str) -> None:
    seqs = [t["seq"] for t in trades]
    assert seqs == sorted(set(seqs)), "out of order or repeated"
    assert all(t["symbol"] == symbol and t["side"] == side for t in trades), "filter lost"
    missing = set(existing) - set(seqs)
    assert not missing, f"{len(missing)} trades skipped"


def writer(
    db_url: str, world: World, stop: threading.Event, written: list[int]
) -> Callable[[], None]:
    def run() -> None:
        with connect(db_url) as conn:
            for i in range(2000):  # bounded
                if stop.is_set():
                    return
                symbol = "AAPL" if i % 2 else "MSFT"
                conn.execute(
                    "SELECT trade(%s, %s, %s, 'buy', 1, 10)",
                    [world.account, world.broker_a, symbol],
                )
                written.append(i)

    return run


def test_walking_all_pages_under_concurrent_inserts(
    client: FlaskClient, conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    fill_history(conn, world)
    existing = matching(conn, world, "AAPL", "buy")
    assert len(existing) > 800
    as_caller(client, world.key_a)
    stop = threading.Event()
    written: list[int] = []
    thread = threading.Thread(target=writer(db_url, world, stop, written))
    thread.start()
    try:
        trades = walk(client, world.account, "symbol=AAPL&side=buy&limit=97")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert written, "nothing was inserted during the walk"
    check_walk(trades, existing, "AAPL", "buy")
    # What the walk saw beyond the first snapshot can only be trades written during it.
    assert len(trades) - len(existing) <= len(written)


def test_a_pager_whose_cursor_forgets_the_filters_is_caught(
    client: FlaskClient,
    conn: psycopg.Connection[Any],
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the same walk and checks over a cursor that drops its filters."""
    fill_history(conn, world)
    existing = matching(conn, world, "AAPL", "buy")
    original = history.encode_cursor
    monkeypatch.setattr(
        history,
        "encode_cursor",
        lambda account, seq, _filters: original(account, seq, TradeFilters()),
    )
    trades = walk(as_caller(client, world.key_a), world.account, "symbol=AAPL&side=buy&limit=97")
    with pytest.raises(AssertionError, match="filter lost"):
        check_walk(trades, existing, "AAPL", "buy")


def test_time_window_and_lookup_by_client_order_id(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    as_caller(client, world.key_a)
    made = client.post(
        "/v1/trades",
        json={
            "account_id": world.account,
            "symbol": "MSFT",
            "side": "buy",
            "quantity": 3,
            "price": "400",
            "client_order_id": "ord-77",
        },
    ).get_json()["trade"]
    found = client.get(f"/v1/accounts/{world.account}/trades?client_order_id=ord-77").get_json()
    assert found == {"trades": [made], "next_cursor": None}
    since = made["executed_at"].replace("+00:00", "Z")
    window = client.get(f"/v1/accounts/{world.account}/trades?since={since}").get_json()
    assert [t["trade_id"] for t in window["trades"]] == [made["trade_id"]]
    before = client.get(f"/v1/accounts/{world.account}/trades?until={since}").get_json()
    assert made["trade_id"] not in [t["trade_id"] for t in before["trades"]]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=not*base64",
        "cursor=bm90IGpzb24",  # base64 of "not json"
        "side=hold",
        "since=yesterday",
        "since=2026-01-01T00:00:00",  # no offset
        "colour=blue",
    ],
)
def test_bad_page_queries_are_422(client: FlaskClient, world: World, query: str) -> None:
    response = client.get(
        f"/v1/accounts/{world.account}/trades?{query}", headers=bearer(world.key_a)
    )
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == "invalid_request"


def test_a_cursor_keeps_its_filters_and_its_account(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    fill_history(conn, world)
    as_caller(client, world.key_a)
    base = f"/v1/accounts/{world.account}/trades"
    first = client.get(f"{base}?symbol=AAPL&limit=10").get_json()
    cursor = first["next_cursor"]
    assert len(first["trades"]) == 10 and cursor
    # Repeating the filter is fine, changing it is not.
    assert client.get(f"{base}?symbol=AAPL&cursor={cursor}").status_code == 200
    changed = client.get(f"{base}?symbol=MSFT&cursor={cursor}")
    assert changed.status_code == 422
    default = client.get(f"{base}?cursor={cursor}").get_json()
    assert len(default["trades"]) == 100  # the limit is per request, default 100
    assert {t["symbol"] for t in default["trades"]} == {"AAPL"}
    # Another account's listing refuses it.
    mine_too = conn.execute(
        "SELECT account_id FROM open_account(%s, %s)",
        [world.owner, world.broker_a],
    ).fetchone()
    assert mine_too is not None
    other = client.get(f"/v1/accounts/{mine_too[0]}/trades?cursor={cursor}")
    assert other.status_code == 422
