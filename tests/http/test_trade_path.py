"""The lean trade path answers exactly as the Flask app does.

Two databases start from the same template and get the same brokerage; one app has the trade
path on, the other off. The same requests go to each, in the same order, and their answers
must be equal byte for byte: status, headers, body (the execution time, the one value the two
databases cannot share, is compared for its shape only). The table covers what the path
answers itself (trades, replays, the database's refusals) and what it hands to the app
(malformed or invalid input, other credentials, query strings), and a spy shows which is which.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg.conninfo import make_conninfo

from stockledger.config import Settings
from stockledger.db.pool import connect
from stockledger.http import trade_path
from stockledger.http.app import create_app
from tests.support import ADMIN_TOKEN, Server, World, make_world

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

# A time, as an answer writes it (RFC 3339 in executed_at, PostgreSQL's form in a detail).
_TIME = re.compile(
    rb"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([+-][0-9:]+|Z)?"
)


Answer = tuple[str, list[tuple[str, str]], bytes]


@dataclass
class Side:
    app: Flask
    conn: psycopg.Connection[Any]
    world: World


@pytest.fixture
def sides(pg_server: Server, template_db: str, app_login: Any) -> Iterator[tuple[Side, Side]]:
    made: list[tuple[str, Flask, psycopg.Connection[Any]]] = []
    try:
        for on in (False, True):
            name = f"sl_path_{os.getpid()}_{int(on)}_{id(made)}"
            url = pg_server.create_database(name, template=template_db)
            app_url = make_conninfo(url, user=app_login.user, password=app_login.password)
            settings = Settings(
                database_url=url,
                data_dir=Path("/nonexistent"),
                admin_token=ADMIN_TOKEN,
                trade_path=on,
            )
            made.append((name, create_app(settings, database_url=app_url), connect(url)))
        yield tuple(Side(app, conn, make_world(conn)) for _, app, conn in made)  # type: ignore[misc]
    finally:
        for name, app, conn in made:
            conn.close()
            app.extensions["stockledger.db"].close()
            pg_server.drop_database(name)


def answer(side: Side, request: dict[str, Any]) -> Answer:
    w = side.world
    keys = {"A": w.key_a, "B": w.key_b, "admin": ADMIN_TOKEN, "none": None, "bad": w.key_a + "x"}
    headers = dict(request.get("headers", {}))
    token = keys[request.get("as", "A")]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = request.get("body")
    if isinstance(body, dict):
        body = json.dumps({**{"account_id": w.account, "symbol": "AAPL"}, **body})
    response = side.app.test_client().open(
        request.get("path", "/trade"),
        method=request.get("method", "POST"),
        data=body,
        headers=headers,
        content_type=request.get("content_type", "application/json"),
    )
    return response.status, sorted(response.headers.items()), response.get_data()


def normal(answer: Answer) -> Answer:
    """The answer with its times blanked (the two databases' clocks differ), and its
    Content-Length checked against its body (a time may have fewer digits on one side)."""
    status, headers, body = answer
    assert dict(headers).get("Content-Length") in (None, str(len(body))), answer
    kept = [(name, value) for name, value in headers if name != "Content-Length"]
    return status, kept, _TIME.sub(b"TIME", body)


def same(off: Answer, on: Answer) -> bool:
    """Equal answers: byte for byte, but for the times in them."""
    return normal(off) == normal(on)


BUY = {"side": "buy", "quantity": 5, "price": "10.25"}
REQUESTS: list[tuple[str, dict[str, Any], bool]] = [
    # (what, request, answered by the trade path itself)
    ("a buy", {"body": BUY}, True),
    ("a buy on /v1/trades", {"path": "/v1/trades", "body": BUY}, True),
    ("a sell with a JSON number price", {"body": {**BUY, "side": "sell", "price": 9.5}}, True),
    ("a client order id", {"body": {**BUY, "client_order_id": "ORD-1"}}, True),
    ("the client order id again", {"body": {**BUY, "client_order_id": "ORD-1"}}, True),
    ("an idempotent buy", {"body": BUY, "headers": {"Idempotency-Key": "k1"}}, True),
    ("its replay", {"body": BUY, "headers": {"Idempotency-Key": "k1"}}, True),
    (
        "the key reused",
        {"body": {**BUY, "quantity": 6}, "headers": {"Idempotency-Key": "k1"}},
        True,
    ),
    ("an oversell", {"body": {**BUY, "side": "sell", "quantity": 10_000}}, True),
    ("an unknown stock", {"body": {**BUY, "symbol": "NOPE"}}, True),
    ("an inactive stock", {"body": {**BUY, "symbol": "OLD"}}, True),
    ("another broker's account", {"body": {**BUY, "account_id": 2}}, True),
    ("a missing account", {"body": {**BUY, "account_id": 99_999}}, True),
    (
        "a backfill before the latest trade",
        {"body": {**BUY, "executed_at": "2001-01-01T00:00:00Z"}},
        True,
    ),
    ("the broker_id of the key", {"body": {**BUY, "broker_id": 1}}, True),
    ("another broker_id", {"body": {**BUY, "broker_id": 2}}, False),
    ("a price with 5 places", {"body": {**BUY, "price": "1.00001"}}, False),
    ("an unknown field", {"body": {**BUY, "colour": "red"}}, False),
    ("a bad Idempotency-Key", {"body": BUY, "headers": {"Idempotency-Key": "a b"}}, False),
    ("duplicate keys", {"body": '{"account_id": 1, "account_id": 2}'}, False),
    ("malformed JSON", {"body": '{"account_id": '}, False),
    ("a JSON array", {"body": "[1, 2]"}, False),
    ("NaN", {"body": '{"price": NaN}'}, False),
    ("text/plain", {"body": BUY, "content_type": "text/plain"}, False),
    (
        "JSON with a charset",
        {"body": BUY, "content_type": "application/json; charset=utf-8"},
        False,
    ),
    ("a query string", {"path": "/trade?x=1", "body": BUY}, False),
    ("no credentials", {"body": BUY, "as": "none"}, False),
    ("a wrong key", {"body": BUY, "as": "bad"}, False),
    ("the admin token", {"body": BUY, "as": "admin"}, False),
    ("GET /trade", {"method": "GET", "body": None}, False),
    ("an empty body", {"body": ""}, False),
]


def test_the_trade_path_answers_as_the_app_does(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    off, on = sides
    # The other broker's account is account 2 on both sides; the world's ids agree.
    assert (off.world.account, off.world.other_account) == (on.world.account, 2)
    taken: list[str] = []
    original = trade_path.TradePath._execute

    def spy(self: trade_path.TradePath, *args: Any) -> Any:
        taken.append(current)
        return original(self, *args)

    monkeypatch.setattr(trade_path.TradePath, "_execute", spy)
    # A key is taken by the path once this process has seen it pass.
    for side in sides:
        assert (
            answer(side, {"method": "GET", "path": "/getHoldings?account_id=1", "body": None})[0]
            == "200 OK"
        )
    for what, request, by_path in REQUESTS:
        current = what
        expected, got = answer(off, request), answer(on, request)
        assert same(expected, got), (what, expected, got)
        assert (what in taken) == by_path, what
    # A revoked key, known to the process: the trade's own statement refuses it.
    for side in sides:
        side.conn.execute(
            "UPDATE broker_keys SET revoked_at = now() WHERE broker_id = %s", [side.world.broker_a]
        )
    current = "a revoked key"
    expected, got = answer(off, {"body": BUY}), answer(on, {"body": BUY})
    assert expected[0] == "401 UNAUTHORIZED" and same(expected, got), (expected, got)
    assert "a revoked key" in taken


def test_control_a_different_answer_is_noticed(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    off, on = sides
    for side in sides:
        answer(side, {"method": "GET", "path": "/getHoldings?account_id=1", "body": None})
    # The trade path writing its JSON with json.dumps' default separators, as an obvious
    # implementation would: the comparison must fail.
    monkeypatch.setattr(
        trade_path,
        "json_text",
        type("J", (), {"dumps": staticmethod(lambda obj, **_: json.dumps(obj, default=float))}),
    )
    assert not same(answer(off, {"body": BUY}), answer(on, {"body": BUY}))
