"""The real books over HTTP (SPEC §2.1, §2.4, §2.6): joint accounts, fractional shares as exact
JSON numbers, reference prices and valuations, supervision; each rule's refusal by its code."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.support import ADMIN_TOKEN, World, assert_problem, bearer, ledger_snapshot, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

ADMIN = bearer(ADMIN_TOKEN)


def new_client(client: FlaskClient, tax_id: str, name: str = "Joint Holder") -> int:
    created = client.post("/v1/clients", json={"name": name, "tax_id": tax_id}, headers=ADMIN)
    assert created.status_code == 201, created.get_json()
    return int(created.get_json()["client_id"])


@pytest.fixture
def voo(client: FlaskClient, world: World) -> str:
    listed = client.post(
        "/v1/stocks",
        json={"symbol": "VOO", "name": "Vanguard", "fractionable": True},
        headers=ADMIN,
    )
    assert listed.status_code == 201, listed.get_json()
    assert listed.get_json()["fractionable"] is True
    return "VOO"


# Joint accounts ----------------------------------------------------------------------------


def test_a_joint_account_answers_every_holder_primary_first(
    client: FlaskClient, world: World
) -> None:
    grace = new_client(client, "JGRACE", "Grace Hopper")
    opened = client.post(
        "/v1/accounts", json={"holders": [grace, world.owner], "broker_id": world.broker_a},
        headers=ADMIN,
    )  # fmt: skip
    assert opened.status_code == 201, opened.get_json()
    account = opened.get_json()
    assert (account["client_id"], account["holders"]) == (grace, [grace, world.owner])
    owners = client.get(
        f"/getOwner?account_id={account['account_id']}", headers=bearer(world.key_a)
    )
    body = owners.get_json()
    assert body["owner"]["client_id"] == grace
    assert [o["client_id"] for o in body["owners"]] == [grace, world.owner]
    assert body["owners"][1] == {
        "client_id": world.owner,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
    }


def test_holders_are_added_and_removed_but_never_the_last(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    second = new_client(client, "JSECOND")
    path = f"/v1/accounts/{world.account}/holders"
    added = client.post(path, json={"client_id": second}, headers=ADMIN)
    assert added.status_code == 201
    assert added.get_json() | {"added_at": None} == {
        "account_id": world.account,
        "client_id": second,
        "position": 2,
        "added_at": None,
        "removed_at": None,
    }
    removed = client.delete(f"{path}/{world.owner}", headers=ADMIN)
    assert removed.status_code == 200 and removed.get_json()["removed_at"] is not None
    account = client.get(f"/v1/accounts/{world.account}", headers=ADMIN).get_json()
    assert (account["client_id"], account["holders"]) == (second, [second])
    before = ledger_snapshot(conn)
    assert_problem(client.delete(f"{path}/{second}", headers=ADMIN), 409, "last_holder")
    assert_problem(client.delete(f"{path}/{world.owner}", headers=ADMIN), 404, "not_found")
    assert_problem(
        client.post(path, json={"client_id": second}, headers=ADMIN), 409, "already_exists"
    )
    assert_problem(client.post(path, json={"client_id": 987654}, headers=ADMIN), 404, "not_found")
    missing = "/v1/accounts/987654/holders"
    assert_problem(
        client.post(missing, json={"client_id": second}, headers=ADMIN), 404, "not_found"
    )
    assert_problem(client.delete(f"{missing}/{second}", headers=ADMIN), 404, "not_found")
    assert ledger_snapshot(conn) == before


def test_a_brokers_identity_cannot_hold_an_account(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    broker_tax_id = scalar(
        conn, "SELECT tax_id FROM brokers WHERE broker_id = %s", [world.broker_b]
    )
    client_id = new_client(client, broker_tax_id)
    before = ledger_snapshot(conn)
    refused = client.post(
        f"/v1/accounts/{world.account}/holders", json={"client_id": client_id}, headers=ADMIN
    )
    assert_problem(refused, 409, "broker_owned_account")
    joint = {"holders": [world.owner, client_id], "broker_id": world.broker_a}
    assert_problem(
        client.post("/v1/accounts", json=joint, headers=ADMIN), 409, "broker_owned_account"
    )
    assert ledger_snapshot(conn) == before
    # And a holder's identity cannot become a broker's.
    grace = new_client(client, "JHELD")
    client.post(f"/v1/accounts/{world.account}/holders", json={"client_id": grace}, headers=ADMIN)
    broker = {"name": "Held", "tax_id": "JHELD", "license_no": "LIC-JHELD"}
    assert_problem(
        client.post("/v1/brokers", json=broker, headers=ADMIN), 409, "broker_owned_account"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"broker_id": 1},
        {"client_id": 1, "holders": [1], "broker_id": 1},
        {"holders": [], "broker_id": 1},
        {"holders": [1, 1], "broker_id": 1},
        {"holders": ["1"], "broker_id": 1},
    ],
)
def test_an_account_names_its_holders_one_way(client: FlaskClient, body: dict[str, Any]) -> None:
    assert_problem(client.post("/v1/accounts", json=body, headers=ADMIN), 422, "invalid_request")


# Fractional shares -------------------------------------------------------------------------


def test_fractions_are_exact_json_numbers(client: FlaskClient, world: World, voo: str) -> None:
    trade = {"account_id": world.account, "symbol": voo, "side": "buy", "price": "501.10"}
    for quantity in (2.5, "0.000001", 999999999, "0.5"):
        response = client.post(
            "/v1/trades", json={**trade, "quantity": quantity}, headers=bearer(world.key_a)
        )
        assert response.status_code == 201, response.get_json()
    text = response.get_data(as_text=True)
    assert '"quantity":0.5,' in text  # a number with its digits, not a string, not a float's
    assert '"position":{"symbol":"VOO","quantity":1000000002.000001}' in text
    holdings = client.get(f"/getHoldings?account_id={world.account}", headers=bearer(world.key_a))
    assert '{"symbol":"VOO","quantity":1000000002.000001}' in holdings.get_data(as_text=True)
    assert holdings.get_json()["holdings"][-1]["quantity"] == Decimal("1000000002.000001")
    # A whole quantity stays an integer, however it was written.
    whole = client.post(
        "/v1/trades", json={**trade, "quantity": "3.000"}, headers=bearer(world.key_a)
    )
    assert '"quantity":3,' in whole.get_data(as_text=True)


def test_a_fraction_of_a_whole_only_stock_is_refused(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    before = ledger_snapshot(conn)
    trade = {"account_id": world.account, "symbol": "AAPL", "side": "sell", "price": "1"}
    for quantity in (0.5, "99.999999"):
        refused = client.post(
            "/v1/trades", json={**trade, "quantity": quantity}, headers=bearer(world.key_a)
        )
        assert_problem(refused, 409, "fractional_not_allowed")
    batch = {"trades": [{**trade, "quantity": 1}, {**trade, "quantity": 1.5}]}
    refused = client.post("/v1/trades/batch", json=batch, headers=bearer(world.key_a))
    assert assert_problem(refused, 409, "fractional_not_allowed")["batch_index"] == 1
    assert ledger_snapshot(conn) == before
    # Made fractionable, the same trade passes.
    changed = client.patch("/v1/stocks/AAPL", json={"fractionable": True}, headers=ADMIN)
    assert changed.status_code == 200 and changed.get_json()["fractionable"] is True
    assert (
        client.post(
            "/v1/trades", json={**trade, "quantity": 0.5}, headers=bearer(world.key_a)
        ).status_code
        == 201
    )


# Reference prices and valuations -----------------------------------------------------------


def test_holdings_are_valued_at_the_latest_reference_price(
    client: FlaskClient, world: World, voo: str
) -> None:
    key = bearer(world.key_a)
    client.post(
        "/v1/trades",
        json={"account_id": world.account, "symbol": voo, "side": "buy", "quantity": "0.333",
              "price": "500"},
        headers=key,
    )  # fmt: skip
    prices = [("2026-01-02T15:00:00Z", "190.125"), ("2026-01-01T15:00:00Z", "1.00")]
    for as_of, price in prices:
        recorded = client.post(
            "/v1/stocks/AAPL/prices", json={"price": price, "as_of": as_of}, headers=ADMIN
        )
        assert recorded.status_code == 201, recorded.get_json()
    client.post("/v1/stocks/VOO/prices", json={"price": "501.015"}, headers=ADMIN)
    holdings = client.get(f"/v1/accounts/{world.account}/holdings", headers=key).get_json()
    # The latest by as_of, not the last recorded; round(quantity * price, 2), half away from 0.
    assert holdings["holdings"] == [
        {"symbol": "AAPL", "quantity": 100, "price": "190.1250", "market_value": "19012.50"},
        {
            "symbol": "VOO",
            "quantity": Decimal("0.333"),
            "price": "501.0150",
            "market_value": "166.84",
        },
    ]
    stock = client.get("/v1/stocks/AAPL", headers=key).get_json()
    assert (stock["price"], stock["price_as_of"]) == ("190.1250", "2026-01-02T15:00:00+00:00")
    unpriced = client.get("/v1/stocks/MSFT", headers=key).get_json()
    assert (unpriced["price"], unpriced["price_as_of"]) == (None, None)


def test_prices_are_refused_with_codes(client: FlaskClient, world: World) -> None:
    path = "/v1/stocks/AAPL/prices"
    moment = "2026-01-02T15:00:00Z"
    assert client.post(path, json={"price": "1", "as_of": moment}, headers=ADMIN).status_code == 201
    assert_problem(
        client.post(path, json={"price": "2", "as_of": moment}, headers=ADMIN),
        409,
        "already_exists",
    )
    assert_problem(
        client.post(path, json={"price": "1.00001"}, headers=ADMIN), 422, "invalid_request"
    )
    assert_problem(client.post(path, json={"price": 0}, headers=ADMIN), 422, "invalid_request")
    assert_problem(
        client.post("/v1/stocks/NOPE/prices", json={"price": "1"}, headers=ADMIN), 404, "not_found"
    )
    future = {"price": "1", "as_of": "2999-01-01T00:00:00Z"}
    assert_problem(client.post(path, json=future, headers=ADMIN), 409, "out_of_order")
    assert_problem(client.get("/v1/stocks/NOPE", headers=ADMIN), 404, "not_found")


# Supervision -------------------------------------------------------------------------------


def test_supervision_is_set_cleared_and_never_loops(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    def manage(broker: int, manager: int | None) -> Any:
        return client.patch(f"/v1/brokers/{broker}", json={"manager_id": manager}, headers=ADMIN)

    set_ = manage(world.broker_a, world.broker_b)
    assert set_.status_code == 200 and set_.get_json()["manager_id"] == world.broker_b
    before = ledger_snapshot(conn)
    assert_problem(manage(world.broker_b, world.broker_a), 409, "supervision_cycle")
    assert_problem(manage(world.broker_b, world.broker_b), 409, "supervision_cycle")
    assert_problem(manage(world.broker_b, 987654), 404, "not_found")
    assert_problem(manage(987654, world.broker_b), 404, "not_found")
    assert ledger_snapshot(conn) == before
    cleared = manage(world.broker_a, None)
    assert cleared.status_code == 200 and cleared.get_json()["manager_id"] is None
    assert manage(world.broker_b, world.broker_a).status_code == 200
    # Status and manager in one change; an empty change is refused.
    both = client.patch(
        f"/v1/brokers/{world.broker_a}",
        json={"status": "active", "manager_id": None},
        headers=ADMIN,
    )
    assert both.status_code == 200
    empty = client.patch(f"/v1/brokers/{world.broker_a}", json={}, headers=ADMIN)
    assert_problem(empty, 422, "invalid_request")


def test_a_supervisor_reads_its_teams_accounts_and_cannot_trade_them(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    client.patch(
        f"/v1/brokers/{world.broker_a}", json={"manager_id": world.broker_b}, headers=ADMIN
    )
    boss = bearer(world.key_b)
    assert client.get(f"/v1/accounts/{world.account}/holdings", headers=boss).status_code == 200
    trades = client.get(f"/v1/accounts/{world.account}/trades", headers=boss).get_json()["trades"]
    assert client.get(f"/v1/trades/{trades[0]['trade_id']}", headers=boss).status_code == 200
    before = ledger_snapshot(conn)
    trade = {"account_id": world.account, "symbol": "AAPL", "side": "buy", "quantity": 1,
             "price": "1"}  # fmt: skip
    for path in ("/trade", "/v1/trades"):
        assert_problem(client.post(path, json=trade, headers=boss), 403, "broker_not_authorized")
    assert ledger_snapshot(conn) == before
    # Not the other way round: the supervised broker does not see its supervisor's accounts.
    theirs = client.get(f"/v1/accounts/{world.other_account}", headers=bearer(world.key_a))
    assert_problem(theirs, 404, "not_found")
