"""The real books' rules under concurrency (SPEC §1.2 rules 4, 8 and 10), each next to a
negative control that the same harness must catch: a holder and a broker with one tax id, two
supervision changes that together would loop, two removals of an account's last holders."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import psycopg
import pytest

from stockledger.audit.verify import verify
from stockledger.db.pool import connect
from tests.races.test_races import ATTEMPTS, Stepped, stepped_pair
from tests.support import World, new_client, run_together, scalar, wait_until_blocked_by

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


def holds(checks: list[Any]) -> dict[str, bool]:
    return {c.name: c.holds for c in checks}


# Rule 4 for joint holders: adding a holder against registering a broker -----------------------


def test_adding_a_holder_and_registering_a_broker_never_both_succeed(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    outcomes = []
    with connect(db_url) as a, connect(db_url) as b:
        for i in range(ATTEMPTS):
            tax_id = f"HOLD{i:04d}{os.getpid()}"
            client_id = new_client(conn, tax_id)

            def add_holder(client_id: int = client_id) -> bool:
                try:
                    a.execute("SELECT add_account_holder(%s, %s)", [world.account, client_id])
                    return True
                except psycopg.Error as exc:
                    assert exc.sqlstate == "SL007", exc
                    return False

            def register(tax_id: str = tax_id) -> bool:
                try:
                    b.execute("SELECT register_broker('Racer', %s, %s)", [tax_id, f"L{tax_id}"])
                    return True
                except psycopg.Error as exc:
                    assert exc.sqlstate == "SL007", exc
                    return False

            outcomes.append(tuple(run_together([add_holder, register])))
    assert all(added != registered for added, registered in outcomes), outcomes
    assert all(holds(verify(conn)).values())


@pytest.mark.parametrize("holder_first", [True, False])
def test_stepped_holder_and_broker_meet_on_the_claim_and_the_second_is_refused(
    db_url: str, conn: psycopg.Connection[Any], world: World, holder_first: bool
) -> None:
    tax_id = f"STEPH{'A' if holder_first else 'B'}{os.getpid()}"
    client_id = new_client(conn, tax_id)
    add = ("SELECT add_account_holder(%s, %s)", [world.account, client_id])
    register = ("SELECT register_broker('Racer', %s, %s)", [tax_id, f"L{tax_id}"])
    first, second = (add, register) if holder_first else (register, add)
    outcome = stepped_pair(db_url, conn, first, second)
    assert outcome == Stepped(first_ok=True, second_ok=False, second_waited=True)
    assert all(holds(verify(conn)).values())


def test_negative_control_a_holder_check_without_the_claim_lets_both_succeed(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """A plausible pair of checks, a holder's against the brokers and a broker's against the
    holders, that share no row: stepped the same way, both succeed, and the harness says so."""
    conn.execute(
        """
        CREATE TABLE naive_holders (account_id bigint, client_id bigint);
        CREATE TABLE naive_brokers (tax_id text);
        CREATE FUNCTION naive_holder_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT FROM naive_brokers b JOIN clients c ON c.tax_id = b.tax_id
                       WHERE c.client_id = NEW.client_id) THEN
                RAISE EXCEPTION 'broker-owned' USING ERRCODE = 'SL007';
            END IF;
            RETURN NEW;
        END $$;
        CREATE FUNCTION naive_broker_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT FROM naive_holders h JOIN clients c ON c.client_id = h.client_id
                       WHERE c.tax_id = NEW.tax_id) THEN
                RAISE EXCEPTION 'broker-owned' USING ERRCODE = 'SL007';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER naive_holder_check BEFORE INSERT ON naive_holders
            FOR EACH ROW EXECUTE FUNCTION naive_holder_check();
        CREATE TRIGGER naive_broker_check BEFORE INSERT ON naive_brokers
            FOR EACH ROW EXECUTE FUNCTION naive_broker_check();
        """
    )
    tax_id = f"NAIVEH{os.getpid()}"
    client_id = new_client(conn, tax_id)
    outcome = stepped_pair(
        db_url,
        conn,
        ("INSERT INTO naive_holders VALUES (%s, %s)", [world.account, client_id]),
        ("INSERT INTO naive_brokers VALUES (%s)", [tax_id]),
    )
    assert outcome == Stepped(first_ok=True, second_ok=True, second_waited=False)


# Rule 10: two supervision changes that together would loop -----------------------------------


def manager_change(broker: int, manager: int) -> tuple[str, list[int]]:
    return "UPDATE brokers SET manager_id = %s WHERE broker_id = %s", [manager, broker]


def test_two_changes_that_would_close_a_loop_never_both_succeed(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    a, b = world.broker_a, world.broker_b
    outcome = stepped_pair(
        db_url, conn, manager_change(a, b), manager_change(b, a), frozenset({"SL015"})
    )
    assert outcome == Stepped(first_ok=True, second_ok=False, second_waited=True)
    assert holds(verify(conn))["no_supervision_cycle"]


def test_concurrent_changes_around_a_ring_never_close_it(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """Three brokers, each set under the next at once: at most two of the three pass."""
    ring = [world.broker_a, world.broker_b]
    ring.append(scalar(conn, "SELECT broker_id FROM register_broker('C', 'RINGC', 'LIC-RINGC')"))
    sessions = [connect(db_url) for _ in ring]
    try:
        for _ in range(ATTEMPTS // 3):
            conn.execute("UPDATE brokers SET manager_id = NULL WHERE broker_id = ANY(%s)", [ring])

            def change(i: int) -> bool:
                try:
                    sessions[i].execute(*manager_change(ring[i], ring[(i + 1) % 3]))
                    return True
                except psycopg.Error as exc:
                    assert exc.sqlstate == "SL015", exc
                    return False

            passed = run_together([functools.partial(change, i) for i in range(3)])
            assert sum(passed) == 2, passed
            assert holds(verify(conn))["no_supervision_cycle"]
    finally:
        for session in sessions:
            session.close()


def test_negative_control_without_the_lock_both_changes_pass_and_verify_sees_the_loop(
    db_url: str, conn: psycopg.Connection[Any], world: World, cluster: bool
) -> None:
    """The same stepped pair, with a chain walk that takes no lock (neither the statement's
    lock nor the rows' FOR SHARE): each change walks a chain the other has not committed yet,
    both pass, and verify names the loop."""
    if cluster:
        pytest.skip(
            "on a cluster Citus serialises every UPDATE of a reference table on its first "
            "worker, so even a walk without locks sees the other change (the next control "
            "runs there)"
        )
    conn.execute("ALTER TABLE brokers DISABLE TRIGGER brokers_supervision_lock")
    definition = scalar(conn, "SELECT pg_get_functiondef('brokers_check_supervision'::regproc)")
    assert "FOR SHARE" in definition
    conn.execute(definition.replace("FOR SHARE", ""))
    a, b = world.broker_a, world.broker_b
    outcome = stepped_pair(db_url, conn, manager_change(a, b), manager_change(b, a))
    assert outcome == Stepped(first_ok=True, second_ok=True, second_waited=False)
    assert not holds(verify(conn))["no_supervision_cycle"]


def test_negative_control_a_check_in_the_application_lets_both_pass(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """Both engines: the check done by the application before its write (the chain read, then
    the manager set, the database's check switched off). Each session checks before the other
    writes; both writes pass, and verify names the loop."""
    conn.execute("ALTER TABLE brokers DISABLE TRIGGER brokers_supervision_lock")
    conn.execute("ALTER TABLE brokers DISABLE TRIGGER brokers_check_supervision")
    a, b = world.broker_a, world.broker_b

    def loops(session: psycopg.Connection[Any], broker: int, manager: int) -> bool:
        current: int | None = manager
        while current is not None:
            if current == broker:
                return True
            current = scalar(
                session, "SELECT manager_id FROM brokers WHERE broker_id = %s", [current]
            )
        return False

    with connect(db_url) as first, connect(db_url) as second:
        for session in (first, second):
            session.execute("BEGIN")
        assert not loops(first, a, b)
        assert not loops(second, b, a)
        first.execute(*manager_change(a, b))
        first.execute("COMMIT")
        second.execute(*manager_change(b, a))
        second.execute("COMMIT")
    assert not holds(verify(conn))["no_supervision_cycle"]


def test_supervision_holds_under_repeatable_read(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """With both snapshots taken before either change commits, the second still cannot pass:
    it is refused as a loop, or fails to serialise."""
    a, b = world.broker_a, world.broker_b
    with connect(db_url) as first, connect(db_url) as second:
        for session in (first, second):
            session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            session.execute("SELECT count(*) FROM brokers")
        first.execute(*manager_change(a, b))
        result: dict[str, BaseException | None] = {}

        def close_the_loop() -> None:
            try:
                second.execute(*manager_change(b, a))
                result["error"] = None
            except psycopg.Error as exc:
                result["error"] = exc

        waiter = threading.Thread(target=close_the_loop)
        waiter.start()
        wait_until_blocked_by(conn, second.info.backend_pid, first.info.backend_pid)
        first.execute("COMMIT")
        waiter.join(timeout=30)
        failure = result["error"]
        assert isinstance(failure, psycopg.Error), "both changes passed"
        assert failure.sqlstate in {"SL015", "40001"}, failure
        second.execute("ROLLBACK")
    assert holds(verify(conn))["no_supervision_cycle"]


# Rule 8: two removals that would leave an account without a holder ---------------------------


def test_two_removals_never_leave_an_account_without_a_holder(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    second_holder = new_client(conn, f"REMOVE2{os.getpid()}")
    conn.execute("SELECT add_account_holder(%s, %s)", [world.account, second_holder])
    remove = "SELECT remove_account_holder(%s, %s)"
    outcome = stepped_pair(
        db_url,
        conn,
        (remove, [world.account, world.owner]),
        (remove, [world.account, second_holder]),
        frozenset({"SL016"}),
    )
    assert outcome == Stepped(first_ok=True, second_ok=False, second_waited=True)
    assert holds(verify(conn))["every_account_has_a_holder"]
