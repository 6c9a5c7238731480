"""The seed's three answers (SPEC §2.7), in its own shapes and sentinels:

    GET /getOwner?aid=A                                   [{"pid":P},…] or [{"pid":-1}]
    GET /getHoldings?aid=A&sym=S                          {"shares":Q} or {"shares":-1}
    GET /trade?aid=A&sym=S&type=buy|sell&shares=Q&price=P {"res":SEQ} or {"res":"fail"}

Each takes the request's parameters (None when they are malformed: a parameter missing,
repeated or unknown) and gives the JSON value to answer. A trade goes through trade() for the
account's broker of record (an account's broker never changes: accounts_broker_id_immutable),
under every rule, in one statement: a refusal is {"res":"fail"} with nothing written. What is
not a refusal (a 5xx: the database unreachable, a timeout) is raised, and answered as the app
answers it: a "fail" would tell a client that its trade was refused when nobody knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import ValidationError

from stockledger import json_text
from stockledger.db.boundary import fetch_all, fetch_one
from stockledger.db.queries import query
from stockledger.errors import StockledgerError
from stockledger.fields import MAX_ID, SYMBOL_PATTERN
from stockledger.serve import metrics
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest

Answer = Callable[[psycopg.Connection[Any], dict[str, str] | None], Any]

NO_OWNER: list[dict[str, Any]] = [{"pid": -1}]
NO_HOLDING: dict[str, Any] = {"shares": -1}
FAILED: dict[str, Any] = {"res": "fail"}


def _account_id(text: str) -> int | None:
    """The API's ids: plain digits, 1 to the largest bigint (no sign, space or exponent)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def owners(conn: psycopg.Connection[Any], parameters: dict[str, str] | None) -> Any:
    account_id = None if parameters is None else _account_id(parameters["aid"])
    if account_id is None:
        return NO_OWNER
    rows = fetch_all(conn, query("dialect_account_holders"), {"account_id": account_id})
    # Every account has a current holder (rule 8): none means no such account.
    return [{"pid": pid(row["tax_id"])} for row in rows] or NO_OWNER


def pid(tax_id: str) -> int | str:
    """The seed's person id: the tax id as a JSON integer when that is the same id (digits,
    without a leading zero that an integer would drop), its text otherwise."""
    if tax_id.isascii() and tax_id.isdigit() and (tax_id == "0" or not tax_id.startswith("0")):
        return int(tax_id)
    return tax_id


def shares(conn: psycopg.Connection[Any], parameters: dict[str, str] | None) -> Any:
    account_id = None if parameters is None else _account_id(parameters["aid"])
    if parameters is None or account_id is None:
        return NO_HOLDING
    if not re.fullmatch(SYMBOL_PATTERN, parameters["sym"]):
        return NO_HOLDING  # no stock is listed under it (stocks_symbol_check)
    row = fetch_one(
        conn,
        query("dialect_position"),
        {"account_id": account_id, "symbol": parameters["sym"]},
    )
    if row is None:  # no such account, or no such stock
        return NO_HOLDING
    return {"shares": seed_shares(row["quantity"])}


def seed_shares(quantity: Decimal) -> Decimal:
    """A quantity as the seed wrote it, a JSON number with at least one decimal place: 4.0,
    3.33, 0.0 (its own digits otherwise, never through a float)."""
    canonical = json_text.canonical_quantity(quantity)
    return canonical.quantize(Decimal("0.1")) if canonical.as_tuple().exponent == 0 else canonical


def trade(conn: psycopg.Connection[Any], parameters: dict[str, str] | None) -> Any:
    account_id = None if parameters is None else _account_id(parameters["aid"])
    if parameters is None or account_id is None:
        return FAILED
    row = fetch_one(conn, query("dialect_broker_of_record"), {"account_id": account_id})
    if row is None:
        return FAILED
    try:
        request = TradeRequest.model_validate(
            {
                "account_id": account_id,
                "broker_id": row["broker_id"],
                "symbol": parameters["sym"],
                "side": parameters["type"],
                "quantity": parameters["shares"],
                "price": parameters["price"],
            }
        )
    except ValidationError:
        return FAILED
    try:
        result = trades.execute_trade(conn, request)
    except StockledgerError as refusal:
        if refusal.status >= 500:  # not a refusal: nobody knows whether it was written
            raise
        return FAILED
    metrics.trade_executed(request.side)
    return {"res": result.trade.seq}
