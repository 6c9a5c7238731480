"""The seed's own dialect (SPEC §2.7): every row of its table, the sentinels, loopback only, off
by default, and nothing written by a trade it answers "fail"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from stockledger.config import Settings
from stockledger.dialect import middleware
from stockledger.http.app import create_app
from tests.support import ADMIN_TOKEN, World, as_caller, assert_problem, ledger_snapshot

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

REMOTE = {"REMOTE_ADDR": "10.1.2.3"}


@pytest.fixture
def dialect(db_url: str, app_db_url: str) -> Iterator[FlaskClient]:
    """The app with the dialect on (`serve --seed-dialect`); the test client is on loopback."""
    settings = Settings(
        database_url=db_url, data_dir=Path("/nonexistent"), admin_token=ADMIN_TOKEN,
        seed_dialect=True,
    )  # fmt: skip
    app: Flask = create_app(settings, database_url=app_db_url)
    yield app.test_client()
    app.extensions["stockledger.db"].close()


def raw(response: Any) -> str:
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    text: str = response.get_data(as_text=True)
    return text


def joint_account(conn: psycopg.Connection[Any], world: World, tax_ids: list[str]) -> int:
    """An account of broker A held by new clients with these tax ids, in this order."""
    clients = [
        conn.execute(
            "INSERT INTO clients (name, tax_id) VALUES (%s, %s) RETURNING client_id",
            [f"Holder {tax_id}", tax_id],
        ).fetchone()[0]  # type: ignore[index]
        for tax_id in tax_ids
    ]
    row = conn.execute(
        "SELECT account_id FROM open_account(%s::bigint[], %s)", [clients, world.broker_a]
    ).fetchone()
    assert row is not None
    account: int = row[0]
    return account


def digits() -> str:
    return str(uuid.uuid4().int)[:12].lstrip("0").rjust(12, "7")


# GET /getOwner?aid=A --------------------------------------------------------------------------


def test_owner_is_every_current_holder_primary_first(
    dialect: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    first, second, third = digits(), f"TX{uuid.uuid4().hex[:8].upper()}", digits()
    account = joint_account(conn, world, [first, second, third])
    # As Flask's jsonify writes it: compact, a final newline. Digits are a JSON integer.
    assert raw(dialect.get(f"/getOwner?aid={account}")) == (
        f'[{{"pid":{first}}},{{"pid":"{second}"}},{{"pid":{third}}}]\n'
    )
    # A removed holder is gone; the others keep their order.
    conn.execute(
        "SELECT remove_account_holder(%s, (SELECT client_id FROM clients WHERE tax_id = %s))",
        [account, first],
    )
    assert dialect.get(f"/getOwner?aid={account}").get_json() == [
        {"pid": second},
        {"pid": int(third)},
    ]


def test_owner_pid_keeps_a_leading_zero_as_text(
    dialect: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    # An integer would be another id (0012 is 12): such a tax id is answered as its text.
    tax_id = "00" + digits()
    account = joint_account(conn, world, [tax_id])
    assert dialect.get(f"/getOwner?aid={account}").get_json() == [{"pid": tax_id}]


# Every malformed or unknown aid, in one test: on a cluster each test's database costs more
# than its requests.
NO_ACCOUNT = ["aid=987654321", "aid=0", "aid=x", "aid=", "aid=-1", "aid=1.0", "aid=%2B1",
              "aid=1&aid=1", "aid=1&sym=AAPL", "aid=99999999999999999999"]  # fmt: skip


def test_owner_of_no_account_is_minus_one(dialect: FlaskClient) -> None:
    for query in NO_ACCOUNT:
        assert raw(dialect.get(f"/getOwner?{query}")) == '[{"pid":-1}]\n', query


# GET /getHoldings?aid=A&sym=S -----------------------------------------------------------------


def test_holdings_are_a_number_with_a_decimal_place(
    dialect: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    # world.account holds 100 AAPL; MSFT it has never held; a fractionable stock a fraction.
    assert raw(dialect.get(f"/getHoldings?aid={world.account}&sym=AAPL")) == '{"shares":100.0}\n'
    assert raw(dialect.get(f"/getHoldings?aid={world.account}&sym=MSFT")) == '{"shares":0.0}\n'
    conn.execute(
        "INSERT INTO stocks (symbol, name, fractionable) VALUES ('FRAC', 'Fraction Co', true) "
        "ON CONFLICT DO NOTHING"
    )
    conn.execute("SELECT trade(%s, %s, 'FRAC', 'buy', 3.33, 10)", [world.account, world.broker_a])
    assert raw(dialect.get(f"/getHoldings?aid={world.account}&sym=FRAC")) == '{"shares":3.33}\n'
    # Sold down to nothing: 0.0, not absent.
    conn.execute("SELECT trade(%s, %s, 'FRAC', 'sell', 3.33, 10)", [world.account, world.broker_a])
    assert raw(dialect.get(f"/getHoldings?aid={world.account}&sym=FRAC")) == '{"shares":0.0}\n'


NO_HOLDING = ["aid=987654321&sym=AAPL", "aid={account}&sym=NOPE", "aid={account}&sym=aapl",
              "aid={account}&sym=", "aid={account}", "aid=x&sym=AAPL", "aid={account}&sym=%00",
              "aid={account}&sym=AAPL&sym=AAPL", "aid={account}&sym=AAPL&type=buy"]  # fmt: skip


def test_holdings_of_no_account_or_stock_are_minus_one(dialect: FlaskClient, world: World) -> None:
    for query in NO_HOLDING:
        answer = dialect.get(f"/getHoldings?{query.format(account=world.account)}")
        assert raw(answer) == '{"shares":-1}\n', query


# GET /trade?aid=A&sym=S&type=buy|sell&shares=Q&price=P ------------------------------------------


def trade_query(account: int, **changes: str) -> str:
    fields = {"aid": str(account), "sym": "AAPL", "type": "buy", "shares": "10", "price": "187.25"}
    fields.update(changes)
    return "/trade?" + "&".join(f"{k}={v}" for k, v in fields.items() if v != "-")


def test_trade_answers_its_seq_and_trades_for_the_broker_of_record(
    dialect: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    last = conn.execute("SELECT last_seq FROM accounts WHERE account_id = %s", [world.account])
    seq = last.fetchone()[0]  # type: ignore[index]
    assert raw(dialect.get(trade_query(world.account))) == f'{{"res":{seq + 1}}}\n'
    assert dialect.get(trade_query(world.account, type="sell", shares="30")).get_json() == {
        "res": seq + 2
    }
    rows = conn.execute(
        "SELECT broker_id, side, quantity, price FROM trades WHERE account_id = %s AND seq > %s "
        "ORDER BY seq",
        [world.account, seq],
    ).fetchall()
    assert rows == [
        (world.broker_a, "buy", 10, Decimal("187.2500")),
        (world.broker_a, "sell", 30, Decimal("187.2500")),
    ]
    assert dialect.get(f"/getHoldings?aid={world.account}&sym=AAPL").get_json() == {"shares": 80}


FAILING_TRADES: list[dict[str, str]] = [
    {"type": "sell", "shares": "101"},  # rule 1: more than it holds
    {"sym": "OLD"},  # a delisted stock
    {"sym": "NOPE"},  # no such stock
    {"shares": "2.5"},  # rule 9: AAPL trades in whole shares
    {"aid": "987654321"},  # no such account
    {"aid": "x"},
    {"type": "short"},
    {"shares": "0"},
    {"shares": "-5"},
    {"shares": "1e3"},
    {"price": "0"},
    {"price": "abc"},
    {"price": "-"},  # missing
    {"sym": "AAPL&extra=1"},  # a parameter the seed never sent
    {"type": "buy&type=sell"},  # twice
]


def test_a_failed_trade_answers_fail_and_writes_nothing(
    dialect: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    before = ledger_snapshot(conn)
    for changes in FAILING_TRADES:
        answer = dialect.get(trade_query(world.account, **changes))
        assert raw(answer) == '{"res":"fail"}\n', changes
        assert ledger_snapshot(conn) == before, changes


def test_a_trade_a_cash_account_cannot_pay_for_fails(
    dialect: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    # world.other_account has no cash; with a limit of 0 it is a cash account.
    account = world.other_account
    conn.execute("UPDATE accounts SET credit_limit = 0 WHERE account_id = %s", [account])
    before = ledger_snapshot(conn)
    assert dialect.get(trade_query(account)).get_json() == {"res": "fail"}
    assert ledger_snapshot(conn) == before
    # The control: with no limit the same request is booked, for its broker of record.
    conn.execute("UPDATE accounts SET credit_limit = NULL WHERE account_id = %s", [account])
    assert dialect.get(trade_query(account)).get_json() == {"res": 1}


# Who is answered -------------------------------------------------------------------------------


PATHS = [
    "/getOwner?aid={account}",
    "/getHoldings?aid={account}&sym=AAPL",
    "/trade?aid={account}&sym=AAPL&type=buy&shares=1&price=10",
]


@pytest.mark.parametrize("path", PATHS)
def test_a_client_off_loopback_is_not_found(
    dialect: FlaskClient,
    conn: psycopg.Connection[Any],
    world: World,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = ledger_snapshot(conn)
    url = path.format(account=world.account)
    assert_problem(dialect.get(url, environ_base=REMOTE), 404, "not_found")
    assert ledger_snapshot(conn) == before
    # The control: without the fence the same request is answered (and a trade written), so
    # the assertions above can fail.
    monkeypatch.setattr(middleware, "is_loopback", lambda _address: True)
    assert dialect.get(url, environ_base=REMOTE).status_code == 200


def test_requests_with_account_id_are_the_api(dialect: FlaskClient, world: World) -> None:
    # Unauthenticated, the API's 401; as broker A, the API's own answer.
    assert_problem(dialect.get(f"/getOwner?account_id={world.account}"), 401, "unauthenticated")
    answer = as_caller(dialect, world.key_a).get(f"/getOwner?account_id={world.account}")
    assert answer.get_json()["account_id"] == world.account
    # Both parameters: the API (which refuses the one it does not know).
    both = dialect.get(f"/getOwner?account_id={world.account}&aid={world.account}")
    assert both.status_code in (401, 422) and both.mimetype == "application/problem+json"


def test_off_by_default(client: FlaskClient, conn: psycopg.Connection[Any], world: World) -> None:
    before = ledger_snapshot(conn)
    for path in PATHS[:2]:
        response = client.get(path.format(account=world.account))
        assert response.status_code in (401, 422)
        assert response.mimetype == "application/problem+json"
    assert_problem(client.get(PATHS[2].format(account=world.account)), 405, "method_not_allowed")
    assert ledger_snapshot(conn) == before
