"""Bad input gets a clear problem+json error with a stable code, and changes nothing."""

from __future__ import annotations

import json
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


# A valid body with ACCOUNT / BROKER placeholders filled in per test.
VALID = {
    "account_id": "ACCOUNT",
    "broker_id": "BROKER",
    "symbol": "AAPL",
    "side": "sell",
    "quantity": 10,
    "price": "187.25",
}


def body(**changes: Any) -> dict[str, Any]:
    result = {**VALID, **changes}
    return {k: v for k, v in result.items() if v is not ...}


def as_json(value: Any) -> str:
    return json.dumps(value)


# (case id, raw body or dict, content type, expected status, expected code)
POST_CASES: list[tuple[str, Any, str | None, int, str]] = [
    ("truncated json", '{"account_id": 1,', "application/json", 400, "invalid_request"),
    ("json array", "[1, 2]", "application/json", 400, "invalid_request"),
    ("json string", '"buy"', "application/json", 400, "invalid_request"),
    ("json null", "null", "application/json", 400, "invalid_request"),
    ("empty body", "", "application/json", 400, "invalid_request"),
    ("text/plain", body(), "text/plain", 400, "invalid_request"),
    ("no content type", body(), None, 400, "invalid_request"),
    (
        "form encoded",
        "account_id=1&side=buy",
        "application/x-www-form-urlencoded",
        400,
        "invalid_request",
    ),
    ("not utf-8", b'{"symbol": "\xff\xfe"}', "application/json", 400, "invalid_request"),
    ("NaN constant", '{"price": NaN}', "application/json", 400, "invalid_request"),
    ("Infinity constant", '{"price": Infinity}', "application/json", 400, "invalid_request"),
    (
        "duplicate key",
        '{"quantity": 1, "quantity": 1000}',
        "application/json",
        400,
        "invalid_request",
    ),
    ("unknown field", body(note="hi"), "application/json", 422, "invalid_request"),
    ("missing price", body(price=...), "application/json", 422, "invalid_request"),
    ("missing side", body(side=...), "application/json", 422, "invalid_request"),
    ("account_id as string", body(account_id="1"), "application/json", 422, "invalid_request"),
    ("account_id boolean", body(account_id=True), "application/json", 422, "invalid_request"),
    ("account_id zero", body(account_id=0), "application/json", 422, "invalid_request"),
    (
        "account_id beyond bigint",
        body(account_id=2**63),
        "application/json",
        422,
        "invalid_request",
    ),
    ("broker_id as list", body(broker_id=[1]), "application/json", 422, "invalid_request"),
    # 1.5 is a well-formed quantity; the stock trades in whole shares only (rule 9).
    ("quantity fraction", body(quantity=1.5), "application/json", 409, "fractional_not_allowed"),
    ("quantity 7 places", body(quantity=1.0000001), "application/json", 422, "invalid_request"),
    ("quantity word", body(quantity="ten"), "application/json", 422, "invalid_request"),
    ("quantity exponent text", body(quantity="1e3"), "application/json", 422, "invalid_request"),
    ("quantity signed text", body(quantity="+10"), "application/json", 422, "invalid_request"),
    ("quantity boolean", body(quantity=True), "application/json", 422, "invalid_request"),
    ("quantity zero", body(quantity=0), "application/json", 422, "invalid_request"),
    ("quantity negative", body(quantity=-10), "application/json", 422, "invalid_request"),
    ("quantity over max", body(quantity=1_000_000_001), "application/json", 422, "invalid_request"),
    (
        "quantity enormous",
        '{"quantity": %s}' % ("9" * 40),
        "application/json",
        422,
        "invalid_request",
    ),
    ("price zero", body(price="0"), "application/json", 422, "invalid_request"),
    ("price negative", body(price="-1.00"), "application/json", 422, "invalid_request"),
    ("price five places", body(price="187.25001"), "application/json", 422, "invalid_request"),
    ("price number five places", '{"price": 1.23456}', "application/json", 422, "invalid_request"),
    ("price NaN string", body(price="NaN"), "application/json", 422, "invalid_request"),
    ("price Infinity string", body(price="Infinity"), "application/json", 422, "invalid_request"),
    ("price exponent string", body(price="1e3"), "application/json", 422, "invalid_request"),
    ("price with spaces", body(price=" 10 "), "application/json", 422, "invalid_request"),
    ("price too large", body(price="1000000000000"), "application/json", 422, "invalid_request"),
    ("price boolean", body(price=False), "application/json", 422, "invalid_request"),
    ("price object", body(price={"amount": 1}), "application/json", 422, "invalid_request"),
    ("symbol lowercase", body(symbol="aapl"), "application/json", 422, "invalid_request"),
    ("symbol overlong", body(symbol="ABCDEFGHIJK"), "application/json", 422, "invalid_request"),
    ("symbol empty", body(symbol=""), "application/json", 422, "invalid_request"),
    (
        "symbol sql",
        body(symbol="A'; DROP TABLE trades;--"),
        "application/json",
        422,
        "invalid_request",
    ),
    ("side uppercase", body(side="SELL"), "application/json", 422, "invalid_request"),
    ("side short", body(side="short"), "application/json", 422, "invalid_request"),
    (
        "executed_at no offset",
        body(executed_at="2026-01-01T00:00:00"),
        "application/json",
        422,
        "invalid_request",
    ),
    (
        "executed_at number",
        body(executed_at=1700000000),
        "application/json",
        422,
        "invalid_request",
    ),
    (
        "executed_at garbage",
        body(executed_at="yesterday"),
        "application/json",
        422,
        "invalid_request",
    ),
    (
        "client_order_id space",
        body(client_order_id="a b"),
        "application/json",
        422,
        "invalid_request",
    ),
    (
        "client_order_id too long",
        body(client_order_id="x" * 65),
        "application/json",
        422,
        "invalid_request",
    ),
    ("client_order_id number", body(client_order_id=7), "application/json", 422, "invalid_request"),
    (
        "body over 64 KiB",
        body(client_order_id="x" * 70_000),
        "application/json",
        413,
        "payload_too_large",
    ),
]

