"""The money side of an account (SPEC §2.6): its cash (movements, and the history of what moved
it), its portfolio, its lots and its realized P&L. Reads follow SPEC §2.4 like every account
read; moving cash is the operator's."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.books import cash, lots, portfolio
from stockledger.books.requests import CashMovement, CashPageQuery, LotsPageQuery, RealizedPageQuery
from stockledger.http.context import admin_only, caller, connection, protect
from stockledger.http.openapi import ACCOUNT_SCOPED, SECURITY, WITH_BODY
from stockledger.http.params import AccountPath, IdempotencyHeader
from stockledger.http.responses import CashMovementMade, CashPage, LotsPage, Portfolio, RealizedPage

TAG = Tag(
    name="books",
    description="Cash, portfolio, lots and realized P&L, kept by the database with every trade",
)
blueprint = APIBlueprint(
    "books", __name__, abp_tags=[TAG], abp_security=SECURITY, abp_responses=ACCOUNT_SCOPED
)
protect(blueprint)


@blueprint.post(
    "/v1/accounts/<int:account_id>/cash", responses={201: CashMovementMade, **WITH_BODY}
)
@admin_only
def post_cash(
    path: AccountPath, body: CashMovement, header: IdempotencyHeader
) -> tuple[Response, int]:
    """Deposit or withdraw cash

    A withdrawal never takes the balance below zero, whatever the credit limit (409
    insufficient_funds). With an Idempotency-Key, a retry of the same request answers the
    first movement again (header Idempotent-Replayed: true); the same key with another request
    answers 422 idempotency_key_reused. Keys are scoped to the account.
    """
    made, replayed = cash.move_cash(connection(), path.account_id, body, header.idempotency_key)
    response = jsonify(made)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201


@blueprint.get("/v1/accounts/<int:account_id>/cash", responses={200: CashPage})
def get_cash(path: AccountPath, query: CashPageQuery) -> Response:
    """The balance, and what moved it: trades and movements, oldest first, a page at a time"""
    return jsonify(cash.cash_page(connection(), path.account_id, caller().broker_id, query))


@blueprint.get("/v1/accounts/<int:account_id>/portfolio", responses={200: Portfolio})
def get_portfolio(path: AccountPath) -> Response:
    """Cash, buying power, positions at cost and at market, realized P&L to date"""
    return jsonify(portfolio.portfolio(connection(), path.account_id, caller().broker_id))


@blueprint.get("/v1/accounts/<int:account_id>/lots", responses={200: LotsPage})
def get_lots(path: AccountPath, query: LotsPageQuery) -> Response:
    """The account's lots in the order they were opened; open=true for the open ones"""
    return jsonify(lots.lots_page(connection(), path.account_id, caller().broker_id, query))


@blueprint.get("/v1/accounts/<int:account_id>/realized", responses={200: RealizedPage})
def get_realized(path: AccountPath, query: RealizedPageQuery) -> Response:
    """Realized P&L: the lot closures of the account's sells, in the order they were made"""
    page = lots.realized_page(connection(), path.account_id, caller().broker_id, query)
    return jsonify(page)
