"""Demo data for `stockledger demo`, and the curl commands printed to try it."""

from __future__ import annotations

import json
import secrets
import shlex
from decimal import Decimal
from typing import Any

import psycopg

from stockledger.books.cash import move_cash
from stockledger.books.requests import CashMovement
from stockledger.db.boundary import fetch_all, fetch_one, fetch_value, transaction
from stockledger.db.queries import query
from stockledger.registry import keys as api_keys
from stockledger.registry import records as admin
from stockledger.registry.requests import (
    AccountChange,
    AccountCreate,
    BrokerChange,
    BrokerCreate,
    ClientCreate,
    PriceRecord,
    StockCreate,
)
from stockledger.trading.requests import TradeRequest
from stockledger.trading.trades import execute_trade

# Licenses and tax ids of their own, so that the demo never collides with data an operator
# made first (the README's `broker add` example uses NW-0001); stocks already listed are
# reused.
BROKERS = [
    ("Northwind Securities", "DEMOBRK1", "DEMO-NW-0001"),
    ("Bluefin Brokerage", "DEMOBRK2", "DEMO-BF-0002"),
    ("Northwind Compliance Desk", "DEMOBRK3", "DEMO-NW-0003"),
]
# (broker index, its supervisor's index): the compliance desk reads Northwind's accounts.
SUPERVISION = [(0, 2)]
CLIENTS = [
    ("Ada Lovelace", "DEMOCL1", "ada@example.com"),
    ("Grace Hopper", "DEMOCL2", "grace@example.com"),
    ("Acme Pension Fund", "DEMOCL3", None),
]
# (symbol, name, fractionable, reference price)
STOCKS = [
    ("AAPL", "Apple Inc.", False, "189.4000"),
    ("MSFT", "Microsoft Corporation", False, "417.0500"),
    ("GOOGL", "Alphabet Inc. Class A", False, "172.1000"),
    ("BRK.B", "Berkshire Hathaway Inc. Class B", False, "451.2500"),
    ("VOO", "Vanguard S&P 500 ETF", True, "502.3100"),
]
# (holders' client indexes, primary first; broker index; deposit; credit limit): the first
# account is joint and may borrow 50,000; the second is a cash account (limit 0); the third
# books everything (no limit), as every account did before cash existed.
ACCOUNTS = [
    ((0, 1), 0, "250000.00", "50000.00"),
    ((1,), 0, "20000.00", "0"),
    ((2,), 1, "1000000.00", None),
]
# (account index, symbol, side, quantity, price)
TRADES = [
    (0, "AAPL", "buy", "100", "187.25"),
    (0, "MSFT", "buy", "40", "415.10"),
    (0, "AAPL", "sell", "25", "189.00"),
    (0, "VOO", "buy", "12.5", "498.7700"),
    (1, "GOOGL", "buy", "60", "171.3350"),
    (2, "BRK.B", "buy", "500", "452.00"),
    (2, "AAPL", "buy", "1000", "186.90"),
]


