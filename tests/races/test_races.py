"""Rules that only a database can keep under concurrency, each next to a negative control: a
plausible implementation without the lock, run through the same harness, which must catch it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from stockledger.audit.verify import verify
from stockledger.db.pool import connect
from stockledger.errors import StockledgerError
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest
from tests.support import (
    HELD,
    LOT,
    ROUNDS,
    SELLERS,
    World,
    blockers_of,
    buy,
    correct,
    in_background,
    oversell_rounds,
    run_together,
    scalar,
    wait_until_blocked_by,
)

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


def test_concurrent_sells_never_oversell(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    sell_request = TradeRequest(
        account_id=world.account,
        broker_id=world.broker_a,
        symbol="MSFT",
        side="sell",
        quantity=Decimal(LOT),
        price=Decimal("10"),
    )
    refused_codes: list[str] = []

    def sell(c: psycopg.Connection[Any]) -> bool:
        try:
            trades.execute_trade(c, sell_request)
            return True
        except StockledgerError as error:
            refused_codes.append(error.code)
            return False

    def position() -> int:
        row = conn.execute(
            "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'MSFT'",
            [world.account],
        ).fetchone()
        return row[0] if row else 0

    outcomes = oversell_rounds(
        lambda: buy(conn, world.account, world.broker_a, "MSFT", HELD),
        sell,
        position,
        seller_connections,
    )
    assert correct(outcomes), outcomes
    assert set(refused_codes) == {"insufficient_holdings"}
    assert len(refused_codes) == ROUNDS * (SELLERS - HELD // LOT)
    # The ledger agrees: every round bought HELD and sold exactly HELD.
    checks = {c.name: c for c in verify(conn)}
    assert all(c.holds for c in checks.values()), checks


def test_negative_control_check_then_insert_without_lock_oversells(
    conn: psycopg.Connection[Any], seller_connections: list[psycopg.Connection[Any]]
) -> None:
    """The same harness over a naive ledger that reads the position, then writes: it must
    report oversells, or the harness above proves nothing. The window every check-then-write
    has is held open deterministically: each seller checks, and none writes before all have
    checked (a barrier, not a sleep that guesses how long the window must be)."""
    conn.execute("CREATE TABLE naive_positions (id int PRIMARY KEY, quantity bigint NOT NULL)")
    conn.execute("INSERT INTO naive_positions VALUES (1, 0)")
    checked = threading.Barrier(len(seller_connections))

    def sell(c: psycopg.Connection[Any]) -> bool:
        held = scalar(c, "SELECT quantity FROM naive_positions WHERE id = 1")
        checked.wait(timeout=30)
        if held < LOT:
            return False
        c.execute("UPDATE naive_positions SET quantity = quantity - %s WHERE id = 1", [LOT])
        return True

    def position() -> int:
        return int(scalar(conn, "SELECT quantity FROM naive_positions WHERE id = 1"))

    outcomes = oversell_rounds(
        lambda: conn.execute("UPDATE naive_positions SET quantity = %s WHERE id = 1", [HELD]),
        sell,
        position,
        seller_connections,
    )
    assert not correct(outcomes), "the harness failed to catch a racy check-then-insert"
    # Every seller saw HELD and wrote: the position went to HELD - SELLERS * LOT each round.
    assert all(left == HELD - SELLERS * LOT for _, left in outcomes), outcomes


# No broker-owned accounts, both directions at once -------------------------------------------

ATTEMPTS = int(os.environ.get("STOCKLEDGER_RACE_ROUNDS", "15")) * 2


def broker_owned_race(
    db_url: str,
    conn: psycopg.Connection[Any],
    broker_id: int,
    open_account_sql: str,
    register_broker_sql: str,
) -> list[tuple[bool, bool]]:
    outcomes = []
    with connect(db_url) as a, connect(db_url) as b:
        for i in range(ATTEMPTS):
            tax_id = f"RACE{i:04d}{os.getpid()}"
            client_id = scalar(
                conn,
                "INSERT INTO clients (name, tax_id) VALUES ('Racer', %s) RETURNING client_id",
                [tax_id],
            )

            def open_account(client_id: int = client_id) -> bool:
                try:
                    a.execute(open_account_sql, [client_id, broker_id])
                    return True
                except psycopg.Error as exc:
                    assert exc.sqlstate == "SL007", exc
                    return False

            def register_broker(tax_id: str = tax_id) -> bool:
                try:
                    b.execute(register_broker_sql, [tax_id, f"LIC{tax_id}"])
                    return True
                except psycopg.Error as exc:
                    assert exc.sqlstate == "SL007", exc
                    return False

            opened, registered = run_together([open_account, register_broker])
            outcomes.append((opened, registered))
    return outcomes


def test_account_opening_and_broker_registration_never_both_succeed(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    outcomes = broker_owned_race(
        db_url,
        conn,
        world.broker_a,
        "SELECT open_account(%s, %s)",
        "SELECT register_broker('Racer', %s, %s)",
    )
    assert all(opened != registered for opened, registered in outcomes), outcomes
    assert all(c.holds for c in verify(conn))


Statement = tuple[str, list[Any]]


@dataclass(frozen=True)
class Stepped:
    first_ok: bool
    second_ok: bool
    second_waited: bool  # on the first session's lock


def stepped_pair(
    db_url: str,
    observer: psycopg.Connection[Any],
    first: Statement,
    second: Statement,
    refusals: frozenset[str] = frozenset({"SL007"}),
) -> Stepped:
    """The isolation-test way: session A runs its statement in an open transaction; session B
    runs its own. If B waits on A (pg_blocking_pids), A commits while B waits; otherwise B
    finishes first. Then whichever is still open commits. No sleep decides the interleaving."""
    with connect(db_url) as a, connect(db_url) as b:
        a.execute("BEGIN")
        a.execute(*first)
        b.execute("BEGIN")
        thread, outcome = in_background(lambda: b.execute(*second))
        waited = False
        while thread.is_alive() and not waited:
            waited = a.info.backend_pid in blockers_of(observer, b.info.backend_pid)
            time.sleep(0.005)
        a.execute("COMMIT")
        thread.join(timeout=30)
        assert not thread.is_alive(), "session B hung"
        error = outcome.get("error")
        if error is None:
            b.execute("COMMIT")
        else:
            assert isinstance(error, psycopg.Error) and error.sqlstate in refusals, error
            b.execute("ROLLBACK")
        return Stepped(True, error is None, waited)


def racer(conn: psycopg.Connection[Any], tag: str) -> tuple[int, str]:
    tax_id = f"STEP{tag}{os.getpid()}"
    client_id = scalar(
        conn,
        "INSERT INTO clients (name, tax_id) VALUES ('Racer', %s) RETURNING client_id",
        [tax_id],
    )
    return client_id, tax_id


@pytest.mark.parametrize("account_first", [True, False])
def test_stepped_claims_meet_on_one_row_and_the_second_is_refused(
    db_url: str, conn: psycopg.Connection[Any], world: World, account_first: bool
) -> None:
    client_id, tax_id = racer(conn, "A" if account_first else "B")
    open_account = ("SELECT open_account(%s, %s)",
                    [client_id, world.broker_a])  # fmt: skip
    register = ("SELECT register_broker('Racer', %s, %s)",
                [tax_id, f"LIC{tax_id}"])  # fmt: skip
    first, second = (open_account, register) if account_first else (register, open_account)
    outcome = stepped_pair(db_url, conn, first, second)
    assert outcome == Stepped(first_ok=True, second_ok=False, second_waited=True)
    assert all(c.holds for c in verify(conn))


def test_negative_control_check_without_shared_lock_lets_both_succeed(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """A plausible trigger pair that checks the other table but shares no lock: stepped the
    same way, both succeed, and the harness reports it."""
    conn.execute(
        """
        CREATE TABLE naive_accounts (client_id bigint, broker_id bigint);
        CREATE TABLE naive_brokers (tax_id text, license_no text);
        CREATE FUNCTION naive_account_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT FROM naive_brokers b JOIN clients c ON c.tax_id = b.tax_id
                       WHERE c.client_id = NEW.client_id) THEN
                RAISE EXCEPTION 'broker-owned' USING ERRCODE = 'SL007';
            END IF;
            RETURN NEW;
        END $$;
        CREATE FUNCTION naive_broker_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT FROM naive_accounts a JOIN clients c ON c.client_id = a.client_id
                       WHERE c.tax_id = NEW.tax_id) THEN
                RAISE EXCEPTION 'broker-owned' USING ERRCODE = 'SL007';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER naive_account_check BEFORE INSERT ON naive_accounts
            FOR EACH ROW EXECUTE FUNCTION naive_account_check();
        CREATE TRIGGER naive_broker_check BEFORE INSERT ON naive_brokers
            FOR EACH ROW EXECUTE FUNCTION naive_broker_check();
        """
    )
    client_id, tax_id = racer(conn, "N")
    outcome = stepped_pair(
        db_url,
        conn,
        ("INSERT INTO naive_accounts (client_id, broker_id) VALUES (%s, %s)",
         [client_id, world.broker_a]),
        ("INSERT INTO naive_brokers (tax_id, license_no) VALUES (%s, %s)", [tax_id, "LICN"]),
    )  # fmt: skip
    assert outcome == Stepped(first_ok=True, second_ok=True, second_waited=False)


def test_broker_owned_rule_holds_under_repeatable_read(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """With snapshots taken before the other side commits, the claims still collide: one side
    gets SL007 or a serialization failure, never both a success."""
    conn.execute("INSERT INTO clients (name, tax_id) VALUES ('RR', 'RRTAX1')")
    client_id = scalar(conn, "SELECT client_id FROM clients WHERE tax_id = 'RRTAX1'")
    with connect(db_url) as a, connect(db_url) as b:
        a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        b.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        # Take both snapshots now. (From reference tables: on a cluster, a transaction that
        # read a distributed table over several shards in parallel may not then write a
        # reference table, as register_broker() does.)
        a.execute("SELECT count(*) FROM brokers")
        b.execute("SELECT count(*) FROM clients")
        a.execute("SELECT open_account(%s, %s)", [client_id, world.broker_a])
        result: dict[str, BaseException | None] = {}

        def register() -> None:
            try:
                b.execute("SELECT register_broker('RR', 'RRTAX1', 'RRL1')")
                result["b"] = None
            except psycopg.Error as exc:
                result["b"] = exc

        waiter = threading.Thread(target=register)
        waiter.start()
        wait_until_blocked_by(conn, b.info.backend_pid, a.info.backend_pid)
        a.execute("COMMIT")
        waiter.join(timeout=30)
        failure = result["b"]
        assert isinstance(failure, psycopg.Error)
        assert failure.sqlstate in {"SL007", "40001"}
        b.execute("ROLLBACK")
