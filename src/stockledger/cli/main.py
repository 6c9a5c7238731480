"""The `stockledger` group: settings from the environment, overridden by flags."""

from __future__ import annotations

from pathlib import Path

import click

from stockledger.cli.common import data_dir_option, fail
from stockledger.config import SettingError, Settings


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
