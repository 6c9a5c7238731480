"""The holes of the security review (issue 12, SPEC §2.4 and §2.8), each shown closed on every
path it was found on. Each test fails on the code before its fix: the answers it refuses are
the ones the review reproduced (a 500 after a commit, a 409 or a 2 s wait for another
broker's account, a label per method, a traceback for deep JSON, a 10.8 MB answer, a NUL
reaching PostgreSQL, "1\\n" taken as a price)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from stockledger.cli import main
from stockledger.db.pool import connect
from stockledger.fields import MAX_FIELD_ERRORS
from stockledger.http.strict_json import MAX_JSON_DEPTH
from stockledger.registry import records
from stockledger.registry.requests import AccountCreate
from tests.support import (
    ADMIN_TOKEN,
    World,
    bearer,
    constraint_of,
    ledger_snapshot,
    sessions_waiting,
)

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

YEAR_ZERO_IN_UTC = "0001-01-01T00:00:00+14:00"
JUST_BEFORE = "1899-12-31T23:59:59.999999Z"
EARLIEST = "1900-01-01T00:00:00Z"


def trade_body(account: int, **extra: Any) -> dict[str, Any]:
    body = {"account_id": account, "symbol": "AAPL", "side": "buy", "quantity": 1, "price": "10"}
    return {**body, **extra}


def post_trade(client: FlaskClient, path: str, body: dict[str, Any], key: str) -> Any:
    """One trade by one of the API's paths: single (again), idempotent, seed, or a batch of it."""
    headers = bearer(key)
    if path == "batch":
        return client.post("/v1/trades/batch", json={"trades": [body]}, headers=headers)
    if path == "seed":
        return client.post("/trade", json=body, headers=headers)
    if path == "idempotent":
        headers["Idempotency-Key"] = f"key-{time.monotonic_ns()}"
    return client.post("/v1/trades", json=body, headers=headers)


def fresh_account(conn: psycopg.Connection[Any], world: World) -> int:
    """An account of broker A with no trade yet: a backfill time of any age is not out of
    order there, so only the time range can refuse it."""
    account = records.open_account(
        conn, AccountCreate(client_id=world.owner, broker_id=world.broker_a)
    )
    return int(account["account_id"])


# 3. Timestamps every layer can read back --------------------------------------------------


