"""One PostgreSQL server per test session, one database per test.

The server is the embedded one (a throwaway data directory) unless TEST_DATABASE_URL names
another; that URL must be allowed to create databases. A template database is migrated once;
every test gets its own copy (CREATE DATABASE … TEMPLATE), because the ledger cannot be
emptied between tests: it refuses DELETE and TRUNCATE, by design.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stockledger.config import Settings
from stockledger.db import migrations
from stockledger.db.embedded import EmbeddedServer
from stockledger.db.migrations import APP_ROLE
from stockledger.db.pool import connect
from stockledger.http.app import create_app
from tests.support import (
    ADMIN_TOKEN,
    SELLERS,
    CitusServer,
    Server,
    World,
    is_superuser,
    make_world,
)

_counter = itertools.count()


@pytest.fixture(scope="session")
def reachable_tmp() -> Iterator[Path]:
    """A directory for the tests' files that the embedded server's user can traverse: run as
    root, the server runs as another user, and stockledger changes no permission of a
    directory it did not create, so pytest's private temporary directories will not do."""
    base = Path(tempfile.mkdtemp(prefix="stockledger-tests-"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tmp_path(reachable_tmp: Path, request: pytest.FixtureRequest) -> Path:
    """Each test's own directory, under reachable_tmp (pytest's tmp_path, moved)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    path = reachable_tmp / f"{next(_counter)}-{name}"
    path.mkdir()
    return path


def on_citus(config: pytest.Config) -> bool:
    """`pytest -m citus`: the distributed tier, against a Citus cluster."""
    return "citus" in (config.getoption("markexpr") or "").replace("not citus", "")


def pytest_configure(config: pytest.Config) -> None:
    # The money model's examples: 300 on one PostgreSQL, where the model is proven; on a
    # cluster, where each costs about five times as much, enough to show the shards' paths
    # agree with it (tests/sql/test_money_model.py).
    if on_citus(config):
        os.environ.setdefault("STOCKLEDGER_MONEY_EXAMPLES", "60")


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> bool:
    """Whether this run is the distributed tier: for the few answers a cluster gives
    differently, each documented in docs/scale-out.md."""
    return on_citus(pytestconfig)


@pytest.fixture(scope="session")
def pg_server(reachable_tmp: Path, pytestconfig: pytest.Config) -> Iterator[Server]:
    if on_citus(pytestconfig):
        yield from citus_cluster(reachable_tmp)
        return
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        server = Server(url)
        try:
            yield server
        finally:
            server.finish()
        return
    embedded = EmbeddedServer(reachable_tmp / "pg")
    embedded.start()
    admin_url = embedded.admin_url()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # Durability is not under test here (the fault tests use their own server); speed is.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")
    server = Server(admin_url)
    try:
        yield server
    finally:
        server.finish()
        embedded.stop()


CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "citus-cluster"


def citus_cluster(reachable_tmp: Path) -> Iterator[Server]:
    """A coordinator and two workers of scripts/citus-cluster (built once, cached), on three
    free loopback ports, for this session."""
    base = free_port_run(3)
    env = {**os.environ, "CITUS_PORT": str(base)}
    directory = reachable_tmp / "citus"
    started = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "start", str(directory)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if started.returncode != 0:
        raise RuntimeError(f"the Citus cluster did not start:\n{started.stderr}")
    nodes = tuple(f"postgresql://postgres@127.0.0.1:{base + i}/postgres" for i in range(3))
    for node in nodes:
        with psycopg.connect(node, autocommit=True) as conn:
            # For every session of the tier (the application's connections set their own
            # options, so the URL cannot carry these): the tests that remove a rule on purpose
            # (DROP or DISABLE a trigger) may do so on distributed tables too, and no
            # statement waits forever (a hang fails its test instead of stopping the run).
            conn.execute("ALTER ROLE ALL SET citus.enable_unsafe_triggers = on")
            conn.execute("ALTER ROLE ALL SET statement_timeout = '120s'")
    server = CitusServer(nodes[0], node_urls=nodes)
    try:
        yield server
    finally:
        server.finish()
        subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "stop", str(directory)],
            env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def free_port_run(length: int) -> int:
    """The first of `length` consecutive loopback ports that are free now."""
    for _ in range(100):
        base = random.randrange(20000, 40000)
        if all(port_free(base + i) for i in range(length)):
            return base
    raise RuntimeError("no run of free ports found")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class AppLogin:
    """A login role granted stockledger_app, as an operator makes one for `serve` (README:
    STOCKLEDGER_APP_DATABASE_URL): the suite never makes stockledger_app itself a login."""

    user: str
    password: str


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    name = f"sl_template_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    try:
        with connect(url) as conn:
            migrations.migrate(conn)
        # Closed to new sessions: autovacuum visits a database that allows connections, and a
        # copy of a template waits (up to 5 s, in steps of 100 ms) for every session in it to
        # end. (A copy allows connections again: the setting is not copied.)
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def app_login(pg_server: Server, template_db: str) -> Iterator[AppLogin]:
    login = AppLogin(f"sl_test_app_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(24))
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(
            # ROLE CURRENT_USER: the suite's role is a member, so that it may end the login's
            # sessions (DROP DATABASE … WITH (FORCE)) without being a superuser.
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {} ROLE CURRENT_USER").format(
                sql.Identifier(login.user), sql.Literal(login.password), sql.Identifier(APP_ROLE)
            )
        )
    try:
        yield login
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login.user)))


@pytest.fixture
def db_url(pg_server: Server, template_db: str) -> Iterator[str]:
    name = f"sl_test_{os.getpid()}_{next(_counter)}"
    url = pg_server.create_database(name, template=template_db)
    try:
        yield url
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the schema owner: direct SQL, as an operator with psql would write."""
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def superuser_conn(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The owner's connection, for a test that must break the rules as only a superuser can
    (session_replication_role = replica switches every trigger off). With TEST_DATABASE_URL
    naming a role that is not a superuser, such a test is skipped, saying why."""
    if not is_superuser(conn):
        pytest.skip("needs a superuser to switch triggers off; TEST_DATABASE_URL's role is not")
    return conn


@pytest.fixture
def app_db_url(db_url: str, app_login: AppLogin) -> str:
    """The same database as the application's least-privilege role."""
    return make_conninfo(db_url, user=app_login.user, password=app_login.password)


@pytest.fixture
def app(db_url: str, app_db_url: str) -> Iterator[Flask]:
    application = create_app(
        Settings(database_url=db_url, data_dir=Path("/nonexistent"), admin_token=ADMIN_TOKEN),
        database_url=app_db_url,
    )
    yield application
    application.extensions["stockledger.db"].close()


@pytest.fixture
def cli(db_url: str) -> Any:
    """`stockledger …` in-process, against this test's database (DATABASE_URL)."""
    from click.testing import CliRunner

    from stockledger.cli import main

    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(main, list(args), env={"DATABASE_URL": db_url}, catch_exceptions=False)

    return invoke


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return make_world(conn)


@pytest.fixture
def seller_connections(db_url: str) -> Iterator[list[psycopg.Connection[Any]]]:
    with ExitStack() as stack:
        yield [stack.enter_context(connect(db_url)) for _ in range(SELLERS)]
