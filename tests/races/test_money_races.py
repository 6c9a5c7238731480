"""Rule 11 (no two buys or withdrawals spend the same cash) and §1.5 (no two sells close the same
shares of a lot) under concurrency, each next to a negative control that the same harness must
catch: a check in the application before the write, or the database's check taken out."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import pytest

from stockledger.audit.verify import verify
from stockledger.books.cash import move_cash
from stockledger.books.requests import CashMovement
from stockledger.errors import StockledgerError
from stockledger.trading import trades
from stockledger.trading.requests import LotPick, TradeRequest
from tests.support import ROUNDS, World, edit_function, run_together, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

# Each round the account holds CASH; each of SELLERS clients spends SPEND at once: exactly
# CASH // SPEND may succeed.
CASH, SPEND = Decimal("1000.00"), Decimal("100.00")


def balance(conn: psycopg.Connection[Any], account: int) -> Decimal:
    return Decimal(scalar(conn, "SELECT cash FROM accounts WHERE account_id = %s", [account]))


def fund_to(conn: psycopg.Connection[Any], account: int, target: Decimal) -> None:
    """Bring the balance to exactly ``target`` with one movement."""
    gap = target - balance(conn, account)
    if gap > 0:
        move_cash(conn, account, CashMovement(kind="deposit", amount=gap))
    elif gap < 0:
        move_cash(conn, account, CashMovement(kind="withdrawal", amount=-gap))


def buy_request(world: World) -> TradeRequest:
    # 10 shares at 10: SPEND.
    return TradeRequest(
        account_id=world.account,
        broker_id=world.broker_a,
        symbol="MSFT",
        side="buy",
        quantity=Decimal(10),
        price=Decimal(10),
    )


def spend_rounds(
    conn: psycopg.Connection[Any],
    world: World,
    spend: Any,
    connections: list[psycopg.Connection[Any]],
) -> list[tuple[int, Decimal]]:
    """(successes, balance after) per round."""
    outcomes = []
    for _ in range(ROUNDS):
        fund_to(conn, world.account, CASH)
        results = run_together([partial(spend, c) for c in connections])
        outcomes.append((sum(results), balance(conn, world.account)))
    return outcomes


def refused_as(codes: set[str], call: Any, *args: Any) -> bool:
    try:
        call(*args)
        return True
    except StockledgerError as error:
        assert error.code in codes, error
        return False


def cash_account(conn: psycopg.Connection[Any], world: World) -> None:
    fund_to(conn, world.account, CASH)
    conn.execute("UPDATE accounts SET credit_limit = 0 WHERE account_id = %s", [world.account])


def test_concurrent_buys_never_spend_the_same_cash(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    cash_account(conn, world)
    request = buy_request(world)
    outcomes = spend_rounds(
        conn,
        world,
        lambda c: refused_as({"insufficient_funds"}, trades.execute_trade, c, request),
        seller_connections,
    )
    assert all(outcome == (int(CASH // SPEND), Decimal(0)) for outcome in outcomes), outcomes
    assert all(check.holds for check in verify(conn))


def test_control_a_check_in_the_application_overdraws(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    """The same harness over the plausible alternative: read the balance, then buy if it
    covers the cost (the database books everything: no limit). It must overdraw."""
    fund_to(conn, world.account, CASH)
    request = buy_request(world)

    def check_then_buy(c: psycopg.Connection[Any]) -> bool:
        if balance(c, world.account) < SPEND:
            return False
        trades.execute_trade(c, request)
        return True

    outcomes = spend_rounds(conn, world, check_then_buy, seller_connections)
    assert any(left < 0 for _, left in outcomes), outcomes


def test_concurrent_withdrawals_never_spend_the_same_cash(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    # A credit limit changes nothing: a withdrawal never takes the balance below zero.
    fund_to(conn, world.account, CASH)
    conn.execute("UPDATE accounts SET credit_limit = 500 WHERE account_id = %s", [world.account])
    withdrawal = CashMovement(kind="withdrawal", amount=SPEND)
    outcomes = spend_rounds(
        conn,
        world,
        lambda c: refused_as({"insufficient_funds"}, move_cash, c, world.account, withdrawal),
        seller_connections,
    )
    assert all(outcome == (int(CASH // SPEND), Decimal(0)) for outcome in outcomes), outcomes
    assert all(check.holds for check in verify(conn))


def test_control_withdrawals_without_the_check_overdraw(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    """The database's own check taken out (as the owner can): the harness must see the
    balance go below zero, or the test above proves nothing."""
    edit_function(conn, "cash_movements_admit", {"AND NEW.balance < 0 THEN": "AND false THEN"})
    withdrawal = CashMovement(kind="withdrawal", amount=SPEND)
    outcomes = spend_rounds(
        conn,
        world,
        lambda c: refused_as({"insufficient_funds"}, move_cash, c, world.account, withdrawal),
        seller_connections,
    )
    assert any(left < 0 for _, left in outcomes), outcomes


def named_sell(world: World, lot_id: int, quantity: int) -> TradeRequest:
    return TradeRequest(
        account_id=world.account,
        broker_id=world.broker_a,
        symbol="AAPL",
        side="sell",
        quantity=Decimal(quantity),
        price=Decimal(12),
        lots=[LotPick(lot_id=lot_id, quantity=Decimal(quantity))],
    )


def lot_rounds(
    conn: psycopg.Connection[Any],
    world: World,
    connections: list[psycopg.Connection[Any]],
    refusals: set[str],
) -> list[tuple[int, Any]]:
    """Each round a new lot of 10 shares, and every client sells 10 naming it at once: one
    may. (successes, what the lot has left) per round."""
    outcomes = []
    for _ in range(ROUNDS):
        lot = trades.execute_trade(conn, buy_request(world).model_copy(update={"symbol": "AAPL"}))
        lot_id = lot.trade.seq
        request = named_sell(world, lot_id, 10)
        results = run_together(
            [partial(refused_as, refusals, trades.execute_trade, c, request) for c in connections]
        )
        left = scalar(
            conn,
            "SELECT remaining FROM lots WHERE account_id = %s AND lot_id = %s",
            [world.account, lot_id],
        )
        outcomes.append((sum(results), left))
    return outcomes


def test_concurrent_sells_never_close_the_same_lot_twice(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    outcomes = lot_rounds(conn, world, seller_connections, {"lot_not_available"})
    assert all(outcome == (1, 0) for outcome in outcomes), outcomes
    assert all(check.holds for check in verify(conn))


def test_control_without_the_lot_check_a_lot_is_closed_twice(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    """The named lot's availability check taken out, and the lot's own constraint with it:
    the harness must see a lot closed by more than one sell."""
    edit_function(
        conn,
        "trades_close_lots",
        {
            "IF v_lot.lot_id IS NULL OR": "IF false AND (v_lot.lot_id IS NULL OR",
            "OR v_lot.remaining < v_lot.wanted THEN": "OR v_lot.remaining < v_lot.wanted) THEN",
        },
    )
    conn.execute("ALTER TABLE lots DROP CONSTRAINT lots_remaining_check")
    conn.execute("ALTER TABLE lots DROP CONSTRAINT lots_closed_check")
    conn.execute("ALTER TABLE lots DROP CONSTRAINT lots_remaining_cost_check")
    outcomes = lot_rounds(
        conn, world, seller_connections, {"lot_not_available", "insufficient_holdings"}
    )
    assert any(sold > 1 for sold, _ in outcomes), json.dumps(outcomes, default=str)
