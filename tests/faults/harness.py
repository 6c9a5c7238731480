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

from stockledger.books.cash import move_cash
from stockledger.books.requests import CashMovement
from stockledger.config import ServeOptions
from stockledger.db import migrations
from stockledger.db.embedded import EmbeddedServer
from stockledger.db.pool import connect
from stockledger.registry import keys, records
from stockledger.registry.requests import AccountCreate, BrokerCreate, ClientCreate, StockCreate
from stockledger.serve.processes import free_port
from tests.support import ADMIN_TOKEN, Served, clean_env, stockledger_command

SYMBOLS = ("AAPL", "MSFT")
# Every account starts as a cash account with this balance; this share of the clients'
# requests are deposits and withdrawals (the operator's, under the admin token).
OPENING_CASH = Decimal("20000.00")
CASH_SHARE = 0.15


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
        # Cash accounts (credit limit 0) with an opening balance: buys may be refused for
        # funds, and the clients' deposits and withdrawals move cash while the faults land.
        for account in ids:
            move_cash(conn, account, CashMovement(kind="deposit", amount=OPENING_CASH))
            conn.execute("UPDATE accounts SET credit_limit = 0 WHERE account_id = %s", [account])
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
        **{"STOCKLEDGER_ADMIN_TOKEN": ADMIN_TOKEN, **env},
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
    """What the clients learned. marks: price text (a trade's) or reference (a cash
    movement's) -> trade_id or movement_id of what was acknowledged; refused: marks answered
    with a final 4xx; unknown: marks never answered for sure."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    movements: dict[str, int] = field(default_factory=dict)
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
            if rng.random() < CASH_SHARE:
                movement = {
                    "kind": "deposit" if rng.random() < 0.55 else "withdrawal",
                    "amount": f"{rng.randint(1, 3000)}.{rng.randint(0, 99):02d}",
                    "reference": f"fault-{mark}",
                }
                path = f"/v1/accounts/{rng.choice(self.brokerage.accounts)}/cash"
                connection = self._settle(connection, movement, f"cash-{uuid.uuid4().hex}", path)
                continue
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
        self,
        connection: http.client.HTTPConnection,
        body: dict[str, Any],
        key: str | None,
        path: str = "/v1/trades",
    ) -> http.client.HTTPConnection:
        """Send until the answer is final (or, after stop(), SETTLE_SECONDS have passed)."""
        mark = body.get("reference") or body["price"]
        first = True
        while True:
            status: int | None = None
            answer: Any = None
            try:
                status, answer = self.send(connection, body, key, path)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(self.base, timeout=10)
            with self.outcomes.lock:
                self.outcomes.attempts += 1
                self.outcomes.retries += 0 if first else 1
                if status == 201 and "movement_id" in answer:
                    self.outcomes.movements[mark] = answer["movement_id"]
                    self.outcomes.unknown.discard(mark)
                    return connection
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
        self,
        connection: http.client.HTTPConnection,
        body: dict[str, Any],
        key: str | None,
        path: str = "/v1/trades",
    ) -> tuple[int, Any]:
        token = self.brokerage.api_key if path == "/v1/trades" else ADMIN_TOKEN
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")


# Σ deposits - Σ withdrawals + Σ trade amounts = Σ balances (SPEC §1.4), and the accounts
# below their limit (overdrafts), over the brokerage's accounts.
CONSERVATION = """
SELECT (SELECT coalesce(sum(amount), 0) FROM cash_movements
        WHERE account_id = ANY(%(a)s) AND kind = 'deposit'),
       (SELECT coalesce(sum(amount), 0) FROM cash_movements
        WHERE account_id = ANY(%(a)s) AND kind = 'withdrawal'),
       (SELECT coalesce(sum(amount), 0) FROM trades WHERE account_id = ANY(%(a)s)),
       (SELECT sum(cash) FROM accounts WHERE account_id = ANY(%(a)s)),
       (SELECT count(*) FROM accounts WHERE account_id = ANY(%(a)s) AND cash < -credit_limit)
"""


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
    # Cash movements, as for trades; and the books' conservation.
    movements_acknowledged: int = 0
    movements_lost: list[str] = field(default_factory=list)
    movements_duplicated: list[str] = field(default_factory=list)
    movements_refused_but_written: list[str] = field(default_factory=list)
    conservation: dict[str, str] = field(default_factory=dict)
    overdrafts: int = 0

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.refused_but_written
            or self.wrong_trade
            or self.movements_lost
            or self.movements_duplicated
            or self.movements_refused_but_written
            or self.overdrafts
            or self.conservation.get("balances") != self.conservation.get("movements_and_trades")
        )


def assert_books_conserved(result: Audit) -> None:
    """Cash moved while the faults landed: every acknowledged movement is written exactly
    once, nothing refused was written, no account overdrew, and the balances are exactly the
    movements and trade amounts."""
    assert result.movements_acknowledged > 0, "no cash moved"
    assert result.movements_lost == [], result.movements_lost[:5]
    assert result.movements_duplicated == [], result.movements_duplicated[:5]
    assert result.movements_refused_but_written == [], result.movements_refused_but_written[:5]
    assert result.overdrafts == 0
    books = result.conservation
    assert books["balances"] == books["movements_and_trades"], books


def audit(brokerage: Brokerage, outcomes: Outcomes) -> Audit:
    rows = ledger_marks(brokerage.url, brokerage)
    acknowledged = {_mark(m): t for m, t in outcomes.acknowledged.items()}
    refused = {_mark(m) for m in outcomes.refused if not m.startswith("fault-")}
    result = subprocess.run(
        [*stockledger_command(), "verify"],
        env=clean_env(DATABASE_URL=brokerage.url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    with connect(brokerage.url) as conn:
        written: dict[str, int] = dict(
            conn.execute(
                "SELECT reference, count(*) FROM cash_movements "
                "WHERE account_id = ANY(%s) AND reference LIKE 'fault-%%' GROUP BY reference",
                [list(brokerage.accounts)],
            ).fetchall()
        )
        sums = conn.execute(CONSERVATION, {"a": list(brokerage.accounts)}).fetchone()
        assert sums is not None
    return Audit(
        movements_acknowledged=len(outcomes.movements),
        movements_lost=sorted(m for m in outcomes.movements if m not in written),
        movements_duplicated=sorted(m for m, n in written.items() if n > 1),
        movements_refused_but_written=sorted(m for m in outcomes.refused if m in written),
        conservation={
            "deposits": str(sums[0]),
            "withdrawals": str(sums[1]),
            "trade_amounts": str(sums[2]),
            "movements_and_trades": str(sums[0] - sums[1] + sums[2]),
            "balances": str(sums[3]),
        },
        overdrafts=sums[4],
        acknowledged=len(acknowledged),
        lost=sorted(m for m in acknowledged if m not in rows),
        duplicated=sorted(m for m, ids in rows.items() if len(ids) > 1),
        refused_but_written=sorted(m for m in refused if m in rows),
        wrong_trade=sorted(m for m, t in acknowledged.items() if m in rows and t not in rows[m]),
        verify_ok=result.returncode == 0,
        verify_output=result.stdout + result.stderr,
    )
