"""SPEC §1.2 rules 4 and 8 to 10 and §1.6, by direct SQL as the table owner: joint accounts,
fractional shares, reference prices and supervision are the database's rules, refused with the
SQLSTATE (and constraint name) the application maps, whoever writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.sql.test_schema_rules import insert_trade, refused
from tests.support import World, constraint_of, new_client, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


def holders(conn: psycopg.Connection[Any], account: int) -> list[tuple[int, int, bool]]:
    """(position, client_id, current) of every holder the account has had."""
    return [
        (row[0], row[1], row[2])
        for row in conn.execute(
            "SELECT position, client_id, removed_at IS NULL FROM account_holders "
            "WHERE account_id = %s ORDER BY position",
            [account],
        )
    ]


def add_holder(conn: psycopg.Connection[Any], account: int, client: int) -> None:
    conn.execute("SELECT add_account_holder(%s, %s)", [account, client])


def remove(account: int, client: int) -> tuple[str, list[int]]:
    return (
        "UPDATE account_holders SET removed_at = now() "
        "WHERE account_id = %s AND client_id = %s AND removed_at IS NULL",
        [account, client],
    )


# Rule 8: joint accounts --------------------------------------------------------------------


def test_a_plain_insert_of_an_account_makes_its_client_the_primary_holder(
    conn: psycopg.Connection[Any], world: World
) -> None:
    client = new_client(conn, "PLAIN1")
    conn.execute("SELECT claim_tax_identity('PLAIN1', false)")
    account = scalar(
        conn,
        "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s) RETURNING account_id",
        [client, world.broker_a],
    )
    assert holders(conn, account) == [(1, client, True)]
    assert holders(conn, world.account) == [(1, world.owner, True)]


def test_holders_are_numbered_in_the_order_added_and_the_position_is_assigned(
    conn: psycopg.Connection[Any], world: World
) -> None:
    second, third = new_client(conn, "JOINT2"), new_client(conn, "JOINT3")
    add_holder(conn, world.account, second)
    add_holder(conn, world.account, third)
    assert holders(conn, world.account) == [
        (1, world.owner, True),
        (2, second, True),
        (3, third, True),
    ]
    refused(
        conn,
        "428C9",
        "INSERT INTO account_holders (account_id, client_id, position) VALUES (%s, %s, 9)",
        [world.account, new_client(conn, "JOINT4")],
    )


def test_a_joint_account_opens_with_every_holder_in_order(
    conn: psycopg.Connection[Any], world: World
) -> None:
    a, b, c = (new_client(conn, f"OPEN{i}") for i in range(3))
    account = scalar(
        conn, "SELECT account_id FROM open_account(%s, %s)", [[b, a, c], world.broker_a]
    )
    assert holders(conn, account) == [(1, b, True), (2, a, True), (3, c, True)]
    assert scalar(conn, "SELECT client_id FROM accounts WHERE account_id = %s", [account]) == b


def test_the_last_holder_cannot_be_removed_and_history_is_kept(
    conn: psycopg.Connection[Any], world: World
) -> None:
    second = new_client(conn, "LAST2")
    add_holder(conn, world.account, second)
    conn.execute(*remove(world.account, world.owner))
    assert holders(conn, world.account) == [(1, world.owner, False), (2, second, True)]
    error = refused(conn, "SL016", *remove(world.account, second))
    assert "last holder" in str(error)
    # The primary holder is now the current one added first.
    assert (
        scalar(
            conn,
            "SELECT client_id FROM account_holders WHERE account_id = %s AND removed_at IS NULL "
            "ORDER BY position LIMIT 1",
            [world.account],
        )
        == second
    )


def test_holder_history_is_append_only(conn: psycopg.Connection[Any], world: World) -> None:
    second = new_client(conn, "HIST2")
    add_holder(conn, world.account, second)
    conn.execute(*remove(world.account, second))
    refused(conn, "SL008", "DELETE FROM account_holders WHERE account_id = %s", [world.account])
    refused(conn, "SL008", "TRUNCATE account_holders CASCADE")
    refused(
        conn,
        "SL011",
        "UPDATE account_holders SET client_id = %s WHERE account_id = %s AND position = 1",
        [second, world.account],
    )
    # A removal is final.
    refused(
        conn,
        "SL011",
        "UPDATE account_holders SET removed_at = NULL WHERE account_id = %s AND position = 2",
        [world.account],
    )


def test_a_client_holds_an_account_once_at_a_time(
    conn: psycopg.Connection[Any], world: World
) -> None:
    error = refused(
        conn,
        "23505",
        "SELECT add_account_holder(%s, %s)",
        [world.account, world.owner],
    )
    assert constraint_of(error) == "account_holders_current_key"
    # Removed, a client may hold it again, as a new holder.
    second = new_client(conn, "AGAIN2")
    add_holder(conn, world.account, second)
    conn.execute(*remove(world.account, second))
    add_holder(conn, world.account, second)
    assert holders(conn, world.account)[1:] == [(2, second, False), (3, second, True)]


def test_a_holder_of_an_unknown_account_or_client_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    error = refused(conn, "23503", "SELECT add_account_holder(987654321, %s)", [world.owner])
    assert constraint_of(error) == "account_holders_account_id_fkey"
    error = refused(conn, "23503", "SELECT add_account_holder(%s, 987654321)", [world.account])
    assert constraint_of(error) == "account_holders_client_id_fkey"


# Rule 4 for every holder ---------------------------------------------------------------------


def test_a_broker_cannot_become_a_holder(conn: psycopg.Connection[Any], world: World) -> None:
    broker_tax_id = scalar(
        conn, "SELECT tax_id FROM brokers WHERE broker_id = %s", [world.broker_b]
    )
    client = new_client(conn, broker_tax_id)
    refused(conn, "SL007", "SELECT add_account_holder(%s, %s)", [world.account, client])
    # A psql writer that skips the function is refused too (the trigger, before the claim's
    # foreign key would refuse it).
    refused(
        conn,
        "SL007",
        "INSERT INTO account_holders (account_id, client_id) VALUES (%s, %s)",
        [world.account, client],
    )


def test_a_holder_whose_identity_was_not_claimed_is_refused_by_the_foreign_key(
    conn: psycopg.Connection[Any], world: World
) -> None:
    client = new_client(conn, "UNCLAIMED1")
    error = refused(
        conn,
        "23503",
        "INSERT INTO account_holders (account_id, client_id) VALUES (%s, %s)",
        [world.account, client],
    )
    assert constraint_of(error) == "account_holders_tax_identity_fkey"


def test_an_identity_that_held_an_account_cannot_become_a_broker(
    conn: psycopg.Connection[Any], world: World
) -> None:
    second = new_client(conn, "HELD2")
    add_holder(conn, world.account, second)
    conn.execute(*remove(world.account, second))  # held, no more
    refused(conn, "SL007", "SELECT register_broker('Former holder', 'HELD2', 'LIC-HELD2')")


# Rule 9: fractional shares -----------------------------------------------------------------


@pytest.fixture
def fractionable(conn: psycopg.Connection[Any]) -> str:
    conn.execute("INSERT INTO stocks (symbol, name, fractionable) VALUES ('VOO', 'Vanguard', true)")
    return "VOO"


def position(conn: psycopg.Connection[Any], account: int, symbol: str) -> Decimal:
    return Decimal(
        scalar(
            conn,
            "SELECT quantity FROM positions WHERE account_id = %s AND symbol = %s",
            [account, symbol],
        )
    )


def test_fractions_trade_where_the_stock_is_fractionable(
    conn: psycopg.Connection[Any], world: World, fractionable: str
) -> None:
    insert_trade(conn, world, symbol=fractionable, quantity=Decimal("2.5"))
    insert_trade(conn, world, symbol=fractionable, quantity=Decimal("0.000001"))
    insert_trade(conn, world, symbol=fractionable, side="sell", quantity=Decimal("1.250001"))
    assert position(conn, world.account, fractionable) == Decimal("1.25")
    holds = scalar(
        conn,
        "SELECT quantity FROM holds WHERE account_id = %s AND symbol = %s",
        [world.account, fractionable],
    )
    assert holds == Decimal("1.25")
    # Stored without trailing zeros.
    assert str(position(conn, world.account, fractionable)) == "1.25"


def test_a_fraction_of_a_whole_only_stock_is_refused_on_every_path(
    conn: psycopg.Connection[Any], world: World
) -> None:
    refused(
        conn,
        "SL014",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1.5, 10)",
        [world.account, world.broker_a],
    )
    refused(
        conn,
        "SL014",
        "SELECT * FROM trade(%s, %s, 'AAPL', 'sell', 0.5, 10)",
        [world.account, world.broker_a],
    )
    error = refused(
        conn,
        "SL014",
        "SELECT * FROM trade_batch(%s, %s, %s, %s, %s, %s)",
        [
            world.broker_a,
            [world.account] * 3,
            ["AAPL"] * 3,
            ["buy"] * 3,
            [Decimal(1), Decimal(2), Decimal("0.5")],
            [Decimal(10)] * 3,
        ],
    )
    assert json.loads(error.diag.message_detail or "{}")["batch_index"] == 2
    # A whole number written with decimals is whole.
    insert_trade(conn, world, quantity=Decimal("2.000"))
    assert position(conn, world.account, "AAPL") == 102


@pytest.mark.parametrize("quantity", ["0.0000001", "0", "-1", "1000000000.5"])
def test_quantities_out_of_range_or_scale_are_refused(
    conn: psycopg.Connection[Any], world: World, fractionable: str, quantity: str
) -> None:
    error = refused(
        conn,
        "23514",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (%s, %s, %s, 'buy', %s, 10)",
        [world.account, world.broker_a, fractionable, Decimal(quantity)],
    )
    assert constraint_of(error) == "trades_quantity_check"


def test_a_fractional_batch_agrees_with_holds(
    conn: psycopg.Connection[Any], world: World, fractionable: str
) -> None:
    conn.execute(
        "SELECT * FROM trade_batch(%s, %s, %s, %s, %s, %s)",
        [
            world.broker_a,
            [world.account] * 4,
            [fractionable, fractionable, "AAPL", fractionable],
            ["buy", "sell", "sell", "buy"],
            [Decimal("3.3"), Decimal("1.15"), Decimal(1), Decimal("0.05")],
            [Decimal(10)] * 4,
        ],
    ).fetchall()
    assert position(conn, world.account, fractionable) == Decimal("2.2")
    mismatches = scalar(
        conn,
        "SELECT count(*) FROM positions p FULL JOIN holds h USING (account_id, symbol) "
        "WHERE p.quantity <> 0 AND p.quantity IS DISTINCT FROM h.quantity",
    )
    assert mismatches == 0


# §1.6: reference prices --------------------------------------------------------------------


def test_prices_are_append_only_history(conn: psycopg.Connection[Any], world: World) -> None:
    conn.execute("INSERT INTO stock_prices (symbol, price) VALUES ('AAPL', 190.5)")
    assert scalar(conn, "SELECT price::text FROM stock_prices WHERE symbol = 'AAPL'") == "190.5000"
    for statement in (
        "UPDATE stock_prices SET price = 1",
        "DELETE FROM stock_prices",
        "TRUNCATE stock_prices",
    ):
        refused(conn, "SL008", statement)


def test_a_price_must_be_valid_and_not_in_the_future(
    conn: psycopg.Connection[Any], world: World
) -> None:
    error = refused(
        conn, "23514", "INSERT INTO stock_prices (symbol, price) VALUES ('AAPL', 1.23456)"
    )
    assert constraint_of(error) == "stock_prices_price_check"
    refused(
        conn,
        "SL002",
        "INSERT INTO stock_prices (symbol, price, as_of) VALUES ('AAPL', 1, %s)",
        [datetime.now(UTC) + timedelta(minutes=1)],
    )
    error = refused(conn, "23503", "INSERT INTO stock_prices (symbol, price) VALUES ('NOPE', 1)")
    assert constraint_of(error) == "stock_prices_symbol_fkey"


# Rule 10: supervision without cycles -------------------------------------------------------


def set_manager(broker: int, manager: int | None) -> tuple[str, list[int | None]]:
    return "UPDATE brokers SET manager_id = %s WHERE broker_id = %s", [manager, broker]


def test_a_broker_cannot_supervise_itself(conn: psycopg.Connection[Any], world: World) -> None:
    refused(conn, "SL015", *set_manager(world.broker_a, world.broker_a))
    # Behind the trigger, a CHECK: a row that names itself never stands, however written.
    conn.execute("ALTER TABLE brokers DISABLE TRIGGER brokers_check_supervision")
    error = refused(conn, "23514", *set_manager(world.broker_a, world.broker_a))
    assert constraint_of(error) == "brokers_manager_id_check"


def test_a_chain_that_would_loop_is_refused_at_any_length(
    conn: psycopg.Connection[Any], world: World
) -> None:
    c = scalar(conn, "SELECT broker_id FROM register_broker('C', 'CHAINC', 'LIC-C')")
    conn.execute(*set_manager(world.broker_a, world.broker_b))  # A under B
    refused(conn, "SL015", *set_manager(world.broker_b, world.broker_a))
    conn.execute(*set_manager(world.broker_b, c))  # B under C
    refused(conn, "SL015", *set_manager(c, world.broker_a))
    # One statement that closes a loop over two rows is refused too.
    conn.execute(*set_manager(world.broker_b, None))
    refused(
        conn,
        "SL015",
        "UPDATE brokers SET manager_id = CASE broker_id WHEN %s THEN %s ELSE %s END "
        "WHERE broker_id IN (%s, %s)",
        [c, world.broker_a, world.broker_b, c, world.broker_b],
    )
    # Clearing and re-pointing are ordinary changes.
    conn.execute(*set_manager(world.broker_a, None))
    conn.execute(*set_manager(c, world.broker_a))


def test_a_supervisor_reads_but_never_trades_its_teams_accounts(
    conn: psycopg.Connection[Any], world: World
) -> None:
    boss = scalar(conn, "SELECT broker_id FROM register_broker('Boss', 'BOSS1', 'LIC-BOSS1')")
    big_boss = scalar(conn, "SELECT broker_id FROM register_broker('Big', 'BOSS2', 'LIC-BOSS2')")
    conn.execute(*set_manager(world.broker_a, boss))
    conn.execute(*set_manager(boss, big_boss))
    supervises = "SELECT broker_supervises(%s, %s)"
    assert scalar(conn, supervises, [big_boss, world.broker_a]) is True
    assert scalar(conn, supervises, [boss, world.broker_a]) is True
    assert scalar(conn, supervises, [world.broker_a, boss]) is False
    assert scalar(conn, supervises, [world.broker_b, world.broker_a]) is False
    for supervisor in (boss, big_boss):
        refused(
            conn,
            "SL017",
            "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
            "VALUES (%s, %s, 'AAPL', 'buy', 1, 10)",
            [world.account, supervisor],
        )
        refused(
            conn,
            "SL017",
            "SELECT * FROM trade_batch(%s, %s, %s, %s, %s, %s)",
            [supervisor, [world.account], ["AAPL"], ["buy"], [Decimal(1)], [Decimal(10)]],
        )
    # Anyone else's trade is still the account's absence.
    refused(
        conn,
        "SL004",
        "SELECT * FROM trade(%s, %s, 'AAPL', 'buy', 1, 10)",
        [world.account, world.broker_b],
    )
