"""Stocks as any caller sees them: the listing, with its latest reference price."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.http.context import connection, protect
from stockledger.http.openapi import ACCOUNT_SCOPED, SECURITY
from stockledger.http.params import StockPath
from stockledger.http.responses import Stock
from stockledger.registry import records

TAG = Tag(name="stocks", description="Listed stocks and their reference prices")
blueprint = APIBlueprint(
    "stocks", __name__, abp_tags=[TAG], abp_security=SECURITY, abp_responses=ACCOUNT_SCOPED
)
protect(blueprint)


@blueprint.get("/v1/stocks/<symbol>", responses={200: Stock})
def get_stock(path: StockPath) -> Response:
    """One stock, with its latest reference price (null when none was recorded)"""
    return jsonify(records.stock(connection(), path.symbol))
