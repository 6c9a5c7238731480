"""SPEC §1.4, §1.5 and rules 11 and 12, by direct SQL as the table owner: a plain INSERT INTO
trades moves cash and lots like trade() does, and every refusal comes back with the SQLSTATE
(and constraint name) the application maps, whoever writes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from stockledger.audit.verify import verify
from tests.sql.test_schema_rules import insert_trade, refused
from tests.support import World, constraint_of, edit_function, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


def cash(conn: psycopg.Connection[Any], account: int) -> Decimal:
    return Decimal(scalar(conn, "SELECT cash FROM accounts WHERE account_id = %s", [account]))


def deposit(conn: psycopg.Connection[Any], account: int, amount: str) -> None:
    conn.execute(
        "INSERT INTO cash_movements (account_id, kind, amount) VALUES (%s, 'deposit', %s)",
        [account, amount],
    )


def lots_of(conn: psycopg.Connection[Any], account: int) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in conn.execute(
            "SELECT lot_id, symbol, quantity, remaining, cost, remaining_cost FROM lots "
            "WHERE account_id = %s ORDER BY lot_id",
            [account],
        )
    ]


def sell_with_lots(world: World, lots: Any, quantity: int = 2) -> tuple[str, list[Any]]:
    return (
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, named_lots) "
        "VALUES (%s, %s, 'AAPL', 'sell', %s, 10, %s)",
        [world.account, world.broker_a, quantity, json.dumps(lots)],
    )


# §1.4: cash -------------------------------------------------------------------------------------


def test_a_plain_insert_books_the_amount_the_database_assigns(
    conn: psycopg.Connection[Any], world: World
) -> None:
    before = cash(conn, world.account)
    insert_trade(conn, world, quantity=3, price="10.005", fee="1.5")
    amount = scalar(
        conn,
        "SELECT amount FROM trades WHERE account_id = %s ORDER BY seq DESC LIMIT 1",
        [world.account],
    )
    # 3 x 10.005 = 30.015, rounded half away from zero to 30.02, plus the fee.
    assert amount == Decimal("-31.52")
    assert cash(conn, world.account) == before - Decimal("31.52")
    insert_trade(conn, world, side="sell", quantity=3, price="10.005", fee="1.5")
    assert cash(conn, world.account) == before - Decimal("31.52") + Decimal("28.52")


def test_the_amount_cannot_be_supplied(conn: psycopg.Connection[Any], world: World) -> None:
    refused(
        conn,
        "428C9",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, amount) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 10, 5)",
        [world.account, world.broker_a],
    )


@pytest.mark.parametrize("fee", ["-1", "0.001"])
def test_a_fee_is_cents_not_negative(conn: psycopg.Connection[Any], world: World, fee: str) -> None:
    error = refused(
        conn,
        "23514",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, fee) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 10, %s)",
        [world.account, world.broker_a, fee],
    )
    assert constraint_of(error) == "trades_fee_check"


def test_a_cash_account_refuses_a_buy_it_cannot_pay_for(
    conn: psycopg.Connection[Any], world: World
) -> None:
    deposit(conn, world.account, str(100 - cash(conn, world.account)))  # 100.00 in cash
    conn.execute("UPDATE accounts SET credit_limit = 0 WHERE account_id = %s", [world.account])
    refused(
        conn,
        "SL019",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (%s, %s, 'AAPL', 'buy', 11, 10)",
        [world.account, world.broker_a],
    )
    # Exactly what it has is fine; a sell is never refused for cash.
    insert_trade(conn, world, quantity=10, price="10")
    assert cash(conn, world.account) == 0
    insert_trade(conn, world, side="sell", quantity=1, price="10")


def test_a_credit_limit_lets_the_balance_go_down_to_minus_it(
    conn: psycopg.Connection[Any], world: World
) -> None:
    deposit(conn, world.account, "2000.00")
    conn.execute("UPDATE accounts SET credit_limit = 50 WHERE account_id = %s", [world.account])
    spend = cash(conn, world.account) + 50
    conn.execute(
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, %s)",
        [world.account, world.broker_a, spend],
    )
    assert cash(conn, world.account) == -50
    refused(
        conn,
        "SL019",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 0.01)",
        [world.account, world.broker_a],
    )


def test_no_limit_books_every_trade(conn: psycopg.Connection[Any], world: World) -> None:
    # NULL, every account's limit before cash existed: a debit balance is booked.
    assert (
        scalar(conn, "SELECT credit_limit FROM accounts WHERE account_id = %s", [world.account])
        is None
    )
    insert_trade(conn, world, quantity=1000, price="1000")
    assert cash(conn, world.account) < 0


def test_a_withdrawal_never_goes_below_zero_whatever_the_limit(
    conn: psycopg.Connection[Any], world: World
) -> None:
    deposit(conn, world.account, str(-cash(conn, world.account) + 10))
    conn.execute("UPDATE accounts SET credit_limit = 1000 WHERE account_id = %s", [world.account])
    refused(
        conn,
        "SL019",
        "INSERT INTO cash_movements (account_id, kind, amount) VALUES (%s, 'withdrawal', 10.01)",
        [world.account],
    )
    conn.execute(
        "INSERT INTO cash_movements (account_id, kind, amount) VALUES (%s, 'withdrawal', 10)",
        [world.account],
    )
    assert cash(conn, world.account) == 0


def test_a_limit_below_what_the_account_owes_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    insert_trade(conn, world, quantity=1, price="100")
    assert cash(conn, world.account) < 0
    # The account's constraint refuses it: a row trigger there would lock (and log) the
    # account's row on every trade's update of it (migration 0016).
    error = refused(
        conn, "23514", "UPDATE accounts SET credit_limit = 0 WHERE account_id = %s", [world.account]
    )
    assert constraint_of(error) == "accounts_cash_within_limit"


def test_a_trade_whose_first_write_misses_while_no_rule_refuses_is_written_once(
    conn: psycopg.Connection[Any], world: World
) -> None:
    """The account changed between the trade's write of it and the lock that names a refusal
    (a deposit, a limit raised): the write is made again, under the lock. The race is too
    narrow to meet on purpose, so the first write is made to miss."""
    before = cash(conn, world.account)
    seq_before = scalar(
        conn, "SELECT last_seq FROM accounts WHERE account_id = %s", [world.account]
    )
    edit_function(
        conn,
        "trades_admit",
        {
            "AND broker_id = NEW.broker_id AND status = 'open'\n": (
                "AND broker_id = NEW.broker_id AND status = 'open' AND v_pass = 2\n"
            )
        },
    )
    _, seq, _, _ = insert_trade(conn, world, quantity=2, price="10")
    assert seq == seq_before + 1
    assert cash(conn, world.account) == before - Decimal("20.00")
    assert (
        scalar(conn, "SELECT last_seq FROM accounts WHERE account_id = %s", [world.account]) == seq
    )
    assert all(check.holds for check in verify(conn))
    # And a refusal is still named on that path.
    refused(
        conn,
        "SL009",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (987654321, %s, 'AAPL', 'buy', 1, 10)",
        [world.broker_a],
    )


def test_a_movement_on_a_missing_or_closed_account_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    statement = "INSERT INTO cash_movements (account_id, kind, amount) VALUES (%s, %s, 1)"
    refused(conn, "SL009", statement, [987654321, "deposit"])
    conn.execute("UPDATE accounts SET status = 'frozen' WHERE account_id = %s", [world.account])
    refused(conn, "SL003", statement, [world.account, "withdrawal"])
    conn.execute(statement, [world.account, "deposit"])  # a frozen account takes deposits
    conn.execute("UPDATE accounts SET status = 'closed' WHERE account_id = %s", [world.account])
    refused(conn, "SL003", statement, [world.account, "deposit"])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE accounts SET cash = cash + 1 WHERE account_id = %(a)s",
        "UPDATE accounts SET last_seq = 99 WHERE account_id = %(a)s",
        "UPDATE positions SET cost_basis = 0 WHERE account_id = %(a)s",
        "UPDATE lots SET remaining = 0 WHERE account_id = %(a)s",
        "DELETE FROM lots WHERE account_id = %(a)s",
        "INSERT INTO lots (account_id, lot_id, symbol, trade_id, quantity, remaining, cost, "
        "remaining_cost, opened_at) VALUES (%(a)s, 999, 'AAPL', 1, 1, 1, 1, 1, now())",
        "INSERT INTO lot_closures (account_id, seq, lot_id, symbol, trade_id, quantity, "
        "cost_basis, proceeds, closed_at) VALUES (%(a)s, 999, 1, 'AAPL', 1, 1, 1, 1, now())",
        "TRUNCATE lots",
    ],
)
def test_derived_books_are_written_only_by_the_database(
    conn: psycopg.Connection[Any], world: World, statement: str
) -> None:
    refused(conn, "SL010", statement, {"a": world.account})


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE lot_closures SET proceeds = 0",
        "DELETE FROM lot_closures",
        "UPDATE cash_movements SET amount = 1",
        "DELETE FROM cash_movements",
        "TRUNCATE cash_movements",
    ],
)
def test_closures_and_movements_are_history(
    conn: psycopg.Connection[Any], world: World, statement: str
) -> None:
    deposit(conn, world.account, "5.00")
    insert_trade(conn, world, side="sell", quantity=1)
    refused(conn, "SL008", statement)


def test_an_account_starts_without_cash(conn: psycopg.Connection[Any], world: World) -> None:
    refused(
        conn,
        "SL010",
        "INSERT INTO accounts (client_id, broker_id, cash) VALUES (%s, %s, 100)",
        [world.owner, world.broker_a],
    )


# §1.5: lots and closures ------------------------------------------------------------------------


def test_a_plain_insert_opens_and_closes_lots(conn: psycopg.Connection[Any], world: World) -> None:
    # The world's account bought 100 AAPL at 10 (lot 1); then 10 at 2.
    insert_trade(conn, world, quantity=10, price="2")
    insert_trade(conn, world, side="sell", quantity=105, price="3")
    assert lots_of(conn, world.account) == [
        (1, "AAPL", 100, 0, Decimal("1000.00"), 0),
        (2, "AAPL", 10, 5, Decimal("20.00"), Decimal("10.00")),
    ]
    closures = conn.execute(
        "SELECT lot_id, quantity, cost_basis, proceeds, realized FROM lot_closures "
        "WHERE account_id = %s ORDER BY lot_id",
        [world.account],
    ).fetchall()
    # 105 x 3 = 315.00: 100/105 of it is 300.00, and the last closure takes the 15.00 left.
    assert closures == [
        (1, 100, Decimal("1000.00"), Decimal("300.00"), Decimal("-700.00")),
        (2, 5, Decimal("10.00"), Decimal("15.00"), Decimal("5.00")),
    ]
    position = conn.execute(
        "SELECT quantity, cost_basis, realized FROM positions WHERE account_id = %s AND symbol = 'AAPL'",
        [world.account],
    ).fetchone()
    assert position == (5, Decimal("10.00"), Decimal("-695.00"))


@pytest.mark.parametrize(
    ("method", "closed"),
    [("fifo", [1]), ("lifo", [3]), ("hifo", [2])],
)
def test_sells_close_lots_in_the_accounts_method(
    conn: psycopg.Connection[Any], world: World, method: str, closed: list[int]
) -> None:
    conn.execute(
        "UPDATE accounts SET lot_method = %s WHERE account_id = %s", [method, world.account]
    )
    insert_trade(conn, world, quantity=1, price="19")  # lot 2: the dearest per share
    insert_trade(conn, world, quantity=1, price="1")  # lot 3: the newest
    insert_trade(conn, world, side="sell", quantity=1, price="5")
    lot_ids = [
        r[0]
        for r in conn.execute(
            "SELECT lot_id FROM lot_closures WHERE account_id = %s", [world.account]
        )
    ]
    assert lot_ids == closed


def test_a_sell_closes_exactly_the_lots_it_names(
    conn: psycopg.Connection[Any], world: World
) -> None:
    insert_trade(conn, world, quantity=3, price="2")  # lot 2
    conn.execute(
        *sell_with_lots(world, [{"lot_id": 2, "quantity": 1}, {"lot_id": 1, "quantity": "1"}])
    )
    closed = conn.execute(
        "SELECT lot_id, quantity FROM lot_closures WHERE account_id = %s ORDER BY lot_id",
        [world.account],
    ).fetchall()
    assert closed == [(1, 1), (2, 1)]
    stored = scalar(
        conn,
        "SELECT named_lots FROM trades WHERE account_id = %s ORDER BY seq DESC LIMIT 1",
        [world.account],
    )
    assert [pick["lot_id"] for pick in stored] == [2, 1]


@pytest.mark.parametrize(
    "lots",
    [
        [{"lot_id": 99, "quantity": 2}],  # no such lot
        [{"lot_id": 2, "quantity": 2}],  # a lot of another symbol
        [{"lot_id": 1, "quantity": 1}, {"lot_id": 3, "quantity": 1}],  # a closed lot
        [{"lot_id": 6, "quantity": 2}],  # a lot with too few shares (lot 4 was a sell)
    ],
)
def test_a_lot_that_cannot_serve_refuses_the_sell(
    conn: psycopg.Connection[Any], world: World, lots: Any
) -> None:
    insert_trade(conn, world, quantity=1, symbol="MSFT")  # lot 2
    insert_trade(conn, world, quantity=1)  # lot 3
    insert_trade(conn, world, side="sell", quantity=1)  # closes lot 1's first share (fifo)
    conn.execute(*sell_with_lots(world, [{"lot_id": 3, "quantity": 1}], quantity=1))  # lot 3 closed
    insert_trade(conn, world, quantity=1)  # lot 6
    refused(conn, "SL020", *sell_with_lots(world, lots))


@pytest.mark.parametrize(
    "lots",
    [
        [],
        [{"lot_id": 1}],
        [{"lot_id": 1, "quantity": 1}],  # adds up to 1, not 2
        [{"lot_id": 1, "quantity": 1}, {"lot_id": 1, "quantity": 1}],  # twice
        [{"lot_id": "1", "quantity": 2}],
        [{"lot_id": 1, "quantity": -2}],
        [{"lot_id": 1, "quantity": 2, "extra": 0}],
        {"lot_id": 1, "quantity": 2},
    ],
)
def test_a_malformed_selection_is_refused(
    conn: psycopg.Connection[Any], world: World, lots: Any
) -> None:
    refused(conn, "22023", *sell_with_lots(world, lots))


def test_a_buy_names_no_lots(conn: psycopg.Connection[Any], world: World) -> None:
    refused(
        conn,
        "22023",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, named_lots) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 10, '[{\"lot_id\": 1, \"quantity\": 1}]')",
        [world.account, world.broker_a],
    )


def test_closures_of_a_closed_lot_add_up_to_its_cost(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # 7 shares costing 0.05: a seventh of it rounds to 0.01 each time; the capped share and
    # the closure that empties the lot keep the sum at exactly 0.05, never below zero left.
    insert_trade(conn, world, symbol="MSFT", quantity=7, price="0.0071")
    for _ in range(7):
        insert_trade(conn, world, symbol="MSFT", side="sell", quantity=1, price="1")
    costs = [
        r[0]
        for r in conn.execute(
            "SELECT cost_basis FROM lot_closures WHERE account_id = %s AND symbol = 'MSFT' ORDER BY seq",
            [world.account],
        )
    ]
    assert sum(costs) == Decimal("0.05")
    assert min(costs) >= 0


def test_a_batch_sells_across_many_lots_of_a_position(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # The batch reads a position's open lots, oldest first, until they hold what it sells of
    # the position (migration 0017): here 11 of 12 one-share lots, for two sells.
    for _ in range(12):
        insert_trade(conn, world, symbol="MSFT", quantity=1, price="3")
    conn.execute(
        "SELECT count(*) FROM trade_batch(%s, %s, '{MSFT,MSFT}', '{sell,sell}', '{10,1}', '{5,5}')",
        [world.broker_a, [world.account, world.account]],
    )
    closed = conn.execute(
        "SELECT seq, count(*), sum(quantity) FROM lot_closures WHERE account_id = %s "
        "GROUP BY seq ORDER BY seq",
        [world.account],
    ).fetchall()
    assert [(n, q) for _, n, q in closed] == [(10, 10), (1, 1)]
    left = [
        r[0]
        for r in conn.execute(
            "SELECT lot_id FROM lots WHERE account_id = %s AND symbol = 'MSFT' AND remaining > 0",
            [world.account],
        )
    ]
    assert left == [13]  # the newest one-share lot: the eleven before it were sold
    assert all(check.holds for check in verify(conn))