@pytest.mark.parametrize("when", [YEAR_ZERO_IN_UTC, JUST_BEFORE, "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("path", ["single", "idempotent", "batch", "seed"])
def test_a_time_out_of_range_is_422_and_writes_nothing(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World, when: str, path: str
) -> None:
    account = fresh_account(conn, world)
    body = {**trade_body(account), "executed_at": when}
    before = ledger_snapshot(conn)
    response = post_trade(client, path, body, world.key_a)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == "invalid_request"
    assert ledger_snapshot(conn) == before
    # The account's history is still readable.
    assert (
        client.get(f"/v1/accounts/{account}/trades", headers=bearer(world.key_a)).status_code == 200
    )


@pytest.mark.parametrize("path", ["single", "idempotent", "batch"])
def test_the_earliest_time_is_accepted_and_read_back(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World, path: str
) -> None:
    account = fresh_account(conn, world)
    body = {**trade_body(account), "executed_at": EARLIEST}
    headers = bearer(world.key_a)
    if path == "batch":
        response = client.post("/v1/trades/batch", json={"trades": [body]}, headers=headers)
        executed = response.get_json()["trades"][0]
    else:
        if path == "idempotent":
            headers["Idempotency-Key"] = "earliest"
        response = client.post("/v1/trades", json=body, headers=headers)
        executed = response.get_json()["trade"]
    assert response.status_code == 201
    assert executed["executed_at"] == "1900-01-01T00:00:00+00:00"
    history = client.get(f"/v1/accounts/{account}/trades", headers=bearer(world.key_a))
    assert history.status_code == 200
    assert history.get_json()["trades"][0]["executed_at"] == "1900-01-01T00:00:00+00:00"


@pytest.mark.parametrize("param", ["since", "until"])
def test_a_history_filter_out_of_range_is_422(
    client: FlaskClient, world: World, param: str
) -> None:
    response = client.get(
        f"/v1/accounts/{world.account}/trades",
        query_string={param: YEAR_ZERO_IN_UTC},
        headers=bearer(world.key_a),
    )
    assert response.status_code == 422


def test_the_cli_refuses_a_time_out_of_range(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    account = fresh_account(conn, world)
    args = ["trade", "--account", str(account), "--broker", str(world.broker_a), "--symbol"]
    args += ["AAPL", "--side", "buy", "--quantity", "1", "--price", "10"]
    result = CliRunner().invoke(
        main, [*args, "--executed-at", YEAR_ZERO_IN_UTC], env={"DATABASE_URL": db_url}
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: invalid_request:")


@pytest.mark.parametrize(
    ("when", "accepted"),
    [("0001-01-01 00:00:00+14", False), ("1899-12-31 23:59:59.999999+00", False),
     ("1900-01-01 00:00:00+00", True)],
)  # fmt: skip
def test_the_database_bounds_a_psql_insert_and_a_batch_alike(
    conn: psycopg.Connection[Any], world: World, when: str, accepted: bool
) -> None:
    """Whoever writes: a plain INSERT (row trigger) and trade_batch (statement trigger)."""
    for statement in (
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at)"
        " VALUES (%(a)s, %(b)s, 'AAPL', 'buy', 1, 10, %(t)s::timestamptz)",
        "SELECT count(*) FROM trade_batch(%(b)s, ARRAY[%(a)s]::bigint[], ARRAY['AAPL'],"
        " ARRAY['buy'], ARRAY[1]::bigint[], ARRAY[10]::numeric[], ARRAY[%(t)s]::timestamptz[])",
    ):
        account = fresh_account(conn, world)
        params = {"a": account, "b": world.broker_a, "t": when}
        if accepted:
            conn.execute(statement, params)
            row = conn.execute("SELECT executed_at FROM trades WHERE account_id = %s", [account])
            assert row.fetchone() is not None  # and Python reads it back
        else:
            with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
                conn.execute(statement, params)


# 4. Another broker's account is a missing one ----------------------------------------------


MISSING = 987_654_321


def answer(client: FlaskClient, path: str, account: int, key: str) -> tuple[int, Any, float]:
    started = time.monotonic()
    response = post_trade(client, path, trade_body(account), key)
    return response.status_code, response.get_json(), time.monotonic() - started


@contextmanager
def account_locked(db_url: str, account: int) -> Iterator[None]:
    """An operator's open transaction holding the account row, as a long psql session would."""
    with connect(db_url) as other, other.transaction():
        other.execute("SELECT FROM accounts WHERE account_id = %s FOR UPDATE", [account])
        yield


PATHS = ["single", "single-again", "idempotent", "seed", "batch"]


@pytest.mark.parametrize("status", ["open", "frozen", "closed"])
@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
def test_another_brokers_account_answers_as_a_missing_one(
    client: FlaskClient,
    conn: psycopg.Connection[Any],
    db_url: str,
    world: World,
    status: str,
    locked: bool,
) -> None:
    """Broker A's account, traded by broker B: the same status, code and body as an account
    that does not exist, at once, whatever its status and even while it is locked.
    ("single" twice: the first authenticates the key, the second checks it in the trade's own
    statement.)"""
    conn.execute("UPDATE accounts SET status = %s WHERE account_id = %s", [status, world.account])
    before = ledger_snapshot(conn)
    missing = {path: answer(client, path, MISSING, world.key_b)[:2] for path in PATHS}
    lock = account_locked(db_url, world.account) if locked else _nothing()
    with lock:
        for path in PATHS:
            status_code, problem, seconds = answer(client, path, world.account, world.key_b)
            assert (status_code, problem) == missing[path], path
            assert seconds < 1.0, (path, seconds)  # lock_timeout is 2 s: no wait at all
    assert missing["single"][0] == 404 and missing["batch"][1]["batch_index"] == 0
    assert ledger_snapshot(conn) == before


def test_control_the_held_lock_does_block_the_accounts_own_broker(
    client: FlaskClient, db_url: str, world: World
) -> None:
    """The lock the test above holds is real: broker A's own trade waits for it (2 s) and is
    answered 503, the answer broker B used to get."""
    with account_locked(db_url, world.account):
        status_code, problem, seconds = answer(client, "single", world.account, world.key_a)
    assert (status_code, problem["code"]) == (503, "service_unavailable")
    assert seconds >= 1.5


def test_a_batch_of_another_broker_locks_nothing(
    client: FlaskClient, conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    """trade_batch checks every account before it locks any: broker B's batch naming A's
    account is refused at once, as for a missing account; it neither waits for its own
    account, locked here, nor holds A's, which A trades meanwhile."""
    with account_locked(db_url, world.other_account):
        # B's batch: its own (locked) account first, then A's.
        batch = [trade_body(world.other_account), trade_body(world.account)]
        started = time.monotonic()
        refused = client.post(
            "/v1/trades/batch", json={"trades": batch}, headers=bearer(world.key_b)
        )
        waited = time.monotonic() - started
        problem = refused.get_json()
        assert (refused.status_code, problem["code"], problem["batch_index"]) == (
            404,
            "not_found",
            1,
        )
        assert waited < 1.0  # the lock on B's own account is not waited for (lock_timeout 2 s)
        assert not sessions_waiting(conn)
        status_code, _problem, seconds = answer(client, "single", world.account, world.key_a)
    assert status_code == 201 and seconds < 1.0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# 5. Metric labels are bounded --------------------------------------------------------------


def test_unknown_methods_collapse_to_one_label(client: FlaskClient) -> None:
    for method in ("ZZAAA", "ZZAAB", "BREW", "PROPFIND"):
        client.open("/healthz", method=method)
        client.open("/no/such/route", method=method)
    text = client.get("/metrics").get_data(as_text=True)
    for method in ("ZZAAA", "ZZAAB", "BREW", "PROPFIND"):
        assert f'method="{method}"' not in text
    assert 'method="other"' in text


# 7. JSON nesting is bounded ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/trades", "/v1/trades/batch", "/trade"])
def test_deeply_nested_json_is_400_not_a_traceback(
    client: FlaskClient, world: World, path: str
) -> None:
    for body in ("[" * 30000 + "]" * 30000, "{" + '"a":{' * 10000 + "}" * 10001):
        response = client.post(
            path, data=body, content_type="application/json", headers=bearer(world.key_a)
        )
        assert response.status_code == 400
        assert response.get_json()["code"] == "invalid_request"


def test_nesting_up_to_the_limit_is_parsed(client: FlaskClient, world: World) -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    body = '{"trades": ' + nested + "}"
    response = client.post(
        "/v1/trades/batch", data=body, content_type="application/json", headers=bearer(world.key_a)
    )
    assert response.status_code == 422  # parsed, then refused by the model
    too_deep = '{"trades": ' + "[" + nested + "]" + "}"
    response = client.post(
        "/v1/trades/batch", data=too_deep, content_type="application/json",
        headers=bearer(world.key_a),
    )  # fmt: skip
    assert response.status_code == 400


def test_an_unterminated_string_of_escaped_quotes_is_400(client: FlaskClient, world: World) -> None:
    body = '{"trades": "' + '\\"' * 250_000
    response = client.post(
        "/v1/trades/batch", data=body, content_type="application/json", headers=bearer(world.key_a)
    )
    assert response.status_code == 400


# 8. Error answers are bounded --------------------------------------------------------------


def test_a_batch_of_unknown_keys_gets_a_small_answer(client: FlaskClient, world: World) -> None:
    trades = [
        {**trade_body(world.account), **{f"unknown_{i}_{'k' * 300}": i for i in range(20)}}
        for _ in range(70)
    ]
    body = json.dumps({"trades": trades})
    assert len(body) > 400_000
    response = client.post(
        "/v1/trades/batch", data=body, content_type="application/json", headers=bearer(world.key_a)
    )
    problem = response.get_json()
    assert response.status_code == 422
    assert len(response.get_data()) < 16 * 1024
    assert len(problem["errors"]) == MAX_FIELD_ERRORS
    assert problem["error_count"] == 70 * 20
    assert all(len(error["field"]) <= 100 for error in problem["errors"])


# 10. Text the database cannot hold, and a trailing newline ---------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/clients", {"name": "Nul\u0000Name", "tax_id": "NUL1"}),
        ("/v1/clients", {"name": "Tab\tName", "tax_id": "NUL2"}),
        ("/v1/clients", {"name": "Ok", "tax_id": "NUL3", "email": "a\u0000b@example.com"}),
        ("/v1/brokers", {"name": "Nul\u0000Name", "tax_id": "NUL4", "license_no": "NUL-4"}),
        ("/v1/stocks", {"symbol": "NULX", "name": "Nul\u0000Name"}),
        ("/v1/stocks", {"symbol": "NULY", "name": "Line\nbreak"}),
    ],
)
def test_control_characters_in_names_are_422(
    client: FlaskClient, path: str, body: dict[str, Any]
) -> None:
    response = client.post(path, json=body, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("INSERT INTO clients (name, tax_id) VALUES (E'Tab\\tName', 'CTL1')", "clients_name_check"),
        (
            "INSERT INTO clients (name, tax_id, email) VALUES ('Ok', 'CTL2', E'a\\x01b@c.de')",
            "clients_email_check",
        ),
        (
            "INSERT INTO brokers (name, tax_id, license_no) VALUES (E'Line\\nbreak', 'CTL3', 'CT-3')",
            "brokers_name_check",
        ),
        ("INSERT INTO stocks (symbol, name) VALUES ('CTLX', E'Bell\\x07')", "stocks_name_check"),
    ],
)
def test_the_database_refuses_control_characters_from_any_writer(
    conn: psycopg.Connection[Any], statement: str, constraint: str
) -> None:
    """The API's rule, held by the database for psql too (0009), under the same names."""
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        conn.execute(statement)
    assert constraint_of(caught.value) == constraint


def test_the_database_still_takes_ordinary_names(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO clients (name, tax_id, email) VALUES ('Zoë O''Brien-Smith', 'CTL5', 'z@o.ie')"
    )
    conn.execute("INSERT INTO stocks (symbol, name) VALUES ('CTLY', 'Société Générale S.A.')")


@pytest.mark.parametrize("price", ["1\n", "1\r\n", " 1", "1 ", "1\u0000"])
def test_a_price_with_surrounding_whitespace_is_422(
    client: FlaskClient, world: World, price: str
) -> None:
    body = {**trade_body(world.account), "price": price}
    response = client.post("/v1/trades", json=body, headers=bearer(world.key_a))
    assert response.status_code == 422
