"""The seed's endpoints, kept exactly for compatibility (SPEC §2.1), under the rules of §2.4."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from stockledger import ledger
from stockledger.api import broker_caller, caller, database
from stockledger.api.problems import json_body
from stockledger.errors import StockledgerError
from stockledger.models import AccountQuery, TradeRequest, parse_query, validate

blueprint = Blueprint("seed", __name__)


def _account_id() -> int:
    return validate(AccountQuery, parse_query(request.args.to_dict(flat=False))).account_id


@blueprint.get("/getOwner")
def get_owner() -> Response:
    with database().connection() as conn:
        who = caller(conn)
        return jsonify(ledger.owner(conn, _account_id(), who.broker_id))


@blueprint.get("/getHoldings")
def get_holdings() -> Response:
    with database().connection() as conn:
        who = caller(conn)
        return jsonify(ledger.holdings(conn, _account_id(), who.broker_id))


@blueprint.post("/trade")
def post_trade() -> tuple[Response, int]:
    with database().connection() as conn:
        who = broker_caller(conn)
        trade = with_caller_as_broker(validate(TradeRequest, json_body()), who.broker_id)
        result = ledger.execute_trade(conn, trade)
    return jsonify(result.to_json()), 201


def with_caller_as_broker(trade: TradeRequest, broker_id: int | None) -> TradeRequest:
    if trade.broker_id is not None and trade.broker_id != broker_id:
        raise StockledgerError(
            "broker_not_authorized", "broker_id differs from the broker of this API key"
        )
    return trade.model_copy(update={"broker_id": broker_id})
