"""Rules that only a database can keep under concurrency, each next to a negative control: a
plausible implementation without the lock, run through the same harness, which must catch it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import pytest

from stockledger import errors, ledger
from stockledger.db import connect
from stockledger.models import TradeRequest
from tests.conftest import World, buy, scalar

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


@pytest.fixture
def seller_connections(db_url: str) -> Iterator[list[psycopg.Connection[Any]]]:
    with ExitStack() as stack:
        yield [stack.enter_context(connect(db_url)) for _ in range(SELLERS)]


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


def test_concurrent_sells_never_oversell(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    sell_request = TradeRequest(
        account_id=world.account,
        broker_id=world.broker_a,
        symbol="MSFT",
        side="sell",
        quantity=LOT,
        price=Decimal("10"),
    )
    refused_codes: list[str] = []

    def sell(c: psycopg.Connection[Any]) -> bool:
        try:
            ledger.execute_trade(c, sell_request)
            return True
        except psycopg.Error as exc:
            error = errors.from_database(exc)
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
    checks = {c.name: c for c in ledger.verify(conn)}
    assert all(c.holds for c in checks.values()), checks


def test_negative_control_check_then_insert_without_lock_oversells(
    conn: psycopg.Connection[Any], seller_connections: list[psycopg.Connection[Any]]
) -> None:
    """The same harness over a naive ledger that reads the position, then writes: it must
    report oversells, or the harness above proves nothing."""
    conn.execute("CREATE TABLE naive_positions (id int PRIMARY KEY, quantity bigint NOT NULL)")
    conn.execute("INSERT INTO naive_positions VALUES (1, 0)")

    def sell(c: psycopg.Connection[Any]) -> bool:
        held = scalar(c, "SELECT quantity FROM naive_positions WHERE id = 1")
        if held < LOT:
            return False
        c.execute("SELECT pg_sleep(0.005)")  # the window every check-then-write has, widened
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
    assert any(left < 0 for _, left in outcomes)


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
        "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s)",
        "INSERT INTO brokers (name, tax_id, license_no) VALUES ('Racer', %s, %s)",
    )
    assert all(opened != registered for opened, registered in outcomes), outcomes
    assert all(c.holds for c in ledger.verify(conn))


def test_negative_control_check_without_shared_lock_lets_both_succeed(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """A plausible trigger pair that checks the other table but shares no lock: the harness
    must see both succeed at least once."""
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
            PERFORM pg_sleep(0.02);
            RETURN NEW;
        END $$;
        CREATE FUNCTION naive_broker_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT FROM naive_accounts a JOIN clients c ON c.client_id = a.client_id
                       WHERE c.tax_id = NEW.tax_id) THEN
                RAISE EXCEPTION 'broker-owned' USING ERRCODE = 'SL007';
            END IF;
            PERFORM pg_sleep(0.02);
            RETURN NEW;
        END $$;
        CREATE TRIGGER naive_account_check BEFORE INSERT ON naive_accounts
            FOR EACH ROW EXECUTE FUNCTION naive_account_check();
        CREATE TRIGGER naive_broker_check BEFORE INSERT ON naive_brokers
            FOR EACH ROW EXECUTE FUNCTION naive_broker_check();
        """
    )
    outcomes = broker_owned_race(
        db_url,
        conn,
        world.broker_a,
        "INSERT INTO naive_accounts (client_id, broker_id) VALUES (%s, %s)",
        "INSERT INTO naive_brokers (tax_id, license_no) VALUES (%s, %s)",
    )
    assert any(opened and registered for opened, registered in outcomes), outcomes


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
        a.execute("SELECT count(*) FROM brokers")  # take both snapshots now
        b.execute("SELECT count(*) FROM accounts")
        a.execute(
            "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s)",
            [client_id, world.broker_a],
        )
        result: dict[str, BaseException | None] = {}

        def register() -> None:
            try:
                b.execute(
                    "INSERT INTO brokers (name, tax_id, license_no) VALUES ('RR', 'RRTAX1', 'RRL1')"
                )
                result["b"] = None
            except psycopg.Error as exc:
                result["b"] = exc

        waiter = threading.Thread(target=register)
        waiter.start()
        a.execute("COMMIT")
        waiter.join(timeout=30)
        failure = result["b"]
        assert isinstance(failure, psycopg.Error)
        assert failure.sqlstate in {"SL007", "40001"}
        b.execute("ROLLBACK")
