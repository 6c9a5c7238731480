"""Holdings: read from positions, which the database keeps in each trade's transaction."""

from __future__ import annotations

from typing import Any

import psycopg

from stockledger.db.boundary import fetch_all
from stockledger.db.queries import query
from stockledger.errors import not_found


def holdings(
    conn: psycopg.Connection[Any], account_id: int, broker_id: int | None = None
) -> dict[str, Any]:
    """broker_id: the caller's, to see only its own accounts; None for the operator."""
    params = {"account_id": account_id, "broker_id": broker_id}
    rows = fetch_all(conn, query("account_holdings"), params)
    if not rows:
        raise not_found("account")
    return {
        "account_id": account_id,
        "holdings": [
            {"symbol": row["symbol"], "quantity": row["quantity"]}
            for row in rows
            if row["symbol"] is not None
        ],
    }
