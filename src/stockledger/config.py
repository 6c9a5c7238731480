"""Settings from the environment, overridden by command-line flags."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import platformdirs

DEFAULT_BODY_LIMIT = 64 * 1024
WORKER_CLASS = "stockledger.serve.worker.WholeRequestThreadWorker"
# Where prometheus_client's multiprocess mode keeps the workers' samples. Named here, not in
# stockledger.serve.metrics: prometheus_client reads it when first imported, so the process
# that sets it (serve, before forking) must not import prometheus_client first.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ServeOptions:
    """How `stockledger serve` listens and runs: the command's flags, the benchmark's and the
    tests' servers all take this one shape."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    threads: int = 4
    access_log: bool = True

    def flags(self) -> list[str]:
        """The same options as `stockledger serve` flags."""
        return [
            *("--host", self.host, "--port", str(self.port)),
            *("--workers", str(self.workers), "--threads", str(self.threads)),
            "--access-log" if self.access_log else "--no-access-log",
        ]


class SettingError(ValueError):
    """An environment variable with a value that cannot be used."""


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise SettingError(f"{name} must be a number of seconds between 0 and 3600, not {text!r}")
    return value


def _switch(env: dict[str, str], name: str) -> bool:
    """An on/off variable: 1 is on, 0 or unset off; anything else is refused rather than
    guessed at ("yes", "true" and "on" would each mean something to someone)."""
    text = env.get(name, "")
    if text not in ("", "0", "1"):
        raise SettingError(f"{name} must be 1 (on) or 0 (off), not {text!r}")
    return text == "1"


MIN_ADMIN_TOKEN_LENGTH = 32
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


def check_admin_token(token: str) -> None:
    """A short token can be guessed, and one with spaces could never be presented (a bearer
    token is stripped): a whitespace-only token silently turned administration off."""
    if len(token) < MIN_ADMIN_TOKEN_LENGTH or not _TOKEN_CHARACTERS.fullmatch(token):
        raise SettingError(
            f"STOCKLEDGER_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} printable "
            f"characters without spaces (it has {len(token)}); make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )


def admin_token(env: dict[str, str]) -> str | None:
    """STOCKLEDGER_ADMIN_TOKEN, if set to a usable token; unset or empty means no HTTP
    administration."""
    text = env.get("STOCKLEDGER_ADMIN_TOKEN")
    if not text:
        return None
    check_admin_token(text)
    return text


def default_data_dir() -> Path:
    """The user's data directory; root's is /var/lib/stockledger, because the embedded server
    cannot run as root and its own user must reach the data (/root is private, and stockledger
    changes no permission of a directory it did not create)."""
    if os.geteuid() == 0:
        return Path("/var/lib/stockledger")
    return Path(platformdirs.user_data_dir("stockledger", appauthor=False))


@dataclass(frozen=True)
class Settings:
    # The schema owner's connection (migrations, operator commands). None means: start (or
    # reuse) the embedded PostgreSQL in data_dir.
    database_url: str | None = None
    # The application's least-privilege connection, used by `serve`. With the embedded server
    # it is derived (role stockledger_app); with DATABASE_URL it should be given.
    app_database_url: str | None = None
    data_dir: Path = Path()
    admin_token: str | None = None
    log_level: str = "INFO"
    max_body_bytes: int = DEFAULT_BODY_LIMIT
    # POST /v1/trades/batch only: 1,000 trades of up to ~300 bytes each.
    max_batch_body_bytes: int = 512 * 1024
    # Connections per process; each gunicorn worker has its own pool.
    pool_min_size: int = 1
    pool_max_size: int = 4
    # How long a request waits for a pooled connection before answering 503. Each thread has
    # a connection of its own (pool size = threads), so under load the wait is ~0; a longer
    # wait means the database is unreachable, and the caller must hear so within 2 s.
    pool_timeout_seconds: float = 1.0
    # How long the pool retries (with backoff) to replace a lost connection before giving up;
    # the next request then tries at once. Short, so that the API is back within a request
    # of the database coming back, instead of sleeping out a backoff grown during an outage.
    pool_reconnect_seconds: float = 2.0
    # A new connection that gets no answer (a host gone silent) counts as unreachable.
    connect_timeout_seconds: int = 2
    # No request can hang: a statement running longer, or waiting longer for a row lock (say,
    # behind an operator's open transaction on the account), is cancelled and answered 503.
    statement_timeout_seconds: float = 5.0
    lock_timeout_seconds: float = 2.0
    # gunicorn worker class of `serve`; "gthread" brings back gunicorn's stock one, for
    # comparison (tests/faults/test_abusive_clients.py shows what it does with idle sockets).
    worker_class: str = WORKER_CLASS
    # POST /trade and /v1/trades answered in the ordinary case without Flask's request
    # machinery (stockledger.http.trade_path); off only to compare the two (tests, bench).
    trade_path: bool = True
    # SPEC §2.7: the seed's own GET requests (aid=…), answered to loopback clients
    # (stockledger.dialect). Off by default.
    seed_dialect: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        data_dir = env.get("STOCKLEDGER_DATA_DIR")
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            app_database_url=env.get("STOCKLEDGER_APP_DATABASE_URL") or None,
            data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(),
            admin_token=admin_token(env),
            log_level=env.get("STOCKLEDGER_LOG_LEVEL", "INFO").upper(),
            pool_timeout_seconds=_seconds(env, "STOCKLEDGER_POOL_TIMEOUT_SECONDS", 1.0),
            worker_class=env.get("STOCKLEDGER_WORKER_CLASS") or WORKER_CLASS,
            trade_path=env.get("STOCKLEDGER_TRADE_PATH", "1") != "0",
            seed_dialect=_switch(env, "STOCKLEDGER_SEED_DIALECT"),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """Flags win over the environment; a flag left unset (None) changes nothing."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
