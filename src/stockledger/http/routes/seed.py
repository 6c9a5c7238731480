"""The seed's endpoints, kept exactly for compatibility (SPEC §2.1), under the rules of §2.4."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.http.context import caller, connection, key_checked_by_statement, protect
from stockledger.http.openapi import ACCOUNT_SCOPED, SECURITY, WITH_BODY
from stockledger.http.params import AccountQuery, IdempotencyHeader
from stockledger.http.responses import AccountHoldings, AccountOwner, TradeExecuted
from stockledger.http.routes.trades import submit_trade
from stockledger.registry.accounts import owner
from stockledger.trading.positions import holdings
from stockledger.trading.requests import TradeRequest

TAG = Tag(name="seed", description="The first three endpoints, kept for compatibility")
blueprint = APIBlueprint("seed", __name__, abp_tags=[TAG], abp_security=SECURITY)
protect(blueprint)


@blueprint.get("/getOwner", responses={200: AccountOwner, **ACCOUNT_SCOPED})
def get_owner(query: AccountQuery) -> Response:
    """The owner of an account"""
    return jsonify(owner(connection(), query.account_id, caller().broker_id))


@blueprint.get("/getHoldings", responses={200: AccountHoldings, **ACCOUNT_SCOPED})
def get_holdings(query: AccountQuery) -> Response:
    """Current holdings of an account, in real time"""
    return jsonify(holdings(connection(), query.account_id, caller().broker_id))


@blueprint.post("/trade", responses={201: TradeExecuted, **WITH_BODY})
@key_checked_by_statement
def post_trade(body: TradeRequest, header: IdempotencyHeader) -> tuple[Response, int]:
    """Execute one buy or sell (the same as POST /v1/trades)"""
    return submit_trade(body, header)