GET_CASES: list[tuple[str, str, int, str]] = [
    ("holdings without account", "/getHoldings", 422, "invalid_request"),
    ("holdings letters", "/getHoldings?account_id=abc", 422, "invalid_request"),
    ("holdings negative", "/getHoldings?account_id=-1", 422, "invalid_request"),
    ("holdings decimal", "/getHoldings?account_id=1.5", 422, "invalid_request"),
    ("holdings zero", "/getHoldings?account_id=0", 422, "invalid_request"),
    ("holdings empty", "/getHoldings?account_id=", 422, "invalid_request"),
    ("holdings twice", "/getHoldings?account_id=1&account_id=2", 422, "invalid_request"),
    ("holdings unknown param", "/getHoldings?account_id=1&verbose=1", 422, "invalid_request"),
    ("holdings huge", "/getHoldings?account_id=99999999999999999999", 422, "invalid_request"),
    ("owner plus sign", "/getOwner?account_id=%2B1", 422, "invalid_request"),
    ("owner spaces", "/getOwner?account_id=%201", 422, "invalid_request"),
    ("owner exponent", "/getOwner?account_id=1e3", 422, "invalid_request"),
]


def fill(raw: Any, world: World) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, dict):
        values = {
            k: (world.account if v == "ACCOUNT" else world.broker_a if v == "BROKER" else v)
            for k, v in raw.items()
        }
        return json.dumps(values).encode()
    return str(raw).encode()


def test_table_is_large_enough() -> None:
    assert len(POST_CASES) + len(GET_CASES) >= 25


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [case[1:] for case in POST_CASES],
    ids=[case[0] for case in POST_CASES],
)
def test_malformed_trade_is_refused_and_changes_nothing(
    client: FlaskClient,
    conn: psycopg.Connection[Any],
    world: World,
    raw: Any,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    before = ledger_snapshot(conn)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/trade", data=fill(raw, world), headers=headers)
    problem = assert_problem(response, status, code)
    assert problem["detail"]
    assert ledger_snapshot(conn) == before


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [case[1:] for case in GET_CASES],
    ids=[case[0] for case in GET_CASES],
)
def test_malformed_query_is_refused(
    client: FlaskClient, world: World, path: str, status: int, code: str
) -> None:
    assert_problem(client.get(path), status, code)


def test_validation_errors_name_every_bad_field(client: FlaskClient, world: World) -> None:
    response = client.post(
        "/trade",
        json={"account_id": "x", "symbol": "aapl", "side": "hold", "quantity": 0, "price": "0"},
    )
    problem = assert_problem(response, 422, "invalid_request")
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {"account_id", "symbol", "side", "quantity", "price"}  # broker_id: the key


def test_valid_body_passes_the_same_path(client: FlaskClient, world: World) -> None:
    # The control for the table above: the untouched VALID body is accepted.
    response = client.post(
        "/trade", data=fill(VALID, world), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.get_json()
