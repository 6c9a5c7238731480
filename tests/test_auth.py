"""Authentication and authorization (SPEC §2.4) on every route the app serves."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from stockledger import admin, auth
from stockledger.embedded import pg_binary
from stockledger.models import BrokerCreate
from tests.conftest import ADMIN_TOKEN, World, bearer


@dataclass(frozen=True)
class Credentials:
    """Every kind of caller the matrix tries, against an account of broker A."""

    valid: str  # broker A's live key
    wrong: str  # well-formed, unknown
    revoked: str  # broker A's revoked key
    other: str  # broker B's live key
    suspended: str  # live key of a suspended broker
    admin: str


@pytest.fixture
def creds(conn: psycopg.Connection[Any], world: World) -> Credentials:
    revoked = auth.issue_key(conn, world.broker_a)
    auth.revoke_key(conn, world.broker_a, revoked["key_id"])
    suspended_broker = admin.add_broker(
        conn, BrokerCreate(name="Suspended", tax_id="SUSP1", license_no="SUSP-1")
    )["broker_id"]
    suspended = auth.issue_key(conn, suspended_broker)["api_key"]
    conn.execute("UPDATE brokers SET status = 'suspended' WHERE broker_id = %s", [suspended_broker])
    return Credentials(
        valid=world.key_a,
        wrong="slk_0123456789abcdef_" + "A" * 43,
        revoked=revoked["api_key"],
        other=world.key_b,
        suspended=suspended,
        admin=ADMIN_TOKEN,
    )


# The rule of every route. A route missing here fails test_every_route_has_a_rule.
PUBLIC, ACCOUNT_READ, BROKER_WRITE = "public", "account read", "broker write"
ROUTE_RULES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/getOwner"): ACCOUNT_READ,
    ("GET", "/getHoldings"): ACCOUNT_READ,
    ("POST", "/trade"): BROKER_WRITE,
}

# caller -> expected (status, code) for each rule; None for the code means success.
EXPECTED: dict[str, dict[str, tuple[int, str | None]]] = {
    PUBLIC: {
        c: (200, None) for c in ("none", "wrong", "revoked", "other", "suspended", "admin", "valid")
    },
    ACCOUNT_READ: {
        "none": (401, "unauthenticated"),
        "wrong": (401, "unauthenticated"),
        "revoked": (401, "unauthenticated"),
        "other": (404, "not_found"),
        "suspended": (403, "forbidden"),
        "admin": (200, None),
        "valid": (200, None),
    },
    BROKER_WRITE: {
        "none": (401, "unauthenticated"),
        "wrong": (401, "unauthenticated"),
        "revoked": (401, "unauthenticated"),
        "other": (404, "not_found"),
        "suspended": (403, "forbidden"),
        "admin": (403, "forbidden"),
        "valid": (201, None),
    },
}


def app_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_route_has_a_rule(app: Flask) -> None:
    assert app_routes(app) == set(ROUTE_RULES)


def call(client: FlaskClient, method: str, path: str, world: World, token: str | None) -> Any:
    headers = bearer(token) if token else {}
    if path in ("/getOwner", "/getHoldings"):
        return client.get(f"{path}?account_id={world.account}", headers=headers)
    if path == "/trade":
        body = {
            "account_id": world.account,
            "symbol": "AAPL",
            "side": "buy",
            "quantity": 1,
            "price": "1",
        }
        return client.post(path, json=body, headers=headers)
    return client.open(path, method=method, headers=headers)


def test_authorization_matrix(client: FlaskClient, world: World, creds: Credentials) -> None:
    tokens: dict[str, str | None] = {"none": None, **vars(creds)}
    cells = 0
    for (method, path), rule in sorted(ROUTE_RULES.items()):
        for who, token in tokens.items():
            status, code = EXPECTED[rule][who]
            response = call(client, method, path, world, token)
            assert response.status_code == status, (method, path, who, response.get_json())
            if code:
                assert response.mimetype == "application/problem+json"
                assert response.get_json()["code"] == code, (method, path, who)
            cells += 1
    assert cells == len(ROUTE_RULES) * 7


def test_matrix_catches_a_route_without_authorization(
    app: Flask, client: FlaskClient, world: World, creds: Credentials
) -> None:
    """The control: a route that forgets to authenticate must break the matrix."""

    @app.get("/leaky")
    def leaky() -> dict[str, str]:
        return {"secret": "everyone sees this"}

    assert app_routes(app) != set(ROUTE_RULES)
    ROUTE_RULES[("GET", "/leaky")] = ACCOUNT_READ
    try:
        with pytest.raises(AssertionError):
            test_authorization_matrix(client, world, creds)
    finally:
        del ROUTE_RULES[("GET", "/leaky")]


def test_another_brokers_account_is_indistinguishable_from_a_missing_one(
    client: FlaskClient, world: World
) -> None:
    for path in ("/getOwner", "/getHoldings"):
        theirs = client.get(f"{path}?account_id={world.other_account}", headers=bearer(world.key_a))
        missing = client.get(f"{path}?account_id=987654321", headers=bearer(world.key_a))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.get_data() == missing.get_data()
    body = {"symbol": "AAPL", "side": "buy", "quantity": 1, "price": "1"}
    theirs = client.post(
        "/trade", json={**body, "account_id": world.other_account}, headers=bearer(world.key_a)
    )
    missing = client.post(
        "/trade", json={**body, "account_id": 987654321}, headers=bearer(world.key_a)
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_data() == missing.get_data()


def test_body_broker_id_must_be_the_caller(client: FlaskClient, world: World) -> None:
    body = {
        "account_id": world.account,
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 1,
        "price": "1",
    }
    same = client.post(
        "/trade", json={**body, "broker_id": world.broker_a}, headers=bearer(world.key_a)
    )
    assert same.status_code == 201
    other = client.post(
        "/trade", json={**body, "broker_id": world.broker_b}, headers=bearer(world.key_a)
    )
    assert other.status_code == 403 and other.get_json()["code"] == "broker_not_authorized"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token slk_x",
        "Bearer slk_zz_short",
        "Bearer " + "x" * 5000,
    ],
)
def test_malformed_credentials_are_401(client: FlaskClient, world: World, header: str) -> None:
    response = client.get(
        f"/getHoldings?account_id={world.account}", headers={"Authorization": header}
    )
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_right_key_id_with_wrong_secret_is_refused(client: FlaskClient, world: World) -> None:
    key_id = world.key_a.split("_")[1]
    forged = f"slk_{key_id}_" + "B" * 43
    response = client.get(f"/getHoldings?account_id={world.account}", headers=bearer(forged))
    assert response.status_code == 401


def test_rotation_without_downtime_then_revocation(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    old = world.key_a
    new = auth.issue_key(conn, world.broker_a)
    path = f"/getHoldings?account_id={world.account}"
    assert client.get(path, headers=bearer(old)).status_code == 200
    assert client.get(path, headers=bearer(new["api_key"])).status_code == 200
    auth.revoke_key(conn, world.broker_a, old.split("_")[1])
    assert client.get(path, headers=bearer(old)).status_code == 401
    assert client.get(path, headers=bearer(new["api_key"])).status_code == 200


def test_revocation_is_final(conn: psycopg.Connection[Any], world: World) -> None:
    key = auth.issue_key(conn, world.broker_a)
    auth.revoke_key(conn, world.broker_a, key["key_id"])
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("UPDATE broker_keys SET revoked_at = NULL WHERE key_id = %s", [key["key_id"]])
    assert caught.value.sqlstate == "SL011"


def test_keys_are_not_at_rest_and_not_in_logs(
    client: FlaskClient,
    conn: psycopg.Connection[Any],
    db_url: str,
    world: World,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    extra = auth.issue_key(conn, world.broker_b)
    keys = [world.key_a, world.key_b, extra["api_key"]]
    for key in keys:
        client.get(f"/getHoldings?account_id={world.account}", headers=bearer(key))
    client.get("/getHoldings?account_id=1", headers=bearer(keys[0] + "x"))  # a failed attempt too
    dump = subprocess.run(
        [str(pg_binary("pg_dump")), "-d", db_url], check=True, capture_output=True, text=True
    ).stdout
    assert "broker_keys" in dump  # the table and its rows are in the dump
    assert not secret_found_in(dump, keys)
    assert not secret_found_in(caplog.text, keys)


def secret_found_in(text: str, keys: list[str]) -> bool:
    return any(key.rsplit("_", 1)[1] in text for key in keys)


def test_key_leak_check_would_see_a_plaintext_key(
    conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    """The control for the test above: a key stored in clear is found by the same search."""
    conn.execute("CREATE TABLE leaked (k text)")
    conn.execute("INSERT INTO leaked VALUES (%s)", [world.key_a])
    dump = subprocess.run(
        [str(pg_binary("pg_dump")), "-d", db_url], check=True, capture_output=True, text=True
    ).stdout
    assert secret_found_in(dump, [world.key_a])


def test_without_admin_token_nobody_is_admin(db_url: str, app_db_url: str, world: World) -> None:
    from pathlib import Path

    from stockledger.app import create_app
    from stockledger.config import Settings

    app = create_app(
        Settings(database_url=db_url, data_dir=Path("/x"), admin_token=None),
        database_url=app_db_url,
    )
    try:
        response = app.test_client().get(
            f"/getOwner?account_id={world.account}", headers=bearer("")
        )
        assert response.status_code == 401
        response = app.test_client().get(
            f"/getOwner?account_id={world.account}", headers={"Authorization": "Bearer None"}
        )
        assert response.status_code == 401
    finally:
        app.extensions["stockledger.db"].close()
