"""Authentication and authorization (SPEC §2.4) on every route the app serves."""

from __future__ import annotations

import logging
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from stockledger.db.binaries import pg_binary
from stockledger.registry import keys, records
from stockledger.registry.requests import BrokerChange, BrokerCreate, ClientCreate
from tests.support import ADMIN_TOKEN, World, bearer

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


@dataclass(frozen=True)
class Credentials:
    """Every kind of caller the matrix tries, against an account of broker A."""

    valid: str  # broker A's live key
    wrong: str  # well-formed, unknown
    revoked: str  # broker A's revoked key
    other: str  # broker B's live key
    suspended: str  # live key of a suspended broker
    admin: str
    supervisor: str  # live key of broker A's manager
    grand_supervisor: str  # live key of that manager's manager: two levels above A


@pytest.fixture
def creds(conn: psycopg.Connection[Any], world: World) -> Credentials:
    revoked = keys.issue_key(conn, world.broker_a)
    keys.revoke_key(conn, world.broker_a, revoked["key_id"])
    suspended_broker = records.add_broker(
        conn, BrokerCreate(name="Suspended", tax_id="SUSP1", license_no="SUSP-1")
    )["broker_id"]
    suspended = keys.issue_key(conn, suspended_broker)["api_key"]
    conn.execute("UPDATE brokers SET status = 'suspended' WHERE broker_id = %s", [suspended_broker])
    supervisors = []
    for level in (1, 2):
        supervisors.append(
            records.add_broker(
                conn,
                BrokerCreate(
                    name=f"Supervisor {level}", tax_id=f"SUP{level}", license_no=f"S-{level}"
                ),
            )["broker_id"]
        )
    for below, above in ((world.broker_a, supervisors[0]), (supervisors[0], supervisors[1])):
        records.change_broker(conn, below, BrokerChange(manager_id=above))
    return Credentials(
        valid=world.key_a,
        wrong="slk_0123456789abcdef_" + "A" * 43,
        revoked=revoked["api_key"],
        other=world.key_b,
        suspended=suspended,
        admin=ADMIN_TOKEN,
        supervisor=keys.issue_key(conn, supervisors[0])["api_key"],
        grand_supervisor=keys.issue_key(conn, supervisors[1])["api_key"],
    )


