"""The portfolio (SPEC §2.6): cash, credit limit and buying power, and per position its
quantity, cost basis, average cost, price, market value and unrealized P&L, with totals and
the P&L realized to date. Every figure is one the database maintains (or a rounding of them in
the same query), so a read costs O(positions of one account), however long the history."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from stockledger.errors import not_found
from stockledger.json_text import money_text, quantity_json
from stockledger.registry.accounts import account_rows


def portfolio(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    params = {"account_id": account_id, "broker_id": broker_id}
    rows = account_rows(conn, "account_portfolio", params)
    if not rows:
        raise not_found("account")
    first = rows[0]
    cash, limit = first["cash"], first["credit_limit"]
    held = [row for row in rows if row["symbol"] is not None and row["quantity"] > 0]
    priced = [row for row in held if row["price"] is not None]
    realized = sum((row["realized"] for row in rows if row["symbol"] is not None), Decimal(0))
    cost = sum((row["cost_basis"] for row in held), Decimal(0))
    value = sum((row["market_value"] for row in priced), Decimal(0))
    unrealized = sum((row["market_value"] - row["cost_basis"] for row in priced), Decimal(0))
    return {
        "account_id": account_id,
        "cash": money_text(cash, 2),
        "credit_limit": None if limit is None else money_text(limit, 2),
        "buying_power": None if limit is None else money_text(cash + limit, 2),
        "lot_method": first["lot_method"],
        "positions": [_position(row) for row in held],
        "totals": {
            "cost_basis": money_text(cost, 2),
            # Of the positions that have a price; all of them when priced_positions says so.
            "market_value": money_text(value, 2),
            "unrealized": money_text(unrealized, 2),
            "priced_positions": len(priced),
            "positions": len(held),
        },
        "realized": money_text(realized, 2),
    }


def _position(row: dict[str, Any]) -> dict[str, Any]:
    position: dict[str, Any] = {
        "symbol": row["symbol"],
        "quantity": quantity_json(row["quantity"]),
        "cost_basis": money_text(row["cost_basis"], 2),
        "average_cost": money_text(row["average_cost"], 4),
        "realized": money_text(row["realized"], 2),
    }
    if row["price"] is not None:
        position["price"] = money_text(row["price"], 4)
        position["market_value"] = money_text(row["market_value"], 2)
        position["unrealized"] = money_text(row["market_value"] - row["cost_basis"], 2)
    return position
