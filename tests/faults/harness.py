"""What the fault tests share: a PostgreSQL that can be killed, `stockledger serve` on it, broker
clients that retry unknown outcomes with the same Idempotency-Key, and the ledger checks.

Each trade a client sends carries a price unique to it (its "mark"), so that every row in the
ledger can be traced back to the one request that asked for it: two rows with one mark are a
duplicate, an acknowledged mark with no row is a loss.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from stockledger.config import ServeOptions
from stockledger.db import migrations
from stockledger.db.embedded import EmbeddedServer
from stockledger.db.pool import connect
from stockledger.registry import keys, records
from stockledger.registry.requests import AccountCreate, BrokerCreate, ClientCreate, StockCreate
from stockledger.serve.processes import free_port
from tests.support import Served, clean_env, stockledger_command

SYMBOLS = ("AAPL", "MSFT")


class KillablePostgres:
    """An embedded PostgreSQL of the test's own that can be killed -9 and started again."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.server = EmbeddedServer(data_dir)
        self.settings = settings or {}
        self.kills = 0
        self.url = ""

    def start(self) -> str:
        self.url = self.server.start()
        if self.settings:
            with psycopg.connect(self.server.admin_url(), autocommit=True) as conn:
                for name, value in self.settings.items():
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.Literal(value)
                        )
                    )
            # Some (wal_buffers) only apply at start.
            self.stop()
            self.restart()
        return self.url

    def postmaster_pid(self) -> int:
        return int((self.server.pgdata / "postmaster.pid").read_text().split()[0])

    def kill9(self) -> None:
        """SIGKILL to the postmaster and every process it started: no shutdown, no final
        flush. Each child of the postmaster leads a process group of its own, so killing the
        postmaster's group alone left backends alive for a moment, still attached to the
        shared memory, and a restart in that moment was refused ("pre-existing shared memory
        block is still in use"). They are found by their working directory, the data
        directory, until none is left: a backend forked while the postmaster was being killed
        is found on the next pass."""
        pid = self.postmaster_pid()
        # pg_ctl starts the postmaster in a session of its own; never signal ours.
        assert os.getpgid(pid) != os.getpgid(0), "the postmaster shares the test's process group"
        pgdata = self.server.pgdata.resolve()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (left := _processes_in(pgdata)) and time.monotonic() < deadline:
            for process in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process, signal.SIGKILL)
            time.sleep(0.01)
        assert not _processes_in(pgdata), "a server process survived SIGKILL"
        # The dead postmaster stays a zombie until init reaps it, and both the embedded package
        # and PostgreSQL's own lock-file check take a zombie for a live server: remove the
        # data directory's and the socket's lock files, as an operator would after checking.
        for lock in [
            self.server.pgdata / "postmaster.pid",
            *self._socket_dir().glob(".s.PGSQL.*.lock"),
        ]:
            lock.unlink(missing_ok=True)
        self.kills += 1

    def _socket_dir(self) -> Path:
        return Path(str(conninfo_to_dict(self.url)["host"]))

    def restart(self) -> None:
        url = self.server.start()
        assert url == self.url, "the server came back at another address"

    def stop(self) -> None:
        self.server.stop()


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (a PostgreSQL server's are its
    data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cwd").resolve() == directory and _alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: its parent (pg_ctl's shell) has not reaped it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@dataclass(frozen=True)
class Brokerage:
    """A broker with `accounts` accounts, each holding 20 of every symbol (so that some sells
    are refused), and its API key."""

    url: str  # the owner's URL
    app_url: str  # the application role's URL, as `serve` uses
    broker_id: int
    accounts: tuple[int, ...]
    api_key: str


def make_brokerage(pg: KillablePostgres, accounts: int) -> Brokerage:
    url = pg.url
    with connect(url) as conn:
        migrations.migrate(conn)
        tag = uuid.uuid4().hex[:6].upper()
        broker = records.add_broker(
            conn, BrokerCreate(name="Fault Broker", tax_id=f"FB{tag}", license_no=f"FL{tag}")
        )
        broker_id = broker["broker_id"]
        for symbol in SYMBOLS:
            records.add_stock(conn, StockCreate(symbol=symbol, name=symbol))
        ids = []
        for n in range(accounts):
            client = records.add_client(conn, ClientCreate(name=f"C{n}", tax_id=f"FC{tag}{n}"))
            account = records.open_account(
                conn, AccountCreate(client_id=client["client_id"], broker_id=broker_id)
            )
            ids.append(account["account_id"])
        k = len(ids) * len(SYMBOLS)
        conn.execute(
            "SELECT count(*) FROM trade_batch(%s, %s, %s, %s, %s, %s)",
            [
                broker_id,
                [a for a in ids for _ in SYMBOLS],
                list(SYMBOLS) * len(ids),
                ["buy"] * k,
                [20] * k,
                [Decimal("0.0001")] * k,  # below every mark
            ],
        )
        key = keys.issue_key(conn, broker_id)["api_key"]
    app_url = pg.server.enable_app_login(url)
    return Brokerage(url, app_url, broker_id, tuple(ids), key)


@contextlib.contextmanager
def serving(
    brokerage: Brokerage, log: Path, workers: int = 2, threads: int = 8, **env: str
) -> Iterator[tuple[str, Served]]:
    """`stockledger serve` against the brokerage's database, as the application role."""
    port = free_port()
    environment = clean_env(
        DATABASE_URL=brokerage.url,
        STOCKLEDGER_APP_DATABASE_URL=brokerage.app_url,
        STOCKLEDGER_LOG_LEVEL="WARNING",
        **env,
    )
    options = ServeOptions(port=port, workers=workers, threads=threads, access_log=False)
    server = Served(["serve", *options.flags()], environment, log)
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(base)
        yield base, server
    finally:
        server.stop()


@dataclass
class Outcomes:
    """What the clients learned. marks: price text -> trade_id of acknowledged trades;
    refused: marks answered with a final 4xx; unknown: marks never answered for sure."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    attempts: int = 0
    retries: int = 0
    server_errors: list[str] = field(default_factory=list)  # any 5xx but 503: a bug
    lock: threading.Lock = field(default_factory=threading.Lock)


class TradingClients:
    """`count` threads sending POST /v1/trades (mixed buys and sells) until stopped. An answer
    that is not final (503, 409, a dropped connection, a timeout) is retried with the same
    Idempotency-Key, or, with use_keys=False (a negative control), without one. stop() sends
    nothing new but lets every request in flight retry to a final answer (for at most
    SETTLE_SECONDS): an unknown outcome is never left behind while the system can answer."""

    # Not final: the server could not tell (503), or asks for a retry (409 with these codes;
    # a 409 insufficient_holdings is a final refusal).
    RETRYABLE_CODES = frozenset({"service_unavailable", "conflict", "request_in_progress"})
    SETTLE_SECONDS = 60.0

    def __init__(self, base: str, brokerage: Brokerage, count: int, use_keys: bool = True):
        self.base = base.removeprefix("http://")
        self.brokerage = brokerage
        self.count = count
        self.use_keys = use_keys
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._give_up_at = float("inf")
        self._marks = iter(range(1, 10**9))
        self._marks_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(count)
        ]

    def __enter__(self) -> TradingClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._give_up_at = time.monotonic() + self.SETTLE_SECONDS
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.SETTLE_SECONDS + 15)

    def acknowledged(self) -> int:
        with self.outcomes.lock:
            return len(self.outcomes.acknowledged)

    def _next_mark(self) -> str:
        with self._marks_lock:
            return f"{100 + next(self._marks)}.5"

    def _run(self, number: int) -> None:
        rng = random.Random(number)
        connection = http.client.HTTPConnection(self.base, timeout=10)
        while not self._stop.is_set():
            mark = self._next_mark()
            # Sells are larger than buys on average: positions run dry and some are refused.
            sell = rng.random() < 0.4
            body = {
                "account_id": rng.choice(self.brokerage.accounts),
                "symbol": rng.choice(SYMBOLS),
                "side": "sell" if sell else "buy",
                "quantity": rng.randint(1, 35 if sell else 20),
                "price": mark,
            }
            key = f"fault-{uuid.uuid4().hex}" if self.use_keys else None
            connection = self._settle(connection, body, key)
        connection.close()

    def _settle(
        self, connection: http.client.HTTPConnection, body: dict[str, Any], key: str | None
    ) -> http.client.HTTPConnection:
        """Send until the answer is final (or, after stop(), SETTLE_SECONDS have passed)."""
        mark = body["price"]
        first = True
        while True:
            status: int | None = None
            answer: Any = None
            try:
                status, answer = self.send(connection, body, key)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(self.base, timeout=10)
            with self.outcomes.lock:
                self.outcomes.attempts += 1
                self.outcomes.retries += 0 if first else 1
                if status == 201:
                    self.outcomes.acknowledged[mark] = answer["trade"]["trade_id"]
                    self.outcomes.unknown.discard(mark)
                    return connection
                code = answer.get("code") if isinstance(answer, dict) else None
                if status is not None and code not in self.RETRYABLE_CODES:
                    if status >= 500:
                        self.outcomes.server_errors.append(f"{status} {answer}")
                    self.outcomes.refused[mark] = answer.get("code", str(status))
                    self.outcomes.unknown.discard(mark)
                    return connection
                self.outcomes.unknown.add(mark)
            first = False
            if time.monotonic() > self._give_up_at:
                return connection
            time.sleep(0.05)

    def send(
        self, connection: http.client.HTTPConnection, body: dict[str, Any], key: str | None
    ) -> tuple[int, Any]:
        headers = {
            "Authorization": f"Bearer {self.brokerage.api_key}",
            "Content-Type": "application/json",
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        connection.request("POST", "/v1/trades", json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")


def ledger_marks(url: str, brokerage: Brokerage) -> dict[str, list[int]]:
    """mark -> trade_ids of the ledger rows carrying it (the setup's buys excluded)."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT price::text, array_agg(trade_id ORDER BY trade_id) FROM trades "
            "WHERE broker_id = %s AND price >= 100 GROUP BY price",
            [brokerage.broker_id],
        ).fetchall()
    return {_mark(price): ids for price, ids in rows}


def _mark(price: str) -> str:
    return str(Decimal(price).normalize())


@dataclass(frozen=True)
class Audit:
    acknowledged: int
    lost: list[str]  # acknowledged, not in the ledger
    duplicated: list[str]  # more than one row for one request
    refused_but_written: list[str]
    wrong_trade: list[str]  # the acknowledged trade_id is not the row with its mark
    verify_ok: bool
    verify_output: str

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.refused_but_written or self.wrong_trade)


def audit(brokerage: Brokerage, outcomes: Outcomes) -> Audit:
    rows = ledger_marks(brokerage.url, brokerage)
    acknowledged = {_mark(m): t for m, t in outcomes.acknowledged.items()}
    refused = {_mark(m) for m in outcomes.refused}
    result = subprocess.run(
        [*stockledger_command(), "verify"],
        env=clean_env(DATABASE_URL=brokerage.url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Audit(
        acknowledged=len(acknowledged),
        lost=sorted(m for m in acknowledged if m not in rows),
        duplicated=sorted(m for m, ids in rows.items() if len(ids) > 1),
        refused_but_written=sorted(m for m in refused if m in rows),
        wrong_trade=sorted(m for m, t in acknowledged.items() if m in rows and t not in rows[m]),
        verify_ok=result.returncode == 0,
        verify_output=result.stdout + result.stderr,
    )
