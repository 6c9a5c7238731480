"""What tests share: a small brokerage to trade in, ways to look at the books, concurrency
helpers, and running `stockledger` as a separate process, the way a user or an operator does.

Fixtures live in conftest.py; everything here is a plain function or class.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import psycopg.conninfo
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stockledger.registry import keys, records
from stockledger.registry.requests import AccountCreate, BrokerCreate, ClientCreate, StockCreate
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest


def stockledger_command() -> list[str]:
    script = Path(sys.executable).parent / "stockledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "stockledger"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user with no database configured: the embedded server is used."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL"}}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str]) -> Any:
    result = subprocess.run(
        [*stockledger_command(), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--json" in args else result.stdout


class Served:
    """A `stockledger serve`/`demo` process; output goes to a file to be read at any time."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [*stockledger_command(), *args],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, base_url: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._out.close()
        return self.process.returncode


def http(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


# Databases --------------------------------------------------------------------------------


# Copies of the template made ahead, at once: one CREATE DATABASE … TEMPLATE takes 0.2-0.5 s
# on a server that tests are writing to, most of it waiting, and copies made at once share
# that wait (8 copies in 2 threads: 47 ms each; in 4: 15 ms).
SPARE_COPIES = 4
_TEMPLATE_CLOSING = threading.Lock()


@dataclass(frozen=True)
class Server:
    """The server the tests make their databases on. Every test gets a copy of the migrated
    template; the next test's copy is made, and a finished test's database dropped, in the
    background while tests run, so that a test waits for neither. Measured on one embedded
    server: a copy made and a database dropped one after the other, in the test's own thread,
    cost every test ≈ 0.4 s (each CREATE DATABASE waits for a checkpoint of its own); with the
    drop in a thread of its own, ≈ 40 ms. Drops have their own thread, so that the next copy
    never queues behind one."""

    admin_url: str  # a database on the server from which databases can be created
    spare_copies: ClassVar[int] = SPARE_COPIES
    _background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(SPARE_COPIES), compare=False, repr=False
    )
    _dropper: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1), compare=False, repr=False
    )
    # Per template, the copies being made, oldest first.
    _ready: dict[str, deque[Future[str]]] = field(default_factory=dict, compare=False, repr=False)

    def url_for(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def create_database(self, name: str, template: str | None = None) -> str:
        if template is None:
            self._create_empty(name)
            return self.url_for(name)
        spares = self._ready.setdefault(template, deque())
        if spares:
            self._rename(spares.popleft().result(), name)
        else:
            self._copy(name, template)
        while len(spares) < self.spare_copies:
            spare = f"sl_spare_{uuid.uuid4().hex[:12]}"
            spares.append(self._background.submit(self._spare, spare, template))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self._dropper.submit(self._drop_now, name)

    def finish(self) -> None:
        """Wait for the background's copies and drops, and drop the spare copies."""
        spares = [spare for copies in self._ready.values() for spare in copies]
        self._ready.clear()
        self._background.shutdown(wait=True)
        self._dropper.shutdown(wait=True)
        for spare in spares:
            self._drop_now(spare.result())

    def _spare(self, name: str, template: str) -> str:
        self._copy(name, template)
        return name

    def _create_empty(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _copy(self, name: str, template: str) -> None:
        # FILE_COPY: copying a small template file by file is much faster than the default
        # WAL_LOG strategy.
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )

    def _rename(self, old: str, new: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )

    def _drop_now(self, name: str) -> None:
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


@dataclass(frozen=True)
class CitusServer(Server):
    """A Citus cluster (scripts/citus-cluster): a database is made on every node, with the
    extension and the workers registered on the coordinator; a copy of a template is made on
    every node at once, which gives an independent distributed database (docs/scale-out.md)."""

    node_urls: tuple[str, ...] = ()  # each node's postgres database, the coordinator first
    # One copy ahead, as before: a copy here is three (one per node, made at once), and four
    # copies ahead did not make the tier measurably faster (4m44s-5m52s against 5m33s-6m15s
    # in runs on one machine, whose noise is that large).
    spare_copies: ClassVar[int] = 1

    def _create_empty(self, name: str) -> None:
        for node in self.node_urls:
            with psycopg.connect(node, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for node in self.node_urls:
            with psycopg.connect(make_conninfo(node, dbname=name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        coordinator, *workers = self.node_urls
        with psycopg.connect(make_conninfo(coordinator, dbname=name), autocommit=True) as conn:
            host, port = _host_port(coordinator)
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)", [host, port])
            for worker in workers:
                conn.execute("SELECT citus_add_node(%s, %s)", list(_host_port(worker)))

    def _copy(self, name: str, template: str) -> None:
        # A copy per node, made at once on the three.
        with ThreadPoolExecutor(len(self.node_urls)) as pool:
            list(pool.map(lambda node: self._copy_on(node, name, template), self.node_urls))

    def _rename(self, old: str, new: str) -> None:
        statement = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(old), sql.Identifier(new)
        )
        for node in self.node_urls:
            with psycopg.connect(node, autocommit=True) as conn:
                conn.execute(statement)

    @staticmethod
    def _copy_on(node: str, name: str, template: str) -> None:
        # Citus's maintenance daemon (and the coordinator's cached connections) keep sessions
        # in the template: the first copy closes it to new sessions and ends those it has
        # (a copy is open again: ALLOW_CONNECTIONS is not copied).
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        with psycopg.connect(node, autocommit=True) as conn:
            # One at a time: copies made at once would update the template's catalog row
            # together ("tuple concurrently updated").
            with _TEMPLATE_CLOSING:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                        sql.Identifier(template)
                    )
                )
            for attempt in range(50):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [template],
                )
                try:
                    conn.execute(statement)
                    return
                except psycopg.errors.ObjectInUse:
                    if attempt == 49:
                        raise
                    time.sleep(0.05)

    def _drop_now(self, name: str) -> None:
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for node in self.node_urls:
            with psycopg.connect(node, autocommit=True) as conn:
                # A session the coordinator opens in between (its connection cache, the
                # maintenance daemon) can still hold it for a moment: try again.
                for attempt in range(50):
                    try:
                        conn.execute(statement)
                        break
                    except psycopg.errors.ObjectInUse:
                        if attempt == 49:
                            raise
                        time.sleep(0.05)


