"""Accounts as a broker (or the operator) sees them: the account, owner, holdings, history;
and, for the operator, their status and holders."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.http.context import admin_only, caller, connection, protect
from stockledger.http.openapi import ACCOUNT_SCOPED, SECURITY, WITH_BODY
from stockledger.http.params import AccountHolderPath, AccountPath
from stockledger.http.responses import Account, AccountHoldings, AccountOwner, Holder, TradePage
from stockledger.registry import accounts, records
from stockledger.registry.requests import AccountChange, HolderAdd
from stockledger.trading import history, positions
from stockledger.trading.requests import TradePageQuery

TAG = Tag(
    name="accounts",
    description="A broker sees the accounts it is broker of record of, and a supervisor those "
    "of the brokers below it (read only)",
)
blueprint = APIBlueprint(
    "accounts", __name__, abp_tags=[TAG], abp_security=SECURITY, abp_responses=ACCOUNT_SCOPED
)
protect(blueprint)


@blueprint.get("/v1/accounts/<int:account_id>", responses={200: Account})
def get_account(path: AccountPath) -> Response:
    """One account"""
    return jsonify(accounts.account(connection(), path.account_id, caller().broker_id))


@blueprint.get("/v1/accounts/<int:account_id>/owner", responses={200: AccountOwner})
def get_owner(path: AccountPath) -> Response:
    """The account's holders: the primary as owner, and every current one as owners"""
    return jsonify(accounts.owner(connection(), path.account_id, caller().broker_id))


@blueprint.get("/v1/accounts/<int:account_id>/holdings", responses={200: AccountHoldings})
def get_holdings(path: AccountPath) -> Response:
    """Current holdings, in real time, sorted by symbol"""
    return jsonify(positions.holdings(connection(), path.account_id, caller().broker_id))


@blueprint.get("/v1/accounts/<int:account_id>/trades", responses={200: TradePage})
def get_trades(path: AccountPath, query: TradePageQuery) -> Response:
    """The account's trade history, oldest first, one page at a time

    Keyset pagination on seq: pass next_cursor back as cursor until it is null. The cursor
    keeps the filters of the first page (repeating them is allowed, changing them is a 422).
    Trades executed during the walk appear at its end; none is skipped or shown twice.
    client_order_id looks one trade up.
    """
    page = history.trade_page(connection(), path.account_id, caller().broker_id, query)
    return jsonify(page)


@blueprint.patch("/v1/accounts/<int:account_id>", responses={200: Account, **WITH_BODY})
@admin_only
def patch_account(path: AccountPath, body: AccountChange) -> Response:
    """Freeze, close or reopen an account; set its credit limit or lot method

    A credit limit below what the account owes now is refused (409 insufficient_funds)."""
    return jsonify(records.change_account(connection(), path.account_id, body))


@blueprint.post("/v1/accounts/<int:account_id>/holders", responses={201: Holder, **WITH_BODY})
@admin_only
def post_holder(path: AccountPath, body: HolderAdd) -> tuple[Response, int]:
    """Add a holder to an account (joint account); a broker's tax id is refused"""
    return jsonify(records.add_holder(connection(), path.account_id, body.client_id)), 201


@blueprint.delete(
    "/v1/accounts/<int:account_id>/holders/<int:client_id>", responses={200: Holder, **WITH_BODY}
)
@admin_only
def delete_holder(path: AccountHolderPath) -> Response:
    """Remove a current holder (kept as history); never the last one (409 last_holder)"""
    return jsonify(records.remove_holder(connection(), path.account_id, path.client_id))