def _demo_accounts(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    tax_ids = [tax_id for _, tax_id, _ in CLIENTS]
    return fetch_all(conn, query("accounts_of_tax_ids"), {"tax_ids": tax_ids})


def seed(conn: psycopg.Connection[Any]) -> bool:
    """Create the demo data unless it exists; return whether it was created now."""
    if _demo_accounts(conn):
        return False
    with transaction(conn):
        brokers = [
            admin.add_broker(conn, BrokerCreate(name=n, tax_id=t, license_no=lic))
            for n, t, lic in BROKERS
        ]
        clients = [
            admin.add_client(conn, ClientCreate(name=n, tax_id=t, email=e)) for n, t, e in CLIENTS
        ]
        for broker, supervisor in SUPERVISION:
            admin.change_broker(
                conn,
                brokers[broker]["broker_id"],
                BrokerChange(manager_id=brokers[supervisor]["broker_id"]),
            )
        for symbol, name, fractionable, price in STOCKS:
            admin.ensure_stock(
                conn, StockCreate(symbol=symbol, name=name, fractionable=fractionable)
            )
            admin.record_price(conn, symbol, PriceRecord(price=Decimal(price)))
        accounts = [
            admin.open_account(
                conn,
                AccountCreate(
                    holders=[clients[c]["client_id"] for c in holders],
                    broker_id=brokers[b]["broker_id"],
                ),
            )
            for holders, b, _, _ in ACCOUNTS
        ]
        for account, (_, _, deposit, limit) in zip(accounts, ACCOUNTS, strict=True):
            move_cash(
                conn,
                account["account_id"],
                CashMovement(kind="deposit", amount=Decimal(deposit), reference="opening deposit"),
            )
            if limit is not None:
                admin.change_account(
                    conn, account["account_id"], AccountChange(credit_limit=Decimal(limit))
                )
        for a, symbol, side, quantity, price in TRADES:
            account = accounts[a]
            execute_trade(
                conn,
                TradeRequest(
                    account_id=account["account_id"],
                    broker_id=account["broker_id"],
                    symbol=symbol,
                    side=side,  # type: ignore[arg-type]
                    quantity=Decimal(quantity),
                    price=Decimal(price),
                ),
            )
    return True


def curl_commands(
    base_url: str,
    account_id: int,
    cash_account_id: int,
    lot_id: int,
    api_key: str,
    supervisor_key: str,
    admin_token: str,
) -> list[str]:
    """Commands complete on one line each: ids and keys written in, no shell variables. Each
    succeeds; the two refusals print the status they are refused with, and say which."""
    curl = "curl -sS --fail-with-body"
    get = f"{curl} -H 'Authorization: Bearer {api_key}'"
    as_admin = f"{curl} -H 'Authorization: Bearer {admin_token}'"
    as_supervisor = f"{curl} -H 'Authorization: Bearer {supervisor_key}'"
    json_header = "-H 'Content-Type: application/json'"

    def post(path: str, body: dict[str, Any], extra: str = "", who: str = get) -> str:
        data = shlex.quote(json.dumps(body))
        return f"{who} -X POST {base_url}{path} {json_header}{extra} -d {data}"

    trade = {"account_id": account_id, "symbol": "AAPL"}
    # A fresh key per start: run the line twice to see the second answer replayed.
    idempotency = f" -H 'Idempotency-Key: demo-{secrets.token_hex(4)}'"
    refused_trade = shlex.quote(json.dumps({**trade, "side": "buy", "quantity": 1, "price": "1"}))
    unpaid = shlex.quote(
        json.dumps(
            {"account_id": cash_account_id, "symbol": "GOOGL", "side": "buy", "quantity": 1000,
             "price": "172.10"}
        )
    )  # fmt: skip
    status_only = "curl -sS -o /dev/null -w '%{http_code}\\n'"
    deposit = f" -H 'Idempotency-Key: demo-cash-{secrets.token_hex(4)}'"
    return [
        "# The joint account's holders (primary first), and its holdings at reference prices:",
        f"{get} '{base_url}/getOwner?account_id={account_id}'",
        f"{get} '{base_url}/getHoldings?account_id={account_id}'",
        "# Trades, whole and fractional (VOO is fractionable), and one under an Idempotency-Key:",
        post("/trade", {**trade, "side": "buy", "quantity": 10, "price": "187.25"}),
        post("/trade", {**trade, "side": "sell", "quantity": 5, "price": "188.10"}),
        post(
            "/v1/trades",
            {**trade, "symbol": "VOO", "side": "buy", "quantity": 2.5, "price": "501.10"},
        ),
        post("/v1/trades", {**trade, "side": "buy", "quantity": 1, "price": "187.50"}, idempotency),
        f"{get} '{base_url}/v1/accounts/{account_id}/trades?limit=3'",
        "# The operator: a status, a reference price, and the stock with its latest price:",
        f"{as_admin} -X PATCH {base_url}/v1/accounts/{account_id} {json_header} "
        + '-d \'{"status": "open"}\'',
        post("/v1/stocks/AAPL/prices", {"price": "190.0500"}, who=as_admin),
        f"{as_admin} {base_url}/v1/stocks/AAPL",
        "# The supervisor (Northwind's compliance desk) reads the account, but may not trade it:",
        f"{as_supervisor} '{base_url}/v1/accounts/{account_id}/holdings'",
        f"{status_only} -H 'Authorization: Bearer {supervisor_key}' "
        f"-X POST {base_url}/v1/trades {json_header} -d {refused_trade}  # prints 403",
        "# Money: a deposit (under an Idempotency-Key), a sell that names the lot it closes",
        "# (the answer lists its closures and realized P&L), the portfolio, lots, cash history:",
        post(
            f"/v1/accounts/{account_id}/cash",
            {"kind": "deposit", "amount": "1000.00", "reference": "demo"},
            deposit,
            who=as_admin,
        ),
        post(
            "/v1/trades",
            {
                **trade,
                "side": "sell",
                "quantity": 1,
                "price": "190.00",
                "fee": "0.50",
                "lots": [{"lot_id": lot_id, "quantity": 1}],
            },
        ),
        f"{get} '{base_url}/v1/accounts/{account_id}/portfolio'",
        f"{get} '{base_url}/v1/accounts/{account_id}/lots?symbol=AAPL&open=true'",
        f"{get} '{base_url}/v1/accounts/{account_id}/cash?limit=5'",
        f"# A cash account (account {cash_account_id}, credit limit 0) cannot buy what it "
        "cannot pay for: 409 insufficient_funds",
        f"{status_only} -H 'Authorization: Bearer {api_key}' "
        f"-X POST {base_url}/v1/trades {json_header} -d {unpaid}  # prints 409",
        f"{curl} {base_url}/readyz",
    ]


def dialect_commands(base_url: str, account_id: int) -> list[str]:
    """The seed's own requests (SPEC §2.7), as its clients send them: no credentials."""
    curl = "curl -sS --fail-with-body"
    return [
        "# The seed's own clients (--seed-dialect; loopback only): the holders' tax ids, a",
        "# position, and a buy for the account's broker of record (answers its seq):",
        f"{curl} '{base_url}/getOwner?aid={account_id}'",
        f"{curl} '{base_url}/getHoldings?aid={account_id}&sym=AAPL'",
        f"{curl} '{base_url}/trade?aid={account_id}&sym=AAPL&type=buy&shares=2&price=187.25'",
    ]


def supervisor_of(conn: psycopg.Connection[Any], broker_id: int) -> int:
    record = fetch_one(conn, query("broker"), {"broker_id": broker_id})
    assert record is not None and record["manager_id"] is not None, "the demo's supervision"
    return int(record["manager_id"])


def instructions(
    conn: psycopg.Connection[Any],
    seeded: bool,
    base_url: str,
    admin_token: str,
    *,
    dialect: bool = False,
) -> str:
    """What to try. Keys are stored only as hashes, so each start issues fresh demo keys; the
    previous start's are revoked, so that no forgotten demo key stays live."""
    accounts = _demo_accounts(conn)
    keys = {}
    for broker_id in sorted({a["broker_id"] for a in accounts}):
        api_keys.revoke_all_keys(conn, broker_id)
        keys[broker_id] = api_keys.issue_key(conn, broker_id)["api_key"]
    lines = ["Demo data " + ("created." if seeded else "already present."), "", "Accounts:"]
    lines += [
        f"  account {a['account_id']}: {a['owner']}, broker of record {a['broker_id']}"
        for a in accounts
    ]
    supervisor = supervisor_of(conn, accounts[0]["broker_id"])
    api_keys.revoke_all_keys(conn, supervisor)
    keys[supervisor] = api_keys.issue_key(conn, supervisor)["api_key"]
    lines += ["", "API keys (issued for this start):"]
    lines += [f"  broker {broker_id}: {key}" for broker_id, key in keys.items()]
    lines += [f"  admin token: {admin_token}"]
    first, cash_account = accounts[0], accounts[1]
    # The open AAPL lot with the most shares left: what the demo's named sell closes a share of.
    lot_id = fetch_value(conn, query("demo_lot"), {"account_id": first["account_id"]})
    lines += ["", f"Try (each line is complete; API docs at {base_url}/docs):"]
    lines += curl_commands(
        base_url,
        first["account_id"],
        cash_account["account_id"],
        int(lot_id),
        keys[first["broker_id"]],
        keys[supervisor],
        admin_token,
    )
    if dialect:
        lines += dialect_commands(base_url, first["account_id"])
    lines.append("")
    return "\n".join(lines)
