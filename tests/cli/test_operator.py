"""What an operator runs into (issue 12, item 13): which connection failed and why, a demo that
coexists with the README's own examples, that checks its port before printing keys and that
revokes the keys of its previous start, the CLI as the administrator, one form of db-url."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stockledger.cli import demo, main
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.http import auth
from stockledger.registry import records
from stockledger.registry.requests import BrokerCreate, ClientCreate, StockCreate
from stockledger.serve.processes import free_port
from tests.support import Server, World, clean_env, scalar, stockledger_command


def verify_with(url: str) -> str:
    result = CliRunner().invoke(main, ["verify"], env={"DATABASE_URL": url})
    assert result.exit_code != 0
    assert result.output.count("\n") == 1, result.output
    return result.output


def test_each_connection_failure_says_which(pg_server: Server, db_url: str) -> None:
    wrong_password = "not-the-password-0123456789"
    bad = verify_with(make_conninfo(db_url, password=wrong_password))
    missing = verify_with(make_conninfo(db_url, dbname="no_such_database"))
    closed_port = free_port()
    closed = verify_with(f"postgresql://someone:secret-pw@127.0.0.1:{closed_port}/db")
    assert "password authentication failed" in bad or "authentication failed" in bad, bad
    assert 'database "no_such_database" does not exist' in missing, missing
    assert "Connection refused" in closed and str(closed_port) in closed, closed
    assert len({bad, missing, closed}) == 3
    for output in (bad, missing, closed):
        assert output.startswith("error: service_unavailable: cannot connect to the database")
    # The password of the URL never appears, right or wrong.
    real = str(conninfo_to_dict(db_url).get("password") or "")
    for output, secret in ((bad, wrong_password), (closed, "secret-pw"), (missing, real)):
        assert not secret or secret not in output


def test_the_demo_data_does_not_collide_with_the_readme_examples(
    conn: psycopg.Connection[Any],
) -> None:
    """README: `broker add … --license NW-0001`, `stock add AAPL`, then `demo`."""
    records.add_broker(
        conn, BrokerCreate(name="Northwind Securities", tax_id="NW1", license_no="NW-0001")
    )
    records.add_client(conn, ClientCreate(name="Ada Lovelace", tax_id="US-123-45"))
    records.add_stock(conn, StockCreate(symbol="AAPL", name="Apple Inc."))
    assert demo.seed(conn) is True
    assert demo.seed(conn) is False  # and a restart finds it


def test_each_demo_start_revokes_the_previous_starts_keys(conn: psycopg.Connection[Any]) -> None:
    demo.seed(conn)
    first = demo.instructions(conn, True, "http://x", "t" * 32)
    second = demo.instructions(conn, False, "http://x", "t" * 32)
    old_keys = {word.strip("'") for word in first.split() if word.startswith("slk_")}
    new_keys = {word.strip("'") for word in second.split() if word.startswith("slk_")}
    assert old_keys and new_keys and not old_keys & new_keys
    for key in old_keys:
        with pytest.raises(StockledgerError) as refused:
            auth.authenticate(conn, f"Bearer {key}", None)
        assert refused.value.code == ErrorCode.UNAUTHENTICATED
    for key in new_keys:
        assert auth.authenticate(conn, f"Bearer {key}", None).broker_id is not None
    live = scalar(conn, "SELECT count(*) FROM broker_keys WHERE revoked_at IS NULL")
    assert live == len(new_keys)


def test_a_demo_on_a_busy_port_prints_no_keys(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*stockledger_command(), "demo", "--port", str(port), "--data-dir", str(tmp_path)],
            env=clean_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "slk_" not in result.stdout + result.stderr
    assert not (tmp_path / "pgdata").exists()  # nothing was started either


def test_the_cli_freezes_closes_and_suspends(cli: Any, world: World) -> None:
    def trade() -> Any:
        args = ["trade", "--account", str(world.account), "--broker", str(world.broker_a)]
        return cli(*args, "--symbol", "AAPL", "--side", "buy", "--quantity", "1", "--price", "1")

    for status in ("frozen", "closed"):
        changed = cli("account", "set", "--account", str(world.account), "--status", status)
        assert changed.exit_code == 0, changed.output
        refused = trade()
        assert refused.exit_code == 1 and refused.stderr.startswith("error: account_not_open:")
    assert cli("account", "set", "--account", str(world.account), "--status", "open").exit_code == 0
    suspended = cli("broker", "set", "--broker", str(world.broker_a), "--status", "suspended")
    assert suspended.exit_code == 0, suspended.output
    assert trade().stderr.startswith("error: forbidden:")
    cli("broker", "set", "--broker", str(world.broker_a), "--status", "active")
    assert trade().exit_code == 0
    missing = cli("account", "set", "--account", "999999", "--status", "frozen")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: not_found:")


def test_db_url_has_one_form_for_both_roles(tmp_path: Path) -> None:
    env = clean_env(STOCKLEDGER_DATA_DIR=str(tmp_path / "data"))
    try:
        for role in ("owner", "app"):
            done = subprocess.run(
                [*stockledger_command(), "db-url", "--role", role],
                env=env, capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            url = done.stdout.strip()
            assert url.startswith("postgresql://"), url
            with psycopg.connect(url) as conn:
                assert scalar(conn, "SELECT 1") == 1
    finally:
        subprocess.run([*stockledger_command(), "db-stop"], env=env, timeout=120, check=False)
