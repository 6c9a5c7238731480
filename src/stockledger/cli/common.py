"""What every command shares: settings, the database to use, errors as one line, output."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from stockledger import json_text
from stockledger.config import SettingError, Settings
from stockledger.db import migrations
from stockledger.db.embedded import EmbeddedServer
from stockledger.db.pool import connect
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.fields import validate

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def reports_errors(func: F) -> F:
    """Turn any expected failure into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StockledgerError as error:
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
                    ErrorCode.SERVICE_UNAVAILABLE,
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
        click.echo(json_text.dumps(value, default=_json_default))
    else:
        click.echo(human() if callable(human) else human)


def _json_default(value: Any) -> Any:
    # A Decimal is written as a number (a quantity: json_text); money is text already.
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
