"""The `stockledger` command: human output by default, --json for scripts."""

from __future__ import annotations

import functools
import importlib.util
import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from stockledger import admin, auth, ledger, migrations
from stockledger.config import SettingError, Settings
from stockledger.db import connect
from stockledger.embedded import EmbeddedServer
from stockledger.errors import StockledgerError, connection_failure, translate
from stockledger.models import (
    AccountCreate,
    AccountStatusChange,
    BrokerCreate,
    BrokerStatusChange,
    ClientCreate,
    StockCreate,
    TradeRequest,
    validate,
)

F = TypeVar("F", bound=Callable[..., Any])


# Plumbing ------------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def reports_errors(func: F) -> F:
    """Turn any expected failure into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (StockledgerError, psycopg.Error) as exc:
            if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
                # No server answered a query: the connection itself failed. Say why.
                fail(f"service_unavailable: {connection_failure(exc)}")
            error = translate(exc)
            assert error is not None
            fail(f"{error.code}: {error.detail}")
        except SettingError as exc:
            fail(f"invalid_setting: {exc}")
        except subprocess.SubprocessError as exc:
            output = getattr(exc, "output", None) or ""
            last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
            fail(f"could not run the embedded PostgreSQL: {exc}" + (f" ({last})" if last else ""))
        return None

    return wrapper  # type: ignore[return-value]


def require_free_port(host: str, port: int) -> None:
    """Refuse at once a port another process listens on (a second demo, say), before the
    database is started or anything printed; gunicorn would only find out after."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        fail(f"invalid_setting: cannot listen on {host}: {exc}")
        return
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            fail(
                f"invalid_setting: {host}:{port} is already in use (another stockledger serve "
                "or demo?); choose another with --port"
            )


def settings_from(ctx: click.Context, data_dir: Path | None = None) -> Settings:
    base: Settings = ctx.obj
    return base.with_overrides(data_dir=data_dir)


@dataclass(frozen=True)
class DatabaseUrls:
    owner: str  # migrations and operator commands
    app: str  # the server's least-privilege connections


@contextmanager
def database_urls(
    settings: Settings, *, keep_running: bool = False, migrate: bool = False
) -> Iterator[DatabaseUrls]:
    """The database to use, with a current schema. The embedded server is started if needed
    and stopped again afterwards if this command started it (unless keep_running).

    The embedded database is this tool's own, so it is always migrated; an external one only by
    the commands that own deployment (migrate, serve, demo) and otherwise just checked."""
    embedded = None if settings.database_url else EmbeddedServer(settings.data_dir)
    owner = settings.database_url or embedded.start()  # type: ignore[union-attr]
    try:
        with connect(owner) as conn:
            if embedded is not None or migrate:
                for applied in migrations.migrate(conn):
                    click.echo(f"applied migration {applied.version:04d}_{applied.name}", err=True)
            elif migrations.pending(conn):
                raise StockledgerError(
                    "service_unavailable",
                    "the database schema is not current: run `stockledger migrate`",
                )
        if embedded is not None:
            app = embedded.enable_app_login(owner)
        else:
            app = settings.app_database_url or owner
        yield DatabaseUrls(owner, app)
    finally:
        if embedded is not None and not keep_running:
            embedded.stop_if_started_here()


@contextmanager
def database_url(settings: Settings, **options: bool) -> Iterator[str]:
    """The owner's URL: what operator commands use."""
    with database_urls(settings, **options) as urls:
        yield urls.owner


def emit(as_json: bool, value: Any, human: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(value, default=_json_default))
    else:
        click.echo(human() if callable(human) else human)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def describe(record: dict[str, Any]) -> str:
    width = max(len(k) for k in record)
    return "\n".join(f"{k.ljust(width)}  {'' if v is None else v}" for k, v in record.items())


def validated(model: Any, **fields: Any) -> Any:
    return validate(model, {k: v for k, v in fields.items() if v is not None})


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory of the embedded PostgreSQL (env STOCKLEDGER_DATA_DIR).",
)


