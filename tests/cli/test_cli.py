"""The `stockledger` command against the test database (DATABASE_URL)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from stockledger.audit.verify import INVARIANTS
from stockledger.cli import main
from stockledger.config import MIN_ADMIN_TOKEN_LENGTH, Settings
from stockledger.db import migrations
from tests.support import World, scalar


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return json.loads(result.stdout)


def test_every_command_has_help(cli: Any) -> None:
    for command in (
        [],
        ["serve"],
        ["demo"],
        ["migrate"],
        ["client", "add"],
        ["broker", "add"],
        ["account", "open"],
        ["account", "holder", "add"],
        ["account", "holder", "remove"],
        ["stock", "add"],
        ["stock", "set"],
        ["stock", "price"],
        ["broker", "set"],
        ["trade"],
        ["holdings"],
        ["verify"],
        ["db-url"],
        ["db-stop"],
    ):
        result = cli(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout, command


def test_the_real_books_from_the_command_line(cli: Any) -> None:
    """Joint accounts, fractional shares, prices and supervision (SPEC §3), each by --json."""
    ada, grace = (
        ok_json(cli("client", "add", "--name", name, "--tax-id", tax_id, "--json"))["client_id"]
        for name, tax_id in (("Ada", "CLIJ1"), ("Grace", "CLIJ2"))
    )
    with_address = ok_json(
        cli(
            "client", "add", "--name", "Al", "--tax-id", "CLIJ3", "--address", "1 Main St", "--json"
        )
    )
    assert with_address["address"] == "1 Main St"
    north, boss = (
        ok_json(cli("broker", "add", "--name", n, "--tax-id", t, "--license", lic, "--json"))[
            "broker_id"
        ]
        for n, t, lic in (("North", "CLIB1", "CB-1"), ("Boss", "CLIB2", "CB-2"))
    )
    managed = ok_json(
        cli("broker", "set", "--broker", str(north), "--manager", str(boss), "--json")
    )
    assert managed["manager_id"] == boss
    loop = cli("broker", "set", "--broker", str(boss), "--manager", str(north))
    assert loop.exit_code == 1 and "loop" in loop.stderr
    cleared = ok_json(cli("broker", "set", "--broker", str(north), "--manager", "none", "--json"))
    assert cleared["manager_id"] is None
    account = ok_json(
        cli(
            "account", "open", "--client", str(ada), "--client", str(grace),
            "--broker", str(north), "--json",
        )
    )  # fmt: skip
    assert account["holders"] == [ada, grace]
    ids = ["--account", str(account["account_id"])]
    removed = ok_json(cli("account", "holder", "remove", *ids, "--client", str(ada), "--json"))
    assert removed["removed_at"] is not None
    last = cli("account", "holder", "remove", *ids, "--client", str(grace))
    assert last.exit_code == 1 and "last holder" in last.stderr
    added = ok_json(cli("account", "holder", "add", *ids, "--client", str(ada), "--json"))
    assert added["position"] == 3
    ok_json(cli("stock", "add", "VTI", "--name", "Total Market", "--fractionable", "--json"))
    ok_json(cli("stock", "add", "KO", "--name", "Coca-Cola", "--json"))
    trade = [*ids, "--broker", str(north), "--side", "buy", "--price", "250", "--json"]
    bought = ok_json(cli("trade", *trade, "--symbol", "VTI", "--quantity", "2.5"))
    assert bought["trade"]["quantity"] == 2.5 and bought["position"]["quantity"] == 2.5
    whole_only = cli("trade", *trade, "--symbol", "KO", "--quantity", "0.5")
    assert whole_only.exit_code == 1 and "whole shares" in whole_only.stderr
    price = ok_json(cli("stock", "price", "VTI", "251.125", "--json"))
    assert price["price"] == "251.1250"
    held = ok_json(cli("holdings", *ids, "--json"))
    assert held["holdings"] == [
        {"symbol": "VTI", "quantity": 2.5, "price": "251.1250", "market_value": "627.81"}
    ]
    table = cli("holdings", *ids).stdout
    assert "VTI" in table and "627.81" in table
    changed = ok_json(cli("stock", "set", "KO", "--fractionable", "--json"))
    assert changed["fractionable"] is True


def test_the_money_side_from_the_command_line(cli: Any) -> None:
    client = ok_json(cli("client", "add", "--name", "Mo", "--tax-id", "CLIM1", "--json"))
    broker = ok_json(cli("broker", "add", "--name", "M", "--tax-id", "CLIMB", "--license", "CM-1",
                         "--json"))["broker_id"]  # fmt: skip
    account = ok_json(
        cli("account", "open", "--client", str(client["client_id"]), "--broker", str(broker),
            "--json")
    )  # fmt: skip
    ids = ["--account", str(account["account_id"])]
    deposited = ok_json(cli("cash", "deposit", *ids, "--amount", "1000", "--json"))
    assert (deposited["amount"], deposited["balance"]) == ("1000.00", "1000.00")
    changed = ok_json(
        cli("account", "set", *ids, "--credit-limit", "0", "--lot-method", "lifo", "--json")
    )
    assert (changed["credit_limit"], changed["lot_method"]) == ("0.00", "lifo")
    ok_json(cli("stock", "add", "CLIM", "--name", "Money Co", "--json"))
    trade = [*ids, "--broker", str(broker), "--symbol", "CLIM", "--json"]
    ok_json(cli("trade", *trade, "--side", "buy", "--quantity", "2", "--price", "100"))
    ok_json(cli("trade", *trade, "--side", "buy", "--quantity", "2", "--price", "200"))
    unpaid = cli("trade", *trade, "--side", "buy", "--quantity", "9", "--price", "100")
    assert unpaid.exit_code == 1 and "insufficient_funds" in unpaid.stderr
    sold = ok_json(cli("trade", *trade, "--side", "sell", "--quantity", "1", "--price", "250",
                       "--fee", "1.50"))  # fmt: skip
    assert sold["closures"][0]["lot_id"] == 2  # lifo: the newest lot
    assert sold["trade"]["amount"] == "248.50"
    book = ok_json(cli("portfolio", *ids, "--json"))
    assert (book["cash"], book["realized"]) == ("648.50", "48.50")
    assert book["positions"][0]["cost_basis"] == "400.00"
    assert "realized to date 48.50" in cli("portfolio", *ids).stdout
    lots = ok_json(cli("lots", *ids, "--open", "--json"))["lots"]
    assert [(lot["lot_id"], lot["remaining"]) for lot in lots] == [(1, 2), (2, 1)]
    withdrawn = cli("cash", "withdraw", *ids, "--amount", "648.51")
    assert withdrawn.exit_code == 1 and "insufficient_funds" in withdrawn.stderr


def test_a_whole_session_with_json_ids(cli: Any) -> None:
    client = ok_json(
        cli(
            "client",
            "add",
            "--name",
            "Ada",
            "--tax-id",
            "us-123 45",
            "--email",
            "ada@example.com",
            "--json",
        )
    )
    assert client["client_id"] >= 1 and client["tax_id"] == "US12345"
    broker = ok_json(
        cli(
            "broker", "add", "--name", "Northwind", "--tax-id", "NW1", "--license", "NW-1", "--json"
        )
    )
    assert broker["broker_id"] >= 1 and broker["status"] == "active"
    ok_json(cli("stock", "add", "AAPL", "--name", "Apple", "--json"))
    account = ok_json(
        cli(
            "account",
            "open",
            "--client",
            str(client["client_id"]),
            "--broker",
            str(broker["broker_id"]),
            "--json",
        )
    )
    assert account["account_id"] >= 1 and account["status"] == "open"
    common = [
        "--account",
        str(account["account_id"]),
        "--broker",
        str(broker["broker_id"]),
        "--symbol",
        "AAPL",
    ]
    bought = ok_json(
        cli("trade", *common, "--side", "buy", "--quantity", "10", "--price", "187.25", "--json")
    )
    assert bought["trade"]["trade_id"] >= 1 and bought["trade"]["price"] == "187.2500"
    assert bought["position"] == {"symbol": "AAPL", "quantity": 10}
    human = cli("trade", *common, "--side", "sell", "--quantity", "4", "--price", "190")
    assert human.exit_code == 0 and "position now 6" in human.stdout
    assert ok_json(cli("holdings", "--account", str(account["account_id"]), "--json"))[
        "holdings"
    ] == [{"symbol": "AAPL", "quantity": 6}]
    table = cli("holdings", "--account", str(account["account_id"]))
    assert "AAPL" in table.stdout and "6" in table.stdout
    assert ok_json(cli("verify", "--json"))["ok"] is True


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--side", "sell", "--quantity", "101"], "insufficient_holdings"),
        (["--side", "buy", "--quantity", "0"], "invalid_request"),
        (["--side", "buy", "--quantity", "1", "--price", "1.23456"], "invalid_request"),
        (["--side", "buy", "--quantity", "1", "--symbol", "OLD"], "stock_not_tradable"),
        (
            ["--side", "buy", "--quantity", "1", "--executed-at", "2001-01-01T00:00:00Z"],
            "out_of_order",
        ),
    ],
)
def test_trade_errors_are_one_line_and_non_zero(
    cli: Any, world: World, args: list[str], code: str
) -> None:
    base = {
        "--account": str(world.account),
        "--broker": str(world.broker_a),
        "--symbol": "AAPL",
        "--price": "10",
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = cli("trade", *[x for pair in base.items() for x in pair])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}:"), result.stderr


def test_broker_owned_account_refused_by_cli(cli: Any) -> None:
    ok_json(cli("broker", "add", "--name", "B", "--tax-id", "SAME1", "--license", "L-1", "--json"))
    client = ok_json(cli("client", "add", "--name", "C", "--tax-id", "same1", "--json"))
    result = cli("account", "open", "--client", str(client["client_id"]), "--broker", "1")
    assert result.exit_code == 1 and "broker_owned_account" in result.stderr


def test_migrate_reports_the_schema_version(cli: Any) -> None:
    assert ok_json(cli("migrate", "--json")) == {"schema_version": migrations.latest_version()}


def test_verify_passes_on_a_healthy_ledger(cli: Any, world: World) -> None:
    result = cli("verify")
    assert result.exit_code == 0
    assert result.stdout.count("ok ") == len(INVARIANTS)


REPLICA = "SET session_replication_role = replica"  # superuser: triggers off, as a bug might


@pytest.mark.parametrize(
    ("corruption", "invariant"),
    [
        ([REPLICA, "UPDATE positions SET quantity = quantity + 1"], "positions_match_holds"),
        ([REPLICA, "DELETE FROM positions"], "positions_match_holds"),
        (
            [
                "ALTER TABLE positions DROP CONSTRAINT positions_quantity_check",
                REPLICA,
                "UPDATE positions SET quantity = -5",
            ],
            "no_negative_position",
        ),
        (
            [
                REPLICA,
                "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at, seq, amount) "
                "SELECT account_id, broker_id, symbol, side, quantity, price, executed_at, seq + 5, amount "
                "FROM trades LIMIT 1",
            ],
            "seq_gapless",
        ),
        (
            [
                REPLICA,
                "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at, seq, amount) "
                "SELECT account_id, broker_id, symbol, 'buy', 1, price, '2000-01-01', seq + 1, "
                "trade_amount('buy', 1, price, 0) FROM trades LIMIT 1",
            ],
            "executed_at_ordered",
        ),
        (
            [
                REPLICA,
                "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at, seq, amount) "
                "SELECT account_id, broker_id, symbol, 'sell', 1000, price, now(), seq + 1, "
                "trade_amount('sell', 1000, price, 0) FROM trades LIMIT 1",
            ],
            "no_oversell_in_history",
        ),
        (
            [
                REPLICA,
                "INSERT INTO brokers (name, tax_id, license_no) SELECT 'Owner as broker', tax_id, 'X-1' "
                "FROM clients c WHERE EXISTS (SELECT FROM accounts a WHERE a.client_id = c.client_id) LIMIT 1",
            ],
            "no_broker_owned_account",
        ),
        (
            [
                REPLICA,
                "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at, seq, amount) "
                "SELECT t.account_id, b.broker_id, t.symbol, 'buy', 1, t.price, now(), t.seq + 1, "
                "trade_amount('buy', 1, t.price, 0) "
                "FROM trades t, brokers b WHERE b.broker_id <> t.broker_id LIMIT 1",
            ],
            "trades_by_broker_of_record",
        ),
        (
            [
                REPLICA,
                "INSERT INTO clients (name, tax_id) VALUES ('Joint broker', 'JOINTBRK')",
                "INSERT INTO account_holders (account_id, position, client_id, tax_id) "
                "SELECT account_id, 2, (SELECT client_id FROM clients WHERE tax_id = 'JOINTBRK'), "
                "'JOINTBRK' FROM accounts LIMIT 1",
                "INSERT INTO brokers (name, tax_id, license_no) VALUES ('Joint', 'JOINTBRK', 'J-1')",
            ],
            "no_broker_owned_account",
        ),
        ([REPLICA, "UPDATE account_holders SET removed_at = now()"], "every_account_has_a_holder"),
        (
            [
                REPLICA,
                "UPDATE brokers b SET manager_id = "
                "(SELECT min(o.broker_id) FROM brokers o WHERE o.broker_id <> b.broker_id)",
            ],
            "no_supervision_cycle",
        ),
        ([REPLICA, "UPDATE accounts SET cash = cash + 1"], "cash_matches_movements_and_trades"),
        (
            [
                "ALTER TABLE accounts DROP CONSTRAINT accounts_cash_within_limit",
                REPLICA,
                "UPDATE accounts SET credit_limit = 0 WHERE cash < 0",
            ],
            "cash_within_limit",
        ),
        ([REPLICA, "UPDATE accounts SET last_seq = last_seq + 1"], "latest_trade_on_account"),
        (
            [REPLICA, "UPDATE lots SET remaining_cost = remaining_cost - 0.01 WHERE remaining > 0"],
            "lots_match_positions",
        ),
        ([REPLICA, "DELETE FROM lots"], "lots_match_buys"),
        (
            [REPLICA, "UPDATE lots SET remaining = remaining - 1 WHERE remaining > 0"],
            "closures_match_lots",
        ),
        ([REPLICA, "UPDATE positions SET realized = realized + 1"], "closures_match_sells"),
    ],
)
def test_verify_fails_naming_the_broken_invariant(
    cli: Any,
    superuser_conn: psycopg.Connection[Any],
    world: World,
    corruption: list[str],
    invariant: str,
) -> None:
    conn = superuser_conn
    for statement in corruption:
        conn.execute(statement)
    conn.execute("SET session_replication_role = origin")
    result = cli("verify")
    assert result.exit_code == 1
    assert f"FAIL  {invariant}" in result.stdout
    assert invariant in result.stderr
    report = json.loads(cli("verify", "--json").stdout)
    assert {i["name"] for i in report["invariants"] if not i["holds"]} >= {invariant}


def test_db_url_prints_the_database_in_use(cli: Any, db_url: str) -> None:
    result = cli("db-url")
    assert result.exit_code == 0 and result.stdout.strip() == db_url


def test_migrate_an_external_database_and_refuse_a_stale_one(pg_server: Any) -> None:
    import uuid

    name = f"sl_cli_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    try:
        runner = CliRunner()
        stale = runner.invoke(main, ["holdings", "--account", "1"], env={"DATABASE_URL": url})
        assert stale.exit_code == 1 and "stockledger migrate" in stale.stderr
        first = runner.invoke(main, ["migrate", "--json"], env={"DATABASE_URL": url})
        assert first.exit_code == 0 and "applied migration 0001_ledger" in first.stderr
        assert json.loads(first.stdout) == {"schema_version": migrations.latest_version()}
        again = runner.invoke(main, ["migrate"], env={"DATABASE_URL": url})
        assert again.exit_code == 0 and "applied" not in again.stderr
    finally:
        pg_server.drop_database(name)


def test_broker_with_an_account_owners_tax_id_refused_by_cli(
    cli: Any, world: World, conn: psycopg.Connection[Any]
) -> None:
    owner_tax = scalar(conn, "SELECT tax_id FROM clients WHERE client_id = %s", [world.owner])
    result = cli("broker", "add", "--name", "Sneaky", "--tax-id", owner_tax, "--license", "SN-1")
    assert result.exit_code == 1 and result.stderr.startswith("error: broker_owned_account:")


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "1e9"])
def test_an_unusable_setting_is_one_line_not_a_traceback(value: str) -> None:
    result = CliRunner().invoke(main, ["verify"], env={"STOCKLEDGER_POOL_TIMEOUT_SECONDS": value})
    assert result.exit_code != 0
    assert "STOCKLEDGER_POOL_TIMEOUT_SECONDS" in result.output
    assert result.output.startswith("error: invalid_setting:")
    assert "Traceback" not in result.output and not isinstance(result.exception, ValueError)


@pytest.mark.parametrize(
    "token", ["a", " " * 40, "x" * 31, "x" * 31 + " ", "tab\tinside" + "x" * 30]
)
def test_serve_refuses_a_weak_admin_token_in_one_line(token: str) -> None:
    """A short token can be guessed; a whitespace-only one could never be presented and used to
    turn administration off without a word. serve stops before touching the database."""
    result = CliRunner().invoke(
        main, ["serve", "--port", "1"], env={"STOCKLEDGER_ADMIN_TOKEN": token}
    )
    assert result.exit_code != 0
    assert result.output.startswith("error: invalid_setting: STOCKLEDGER_ADMIN_TOKEN")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_a_strong_admin_token_and_an_unset_one_are_accepted() -> None:
    strong = "x" * MIN_ADMIN_TOKEN_LENGTH
    assert Settings.from_env({"STOCKLEDGER_ADMIN_TOKEN": strong}).admin_token == strong
    # Empty is unset: administration over HTTP is off, and serve says so at start.
    assert Settings.from_env({"STOCKLEDGER_ADMIN_TOKEN": ""}).admin_token is None
