"""Running and operating: serve, demo, migrate, bench, and the embedded server's URL and stop."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path

import click

from stockledger.cli.common import (
    DatabaseUrls,
    data_dir_option,
    database_url,
    database_urls,
    emit,
    fail,
    json_option,
    reports_errors,
    require_free_port,
    settings_from,
)
from stockledger.cli.main import main
from stockledger.config import ServeOptions, Settings
from stockledger.db import migrations
from stockledger.db.embedded import EmbeddedServer
from stockledger.db.pool import connect

DEFAULTS = ServeOptions()
host_option = click.option("--host", default=DEFAULTS.host, show_default=True)
port_option = click.option(
    "--port", default=DEFAULTS.port, show_default=True, type=click.IntRange(1, 65535)
)
workers_option = click.option(
    "--workers", default=DEFAULTS.workers, show_default=True, type=click.IntRange(1, 64)
)
seed_dialect_option = click.option(
    "--seed-dialect/--no-seed-dialect",
    default=None,
    help="Answer the seed's own GET requests (aid=…) to loopback clients (SPEC §2.7); "
    "default: STOCKLEDGER_SEED_DIALECT, else off.",
)


@main.command()
@host_option
@port_option
@workers_option
@click.option("--threads", default=DEFAULTS.threads, show_default=True, type=click.IntRange(1, 64))
@click.option("--access-log/--no-access-log", default=DEFAULTS.access_log, show_default=True)
@seed_dialect_option
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
    seed_dialect: bool | None,
    data_dir: Path | None,
) -> None:
    """Apply migrations, then serve the API with gunicorn."""
    settings = settings_from(ctx, data_dir).with_overrides(seed_dialect=seed_dialect)
    serving = ServeOptions(host, port, workers, threads, access_log)
    require_free_port(host, port)
    with database_urls(settings, migrate=True) as urls:
        _serve(settings, urls, serving)


def _serve(settings: Settings, urls: DatabaseUrls, serving: ServeOptions) -> None:
    from stockledger.serve.gunicorn import serve as run_server

    where = "DATABASE_URL" if settings.database_url else f"embedded, data in {settings.data_dir}"
    click.echo(
        f"stockledger on http://{serving.host}:{serving.port} (PostgreSQL: {where})", err=True
    )
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
    if settings.seed_dialect:
        click.echo(
            "the seed's dialect is on: GET /getOwner?aid=, /getHoldings?aid=&sym= and "
            "/trade?aid=&sym=&type=&shares=&price= are answered, without authentication, to "
            "clients on loopback only",
            err=True,
        )
    run_server(settings, urls.app, serving)


@main.command()
@host_option
@port_option
@workers_option
@seed_dialect_option
@data_dir_option
@click.pass_context
@reports_errors
def demo(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    seed_dialect: bool | None,
    data_dir: Path | None,
) -> None:
    """`serve` plus demo data on first start, and curl commands to try."""
    from stockledger.cli import demo as demo_data

    settings = settings_from(ctx, data_dir).with_overrides(seed_dialect=seed_dialect)
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
            click.echo(
                demo_data.instructions(
                    conn, seeded, base_url, settings.admin_token, dialect=settings.seed_dialect
                )
            )
        sys.stdout.flush()
        _serve(settings, urls, ServeOptions(host, port, workers))


@main.command()
@json_option
@click.pass_context
@reports_errors
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Apply pending migrations (safe to run concurrently)."""
    with database_url(ctx.obj, migrate=True) as url, connect(url) as conn:
        version = max(migrations.applied_versions(conn))
    emit(as_json, {"schema_version": version}, f"schema at version {version}")


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
