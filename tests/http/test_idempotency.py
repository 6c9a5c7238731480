"""Idempotency keys on POST /trade and POST /v1/trades (SPEC §2.5)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from stockledger.config import Settings
from stockledger.http.app import create_app
from stockledger.registry import records
from stockledger.registry.requests import AccountCreate
from tests.support import ADMIN_TOKEN, World, as_caller, bearer, ledger_snapshot, run_together

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

BODY = {"symbol": "AAPL", "side": "buy", "quantity": 5, "price": "187.25"}
CONCURRENT = 20


def trade_count(conn: psycopg.Connection[Any], account_id: int) -> int:
    row = conn.execute("SELECT count(*) FROM trades WHERE account_id = %s", [account_id]).fetchone()
    assert row is not None
    return int(row[0])


def post(client: FlaskClient, path: str, body: dict[str, Any], key: str | None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("path", ["/trade", "/v1/trades"])
def test_a_retry_replays_the_first_answer(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World, path: str
) -> None:
    as_caller(client, world.key_a)
    body = {**BODY, "account_id": world.account}
    before = trade_count(conn, world.account)
    first = post(client, path, body, "order-1")
    second = post(client, path, body, "order-1")
    assert first.status_code == second.status_code == 201
    assert first.get_data() == second.get_data()  # byte for byte, trade_id included
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert trade_count(conn, world.account) == before + 1


def test_the_same_request_in_another_spelling_is_a_replay(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    as_caller(client, world.key_a)
    first = post(client, "/trade", {**BODY, "account_id": world.account}, "k")
    # A JSON number for the price, the broker named explicitly, another route: one request.
    again = {**BODY, "price": 187.2500, "broker_id": world.broker_a, "account_id": world.account}
    second = post(client, "/v1/trades", again, "k")
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json() == first.get_json()


def test_the_same_key_for_another_request_is_refused(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    as_caller(client, world.key_a)
    first = post(client, "/v1/trades", {**BODY, "account_id": world.account}, "k")
    assert first.status_code == 201
    before = ledger_snapshot(conn)
    other = post(client, "/v1/trades", {**BODY, "quantity": 6, "account_id": world.account}, "k")
    assert other.status_code == 422
    assert other.get_json()["code"] == "idempotency_key_reused"
    assert ledger_snapshot(conn) == before


def test_a_rejected_request_stores_nothing(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    as_caller(client, world.key_a)
    oversell = {**BODY, "side": "sell", "quantity": 1000, "account_id": world.account}
    assert post(client, "/v1/trades", oversell, "k").status_code == 409
    # The key is free again: a corrected request under it executes (and is not a replay).
    fixed = post(client, "/v1/trades", {**oversell, "quantity": 1}, "k")
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers


def test_keys_are_scoped_to_broker_and_account(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    second_account = records.open_account(
        conn, AccountCreate(client_id=world.owner, broker_id=world.broker_a)
    )["account_id"]
    as_caller(client, world.key_a)
    one = post(client, "/v1/trades", {**BODY, "account_id": world.account}, "k")
    two = post(client, "/v1/trades", {**BODY, "account_id": second_account}, "k")
    assert one.status_code == two.status_code == 201
    assert "Idempotent-Replayed" not in two.headers
    assert one.get_json()["trade"]["trade_id"] != two.get_json()["trade"]["trade_id"]
    # Another broker's account under the same key is still simply not found.
    theirs = post(client, "/v1/trades", {**BODY, "account_id": world.other_account}, "k")
    assert theirs.status_code == 404


@pytest.mark.parametrize("key", ["", " x", "x" * 256, "ключ"])
def test_malformed_keys_are_refused(client: FlaskClient, world: World, key: str) -> None:
    headers = {**bearer(world.key_a), "Idempotency-Key": key}
    body = {**BODY, "account_id": world.account}
    response = client.post("/v1/trades", json=body, headers=headers)
    assert response.status_code in (400, 422), response.get_json()


@pytest.fixture
def wide_app(db_url: str, app_db_url: str) -> Iterator[Flask]:
    """An app whose pool lets all the concurrent requests reach the database at once."""
    settings = Settings(
        database_url=db_url,
        data_dir=Path("/nonexistent"),
        admin_token=ADMIN_TOKEN,
        pool_min_size=CONCURRENT,
        pool_max_size=CONCURRENT,
    )
    application = create_app(settings, database_url=app_db_url)
    application.extensions["stockledger.db"].pool.wait(timeout=30)
    yield application
    application.extensions["stockledger.db"].close()


def concurrent_posts(app: Flask, world: World, keys: list[str | None]) -> list[Any]:
    responses: list[Any] = [None] * len(keys)

    def send(i: int) -> bool:
        client = as_caller(app.test_client(), world.key_a)
        responses[i] = post(client, "/v1/trades", {**BODY, "account_id": world.account}, keys[i])
        return True

    run_together([partial(send, i) for i in range(len(keys))])
    return responses


def test_concurrent_duplicates_execute_once(
    wide_app: Flask, conn: psycopg.Connection[Any], world: World
) -> None:
    before = trade_count(conn, world.account)
    responses = concurrent_posts(wide_app, world, ["same-key"] * CONCURRENT)
    assert [r.status_code for r in responses] == [201] * CONCURRENT
    assert len({r.get_json()["trade"]["trade_id"] for r in responses}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    assert trade_count(conn, world.account) == before + 1


def test_concurrent_requests_without_a_key_all_execute(
    wide_app: Flask, conn: psycopg.Connection[Any], world: World
) -> None:
    """The control: the same harness without the key sees every request execute, so the test
    above would see duplicates if the claim did not hold them back."""
    before = trade_count(conn, world.account)
    responses = concurrent_posts(wide_app, world, [None] * CONCURRENT)
    assert [r.status_code for r in responses] == [201] * CONCURRENT
    assert trade_count(conn, world.account) == before + CONCURRENT