def _host_port(url: str) -> tuple[str, int]:
    info = psycopg.conninfo.conninfo_to_dict(url)
    return str(info["host"]), int(str(info["port"]))


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    return bool(scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))


# A small brokerage ------------------------------------------------------------------------

ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijkl"
PROBLEM = "application/problem+json"


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
    a = records.add_broker(
        conn, BrokerCreate(name="Broker A", tax_id=f"BA{tag}", license_no=f"LA{tag}")
    )
    b = records.add_broker(
        conn, BrokerCreate(name="Broker B", tax_id=f"BB{tag}", license_no=f"LB{tag}")
    )
    owner = records.add_client(
        conn, ClientCreate(name="Ada Lovelace", tax_id=f"CA{tag}", email="ada@example.com")
    )
    other = records.add_client(conn, ClientCreate(name="Grace Hopper", tax_id=f"CB{tag}"))
    for symbol, name in (("AAPL", "Apple"), ("MSFT", "Microsoft"), ("OLD", "Delisted Co")):
        conn.execute(
            "INSERT INTO stocks (symbol, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [symbol, name],
        )
    conn.execute("UPDATE stocks SET active = false WHERE symbol = 'OLD'")
    account = records.open_account(
        conn, AccountCreate(client_id=owner["client_id"], broker_id=a["broker_id"])
    )
    other_account = records.open_account(
        conn, AccountCreate(client_id=other["client_id"], broker_id=b["broker_id"])
    )
    world = World(
        broker_a=a["broker_id"],
        broker_b=b["broker_id"],
        owner=owner["client_id"],
        account=account["account_id"],
        other_account=other_account["account_id"],
        key_a=keys.issue_key(conn, a["broker_id"])["api_key"],
        key_b=keys.issue_key(conn, b["broker_id"])["api_key"],
    )
    buy(conn, world.account, world.broker_a, "AAPL", 100)
    return world


