"""Holdings: read from positions, which the database keeps in each trade's transaction, valued
at each stock's latest reference price where it has one (SPEC §1.6)."""

from __future__ import annotations

from typing import Any

import psycopg

from stockledger.errors import not_found
from stockledger.json_text import money_text, quantity_json
from stockledger.registry.accounts import account_rows


def holdings(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    """broker_id: the caller's, to see only the accounts it may read; None for the operator."""
    params = {"account_id": account_id, "broker_id": broker_id}
    rows = account_rows(conn, "account_holdings", params)
    if not rows:
        raise not_found("account")
    return {
        "account_id": account_id,
        "holdings": [_holding(row) for row in rows if row["symbol"] is not None],
    }


def _holding(row: dict[str, Any]) -> dict[str, Any]:
    holding: dict[str, Any] = {"symbol": row["symbol"], "quantity": quantity_json(row["quantity"])}
    if row["price"] is not None:
        holding["price"] = money_text(row["price"], 4)
        holding["market_value"] = money_text(row["market_value"], 2)
    return holding