# The rule of every route. A route missing here fails test_every_route_has_a_rule.
PUBLIC, ACCOUNT_READ, BROKER_WRITE, ADMIN = "public", "account read", "broker write", "admin"
ANY_CALLER = "any caller"  # reference data: any authenticated caller reads it
ROUTE_RULES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/"): PUBLIC,
    ("GET", "/docs/openapi.json"): PUBLIC,
    ("GET", "/docs/swagger"): PUBLIC,
    ("GET", "/docs/swagger/<path:filename>"): PUBLIC,
    ("GET", "/docs/static/<path:filename>"): PUBLIC,
    ("GET", "/docs/oauth2-redirect.html"): PUBLIC,
    ("GET", "/getOwner"): ACCOUNT_READ,
    ("GET", "/getHoldings"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/owner"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/holdings"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/trades"): ACCOUNT_READ,
    ("GET", "/v1/trades/<int:trade_id>"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/portfolio"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/lots"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/realized"): ACCOUNT_READ,
    ("GET", "/v1/accounts/<int:account_id>/cash"): ACCOUNT_READ,
    ("POST", "/trade"): BROKER_WRITE,
    ("POST", "/v1/trades"): BROKER_WRITE,
    ("POST", "/v1/trades/batch"): BROKER_WRITE,
    ("POST", "/v1/clients"): ADMIN,
    ("POST", "/v1/brokers"): ADMIN,
    ("PATCH", "/v1/brokers/<int:broker_id>"): ADMIN,
    ("POST", "/v1/brokers/<int:broker_id>/keys"): ADMIN,
    ("DELETE", "/v1/brokers/<int:broker_id>/keys/<key_id>"): ADMIN,
    ("POST", "/v1/accounts"): ADMIN,
    ("PATCH", "/v1/accounts/<int:account_id>"): ADMIN,
    ("POST", "/v1/stocks"): ADMIN,
    ("GET", "/v1/stocks/<symbol>"): ANY_CALLER,
    ("PATCH", "/v1/stocks/<symbol>"): ADMIN,
    ("POST", "/v1/stocks/<symbol>/prices"): ADMIN,
    ("POST", "/v1/accounts/<int:account_id>/holders"): ADMIN,
    ("POST", "/v1/accounts/<int:account_id>/cash"): ADMIN,
    ("DELETE", "/v1/accounts/<int:account_id>/holders/<int:client_id>"): ADMIN,
}
SUPERVISORS = ("supervisor", "grand_supervisor")

_REFUSED = {
    "none": (401, "unauthenticated"),
    "wrong": (401, "unauthenticated"),
    "revoked": (401, "unauthenticated"),
    "suspended": (403, "forbidden"),
}
# caller -> expected (status, code) for each rule; None for the code means success, with the
# success status of the route (OK).
OK = 0
EXPECTED: dict[str, dict[str, tuple[int, str | None]]] = {
    PUBLIC: {
        c: (OK, None)
        for c in ("none", "wrong", "revoked", "other", "suspended", "admin", "valid", *SUPERVISORS)
    },
    # A supervisor, at any depth, reads its team's accounts as their broker of record does...
    ACCOUNT_READ: {
        **_REFUSED,
        "other": (404, "not_found"),
        "admin": (OK, None),
        "valid": (OK, None),
        **{s: (OK, None) for s in SUPERVISORS},
    },
    # ...and never trades them: it is told so, where any other broker is told "not found".
    BROKER_WRITE: {
        **_REFUSED,
        "other": (404, "not_found"),
        "admin": (403, "forbidden"),
        "valid": (OK, None),
        **{s: (403, "broker_not_authorized") for s in SUPERVISORS},
    },
    ANY_CALLER: {
        **_REFUSED,
        **{c: (OK, None) for c in ("other", "admin", "valid", *SUPERVISORS)},
    },
    ADMIN: {
        **_REFUSED,
        "other": (403, "forbidden"),
        "valid": (403, "forbidden"),
        "admin": (OK, None),
        **{s: (403, "forbidden") for s in SUPERVISORS},
    },
}


def app_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_route_has_a_rule(app: Flask) -> None:
    assert app_routes(app) == set(ROUTE_RULES)


@dataclass(frozen=True)
class Target:
    """Broker A's things, which each cell of the matrix asks for."""

    world: World
    trade_id: int
    spare_key_id: str  # a live key of broker A that the admin cell revokes
    joint_holder: int  # a second holder of A's account, whom the admin cell removes
    new_holder: int  # a client whom the admin cell adds as a holder


def request_for(method: str, rule: str, t: Target) -> tuple[str, Any, int]:
    """The concrete (path, JSON body, success status) of a route, all about broker A."""
    w = t.world
    unique = uuid.uuid4().hex[:8].upper()
    trade = {"account_id": w.account, "symbol": "AAPL", "side": "buy", "quantity": 1, "price": "1"}
    concrete: dict[tuple[str, str], tuple[str, Any, int]] = {
        ("GET", "/docs"): ("/docs", None, 302),
        ("GET", "/docs/swagger/<path:filename>"): ("/docs/swagger/css/swagger-ui.css", None, 200),
        ("GET", "/docs/static/<path:filename>"): ("/docs/static/nope.css", None, 404),
        ("GET", "/getOwner"): (f"/getOwner?account_id={w.account}", None, 200),
        ("GET", "/getHoldings"): (f"/getHoldings?account_id={w.account}", None, 200),
        ("POST", "/trade"): ("/trade", trade, 201),
        ("POST", "/v1/trades"): ("/v1/trades", trade, 201),
        ("POST", "/v1/trades/batch"): ("/v1/trades/batch", {"trades": [trade, trade]}, 201),
        ("GET", "/v1/trades/<int:trade_id>"): (f"/v1/trades/{t.trade_id}", None, 200),
        ("POST", "/v1/clients"): ("/v1/clients", {"name": "C", "tax_id": f"C{unique}"}, 201),
        ("POST", "/v1/brokers"): (
            "/v1/brokers",
            {"name": "B", "tax_id": f"B{unique}", "license_no": f"L{unique}"},
            201,
        ),
        ("PATCH", "/v1/brokers/<int:broker_id>"): (
            f"/v1/brokers/{w.broker_a}",
            {"status": "active"},
            200,
        ),
        ("POST", "/v1/brokers/<int:broker_id>/keys"): (f"/v1/brokers/{w.broker_a}/keys", None, 201),
        ("DELETE", "/v1/brokers/<int:broker_id>/keys/<key_id>"): (
            f"/v1/brokers/{w.broker_a}/keys/{t.spare_key_id}",
            None,
            200,
        ),
        ("POST", "/v1/accounts"): (
            "/v1/accounts",
            {"client_id": w.owner, "broker_id": w.broker_a},
            201,
        ),
        ("PATCH", "/v1/accounts/<int:account_id>"): (
            f"/v1/accounts/{w.account}",
            {"status": "open"},
            200,
        ),
        ("POST", "/v1/stocks"): ("/v1/stocks", {"symbol": f"S{unique[:5]}", "name": "S"}, 201),
        ("GET", "/v1/stocks/<symbol>"): ("/v1/stocks/AAPL", None, 200),
        ("PATCH", "/v1/stocks/<symbol>"): ("/v1/stocks/AAPL", {"fractionable": False}, 200),
        ("POST", "/v1/stocks/<symbol>/prices"): ("/v1/stocks/AAPL/prices", {"price": "1.5"}, 201),
        ("POST", "/v1/accounts/<int:account_id>/cash"): (
            f"/v1/accounts/{w.account}/cash",
            {"kind": "deposit", "amount": "10.00"},
            201,
        ),
        ("POST", "/v1/accounts/<int:account_id>/holders"): (
            f"/v1/accounts/{w.account}/holders",
            {"client_id": t.new_holder},
            201,
        ),
        ("DELETE", "/v1/accounts/<int:account_id>/holders/<int:client_id>"): (
            f"/v1/accounts/{w.account}/holders/{t.joint_holder}",
            None,
            200,
        ),
    }
    if (method, rule) in concrete:
        return concrete[(method, rule)]
    # The remaining routes take at most the account id in their path.
    return rule.replace("<int:account_id>", str(w.account)), None, 200


@pytest.fixture
def target(conn: psycopg.Connection[Any], world: World) -> Target:
    trade = conn.execute(
        "SELECT trade_id FROM trades WHERE account_id = %s", [world.account]
    ).fetchone()
    assert trade is not None
    clients = [
        records.add_client(conn, ClientCreate(name=name, tax_id=f"T{name.upper()}"))["client_id"]
        for name in ("joint", "new")
    ]
    records.add_holder(conn, world.account, clients[0])
    return Target(world, trade[0], keys.issue_key(conn, world.broker_a)["key_id"], *clients)


def test_authorization_matrix(client: FlaskClient, target: Target, creds: Credentials) -> None:
    tokens: dict[str, str | None] = {"none": None, **vars(creds)}
    cells = 0
    for (method, rule), kind in sorted(ROUTE_RULES.items()):
        for who, token in tokens.items():
            status, code = EXPECTED[kind][who]
            path, body, success = request_for(method, rule, target)
            headers = bearer(token) if token else {}
            response = client.open(path, method=method, json=body, headers=headers)
            expected = status or success
            assert response.status_code == expected, (method, rule, who, response.get_data()[:300])
            if code:
                assert response.mimetype == "application/problem+json"
                assert response.get_json()["code"] == code, (method, rule, who)
            cells += 1
    assert cells == len(ROUTE_RULES) * 9 == 351


def test_matrix_catches_a_route_without_authorization(
    app: Flask, client: FlaskClient, target: Target, creds: Credentials
) -> None:
    """The control: a route that forgets to authenticate must break the matrix."""

    @app.get("/leaky")
    def leaky() -> dict[str, str]:
        return {"secret": "everyone sees this"}

    assert app_routes(app) != set(ROUTE_RULES)
    ROUTE_RULES[("GET", "/leaky")] = ACCOUNT_READ
    try:
        with pytest.raises(AssertionError):
            test_authorization_matrix(client, target, creds)
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
    new = keys.issue_key(conn, world.broker_a)
    path = f"/getHoldings?account_id={world.account}"
    assert client.get(path, headers=bearer(old)).status_code == 200
    assert client.get(path, headers=bearer(new["api_key"])).status_code == 200
    keys.revoke_key(conn, world.broker_a, old.split("_")[1])
    assert client.get(path, headers=bearer(old)).status_code == 401
    assert client.get(path, headers=bearer(new["api_key"])).status_code == 200


def test_revocation_is_final(conn: psycopg.Connection[Any], world: World) -> None:
    key = keys.issue_key(conn, world.broker_a)
    keys.revoke_key(conn, world.broker_a, key["key_id"])
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
    extra = keys.issue_key(conn, world.broker_b)
    presented = [world.key_a, world.key_b, extra["api_key"]]
    for key in presented:
        client.get(f"/getHoldings?account_id={world.account}", headers=bearer(key))
    client.get(
        "/getHoldings?account_id=1", headers=bearer(presented[0] + "x")
    )  # a failed attempt too
    dump = subprocess.run(
        [str(pg_binary("pg_dump")), "-d", db_url], check=True, capture_output=True, text=True
    ).stdout
    assert "broker_keys" in dump  # the table and its rows are in the dump
    assert not secret_found_in(dump, presented)
    assert not secret_found_in(caplog.text, presented)


def key_secret(key: str) -> str:
    """The secret part of slk_<key_id>_<secret>: everything after the second "_" (the secret is
    URL-safe base64, so it may contain "_" itself; the key id is hex and never does)."""
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "slk" and len(key_id) == 16 and len(secret) >= 40, key
    return secret


def secret_found_in(text: str, keys: list[str]) -> bool:
    return any(key_secret(key) in text for key in keys)


def test_key_secret_is_the_whole_secret_even_with_underscores() -> None:
    """The flake this replaces took the text after the last "_", so a secret containing "_"
    was searched for as a fragment of one or two characters, found by chance in any dump."""
    secret = "ab_cd" + "x" * 40
    assert key_secret(f"slk_0123456789abcdef_{secret}") == secret
    assert not secret_found_in("cd " * 1000, [f"slk_0123456789abcdef_{secret}"])


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

    from stockledger.config import Settings
    from stockledger.http.app import create_app

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