def buy(
    conn: psycopg.Connection[Any], account: int, broker: int, symbol: str, quantity: int
) -> trades.TradeResult:
    return trades.execute_trade(
        conn,
        TradeRequest(
            account_id=account,
            broker_id=broker,
            symbol=symbol,
            side="buy",
            quantity=Decimal(quantity),
            price=Decimal("10.00"),
        ),
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_caller(client: FlaskClient, token: str) -> FlaskClient:
    """Every request of this test client carries the token."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def add_stock(conn: psycopg.Connection[Any], symbol: str) -> None:
    records.add_stock(conn, StockCreate(symbol=symbol, name=f"{symbol} Inc."))


def new_client(conn: psycopg.Connection[Any], tax_id: str) -> int:
    """A client with this tax id, by plain SQL; its id."""
    return int(
        scalar(
            conn,
            "INSERT INTO clients (name, tax_id) VALUES (%s, %s) RETURNING client_id",
            [f"Client {tax_id}", tax_id],
        )
    )


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
        conn.execute("SELECT * FROM account_holders ORDER BY account_id, position").fetchall(),
        conn.execute("SELECT broker_id, status, manager_id FROM brokers ORDER BY 1").fetchall(),
        conn.execute("SELECT * FROM stock_prices ORDER BY symbol, as_of").fetchall(),
        conn.execute(
            "SELECT account_id, status, cash, credit_limit, lot_method, last_seq "
            "FROM accounts ORDER BY 1"
        ).fetchall(),
        conn.execute("SELECT * FROM lots ORDER BY account_id, lot_id").fetchall(),
        conn.execute("SELECT * FROM lot_closures ORDER BY account_id, seq, lot_id").fetchall(),
        conn.execute("SELECT * FROM cash_movements ORDER BY account_id, movement_id").fetchall(),
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    problem: dict[str, Any] = response.get_json(force=True)
    assert problem["code"] == code
    assert problem["status"] == status
    assert set(problem) >= {"type", "title", "status", "detail", "code"}
    assert "Traceback" not in response.get_data(as_text=True)
    return problem


# Concurrency ------------------------------------------------------------------------------

SELLERS = 32
ROUNDS = int(os.environ.get("STOCKLEDGER_RACE_ROUNDS", "25"))
HELD = 100
LOT = 10


def run_together(workers: list[Callable[[], bool]]) -> list[bool]:
    """Start every worker at once (a barrier releases them together); collect their results."""
    barrier = threading.Barrier(len(workers))
    results: list[bool | BaseException] = [False] * len(workers)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = workers[i]()
        except BaseException as exc:  # surfaced below, never swallowed
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return [bool(r) for r in results]


def oversell_rounds(
    refill: Callable[[], object],
    sell: Callable[[psycopg.Connection[Any]], bool],
    position: Callable[[], int],
    connections: list[psycopg.Connection[Any]],
) -> list[tuple[int, int]]:
    """Each round: the position holds HELD shares, SELLERS sell LOT each at once.
    Returns (successful sells, final position) per round."""
    outcomes = []
    for _ in range(ROUNDS):
        refill()
        assert position() == HELD
        results = run_together([partial(sell, c) for c in connections])
        outcomes.append((sum(results), position()))
    return outcomes


def correct(outcomes: list[tuple[int, int]]) -> bool:
    return all(sold == HELD // LOT and left == 0 for sold, left in outcomes)


def _on_cluster(observer: psycopg.Connection[Any]) -> bool:
    """Whether Citus's distributed wait graph (citus_lock_waits) is there to read: on a
    cluster a session of the coordinator waits on locks held on the workers, which
    pg_blocking_pids cannot see."""
    row = observer.execute("SELECT to_regclass('pg_catalog.citus_lock_waits') IS NOT NULL")
    found = row.fetchone()
    return bool(found and found[0])


def blockers_of(observer: psycopg.Connection[Any], pid: int) -> list[int]:
    """The sessions `pid` waits on; on a cluster from citus_lock_waits, which names both ends
    by global pid, whose last ten digits are the coordinator's pid."""
    row = observer.execute("SELECT pg_blocking_pids(%s)", [pid]).fetchone()
    assert row is not None
    local = list(row[0])
    if local or not _on_cluster(observer):
        return local
    rows = observer.execute(
        "SELECT DISTINCT blocking_gpid %% 10000000000 FROM citus_lock_waits "
        "WHERE waiting_gpid %% 10000000000 = %s",
        [pid],
    ).fetchall()
    return [int(r[0]) for r in rows]


def sessions_waiting(observer: psycopg.Connection[Any]) -> int:
    """How many sessions of this database wait on another's lock (on a cluster, also on
    locks held on the workers, as in blockers_of)."""
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0",
    ).fetchone()
    assert row is not None
    if row[0] or not _on_cluster(observer):
        return int(row[0])
    waits = observer.execute("SELECT count(DISTINCT waiting_gpid) FROM citus_lock_waits").fetchone()
    return int(waits[0]) if waits else 0