# Commands ------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@data_dir_option
@click.version_option(package_name="stockledger")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """stockledger: a stock trading ledger whose rules live in PostgreSQL.

    With no DATABASE_URL every command uses an embedded PostgreSQL in the data directory.
    """
    try:
        ctx.obj = Settings.from_env().with_overrides(data_dir=data_dir)
    except SettingError as exc:
        fail(f"invalid_setting: {exc}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@data_dir_option
@click.pass_context
@reports_errors
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    threads: int,
    access_log: bool,
    data_dir: Path | None,
) -> None:
    """Apply migrations, then serve the API with gunicorn."""
    settings = settings_from(ctx, data_dir)
    require_free_port(host, port)
    with database_urls(settings, migrate=True) as urls:
        _serve(settings, urls, host, port, workers, threads, access_log)


def _serve(
    settings: Settings,
    urls: DatabaseUrls,
    host: str,
    port: int,
    workers: int,
    threads: int,
    access_log: bool,
) -> None:
    from stockledger.server import serve as run_server

    where = "DATABASE_URL" if settings.database_url else f"embedded, data in {settings.data_dir}"
    click.echo(f"stockledger on http://{host}:{port} (PostgreSQL: {where})", err=True)
    if not settings.admin_token:
        click.echo(
            "note: STOCKLEDGER_ADMIN_TOKEN is not set, so no caller is an administrator over "
            "HTTP; administration works from this command line",
            err=True,
        )
    if urls.app == urls.owner:
        click.echo(
            "warning: serving with the schema owner's connection; set "
            "STOCKLEDGER_APP_DATABASE_URL to a login role granted stockledger_app",
            err=True,
        )
    run_server(
        settings,
        urls.app,
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        access_log=access_log,
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@data_dir_option
@click.pass_context
@reports_errors
def demo(ctx: click.Context, host: str, port: int, workers: int, data_dir: Path | None) -> None:
    """`serve` plus demo data on first start, and curl commands to try."""
    from stockledger import demo as demo_data

    settings = settings_from(ctx, data_dir)
    # Before anything is printed: a demo that cannot serve must not hand out live keys.
    require_free_port(host, port)
    if not settings.admin_token:
        # The demo shows administration too: an admin token for this run only.
        settings = settings.with_overrides(admin_token=secrets.token_urlsafe(24))
    assert settings.admin_token is not None
    with database_urls(settings, migrate=True) as urls:
        with connect(urls.owner) as conn:
            seeded = demo_data.seed(conn)
            base_url = f"http://{host}:{port}"
            click.echo(demo_data.instructions(conn, seeded, base_url, settings.admin_token))
        sys.stdout.flush()
        _serve(settings, urls, host, port, workers, 4, access_log=True)


@main.command()
@json_option
@click.pass_context
@reports_errors
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Apply pending migrations (safe to run concurrently)."""
    with database_url(ctx.obj, migrate=True) as url, connect(url) as conn:
        version = max(migrations.applied_versions(conn))
    emit(as_json, {"schema_version": version}, f"schema at version {version}")


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
        record = admin.add_client(conn, new)
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
        record = admin.add_broker_with_key(conn, new)
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
        key = auth.issue_key(conn, broker_id)
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
        record = auth.revoke_key(conn, broker_id, key_id)
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
        record = admin.set_broker_status(conn, broker_id, change)
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
        record = admin.open_account(conn, new)
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
        record = admin.set_account_status(conn, account_id, change)
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
        record = admin.add_stock(conn, new)
    emit(as_json, record, lambda: describe(record))


@main.command()
@click.option("--account", "account_id", required=True, type=int)
@click.option("--broker", "broker_id", required=True, type=int)
@click.option("--symbol", required=True)
@click.option("--side", required=True, type=click.Choice(["buy", "sell"]))
@click.option("--quantity", required=True, type=int)
@click.option("--price", required=True, help="Decimal with at most 4 places, e.g. 187.25")
@click.option("--executed-at", help="RFC 3339 time for a backfill; default: now.")
@click.option("--client-order-id")
@json_option
@click.pass_context
@reports_errors
def trade(
    ctx: click.Context,
    account_id: int,
    broker_id: int,
    symbol: str,
    side: str,
    quantity: int,
    price: str,
    executed_at: str | None,
    client_order_id: str | None,
    as_json: bool,
) -> None:
    """Execute one trade, under the same rules as the API."""
    request = validated(
        TradeRequest,
        account_id=account_id,
        broker_id=broker_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        executed_at=executed_at,
        client_order_id=client_order_id,
    )
    with database_url(ctx.obj) as url, connect(url) as conn:
        result = ledger.execute_trade(conn, request)
    t = result.trade
    emit(
        as_json,
        result.to_json(),
        f"{'bought' if t.side == 'buy' else 'sold'} {t.quantity} {t.symbol} @ "
        f"{result.to_json()['trade']['price']} for account {t.account_id} "
        f"(trade {t.trade_id}, seq {t.seq}); position now {result.position_quantity}",
    )


@main.command()
@click.option("--account", "account_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def holdings(ctx: click.Context, account_id: int, as_json: bool) -> None:
    """Print an account's current holdings."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        result = ledger.holdings(conn, account_id)

    def table() -> str:
        rows = result["holdings"]
        if not rows:
            return f"account {account_id} holds nothing"
        return "\n".join(
            [f"{'SYMBOL':<10} {'QUANTITY':>14}"]
            + [f"{h['symbol']:<10} {h['quantity']:>14}" for h in rows]
        )

    emit(as_json, result, table)


@main.command()
@json_option
@click.pass_context
@reports_errors
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every ledger invariant; exit 0 only if all hold."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        checks = ledger.verify(conn)
    ok = all(c.holds for c in checks)

    def report() -> str:
        lines = []
        for c in checks:
            if c.holds:
                lines.append(f"ok    {c.name}")
            else:
                lines.append(f"FAIL  {c.name}: e.g. {json.dumps(c.violations[0], default=str)}")
        return "\n".join(lines)

    emit(
        as_json,
        {
            "ok": ok,
            "invariants": [
                {"name": c.name, "holds": c.holds, "violations": c.violations} for c in checks
            ],
        },
        report,
    )
    if not ok:
        failed = ", ".join(c.name for c in checks if not c.holds)
        fail(f"ledger invariant violated: {failed}")


@main.command()
@click.option("--quick", is_flag=True, help="A small smoke run (seconds); figures not meaningful.")
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the raw figures to this file.",
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the figures into this PNG (needs matplotlib).",
)
@click.pass_context
@reports_errors
def bench(ctx: click.Context, quick: bool, json_file: Path | None, plot_file: Path | None) -> None:
    """Benchmarks against PostgreSQL's own ceiling, on a server and databases of their own."""
    from stockledger.bench import report
    from stockledger.bench import run as bench_run
    from stockledger.bench.scenarios import Plan

    if plot_file and importlib.util.find_spec("matplotlib") is None:
        # Said before a run of minutes, not as a traceback after it.
        fail("invalid_request: --plot needs matplotlib: pip install 'stockledger[bench]'")
    settings = settings_from(ctx)
    plan = Plan.quick() if quick else Plan.full()
    results = bench_run.run(
        settings.database_url, plan, lambda step: click.echo(f"... {step}", err=True)
    )
    click.echo(report.table(results))
    if json_file:
        report.write_json(results, json_file)
    if plot_file:
        report.plot(results, plot_file)


@main.command("db-url")
@click.option(
    "--role",
    type=click.Choice(["owner", "app"]),
    default="owner",
    show_default=True,
    help="owner: the schema owner (for operators); app: the application's role.",
)
@click.pass_context
@reports_errors
def db_url(ctx: click.Context, role: str) -> None:
    """Print the connection string of the database in use (for psql).

    With the embedded server, starts it if needed and leaves it running;
    `stockledger db-stop` stops it.
    """
    settings: Settings = ctx.obj
    if role == "app" and settings.database_url and not settings.app_database_url:
        fail("STOCKLEDGER_APP_DATABASE_URL is not set: the application role's URL is yours to give")
    with database_urls(settings, keep_running=True) as urls:
        click.echo(urls.app if role == "app" else urls.owner)


@main.command("db-stop")
@click.pass_context
@reports_errors
def db_stop(ctx: click.Context) -> None:
    """Stop the embedded PostgreSQL of the data directory, if it is running."""
    settings: Settings = ctx.obj
    embedded = EmbeddedServer(settings.data_dir)
    if not embedded.is_running():
        click.echo("embedded PostgreSQL is not running")
        return
    embedded.start()
    embedded.stop()
    click.echo(f"stopped embedded PostgreSQL in {embedded.pgdata}")
