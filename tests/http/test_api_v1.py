"""The v1 resources (SPEC §2.3): reads, trade lookup, administration, metrics, the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from stockledger.config import Settings
from stockledger.http.app import create_app
from tests.support import ADMIN_TOKEN, World, as_caller, bearer

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

TRADE = {"symbol": "AAPL", "side": "buy", "quantity": 2, "price": "187.25"}


def test_account_owner_and_holdings(client: FlaskClient, world: World) -> None:
    as_caller(client, world.key_a)
    account = client.get(f"/v1/accounts/{world.account}").get_json()
    assert account["account_id"] == world.account
    assert (account["client_id"], account["broker_id"], account["status"]) == (
        world.owner,
        world.broker_a,
        "open",
    )
    owner = client.get(f"/v1/accounts/{world.account}/owner").get_json()
    assert owner == client.get(f"/getOwner?account_id={world.account}").get_json()
    holdings = client.get(f"/v1/accounts/{world.account}/holdings").get_json()
    assert holdings == {
        "account_id": world.account,
        "holdings": [{"symbol": "AAPL", "quantity": 100}],
    }


def test_v1_trade_then_look_it_up(client: FlaskClient, world: World) -> None:
    as_caller(client, world.key_a)
    created = client.post("/v1/trades", json={**TRADE, "account_id": world.account})
    assert created.status_code == 201
    body = created.get_json()
    assert body["position"] == {"symbol": "AAPL", "quantity": 102}
    trade = body["trade"]
    assert trade["price"] == "187.2500" and trade["broker_id"] == world.broker_a
    assert client.get(f"/v1/trades/{trade['trade_id']}").get_json() == trade
    admin_view = client.get(f"/v1/trades/{trade['trade_id']}", headers=bearer(ADMIN_TOKEN))
    assert admin_view.get_json() == trade


def test_another_brokers_things_answer_like_missing_ones(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    theirs = conn.execute(
        "SELECT (trade).trade_id FROM trade(%s, %s, 'AAPL', 'buy', 1, 1)",
        [world.other_account, world.broker_b],
    ).fetchone()
    assert theirs is not None
    as_caller(client, world.key_a)
    pairs = [
        (f"/v1/trades/{theirs[0]}", "/v1/trades/987654321"),
        *(
            (f"/v1/accounts/{world.other_account}{tail}", f"/v1/accounts/987654321{tail}")
            for tail in ("", "/owner", "/holdings", "/trades")
        ),
    ]
    for their_path, missing_path in pairs:
        their, missing = client.get(their_path), client.get(missing_path)
        assert their.status_code == missing.status_code == 404, their_path
        assert their.get_data() == missing.get_data(), their_path


def test_administration_end_to_end(client: FlaskClient, world: World) -> None:
    as_caller(client, ADMIN_TOKEN)
    new_client = client.post(
        "/v1/clients", json={"name": "Alan Turing", "tax_id": "gb-1234 5", "email": "a@t.uk"}
    )
    assert new_client.status_code == 201
    assert new_client.get_json()["tax_id"] == "GB12345"
    broker = client.post(
        "/v1/brokers", json={"name": "Broker C", "tax_id": "BC9", "license_no": "LC-9"}
    )
    assert broker.status_code == 201
    broker_json = broker.get_json()
    first_key = broker_json["api_key"]
    account = client.post(
        "/v1/accounts",
        json={
            "client_id": new_client.get_json()["client_id"],
            "broker_id": broker_json["broker_id"],
        },
    ).get_json()
    assert client.post("/v1/stocks", json={"symbol": "NVDA", "name": "Nvidia"}).status_code == 201

    # The new broker trades with the key it was given.
    trade = {**TRADE, "symbol": "NVDA", "account_id": account["account_id"]}
    assert client.post("/v1/trades", json=trade, headers=bearer(first_key)).status_code == 201

    # Rotation: a second key works beside the first; revoking the first retires it alone.
    rotated = client.post(f"/v1/brokers/{broker_json['broker_id']}/keys")
    assert rotated.status_code == 201
    second_key = rotated.get_json()["api_key"]
    holdings = f"/v1/accounts/{account['account_id']}/holdings"
    assert client.get(holdings, headers=bearer(second_key)).status_code == 200
    revoked = client.delete(f"/v1/brokers/{broker_json['broker_id']}/keys/{broker_json['key_id']}")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert client.get(holdings, headers=bearer(first_key)).status_code == 401
    assert client.get(holdings, headers=bearer(second_key)).status_code == 200

    # Status changes take effect at once.
    frozen = client.patch(f"/v1/accounts/{account['account_id']}", json={"status": "frozen"})
    assert frozen.get_json()["status"] == "frozen"
    refused = client.post("/v1/trades", json=trade, headers=bearer(second_key))
    assert refused.status_code == 409 and refused.get_json()["code"] == "account_not_open"
    client.patch(f"/v1/accounts/{account['account_id']}", json={"status": "open"})
    client.patch(f"/v1/brokers/{broker_json['broker_id']}", json={"status": "suspended"})
    suspended = client.post("/v1/trades", json=trade, headers=bearer(second_key))
    assert suspended.status_code == 403 and suspended.get_json()["code"] == "forbidden"


def test_administration_answers_domain_errors(client: FlaskClient, world: World) -> None:
    as_caller(client, ADMIN_TOKEN)
    assert client.patch("/v1/accounts/987654321", json={"status": "open"}).status_code == 404
    assert client.patch("/v1/brokers/987654321", json={"status": "active"}).status_code == 404
    assert client.post("/v1/brokers/987654321/keys").status_code == 404
    bad = client.patch(f"/v1/accounts/{world.account}", json={"status": "gone"})
    assert bad.status_code == 422
    duplicate = client.post("/v1/stocks", json={"symbol": "AAPL", "name": "Apple"})
    assert duplicate.status_code == 409 and duplicate.get_json()["code"] == "already_exists"


def test_without_admin_token_administration_is_off(
    db_url: str, app_db_url: str, world: World
) -> None:
    app = create_app(
        Settings(database_url=db_url, data_dir=Path("/x"), admin_token=None),
        database_url=app_db_url,
    )
    try:
        response = app.test_client().post(
            "/v1/stocks", json={"symbol": "ZZZ", "name": "Z"}, headers=bearer(world.key_a)
        )
        assert response.status_code == 403
        assert "STOCKLEDGER_ADMIN_TOKEN" in response.get_json()["detail"]
    finally:
        app.extensions["stockledger.db"].close()


def test_metrics_count_requests_trades_rejections_and_the_pool(
    client: FlaskClient, world: World
) -> None:
    as_caller(client, world.key_a)
    client.post("/v1/trades", json={**TRADE, "account_id": world.account})
    client.post(
        "/v1/trades", json={**TRADE, "side": "sell", "quantity": 10**6, "account_id": world.account}
    )
    text = client.get("/metrics").get_data(as_text=True)
    assert 'stockledger_http_requests_total{method="POST",route="/v1/trades",status="201"}' in text
    assert (
        'stockledger_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/trades"}'
        in text
    )
    assert 'stockledger_trades_executed_total{side="buy"}' in text
    assert 'stockledger_rejections_total{code="insufficient_holdings"}' in text
    assert "stockledger_db_pool_connections " in text


def test_openapi_document_and_docs(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    post_trade = document["paths"]["/v1/trades"]["post"]
    assert post_trade["security"] == [{"bearer": []}]
    assert post_trade["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TradeRequest"
    )
    problem = post_trade["responses"]["409"]["content"]["application/problem+json"]
    assert problem["schema"]["$ref"].endswith("/Problem")
    assert {p["name"] for p in post_trade["parameters"]} == {"Idempotency-Key"}
    # The request models are the validating ones: their constraints are in the document.
    quantity = document["components"]["schemas"]["TradeRequest"]["properties"]["quantity"]
    number, text = quantity["oneOf"]
    assert number["exclusiveMinimum"] == 0 and number["maximum"] == 1_000_000_000
    assert text["type"] == "string"
    docs = client.get("/docs")
    assert docs.status_code == 302 and docs.headers["Location"].endswith("/docs/swagger")
    page = client.get("/docs/swagger").get_data(as_text=True)
    assert "swagger-ui" in page and "openapi.json" in page
