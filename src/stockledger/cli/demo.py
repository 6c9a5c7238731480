"""Demo data for `stockledger demo`, and the curl commands printed to try it."""

from __future__ import annotations

import json
import secrets
import shlex
from decimal import Decimal
from typing import Any

import psycopg

from stockledger.db.boundary import fetch_all, transaction
from stockledger.db.queries import query
from stockledger.registry import keys as api_keys
from stockledger.registry import records as admin
from stockledger.registry.requests import AccountCreate, BrokerCreate, ClientCreate, StockCreate
from stockledger.trading.requests import TradeRequest
from stockledger.trading.trades import execute_trade

# Licenses and tax ids of their own, so that the demo never collides with data an operator
# made first (the README's `broker add` example uses NW-0001); stocks already listed are
# reused.
BROKERS = [
    ("Northwind Securities", "DEMOBRK1", "DEMO-NW-0001"),
    ("Bluefin Brokerage", "DEMOBRK2", "DEMO-BF-0002"),
]
CLIENTS = [
    ("Ada Lovelace", "DEMOCL1", "ada@example.com"),
    ("Grace Hopper", "DEMOCL2", "grace@example.com"),
    ("Acme Pension Fund", "DEMOCL3", None),
]
STOCKS = [
    ("AAPL", "Apple Inc."),
    ("MSFT", "Microsoft Corporation"),
    ("GOOGL", "Alphabet Inc. Class A"),
    ("BRK.B", "Berkshire Hathaway Inc. Class B"),
]
# (client index, broker index)
ACCOUNTS = [(0, 0), (1, 0), (2, 1)]
# (account index, symbol, side, quantity, price)
TRADES = [
    (0, "AAPL", "buy", 100, "187.25"),
    (0, "MSFT", "buy", 40, "415.10"),
    (0, "AAPL", "sell", 25, "189.00"),
    (1, "GOOGL", "buy", 60, "171.3350"),
    (2, "BRK.B", "buy", 500, "452.00"),
    (2, "AAPL", "buy", 1000, "186.90"),
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
        for symbol, name in STOCKS:
            admin.ensure_stock(conn, StockCreate(symbol=symbol, name=name))
        accounts = [
            admin.open_account(
                conn,
                AccountCreate(client_id=clients[c]["client_id"], broker_id=brokers[b]["broker_id"]),
            )
            for c, b in ACCOUNTS
        ]
        for a, symbol, side, quantity, price in TRADES:
            account = accounts[a]
            execute_trade(
                conn,
                TradeRequest(
                    account_id=account["account_id"],
                    broker_id=account["broker_id"],
                    symbol=symbol,
                    side=side,  # type: ignore[arg-type]
                    quantity=quantity,
                    price=Decimal(price),
                ),
            )
    return True


def curl_commands(base_url: str, account_id: int, api_key: str, admin_token: str) -> list[str]:
    """Commands complete on one line each: ids and keys written in, no shell variables."""
    curl = "curl -sS --fail-with-body"
    get = f"{curl} -H 'Authorization: Bearer {api_key}'"
    as_admin = f"{curl} -H 'Authorization: Bearer {admin_token}'"
    json_header = "-H 'Content-Type: application/json'"

    def post(path: str, body: dict[str, Any], extra: str = "") -> str:
        data = shlex.quote(json.dumps(body))
        return f"{get} -X POST {base_url}{path} {json_header}{extra} -d {data}"

    trade = {"account_id": account_id, "symbol": "AAPL"}
    # A fresh key per start: run the line twice to see the second answer replayed.
    idempotency = f" -H 'Idempotency-Key: demo-{secrets.token_hex(4)}'"
    return [
        f"{get} '{base_url}/getOwner?account_id={account_id}'",
        f"{get} '{base_url}/getHoldings?account_id={account_id}'",
        post("/trade", {**trade, "side": "buy", "quantity": 10, "price": "187.25"}),
        post("/trade", {**trade, "side": "sell", "quantity": 5, "price": "188.10"}),
        post("/v1/trades", {**trade, "side": "buy", "quantity": 1, "price": "187.50"}, idempotency),
        f"{get} '{base_url}/v1/accounts/{account_id}/trades?limit=3'",
        f"{as_admin} -X PATCH {base_url}/v1/accounts/{account_id} {json_header} "
        + '-d \'{"status": "open"}\'',
        f"{curl} {base_url}/readyz",
    ]


def instructions(
    conn: psycopg.Connection[Any], seeded: bool, base_url: str, admin_token: str
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
    lines += ["", "API keys (issued for this start):"]
    lines += [f"  broker {broker_id}: {key}" for broker_id, key in keys.items()]
    lines += [f"  admin token: {admin_token}"]
    first = accounts[0]
    lines += ["", f"Try (each line is complete; API docs at {base_url}/docs):"]
    lines += curl_commands(base_url, first["account_id"], keys[first["broker_id"]], admin_token)
    lines.append("")
    return "\n".join(lines)
