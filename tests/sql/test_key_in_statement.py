"""The trade routes check a known API key inside the trade's own statement (one round trip).

Once a process has seen a key pass, a trade with it runs trade_for_key: broker_of_key() first,
the trade after it and only for its broker. Everything the separate check refused must still
be refused, with nothing written, and in the same order: an unauthenticated caller hears 401
before anything about its request.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from stockledger.db.queries import query
from stockledger.http import auth
from stockledger.registry import keys
from stockledger.trading import trades
from tests.support import World, bearer, ledger_snapshot, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

BUY = {"account_id": 0, "symbol": "AAPL", "side": "buy", "quantity": 1, "price": "1.5"}


def buy(world: World) -> dict[str, Any]:
    return {**BUY, "account_id": world.account}


def known(client: FlaskClient, world: World) -> None:
    """Make broker A's key known to this process: one request authenticated the usual way."""
    response = client.get(f"/getHoldings?account_id={world.account}", headers=bearer(world.key_a))
    assert response.status_code == 200
    assert auth.presented_key(f"Bearer {world.key_a}", None) is not None


def forged(world: World) -> str:
    """Broker A's key_id with a wrong secret."""
    return f"slk_{world.key_a.split('_')[1]}_" + "B" * 43


def calls_of(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of module.name, which still does what it did (a spy, not a stand-in)."""
    calls: list[int] = []
    original = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("path", ["/trade", "/v1/trades"])
def test_a_known_key_trades_in_one_statement(
    client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    key = auth.presented_key(f"Bearer {world.key_a}", None)
    assert key is None, "a key this process has not seen pass is checked first"
    known(client, world)
    separate_checks = calls_of(monkeypatch, auth, "authenticate")
    in_statement = calls_of(monkeypatch, trades, "execute_trade_for_key")
    response = client.post(path, json=buy(world), headers=bearer(world.key_a))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["trade"]["broker_id"] == world.broker_a
    assert (len(separate_checks), len(in_statement)) == (0, 1)


@pytest.mark.parametrize("path", ["/trade", "/v1/trades"])
def test_revoked_known_key_is_refused_and_writes_nothing(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World, path: str
) -> None:
    key = keys.issue_key(conn, world.broker_a)
    ok = client.post(path, json=buy(world), headers=bearer(key["api_key"]))
    assert ok.status_code == 201
    keys.revoke_key(conn, world.broker_a, key["key_id"])
    before = ledger_snapshot(conn)
    refused = client.post(path, json=buy(world), headers=bearer(key["api_key"]))
    assert refused.status_code == 401, refused.get_json()
    assert refused.get_json()["detail"] == "this key has been revoked"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert ledger_snapshot(conn) == before


def test_suspended_broker_known_key_is_forbidden_and_writes_nothing(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    known(client, world)
    conn.execute("UPDATE brokers SET status = 'suspended' WHERE broker_id = %s", [world.broker_a])
    before = ledger_snapshot(conn)
    refused = client.post("/v1/trades", json=buy(world), headers=bearer(world.key_a))
    assert refused.status_code == 403 and refused.get_json()["code"] == "forbidden"
    assert ledger_snapshot(conn) == before


def test_known_key_id_with_a_wrong_secret_is_refused(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    known(client, world)
    before = ledger_snapshot(conn)
    refused = client.post("/v1/trades", json=buy(world), headers=bearer(forged(world)))
    assert refused.status_code == 401 and refused.get_json()["detail"] == "unknown credentials"
    assert ledger_snapshot(conn) == before


@pytest.mark.parametrize(
    ("body", "status_with_key"),
    [
        ({**BUY, "quantity": 0}, 422),  # invalid field
        ({**BUY, "broker_id": 999_999}, 403),  # another broker in the body
        ("{not json", 400),  # malformed JSON
        ({**BUY, "pad": "x" * 200_000}, 413),  # over the body limit
    ],
)
def test_with_a_known_key_id_401_comes_before_what_is_wrong_with_the_request(
    client: FlaskClient, world: World, body: Any, status_with_key: int
) -> None:
    known(client, world)
    if isinstance(body, dict):
        body = {**body, "account_id": world.account}
    kwargs: dict[str, Any] = (
        {"json": body}
        if isinstance(body, dict)
        else {"data": body, "content_type": "application/json"}
    )
    right = client.post("/v1/trades", headers=bearer(world.key_a), **kwargs)
    assert right.status_code == status_with_key, right.get_json()
    wrong = client.post("/v1/trades", headers=bearer(forged(world)), **kwargs)
    assert wrong.status_code == 401, wrong.get_json()
    assert wrong.get_json()["code"] == "unauthenticated"


def test_a_retry_replays_whichever_path_each_attempt_took(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    # The first attempt authenticates separately (a new key), the retry in the statement: the
    # idempotency fingerprint must be the same for both, or the retry would be refused.
    key = keys.issue_key(conn, world.broker_a)["api_key"]
    headers = {**bearer(key), "Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = client.post("/v1/trades", json=buy(world), headers=headers)
    assert first.status_code == 201
    assert auth.presented_key(f"Bearer {key}", None) is not None
    retry = client.post("/v1/trades", json=buy(world), headers=headers)
    assert retry.status_code == 201, retry.get_json()
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.get_json() == first.get_json()


def run_for_key(
    conn: psycopg.Connection[Any], world: World, broker_id: int, statement: str
) -> list[Any]:
    params = {
        **buy(world),
        "quantity": 1,
        "price": 1,
        "executed_at": None,
        "client_order_id": None,
        "fee": 0,
        "lots": None,
        "broker_id": broker_id,
        "key_id": world.key_a.split("_")[1],
        "secret_hash": hashlib.sha256(world.key_a.split("_", 2)[2].encode()).digest(),
    }
    return conn.execute(statement, params).fetchall()


def test_a_key_of_another_broker_than_expected_writes_nothing(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # The filter on the key's broker is applied before the trade is called, not after it.
    before = ledger_snapshot(conn)
    assert run_for_key(conn, world, world.broker_b, query("trade_for_key")) == []
    assert ledger_snapshot(conn) == before
    # The control: the same statement filtering the trade's result instead of the key has
    # already traded when it finds out, and the ledger shows it.
    broken = query("trade_for_key").replace("WHERE k.broker_id", "WHERE (t.trade).broker_id")
    assert run_for_key(conn, world, world.broker_b, broken) == []
    assert ledger_snapshot(conn) != before


def test_a_stale_known_broker_writes_nothing_then_trades_for_the_keys_broker(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    # Cannot happen (broker_keys refuses a change of broker_id); forced here through the
    # process's memory to exercise the way back: the statement writes nothing, the key is
    # forgotten and authenticated afresh, and the trade is its real broker's, once.
    key_id = world.key_a.split("_")[1]
    auth._known_brokers.remember(key_id, world.broker_b)
    before = scalar(conn, "SELECT count(*) FROM trades")
    response = client.post("/v1/trades", json=buy(world), headers=bearer(world.key_a))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["trade"]["broker_id"] == world.broker_a
    assert scalar(conn, "SELECT count(*) FROM trades") - before == 1
    presented = auth.presented_key(f"Bearer {world.key_a}", None)
    assert presented is not None and presented.broker_id == world.broker_a