def wait_until_blocked_by(
    observer: psycopg.Connection[Any], pid: int, blocker: int, timeout: float = 10.0
) -> None:
    """Step until session `pid` waits on session `blocker` (pg_blocking_pids), the way
    PostgreSQL's isolation tests step their sessions: no sleep guesses how long a window is."""
    deadline = time.monotonic() + timeout
    while blocker not in blockers_of(observer, pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"session {pid} never waited on {blocker}")
        time.sleep(0.005)


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run work in a thread; its value or its exception lands in the dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # reported to the test, never lost in the thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def constraint_of(error: psycopg.Error) -> str | None:
    """The constraint a refused statement names, as callers are told it (stockledger.db.
    boundary): the diagnostic field, or on a Citus cluster, which relays no such field, the
    name in PostgreSQL's message."""
    from stockledger.db.boundary import from_database

    found = from_database(error).extra.get("constraint")
    return str(found) if found else None


def column_of(error: psycopg.Error) -> str | None:
    """The column an immutability refusal (SL011) names: the diagnostic field, or on a Citus
    cluster the column in its message ("accounts_102009.broker_id cannot be changed")."""
    if error.diag.column_name:
        return error.diag.column_name
    match = re.search(r"\.(\w+) cannot be changed", error.diag.message_primary or "")
    return match[1] if match else None


def edit_function(conn: psycopg.Connection[Any], name: str, edits: dict[str, str]) -> None:
    """Replace a function of the schema by its own definition with ``edits`` applied (each
    text must occur): the negative controls take one rule out this way, and nothing else."""
    definition = scalar(conn, "SELECT pg_get_functiondef(%s::regproc)", [name])
    for old, new in edits.items():
        assert old in definition, f"{name} no longer contains {old!r}"
        definition = definition.replace(old, new)
    conn.execute(definition)


def without_oversell_checks(conn: psycopg.Connection[Any]) -> None:
    """Negative control: rule 1 taken out of every trade path (a sell closes what lots there
    are, and the position may go negative); the books are still written."""
    edit_function(conn, "trades_close_lots", {"IF v_left > 0 THEN": "IF false THEN"})
    edit_function(
        conn,
        "trades_admit",
        {
            "IF coalesce(v_held, 0) < NEW.quantity THEN": "IF false THEN",
            "AND quantity >= NEW.quantity": "",
        },
    )
    without_batch_checks(conn)
    conn.execute("ALTER TABLE positions DROP CONSTRAINT positions_quantity_check")


def without_batch_checks(conn: psycopg.Connection[Any]) -> None:
    """Negative control: the set-wise checks of trades_admit_batch skipped (the batch's books
    are still written)."""
    edit_function(
        conn,
        "trades_admit_batch",
        {
            "    IF EXISTS (\n        SELECT FROM unnest(v_accounts,": "    IF false AND EXISTS (\n"
            "        SELECT FROM unnest(v_accounts,"
        },
    )
