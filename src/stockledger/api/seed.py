"""The seed's endpoints, kept exactly for compatibility (SPEC §2.1)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from stockledger import ledger
from stockledger.api import database
from stockledger.api.problems import json_body
from stockledger.models import AccountQuery, TradeRequest, parse_query, validate

blueprint = Blueprint("seed", __name__)


def _account_id() -> int:
    return validate(AccountQuery, parse_query(request.args.to_dict(flat=False))).account_id


@blueprint.get("/getOwner")
def get_owner() -> Response:
    account_id = _account_id()
    with database().connection() as conn:
        return jsonify(ledger.owner(conn, account_id))


@blueprint.get("/getHoldings")
def get_holdings() -> Response:
    account_id = _account_id()
    with database().connection() as conn:
        return jsonify(ledger.holdings(conn, account_id))


@blueprint.post("/trade")
def post_trade() -> tuple[Response, int]:
    trade = validate(TradeRequest, json_body())
    with database().connection() as conn:
        result = ledger.execute_trade(conn, trade)
    return jsonify(result.to_json()), 201
