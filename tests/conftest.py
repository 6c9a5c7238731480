"""One PostgreSQL server per test session, one database per test.

The server is the embedded one (a throwaway data directory) unless TEST_DATABASE_URL names
another; that URL must be allowed to create databases. A template database is migrated once;
every test gets its own copy (CREATE DATABASE … TEMPLATE), because the ledger cannot be
emptied between tests: it refuses DELETE and TRUNCATE, by design.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stockledger import admin, auth, ledger, migrations
from stockledger.app import create_app
from stockledger.config import Settings
from stockledger.db import connect
from stockledger.embedded import EmbeddedServer
from stockledger.migrations import APP_ROLE
from stockledger.models import AccountCreate, BrokerCreate, ClientCreate, StockCreate, TradeRequest

_counter = itertools.count()
ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijkl"


@dataclass(frozen=True)
class Server:
    admin_url: str  # a database on the server from which databases can be created

    def url_for(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                # FILE_COPY: copying a small template file by file is much faster than the
                # default WAL_LOG strategy.
                statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            conn.execute(statement)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            try:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            except psycopg.errors.InsufficientPrivilege:
                # FORCE may not terminate an autovacuum worker that happens to be in the
                # database unless the role is a superuser (seen on PostgreSQL 15); a plain
                # DROP cancels autovacuum itself, and no session of the test is left.
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


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


@pytest.fixture(scope="session")
def pg_server(reachable_tmp: Path) -> Iterator[Server]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield Server(url)
        return
    embedded = EmbeddedServer(reachable_tmp / "pg")
    embedded.start()
    admin_url = embedded.admin_url()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # Durability is not under test here (the fault tests use their own server); speed is.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield Server(admin_url)
    finally:
        embedded.stop()


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


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    return bool(scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))


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


@dataclass(frozen=True)
class World:
    """A small brokerage: broker A runs account `account` (holding 100 AAPL), broker B runs
    `other_account`; `owner` is the account's client. key_a, key_b: the brokers' API keys."""

    broker_a: int
    broker_b: int
    owner: int
    account: int
    other_account: int
    key_a: str
    key_b: str


def make_world(conn: psycopg.Connection[Any]) -> World:
    tag = uuid.uuid4().hex[:6].upper()
    a = admin.add_broker(
        conn, BrokerCreate(name="Broker A", tax_id=f"BA{tag}", license_no=f"LA{tag}")
    )
    b = admin.add_broker(
        conn, BrokerCreate(name="Broker B", tax_id=f"BB{tag}", license_no=f"LB{tag}")
    )
    owner = admin.add_client(
        conn, ClientCreate(name="Ada Lovelace", tax_id=f"CA{tag}", email="ada@example.com")
    )
    other = admin.add_client(conn, ClientCreate(name="Grace Hopper", tax_id=f"CB{tag}"))
    for symbol, name in (("AAPL", "Apple"), ("MSFT", "Microsoft"), ("OLD", "Delisted Co")):
        conn.execute(
            "INSERT INTO stocks (symbol, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [symbol, name],
        )
    conn.execute("UPDATE stocks SET active = false WHERE symbol = 'OLD'")
    account = admin.open_account(
        conn, AccountCreate(client_id=owner["client_id"], broker_id=a["broker_id"])
    )
    other_account = admin.open_account(
        conn, AccountCreate(client_id=other["client_id"], broker_id=b["broker_id"])
    )
    world = World(
        broker_a=a["broker_id"],
        broker_b=b["broker_id"],
        owner=owner["client_id"],
        account=account["account_id"],
        other_account=other_account["account_id"],
        key_a=auth.issue_key(conn, a["broker_id"])["api_key"],
        key_b=auth.issue_key(conn, b["broker_id"])["api_key"],
    )
    buy(conn, world.account, world.broker_a, "AAPL", 100)
    return world


def buy(
    conn: psycopg.Connection[Any], account: int, broker: int, symbol: str, quantity: int
) -> ledger.TradeResult:
    return ledger.execute_trade(
        conn,
        TradeRequest(
            account_id=account,
            broker_id=broker,
            symbol=symbol,
            side="buy",
            quantity=quantity,
            price=Decimal("10.00"),
        ),
    )


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return make_world(conn)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_caller(client: FlaskClient, token: str) -> FlaskClient:
    """Every request of this test client carries the token."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def add_stock(conn: psycopg.Connection[Any], symbol: str) -> None:
    admin.add_stock(conn, StockCreate(symbol=symbol, name=f"{symbol} Inc."))


def scalar(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
    """The first column of the one row a query must return."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def ledger_snapshot(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Everything a bad request must leave untouched."""
    return (
        conn.execute("SELECT count(*), coalesce(max(trade_id), 0) FROM trades").fetchone(),
        conn.execute("SELECT * FROM positions ORDER BY account_id, symbol").fetchall(),
    )
