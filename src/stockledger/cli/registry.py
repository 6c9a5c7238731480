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
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.fields import validate
from stockledger.registry import keys, records
from stockledger.registry.requests import (
    AccountChange,
    AccountCreate,
    BrokerChange,
    BrokerCreate,
    ClientCreate,
    HolderAdd,
    PriceRecord,
    StockChange,
    StockCreate,
)


@main.group()
def client() -> None:
    """Clients: the people and firms that own accounts."""


@client.command("add")
@click.option("--name", required=True)
@click.option("--tax-id", required=True, help="Legal identifier; stored upper case, no separators.")
@click.option("--email")
@click.option("--address", help="Postal address; lines may be separated by newlines.")
@json_option
@click.pass_context
@reports_errors
def client_add(
    ctx: click.Context,
    name: str,
    tax_id: str,
    email: str | None,
    address: str | None,
    as_json: bool,
) -> None:
    """Register a client."""
    new = validated(ClientCreate, name=name, tax_id=tax_id, email=email, address=address)
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
@click.option("--status", type=click.Choice(["active", "suspended"]))
@click.option("--manager", help="The supervising broker's id, or 'none' to clear it.")
@json_option
@click.pass_context
@reports_errors
def broker_set(
    ctx: click.Context, broker_id: int, status: str | None, manager: str | None, as_json: bool
) -> None:
    """Suspend or reactivate a broker, or set its supervisor (as PATCH /v1/brokers/{id})."""
    fields: dict[str, object] = {} if status is None else {"status": status}
    if manager is not None:
        fields["manager_id"] = None if manager.lower() == "none" else _integer(manager, "--manager")
    change = validate(BrokerChange, fields)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.change_broker(conn, broker_id, change)
    emit(as_json, record, lambda: describe(record))


def _integer(text: str, option: str) -> int:
    if not text.isdigit():
        raise StockledgerError(ErrorCode.INVALID_REQUEST, f"{option} takes an id or 'none'")
    return int(text)


@main.group()
def account() -> None:
    """Accounts: a client's holdings, traded by one broker of record."""


@account.command("open")
@click.option(
    "--client",
    "client_ids",
    required=True,
    type=int,
    multiple=True,
    help="A holder; repeat for a joint account (the first is the primary holder).",
)
@click.option("--broker", "broker_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def account_open(
    ctx: click.Context, client_ids: tuple[int, ...], broker_id: int, as_json: bool
) -> None:
    """Open an account for one client or several (jointly) with a broker of record."""
    new = validated(AccountCreate, holders=list(client_ids), broker_id=broker_id)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.open_account(conn, new)
    emit(as_json, record, lambda: describe(record))


@account.group("holder")
def account_holder() -> None:
    """An account's holders: add one (joint account), or remove one (never the last)."""


@account_holder.command("add")
@click.option("--account", "account_id", required=True, type=int)
@click.option("--client", "client_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def account_holder_add(ctx: click.Context, account_id: int, client_id: int, as_json: bool) -> None:
    """Add a client as a holder of an account."""
    new = validated(HolderAdd, client_id=client_id)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.add_holder(conn, account_id, new.client_id)
    emit(as_json, record, lambda: describe(record))


@account_holder.command("remove")
@click.option("--account", "account_id", required=True, type=int)
@click.option("--client", "client_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def account_holder_remove(
    ctx: click.Context, account_id: int, client_id: int, as_json: bool
) -> None:
    """Remove a current holder (kept as history); the last one cannot be removed."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.remove_holder(conn, account_id, client_id)
    emit(as_json, record, lambda: describe(record))


@account.command("set")
@click.option("--account", "account_id", required=True, type=int)
@click.option("--status", type=click.Choice(["open", "frozen", "closed"]))
@click.option(
    "--credit-limit", help="How far below zero the cash may go (0: a cash account), or 'none'."
)
@click.option("--lot-method", type=click.Choice(["fifo", "lifo", "hifo"]))
@json_option
@click.pass_context
@reports_errors
def account_set(
    ctx: click.Context,
    account_id: int,
    status: str | None,
    credit_limit: str | None,
    lot_method: str | None,
    as_json: bool,
) -> None:
    """Freeze, close or reopen an account, set its credit limit or its lot method (as PATCH
    /v1/accounts/{id})."""
    fields: dict[str, object] = {}
    if status is not None:
        fields["status"] = status
    if credit_limit is not None:
        fields["credit_limit"] = None if credit_limit.lower() == "none" else credit_limit
    if lot_method is not None:
        fields["lot_method"] = lot_method
    change = validate(AccountChange, fields)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.change_account(conn, account_id, change)
    emit(as_json, record, lambda: describe(record))


@main.group()
def stock() -> None:
    """Stocks: the instruments that can be traded."""


@stock.command("add")
@click.argument("symbol")
@click.option("--name", required=True)
@click.option("--fractionable", is_flag=True, help="Fractions of a share may be traded.")
@json_option
@click.pass_context
@reports_errors
def stock_add(
    ctx: click.Context, symbol: str, name: str, fractionable: bool, as_json: bool
) -> None:
    """List a stock (SYMBOL: upper case, e.g. AAPL or BRK.B)."""
    new = validated(StockCreate, symbol=symbol, name=name, fractionable=fractionable)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.add_stock(conn, new)
    emit(as_json, record, lambda: describe(record))


@stock.command("set")
@click.argument("symbol")
@click.option("--name")
@click.option("--active/--inactive", default=None, help="List or delist.")
@click.option("--fractionable/--whole-only", default=None, help="Allow fractional trades or not.")
@json_option
@click.pass_context
@reports_errors
def stock_set(
    ctx: click.Context,
    symbol: str,
    name: str | None,
    active: bool | None,
    fractionable: bool | None,
    as_json: bool,
) -> None:
    """Change a stock (as PATCH /v1/stocks/{symbol})."""
    change = validated(StockChange, name=name, active=active, fractionable=fractionable)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.change_stock(conn, symbol, change)
    emit(as_json, record, lambda: describe(record))


@stock.command("price")
@click.argument("symbol")
@click.argument("price")
@click.option("--as-of", help="RFC 3339 time the price held; default: now.")
@json_option
@click.pass_context
@reports_errors
def stock_price(
    ctx: click.Context, symbol: str, price: str, as_of: str | None, as_json: bool
) -> None:
    """Record a reference price of a stock (the latest by as-of is its price)."""
    new = validated(PriceRecord, price=price, as_of=as_of)
    with database_url(ctx.obj) as url, connect(url) as conn:
        record = records.record_price(conn, symbol, new)
    emit(as_json, record, lambda: describe(record))
