"""The seed's three endpoints (SPEC §2.1), and each §1.2 rule as the API reports it (§2.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.support import World, as_caller, assert_problem, ledger_snapshot

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


@pytest.fixture
def client(client: FlaskClient, world: World) -> FlaskClient:
    """These tests call as broker A, the broker of record of world.account."""
    return as_caller(client, world.key_a)


def trade_body(world: World, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": world.account,
        "broker_id": world.broker_a,
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10,
        "price": "187.25",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_get_owner(client: FlaskClient, world: World) -> None:
    response = client.get(f"/getOwner?account_id={world.account}")
    assert response.status_code == 200
    ada = {"client_id": world.owner, "name": "Ada Lovelace", "email": "ada@example.com"}
    assert response.get_json() == {"account_id": world.account, "owner": ada, "owners": [ada]}


def test_get_holdings_sorted_without_zero_positions(client: FlaskClient, world: World) -> None:
    for symbol, side, quantity in (("MSFT", "buy", 5), ("AAPL", "sell", 100), ("MSFT", "buy", 2)):
        assert (
            client.post(
                "/trade", json=trade_body(world, symbol=symbol, side=side, quantity=quantity)
            ).status_code
            == 201
        )
    client.post("/trade", json=trade_body(world, symbol="AAPL", quantity=3))
    response = client.get(f"/getHoldings?account_id={world.account}")
    assert response.get_json() == {
        "account_id": world.account,
        "holdings": [{"symbol": "AAPL", "quantity": 3}, {"symbol": "MSFT", "quantity": 7}],
    }


def test_account_with_no_holdings_answers_an_empty_list(client: FlaskClient, world: World) -> None:
    response = as_caller(client, world.key_b).get(f"/getHoldings?account_id={world.other_account}")
    assert response.get_json() == {"account_id": world.other_account, "holdings": []}


@pytest.mark.parametrize("path", ["/getOwner", "/getHoldings"])
def test_unknown_account_is_not_found(client: FlaskClient, world: World, path: str) -> None:
    assert_problem(client.get(f"{path}?account_id=987654"), 404, "not_found")


def test_post_trade_answers_the_trade_and_the_new_position(
    client: FlaskClient, world: World
) -> None:
    response = client.post("/trade", json=trade_body(world, client_order_id="ORD-7"))
    assert response.status_code == 201
    body = response.get_json()
    trade = body["trade"]
    assert set(trade) == {
        "trade_id",
        "account_id",
        "broker_id",
        "symbol",
        "side",
        "quantity",
        "price",
        "executed_at",
        "seq",
        "client_order_id",
        "fee",
        "amount",
    }
    assert trade["price"] == "187.2500"
    # §1.4: 10 x 187.25, paid; no fee given.
    assert (trade["fee"], trade["amount"]) == ("0.00", "-1872.50")
    assert "closures" not in body  # a buy closes no lot
    assert trade["quantity"] == 10 and trade["seq"] == 2
    assert trade["client_order_id"] == "ORD-7"
    assert datetime.fromisoformat(trade["executed_at"]).utcoffset() == timedelta(0)
    assert body["position"] == {"symbol": "AAPL", "quantity": 110}


def test_price_as_json_number_is_exact(client: FlaskClient, world: World) -> None:
    response = client.post(
        "/trade",
        # Written by hand: json.dumps of a float would hide what this test is about, the
        # literal 0.1 arriving as an exact decimal.
        data=f'{{"account_id": {world.account}, "broker_id": {world.broker_a}, '
        '"symbol": "AAPL", "side": "buy", "quantity": 1, "price": 0.1}',
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.get_json()["trade"]["price"] == "0.1000"


def test_backfill_time_is_kept(
    client: FlaskClient, world: World, conn: psycopg.Connection[Any]
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    response = client.post("/trade", json=trade_body(world, executed_at=at.isoformat()))
    assert response.status_code == 201
    assert datetime.fromisoformat(response.get_json()["trade"]["executed_at"]) == at


# Each rule of SPEC §1.2 through the API: the database refuses, the API names the code ---------


@pytest.mark.parametrize(
    ("setup", "changes", "status", "code"),
    [
        (None, {"side": "sell", "quantity": 101}, 409, "insufficient_holdings"),
        (None, {"side": "sell", "symbol": "MSFT", "quantity": 1}, 409, "insufficient_holdings"),
        (None, {"executed_at": "2001-01-01T00:00:00Z"}, 409, "out_of_order"),
        (None, {"executed_at": "2999-01-01T00:00:00+02:00"}, 409, "out_of_order"),
        (
            "UPDATE accounts SET status = 'frozen' WHERE account_id = {account}",
            {},
            409,
            "account_not_open",
        ),
        (
            "UPDATE accounts SET status = 'closed' WHERE account_id = {account}",
            {},
            409,
            "account_not_open",
        ),
        (None, {"broker_id": "other"}, 403, "broker_not_authorized"),
        (
            "UPDATE brokers SET status = 'suspended' WHERE broker_id = {broker}",
            {},
            403,
            "forbidden",
        ),
        (None, {"symbol": "OLD"}, 409, "stock_not_tradable"),
        (None, {"symbol": "ZZZZ"}, 409, "stock_not_tradable"),
        (None, {"account_id": 987654}, 404, "not_found"),
    ],
)
def test_rule_violations_map_to_codes(
    client: FlaskClient,
    conn: psycopg.Connection[Any],
    world: World,
    setup: str | None,
    changes: dict[str, Any],
    status: int,
    code: str,
) -> None:
    if setup:
        conn.execute(setup.format(account=world.account, broker=world.broker_a))
    if changes.get("broker_id") == "other":
        changes = {**changes, "broker_id": world.broker_b}
    before = ledger_snapshot(conn)
    assert_problem(client.post("/trade", json=trade_body(world, **changes)), status, code)
    assert ledger_snapshot(conn) == before


def test_duplicate_client_order_id_is_a_conflict(client: FlaskClient, world: World) -> None:
    assert client.post("/trade", json=trade_body(world, client_order_id="A1")).status_code == 201
    assert_problem(
        client.post("/trade", json=trade_body(world, client_order_id="A1")), 409, "already_exists"
    )


def test_database_unreachable_is_503_with_retry_after(db_url: str) -> None:
    from pathlib import Path

    from psycopg.conninfo import make_conninfo

    from stockledger.config import Settings
    from stockledger.http.app import create_app

    dead = make_conninfo(db_url, dbname="no_such_database_here")
    app = create_app(
        Settings(database_url=dead, data_dir=Path("/nonexistent"), pool_timeout_seconds=1.0)
    )
    try:
        client = app.test_client()
        response = client.get("/getHoldings?account_id=1")
        problem = assert_problem(response, 503, "service_unavailable")
        assert response.headers["Retry-After"]
        assert "no_such_database" not in problem["detail"]
        assert_problem(client.get("/readyz"), 503, "service_unavailable")
        assert client.get("/healthz").get_json() == {"status": "ok"}
    finally:
        app.extensions["stockledger.db"].close()


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_unknown_route_and_method_are_problems(client: FlaskClient) -> None:
    assert_problem(client.get("/nope"), 404, "not_found")
    response = client.delete("/trade")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_api_offers_no_way_to_change_the_ledger(
    client: FlaskClient, world: World, method: str
) -> None:
    # Rule 2 through the API: the only ledger writes are POST /trade, /v1/trades and
    # /v1/trades/batch, which append; every other writing route is administration (reference data, statuses).
    assert_problem(client.open("/trade", method=method, json={}), 405, "method_not_allowed")
    app = client.application
    writers = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.methods
        and rule.methods & {"POST", "PUT", "PATCH", "DELETE"}
        and not getattr(app.view_functions[rule.endpoint], "stockledger_admin_only", False)
    }
    assert writers == {"/trade", "/v1/trades", "/v1/trades/batch"}
