"""The registry: clients, brokers and their keys, accounts, stocks."""

from __future__ import annotations

import click

from stockledger.cli.common import (
    database_url,
    describe,
    emit,
    json_option,
    reports_errors,
    validated,
)
from stockledger.cli.main import main
from stockledger.db.pool import connect
from stockledger.registry import keys, records
from stockledger.registry.requests import (
    AccountCreate,
    AccountStatusChange,
    BrokerCreate,
    BrokerStatusChange,
    ClientCreate,
    StockCreate,
)


@main.group()
def client() -> None:
    """Clients: the people and firms that own accounts."""


@client.command("add")
@click.option("--name", required=True)
@click.option("--tax-id", required=True, help="Legal identifier; stored upper case, no separators.")
@click.option("--email")
@json_option
@click.pass_context
@reports_errors
def client_add(
    ctx: click.Context, name: str, tax_id: str, email: str | None, as_json: bool
) -> None:
    """Register a client."""
    new = validated(ClientCreate, name=name, tax_id=tax_id, email=email)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.add_client(conn, new)
    emit(as_json, record, lambda: describe(record))


@main.group()
def broker() -> None:
    """Brokers: who submits trades for an account."""


@broker.command("add")
@click.option("--name", required=True)
@click.option("--tax-id", required=True)
@click.option("--license", "license_no", required=True, help="License number.")
@json_option
@click.pass_context
@reports_errors
def broker_add(ctx: click.Context, name: str, tax_id: str, license_no: str, as_json: bool) -> None:
    """Register a broker and print its first API key (shown only this once)."""
    new = validated(BrokerCreate, name=name, tax_id=tax_id, license_no=license_no)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.add_broker_with_key(conn, new)
    emit(as_json, record, lambda: describe(record) + "\n(the api_key is not stored: keep it now)")


@broker.group("key")
def broker_key() -> None:
    """API keys: create one to rotate (old keys keep working), revoke to retire."""


@broker_key.command("create")
@click.option("--broker", "broker_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def broker_key_create(ctx: click.Context, broker_id: int, as_json: bool) -> None:
    """Issue a new API key for a broker (shown only this once)."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        key = keys.issue_key(conn, broker_id)
    record = {"broker_id": broker_id, **key}
    emit(as_json, record, lambda: describe(record))


@broker_key.command("revoke")
@click.option("--broker", "broker_id", required=True, type=int)
@click.option("--key-id", required=True)
@json_option
@click.pass_context
@reports_errors
def broker_key_revoke(ctx: click.Context, broker_id: int, key_id: str, as_json: bool) -> None:
    """Revoke one of a broker's API keys, at once and for good."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = keys.revoke_key(conn, broker_id, key_id)
    emit(as_json, record, lambda: describe(record))


@broker.command("set")
@click.option("--broker", "broker_id", required=True, type=int)
@click.option("--status", required=True, type=click.Choice(["active", "suspended"]))
@json_option
@click.pass_context
@reports_errors
def broker_set(ctx: click.Context, broker_id: int, status: str, as_json: bool) -> None:
    """Suspend or reactivate a broker (as PATCH /v1/brokers/{id})."""
    change = validated(BrokerStatusChange, status=status)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.set_broker_status(conn, broker_id, change)
    emit(as_json, record, lambda: describe(record))


@main.group()
def account() -> None:
    """Accounts: a client's holdings, traded by one broker of record."""


@account.command("open")
@click.option("--client", "client_id", required=True, type=int)
@click.option("--broker", "broker_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def account_open(ctx: click.Context, client_id: int, broker_id: int, as_json: bool) -> None:
    """Open an account for a client with a broker of record."""
    new = validated(AccountCreate, client_id=client_id, broker_id=broker_id)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.open_account(conn, new)
    emit(as_json, record, lambda: describe(record))


@account.command("set")
@click.option("--account", "account_id", required=True, type=int)
@click.option("--status", required=True, type=click.Choice(["open", "frozen", "closed"]))
@json_option
@click.pass_context
@reports_errors
def account_set(ctx: click.Context, account_id: int, status: str, as_json: bool) -> None:
    """Freeze, close or reopen an account (as PATCH /v1/accounts/{id})."""
    change = validated(AccountStatusChange, status=status)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.set_account_status(conn, account_id, change)
    emit(as_json, record, lambda: describe(record))


@main.group()
def stock() -> None:
    """Stocks: the instruments that can be traded."""


@stock.command("add")
@click.argument("symbol")
@click.option("--name", required=True)
@json_option
@click.pass_context
@reports_errors
def stock_add(ctx: click.Context, symbol: str, name: str, as_json: bool) -> None:
    """List a stock (SYMBOL: upper case, e.g. AAPL or BRK.B)."""
    new = validated(StockCreate, symbol=symbol, name=name)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.add_stock(conn, new)
    emit(as_json, record, lambda: describe(record))
