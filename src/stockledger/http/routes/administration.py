"""Administration over HTTP (admin token only): reference data, statuses, key rotation."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.http.context import admin_only, connection, protect
from stockledger.http.openapi import SECURITY, WITH_BODY
from stockledger.http.params import BrokerKeyPath, BrokerPath, StockPath
from stockledger.http.responses import (
    Account,
    Broker,
    BrokerWithKey,
    Client,
    IssuedKey,
    RevokedKey,
    Stock,
    StockPrice,
)
from stockledger.registry import keys, records
from stockledger.registry.requests import (
    AccountCreate,
    BrokerChange,
    BrokerCreate,
    ClientCreate,
    PriceRecord,
    StockChange,
    StockCreate,
)

TAG = Tag(name="administration", description="The operator's endpoints (admin token only)")
blueprint = APIBlueprint(
    "administration", __name__, abp_tags=[TAG], abp_security=SECURITY, abp_responses=WITH_BODY
)
protect(blueprint)

Created = tuple[Response, int]


@blueprint.post("/v1/clients", responses={201: Client})
@admin_only
def post_client(body: ClientCreate) -> Created:
    """Register a client (tax_id is stored canonical: upper case, no separators)"""
    return jsonify(records.add_client(connection(), body)), 201


@blueprint.post("/v1/brokers", responses={201: BrokerWithKey})
@admin_only
def post_broker(body: BrokerCreate) -> Created:
    """Register a broker; the answer carries its first API key, shown only this once"""
    return jsonify(records.add_broker_with_key(connection(), body)), 201


@blueprint.patch("/v1/brokers/<int:broker_id>", responses={200: Broker})
@admin_only
def patch_broker(path: BrokerPath, body: BrokerChange) -> Response:
    """Suspend or reactivate a broker (a suspended broker's keys answer 403), or set or clear
    its supervisor (manager_id; a chain that would loop is refused, 409 supervision_cycle)"""
    return jsonify(records.change_broker(connection(), path.broker_id, body))


@blueprint.post("/v1/brokers/<int:broker_id>/keys", responses={201: IssuedKey})
@admin_only
def post_broker_key(path: BrokerPath) -> Created:
    """Issue another API key (rotation: older keys keep working until revoked)"""
    return jsonify(keys.issue_key(connection(), path.broker_id)), 201


@blueprint.delete("/v1/brokers/<int:broker_id>/keys/<key_id>", responses={200: RevokedKey})
@admin_only
def delete_broker_key(path: BrokerKeyPath) -> Response:
    """Revoke an API key, at once and for good"""
    return jsonify(keys.revoke_key(connection(), path.broker_id, path.key_id))


@blueprint.post("/v1/accounts", responses={201: Account})
@admin_only
def post_account(body: AccountCreate) -> Created:
    """Open an account for a client (client_id) or jointly (holders, primary first), with its
    broker of record"""
    return jsonify(records.open_account(connection(), body)), 201


@blueprint.post("/v1/stocks", responses={201: Stock})
@admin_only
def post_stock(body: StockCreate) -> Created:
    """List a stock (fractionable: whether fractions of a share trade; default false)"""
    return jsonify(records.add_stock(connection(), body)), 201


@blueprint.patch("/v1/stocks/<symbol>", responses={200: Stock})
@admin_only
def patch_stock(path: StockPath, body: StockChange) -> Response:
    """Rename a stock, delist or relist it, or allow or stop fractional trades"""
    return jsonify(records.change_stock(connection(), path.symbol, body))


@blueprint.post("/v1/stocks/<symbol>/prices", responses={201: StockPrice})
@admin_only
def post_stock_price(path: StockPath, body: PriceRecord) -> Created:
    """Record a reference price (the latest by as_of is the stock's price; a price never
    moves a balance)"""
    return jsonify(records.record_price(connection(), path.symbol, body)), 201
