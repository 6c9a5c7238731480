"""Bringing in a book kept elsewhere: `stockledger import FILE [--dry-run]` (SPEC §2.9)."""

from __future__ import annotations

from pathlib import Path

import click

from stockledger.cli.common import database_url, emit, fail, json_option, reports_errors
from stockledger.cli.main import main
from stockledger.db.pool import connect
from stockledger.imports import DocumentError, Refusal, load_book


@main.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check everything, write nothing.")
@json_option
@click.pass_context
@reports_errors
def import_book(ctx: click.Context, file: Path, dry_run: bool, as_json: bool) -> None:
    """Load a book (stocks, clients, brokers, accounts, cash, trades) from one JSON document,
    all or nothing, through every rule (docs/import.md)."""
    with database_url(ctx.obj, migrate=True) as url, connect(url) as conn:
        try:
            with file.open("rb") as stream:
                counts = load_book(conn, stream, dry_run=dry_run)
        except (DocumentError, Refusal) as refused:
            fail(f"{refused} (nothing was written)")
            return
    done = "checked, nothing written (--dry-run)" if dry_run else "imported"
    summary = ", ".join(f"{count} {section}" for section, count in counts.items())
    emit(as_json, {"dry_run": dry_run, **counts}, f"{done}: {summary}")
