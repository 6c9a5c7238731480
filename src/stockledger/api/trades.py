"""Trades: POST /v1/trades (and the seed's POST /trade) and GET /v1/trades/{trade_id}."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger import ledger, metrics
from stockledger.api import broker_caller, caller, connection, protect
from stockledger.api.openapi import ACCOUNT_SCOPED, SECURITY, WITH_BODY
from stockledger.errors import StockledgerError
from stockledger.models import IdempotencyHeader, TradePath, TradeRequest
from stockledger.responses import Trade, TradeExecuted

TAG = Tag(name="trades", description="Execute trades and look them up")
blueprint = APIBlueprint("trades", __name__, abp_tags=[TAG], abp_security=SECURITY)
protect(blueprint)


def submit_trade(body: TradeRequest, header: IdempotencyHeader) -> tuple[Response, int]:
    """Execute one trade for the calling broker; replay it for a repeated Idempotency-Key."""
    who = broker_caller()
    if body.broker_id is not None and body.broker_id != who.broker_id:
        raise StockledgerError(
            "broker_not_authorized", "broker_id differs from the broker of this API key"
        )
    trade = body.model_copy(update={"broker_id": who.broker_id})
    result = ledger.execute_trade(connection(), trade, header.idempotency_key)
    response = jsonify(result.to_json())
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        metrics.trade_executed(trade.side)
    return response, 201


@blueprint.post("/v1/trades", responses={201: TradeExecuted, **WITH_BODY})
def post_trade(body: TradeRequest, header: IdempotencyHeader) -> tuple[Response, int]:
    """Execute one buy or sell

    The broker is the caller. With an Idempotency-Key, a retry of the same request answers
    the first answer again (header Idempotent-Replayed: true) and executes nothing; the same
    key with another request answers 422 idempotency_key_reused. Keys are scoped to
    (broker, account).
    """
    return submit_trade(body, header)


@blueprint.get("/v1/trades/<int:trade_id>", responses={200: Trade, **ACCOUNT_SCOPED})
def get_trade(path: TradePath) -> Response:
    """One trade, by trade_id"""
    return jsonify(ledger.trade(connection(), path.trade_id, caller().broker_id).to_json())
