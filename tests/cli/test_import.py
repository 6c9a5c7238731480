"""`stockledger import` (SPEC §2.9): the shipped example round trip, broken documents each
refused by the first offending record with nothing written, --dry-run, ids kept and continued,
and verify after an import."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.support import ADMIN_TOKEN, as_caller, ledger_snapshot

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "import-example.json"


def book() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return document


def write(tmp_path: Path, document: Any, name: str = "book.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def everything(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """The ledger and the registry: what a refused import must leave as it was."""
    registry = tuple(
        conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
        for name in ("stocks", "stock_prices", "clients", "brokers", "tax_identities")
    )
    return ledger_snapshot(conn) + registry


def test_the_example_round_trip(
    cli: Any, client: FlaskClient, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    result = cli("import", str(EXAMPLE), "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts == {
        "dry_run": False, "stocks": 3, "clients": 3, "brokers": 2, "accounts": 3, "cash": 4,
        "trades": 7,
    }  # fmt: skip
    admin = as_caller(client, ADMIN_TOKEN)

    # Accounts 150-152 as the source numbered them, holders in order (primary first).
    owner = admin.get("/v1/accounts/150/owner").get_json()
    assert [o["client_id"] for o in owner["owners"]] == [1, 5]
    account = admin.get("/v1/accounts/151").get_json()
    assert account["broker_id"] == 3
    assert admin.get("/v1/accounts/152").get_json()["status"] == "frozen"

    # Positions and cash: 150 bought 5 AAPL, sold 2 (fee 0.50), bought 10 TWTR (fee 1.00).
    holdings = admin.get("/getHoldings?account_id=150").get_json()["holdings"]
    assert [(h["symbol"], h["quantity"]) for h in holdings] == [("AAPL", 3), ("TWTR", 10)]
    portfolio = admin.get("/v1/accounts/150/portfolio").get_json()
    # 1000.00 - 845.65 - 416.00 + 341.50
    assert portfolio["cash"] == "79.85"
    assert portfolio["credit_limit"] is None
    # 151 (hifo) sold 1.5 VOO: the 420.00 lot first, then 0.25 of the 400.00 one.
    portfolio = admin.get("/v1/accounts/151/portfolio").get_json()
    assert portfolio["cash"] == "3870.00" and portfolio["credit_limit"] == "0.00"
    assert portfolio["realized"] == "20.00"
    voo = next(p for p in portfolio["positions"] if p["symbol"] == "VOO")
    assert (voo["quantity"], voo["cost_basis"], voo["price"]) == (2.25, "900.00", "501.1000")
    lots = admin.get("/v1/accounts/151/lots?symbol=VOO").get_json()["lots"]
    assert [(lot["quantity"], lot["remaining"]) for lot in lots] == [(2.5, 2.25), (1.25, 0)]
    trade = admin.get("/v1/accounts/151/trades?client_order_id=CLEO-0001").get_json()["trades"]
    assert trade[0]["seq"] == 3 and trade[0]["executed_at"] == "2023-05-06T10:00:00+00:00"

    # The registry: supervision, the delisted stock, the reference prices.
    assert conn.execute("SELECT manager_id FROM brokers WHERE broker_id = 3").fetchone() == (4,)
    stocks = conn.execute("SELECT symbol, active, fractionable FROM stocks ORDER BY 1").fetchall()
    assert stocks == [("AAPL", True, False), ("TWTR", False, False), ("VOO", True, True)]
    address = conn.execute("SELECT address FROM clients WHERE client_id = 1").fetchone()
    assert address == ("100 W. Main Street",)

    verified = cli("verify")
    assert verified.exit_code == 0, verified.output


def test_ids_kept_and_later_ids_continue_after_them(
    cli: Any, conn: psycopg.Connection[Any]
) -> None:
    assert cli("import", str(EXAMPLE)).exit_code == 0
    added = cli("client", "add", "--name", "Dee", "--tax-id", "D1", "--json")
    client_id = json.loads(added.output)["client_id"]
    assert client_id > 7
    broker = json.loads(
        cli("broker", "add", "--name", "Hal", "--tax-id", "H1", "--license", "H1", "--json").output
    )
    assert broker["broker_id"] > 4
    opened = cli(
        "account", "open", "--client", str(client_id), "--broker", str(broker["broker_id"]),
        "--json",
    )  # fmt: skip
    assert json.loads(opened.output)["account_id"] > 152


def test_records_without_ids_get_ids_after_the_supplied_ones(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    document = {
        "clients": [
            {"name": "No id", "tax_id": "NOID1"},
            {"client_id": 40, "name": "Forty", "tax_id": "FORTY"},
        ]
    }
    assert cli("import", str(write(tmp_path, document))).exit_code == 0
    rows = conn.execute("SELECT client_id, tax_id FROM clients ORDER BY client_id").fetchall()
    assert rows == [(40, "FORTY"), (41, "NOID1")]


def test_a_dry_run_checks_everything_and_writes_nothing(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    before = everything(conn)
    result = cli("import", str(EXAMPLE), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing written" in result.output
    assert everything(conn) == before
    # And it finds what a real run would refuse.
    broken = book()
    broken["trades"][2]["quantity"] = 50
    result = cli("import", str(write(tmp_path, broken)), "--dry-run")
    assert result.exit_code != 0
    assert "trades[2]: insufficient_holdings" in result.output
    assert everything(conn) == before


def test_sections_apply_in_the_spec_order_whatever_the_files(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    document = book()
    reordered = {name: document[name] for name in reversed(list(document))}
    assert cli("import", str(write(tmp_path, reordered))).exit_code == 0
    assert conn.execute("SELECT count(*) FROM trades").fetchone() == (7,)


def _edit(change: Any) -> Any:
    def broken() -> Any:
        document = book()
        return change(document) or document

    return broken


def _set(section: str, index: int, **fields: Any) -> Any:
    return _edit(lambda d: d[section][index].update(fields))


BROKEN: list[tuple[str, Any, str]] = [
    # (what, the document, the start of the refusal)
    ("a sell of more than the account holds", _set("trades", 2, quantity=6),
     "trades[2]: insufficient_holdings"),
    ("times out of order", _set("trades", 1, executed_at="2023-04-30T00:00:00Z"),
     "trades[1]: out_of_order"),
    ("a seq that is not the account's next", _set("trades", 2, seq=4), "trades[2]: out_of_order"),
    ("a holder who is a broker", _edit(lambda d: (
        d["clients"].append({"client_id": 9, "name": "Flo again", "tax_id": "6006006000"}),
        d["accounts"][0]["holders"].append(9))[-1]),
     "accounts[0]: broker_owned_account"),
    ("an unknown stock", _set("trades", 3, symbol="NOPE"), "trades[3]: stock_not_tradable"),
    ("a fraction of a whole-share stock", _set("trades", 0, quantity="5.5"),
     "trades[0]: fractional_not_allowed"),
    ("a buy a cash account cannot pay for", _set("trades", 3, quantity="20"),
     "trades[3]: insufficient_funds"),
    ("a withdrawal of more than the cash", _set("cash", 2, amount="9000.00"),
     "cash[2]: insufficient_funds"),
    ("a supervision cycle", _set("brokers", 1, manager_id=3), "brokers[1]: supervision_cycle"),
    ("a duplicate id", _edit(lambda d: d["clients"].append(
        {"client_id": 5, "name": "Bob twin", "tax_id": "5005005001"})),
     "clients[3]: already_exists"),
    ("a duplicate tax id", _set("clients", 2, tax_id="1001001000"), "clients[2]: already_exists"),
    ("a trade on an unknown account", _set("trades", 6, account_id=999),
     "trades[6]: not_found"),
    ("an account of an unknown broker", _set("accounts", 1, broker_id=99), "accounts[1]:"),
    ("an account of an unknown client", _set("accounts", 2, holders=[5, 77]), "accounts[2]:"),
    ("a holder named twice", _set("accounts", 0, holders=[1, 5, 1]),
     "accounts[0]: Value error, a client is named twice in holders"),
    ("a wrong type", _set("trades", 4, quantity=True), "trades[4].quantity:"),
    ("a price that is not a number", _set("trades", 4, price="cheap"),
     "trades[4].price:"),
    ("an unknown field", _set("accounts", 0, credit_limt="10"), "accounts[0].credit_limt:"),
    ("an unknown section", _edit(lambda d: d.update(positions=[])), "positions: not a section"),
    ("a section that is not an array", _edit(lambda d: d.update(cash={})),
     "cash: a section is an array"),
    ("a record that is not an object", _edit(lambda d: d["stocks"].append("MSFT")),
     "stocks[3]: a record is a JSON object"),
    ("malformed JSON", lambda: json.dumps(book())[:-40], "trades[6]: not valid JSON"),
    ("not an object", lambda: "[1, 2]", "$: a book is one JSON object"),
    ("a key given twice", lambda: json.dumps(book()).replace(
        '"side": "sell", "quantity": 2,', '"side": "sell", "quantity": 2, "quantity": 1,'),
     "trades[2]: the key 'quantity' is given twice"),
]  # fmt: skip


def test_a_broken_document_is_refused_by_its_first_offending_record(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # One database for the whole table: each document must leave it as it was, so the next
    # meets the same one (and on a cluster a database per case would cost more than the case).
    before = everything(conn)
    for what, document, refusal in BROKEN:
        result = cli("import", str(write(tmp_path, document())))
        assert result.exit_code != 0, what
        assert f"error: {refusal}" in result.output, (what, result.output)
        assert "nothing was written" in result.output, what
        assert everything(conn) == before, what


def test_the_first_offending_record_is_named_across_brokers(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Two brokers' trades in one chunk: each broker's batch is checked on its own, and the
    # record named is the first of the document that is refused.
    document = book()
    document["trades"][6]["quantity"] = "1.5"  # account 152 (broker 4): a fraction of AAPL
    document["trades"][5]["quantity"] = "9"  # account 151 (broker 3): more than it holds
    result = cli("import", str(write(tmp_path, document)))
    assert "error: trades[5]: insufficient_holdings" in result.output, result.output


def test_cash_and_quantities_are_exact(cli: Any, conn: psycopg.Connection[Any]) -> None:
    assert cli("import", str(EXAMPLE)).exit_code == 0
    amounts = conn.execute(
        "SELECT quantity, amount FROM trades WHERE account_id = 151 ORDER BY seq"
    ).fetchall()
    assert amounts == [
        (Decimal("2.5"), Decimal("-1000.00")),
        (Decimal("1.25"), Decimal("-525.00")),
        (Decimal("1.5"), Decimal("645.00")),
    ]
