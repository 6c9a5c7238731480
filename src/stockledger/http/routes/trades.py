"""Trades: POST /v1/trades (and the seed's POST /trade) and GET /v1/trades/{trade_id}."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.errors import ErrorCode, StockledgerError
from stockledger.http import auth
from stockledger.http.context import (
    broker_caller,
    caller,
    connection,
    key_checked,
    key_checked_by_statement,
    presented_key,
    protect,
    settings,
)
from stockledger.http.openapi import ACCOUNT_SCOPED, SECURITY, WITH_BODY
from stockledger.http.params import IdempotencyHeader, TradePath
from stockledger.http.responses import TradeBatch, TradeExecuted
from stockledger.http.strict_json import larger_body
from stockledger.serve import metrics
from stockledger.trading import trades
from stockledger.trading.requests import TradeBatchRequest, TradeRequest
from stockledger.trading.trades import Trade

TAG = Tag(name="trades", description="Execute trades and look them up")
blueprint = APIBlueprint("trades", __name__, abp_tags=[TAG], abp_security=SECURITY)
protect(blueprint)


def as_caller(trade: TradeRequest, broker_id: int | None) -> TradeRequest:
    """The trade with the caller as its broker; a different body broker_id is refused."""
    if trade.broker_id is not None and trade.broker_id != broker_id:
        raise StockledgerError(
            ErrorCode.BROKER_NOT_AUTHORIZED, "broker_id differs from the broker of this API key"
        )
    return trade.model_copy(update={"broker_id": broker_id})


def submit_trade(body: TradeRequest, header: IdempotencyHeader) -> tuple[Response, int]:
    """Execute one trade for the calling broker; replay it for a repeated Idempotency-Key.

    With a key this process knows, the key is checked by the trade's own statement."""
    key = presented_key()
    trade = as_caller(body, key.broker_id if key else broker_caller().broker_id)
    result = None
    if key is not None:
        key_checked()
        result = trades.execute_trade_for_key(connection(), trade, key, header.idempotency_key)
        if result is None:
            # Not that broker's key any more (it cannot happen: broker_keys refuses the
            # change): nothing was written; authenticate it afresh.
            auth.forget_key(key.key_id)
            trade = as_caller(body, broker_caller().broker_id)
    if result is None:
        result = trades.execute_trade(connection(), trade, header.idempotency_key)
    response = jsonify(result.to_json())
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        metrics.trade_executed(trade.side)
    return response, 201


@blueprint.post("/v1/trades", responses={201: TradeExecuted, **WITH_BODY})
@key_checked_by_statement
def post_trade(body: TradeRequest, header: IdempotencyHeader) -> tuple[Response, int]:
    """Execute one buy or sell

    The broker is the caller. With an Idempotency-Key, a retry of the same request answers
    the first answer again (header Idempotent-Replayed: true) and executes nothing; the same
    key with another request answers 422 idempotency_key_reused. Keys are scoped to
    (broker, account).
    """
    return submit_trade(body, header)


@blueprint.post("/v1/trades/batch", responses={201: TradeBatch, **WITH_BODY})
@larger_body(lambda app: settings().max_batch_body_bytes)
def post_trade_batch(body: TradeBatchRequest) -> tuple[Response, int]:
    """Execute up to 1,000 trades all or nothing

    Every rule holds for each trade, in order (a sell may use a buy earlier in the batch).
    The first trade that breaks a rule rejects the whole batch: the problem carries its
    batch_index (from 0) and the rule's code, and nothing is written.
    """
    who = broker_caller()
    assert who.broker_id is not None
    requests = [as_caller(trade, who.broker_id) for trade in body.trades]
    executed = trades.execute_batch(connection(), who.broker_id, requests)
    for side in ("buy", "sell"):
        metrics.trade_executed(side, sum(t.side == side for t in executed))
    return jsonify({"trades": [t.to_json() for t in executed]}), 201


@blueprint.get("/v1/trades/<int:trade_id>", responses={200: Trade, **ACCOUNT_SCOPED})
def get_trade(path: TradePath) -> Response:
    """One trade, by trade_id"""
    return jsonify(trades.trade(connection(), path.trade_id, caller().broker_id).to_json())
