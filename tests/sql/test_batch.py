"""All-or-nothing batches (POST /v1/trades/batch, trade_batch()): every rule per trade, checked
set-wise by one statement trigger; the first failing trade rejects the batch with its index."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from psycopg import sql

from stockledger.audit.verify import verify
from stockledger.errors import StockledgerError
from stockledger.registry import records
from stockledger.registry.requests import AccountCreate
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest
from tests.support import (
    HELD,
    LOT,
    World,
    as_caller,
    bearer,
    correct,
    ledger_snapshot,
    oversell_rounds,
    run_together,
    without_batch_checks,
)

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


def order(
    world: World, side: str, quantity: int, symbol: str = "AAPL", **extra: Any
) -> dict[str, Any]:
    return {
        "account_id": world.account,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": "10",
        **extra,
    }


def all_invariants_hold(conn: psycopg.Connection[Any]) -> bool:
    return all(check.holds for check in verify(conn))


def test_a_batch_executes_in_order(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    as_caller(client, world.key_a)
    # MSFT is bought, then sold within the same batch: order matters and is kept.
    batch = [
        order(world, "buy", 30, "MSFT"),
        order(world, "sell", 20, "MSFT"),
        order(world, "sell", 100),
    ]
    response = client.post("/v1/trades/batch", json={"trades": batch})
    assert response.status_code == 201, response.get_json()
    trades = response.get_json()["trades"]
    assert [(t["symbol"], t["side"], t["quantity"]) for t in trades] == [
        ("MSFT", "buy", 30),
        ("MSFT", "sell", 20),
        ("AAPL", "sell", 100),
    ]
    assert [t["seq"] for t in trades] == [2, 3, 4]  # the world's first trade is seq 1
    assert all(t["price"] == "10.0000" and t["broker_id"] == world.broker_a for t in trades)
    holdings = client.get(f"/getHoldings?account_id={world.account}").get_json()["holdings"]
    assert holdings == [{"symbol": "MSFT", "quantity": 10}]
    assert all_invariants_hold(conn)


@pytest.mark.parametrize(
    ("bad", "status", "code"),
    [
        ({"side": "sell", "quantity": 1000}, 409, "insufficient_holdings"),
        ({"symbol": "OLD"}, 409, "stock_not_tradable"),
        ({"symbol": "NOPE"}, 409, "stock_not_tradable"),
        ({"account_id": "other"}, 404, "not_found"),
        ({"account_id": 987654321}, 404, "not_found"),
        ({"executed_at": "2001-01-01T00:00:00Z"}, 409, "out_of_order"),
        ({"executed_at": "2099-01-01T00:00:00Z"}, 409, "out_of_order"),
    ],
)
def test_the_first_failing_trade_rejects_the_batch_with_its_index(
    client: FlaskClient,
    conn: psycopg.Connection[Any],
    world: World,
    bad: dict[str, Any],
    status: int,
    code: str,
) -> None:
    if bad.get("account_id") == "other":
        bad = {**bad, "account_id": world.other_account}
    batch = [
        order(world, "buy", 1),
        order(world, "buy", 2),
        {**order(world, "buy", 3), **bad},
        order(world, "buy", 4),
    ]
    before = ledger_snapshot(conn)
    response = client.post("/v1/trades/batch", json={"trades": batch}, headers=bearer(world.key_a))
    assert response.status_code == status, response.get_json()
    problem = response.get_json()
    assert problem["code"] == code and problem["batch_index"] == 2, problem
    assert ledger_snapshot(conn) == before


def first_refused(conn: psycopg.Connection[Any], broker: int, accounts: list[int]) -> Any:
    """The batch_index trade_batch() names for a batch that buys one share on every account,
    then oversells on each (the first oversell is trade len(accounts))."""
    n = len(accounts)
    try:
        conn.execute(
            "SELECT count(*) FROM trade_batch(%s, %s, %s, %s, %s, %s)",
            [
                broker,
                accounts + accounts,
                ["AAPL"] * (2 * n),
                ["buy"] * n + ["sell"] * n,
                [1] * n + [10**6] * n,
                [10] * (2 * n),
            ],
        )
    except psycopg.Error as error:
        assert error.sqlstate == "SL001", error
        return json.loads(error.diag.message_detail or "{}").get("batch_index")
    raise AssertionError("a batch of oversells was accepted")


def test_the_first_failing_trade_is_named_whichever_shard_holds_it(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # Eight accounts (spread over shards and workers), each put first among the oversells in
    # turn: the first failure is always trade 8. On a cluster each shard names the first
    # failure among its own rows, counting its own rows only (a shard holding three of the
    # accounts names its first oversell as trade 3), and the shards answer in their own order;
    # trade_batch() finds the batch's first failure from the one a shard names (migration
    # 0012). With that search removed (the shard's refusal re-raised as it came), the same
    # batches on a cluster of 32 shards were named 1, 1, 1, 1, 1, 1, 1, 1 (docs/scale-out.md).
    accounts = [world.account] + [
        records.open_account(conn, AccountCreate(client_id=world.owner, broker_id=world.broker_a))[
            "account_id"
        ]
        for _ in range(7)
    ]
    named = [first_refused(conn, world.broker_a, accounts[k:] + accounts[:k]) for k in range(8)]
    assert named == [8] * 8


def test_a_frozen_account_or_a_suspended_broker_rejects_the_batch(
    client: FlaskClient, conn: psycopg.Connection[Any], world: World
) -> None:
    as_caller(client, world.key_a)
    batch = {"trades": [order(world, "buy", 1)]}
    conn.execute("UPDATE accounts SET status = 'frozen' WHERE account_id = %s", [world.account])
    refused = client.post("/v1/trades/batch", json=batch).get_json()
    assert (refused["code"], refused["batch_index"]) == ("account_not_open", 0)
    conn.execute("UPDATE accounts SET status = 'open' WHERE account_id = %s", [world.account])
    conn.execute("UPDATE brokers SET status = 'suspended' WHERE broker_id = %s", [world.broker_a])
    assert client.post("/v1/trades/batch", json=batch).status_code == 403


@pytest.mark.parametrize(
    "trades",
    [[], [{"symbol": "AAPL"}], "all"],
)
def test_malformed_batches_are_422(client: FlaskClient, world: World, trades: Any) -> None:
    if trades == "all":
        trades = [order(world, "buy", 1)] * 1001  # over the limit
    response = client.post("/v1/trades/batch", json={"trades": trades}, headers=bearer(world.key_a))
    assert response.status_code == 422
    assert response.get_json()["code"] == "invalid_request"


def test_a_batch_with_another_brokers_id_is_refused(client: FlaskClient, world: World) -> None:
    batch = [order(world, "buy", 1, broker_id=world.broker_b)]
    response = client.post("/v1/trades/batch", json={"trades": batch}, headers=bearer(world.key_a))
    assert response.status_code == 403 and response.get_json()["code"] == "broker_not_authorized"


# The set-wise path checks whoever writes: psql inserting rows that carry a batch_id ----------


def direct(conn: psycopg.Connection[Any], world: World, *rows: tuple[Any, ...]) -> None:
    """One INSERT of pre-sequenced rows at price 1: (account, broker, symbol, side, quantity,
    seq, batch_id) and, as an optional eighth field, executed_at's offset in seconds from now,
    and as a ninth the amount (by default the one §1.4 gives: minus the quantity for a buy)."""
    now = datetime.now(UTC)
    params = [
        (
            a,
            b,
            s,
            side,
            q,
            now + timedelta(seconds=rest[0] if rest else 0),
            seq,
            batch,
            rest[1] if len(rest) > 1 else (Decimal(q) if side == "sell" else -Decimal(q)),
        )
        for a, b, s, side, q, seq, batch, *rest in rows
    ]
    placeholders = sql.SQL(", ").join(
        sql.SQL("(%s, %s, %s, %s, %s, 1, %s, %s, %s, %s)") for _ in params
    )
    statement = sql.SQL(
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at, "
        "seq, batch_id, amount) VALUES {}"
    ).format(placeholders)
    conn.execute(statement, [value for row in params for value in row])


@pytest.mark.parametrize(
    ("rows", "sqlstate"),
    [
        ([("A", "a", "AAPL", "sell", 101, 2, 9)], "SL001"),  # oversell
        ([("A", "a", "AAPL", "buy", 1, 3, 9)], "428C9"),  # a gap in seq
        ([("A", "b", "AAPL", "buy", 1, 2, 9)], "SL004"),  # not the broker of record
        ([("A", "a", "NOPE", "buy", 1, 2, 9)], "SL006"),  # unknown stock (no foreign key now)
        ([(987654321, "a", "AAPL", "buy", 1, 1, 9)], "SL009"),  # unknown account
        ([("A", "a", "AAPL", "buy", 1, 2, 9), ("A", "a", "AAPL", "buy", 1, 3, 10)], "22023"),
        # What the aggregate pre-check (migration 0006) reasons about: a gap after a correct
        # first seq, two brokers on one account, timestamps that go back within the batch or
        # before the account's history, a sale of shares bought later in the batch.
        ([("A", "a", "AAPL", "buy", 1, 2, 9), ("A", "a", "AAPL", "buy", 1, 4, 9)], "428C9"),
        ([("A", "a", "AAPL", "buy", 1, 2, 9), ("A", "b", "AAPL", "buy", 1, 3, 9)], "SL004"),
        ([("A", "a", "AAPL", "buy", 1, 2, 9, 2), ("A", "a", "AAPL", "buy", 1, 3, 9, 1)], "SL002"),
        ([("A", "a", "AAPL", "buy", 1, 2, 9, -86400 * 365)], "SL002"),
        ([("A", "a", "AAPL", "buy", 1, 2, 9, 60)], "SL002"),
        ([("A", "a", "MSFT", "sell", 5, 2, 9), ("A", "a", "MSFT", "buy", 5, 3, 9)], "SL001"),
        # The amount is the database's: a batch row states the one §1.4 gives it, or nothing
        # is written (migration 0017). A buy that claims to be paid for; a sell that adds a cent;
        # a row that leaves it out.
        ([("A", "a", "AAPL", "buy", 1, 2, 9, 0, Decimal("1"))], "428C9"),
        (
            [("A", "a", "AAPL", "buy", 1, 2, 9), ("A", "a", "AAPL", "sell", 1, 3, 9, 0, "1.01")],
            "428C9",
        ),
        ([("A", "a", "AAPL", "buy", 1, 2, 9, 0, None)], "23502"),
    ],
)
def test_direct_batch_inserts_meet_the_same_rules(
    conn: psycopg.Connection[Any], world: World, rows: list[tuple[Any, ...]], sqlstate: str
) -> None:
    names = {"A": world.account, "a": world.broker_a, "b": world.broker_b}
    resolved = [tuple(names.get(v, v) if isinstance(v, str) else v for v in row) for row in rows]
    before = ledger_snapshot(conn)
    with pytest.raises(psycopg.Error) as caught:
        direct(conn, world, *resolved)
    assert caught.value.sqlstate == sqlstate, caught.value
    assert ledger_snapshot(conn) == before


def test_a_valid_direct_batch_insert_updates_positions(
    conn: psycopg.Connection[Any], world: World
) -> None:
    direct(
        conn,
        world,
        (world.account, world.broker_a, "AAPL", "sell", 40, 2, 9),
        (world.account, world.broker_a, "MSFT", "buy", 7, 3, 9),
    )
    assert all_invariants_hold(conn)
    rows = conn.execute(
        "SELECT symbol, quantity FROM positions WHERE account_id = %s ORDER BY symbol",
        [world.account],
    ).fetchall()
    assert rows == [("AAPL", 60), ("MSFT", 7)]


def test_valid_direct_batches_the_aggregate_check_cannot_prove_pass_the_exact_one(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # Rising timestamps of its own, and a sale of shares bought earlier in the same batch:
    # valid, though not provable by the aggregates alone (migration 0006).
    direct(
        conn,
        world,
        (world.account, world.broker_a, "MSFT", "buy", 7, 2, 9, 1),
        (world.account, world.broker_a, "MSFT", "sell", 5, 3, 9, 2),
    )
    assert all_invariants_hold(conn)
    row = conn.execute(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'MSFT'",
        [world.account],
    ).fetchone()
    assert row == (2,)


def test_referenced_rows_still_cannot_be_deleted(
    conn: psycopg.Connection[Any], world: World
) -> None:
    """trades lost its foreign keys to the batch path's speed; positions' keep the references."""
    for statement in (
        f"DELETE FROM accounts WHERE account_id = {world.account}",
        "DELETE FROM stocks WHERE symbol = 'AAPL'",
        f"DELETE FROM brokers WHERE broker_id = {world.broker_a}",
    ):
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            conn.execute(statement)


# Concurrency: batches that sell the same position at once never oversell ----------------------


def batch_seller(world: World, refused: list[str]) -> Any:
    # One batch = two sells of half a lot, so each batch needs LOT shares.
    half = TradeRequest(
        account_id=world.account,
        broker_id=world.broker_a,
        symbol="MSFT",
        side="sell",
        quantity=Decimal(LOT // 2),
        price=Decimal("10"),
    )

    def sell(c: psycopg.Connection[Any]) -> bool:
        try:
            trades.execute_batch(c, world.broker_a, [half, half])
            return True
        except StockledgerError as error:
            refused.append(error.code)
            return False

    return sell


def msft_position(conn: psycopg.Connection[Any], world: World) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END), 0) "
        "FROM trades WHERE account_id = %s AND symbol = 'MSFT'",
        [world.account],
    ).fetchone()
    return int(row[0]) if row else 0


def refill(conn: psycopg.Connection[Any], world: World) -> None:
    trades.execute_batch(
        conn,
        world.broker_a,
        [
            TradeRequest(
                account_id=world.account,
                broker_id=world.broker_a,
                symbol="MSFT",
                side="buy",
                quantity=Decimal(HELD),
                price=Decimal("10"),
            )
        ],
    )


def test_concurrent_batches_never_oversell(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    refused: list[str] = []
    outcomes = oversell_rounds(
        lambda: refill(conn, world),
        batch_seller(world, refused),
        lambda: msft_position(conn, world),
        seller_connections,
    )
    assert correct(outcomes), outcomes
    assert set(refused) == {"insufficient_holdings"}
    assert all_invariants_hold(conn)


def test_negative_control_batches_without_the_set_wise_check_oversell(
    conn: psycopg.Connection[Any], world: World, seller_connections: list[psycopg.Connection[Any]]
) -> None:
    """The same harness with the batch's checks taken out (as the owner can): it must see
    oversells, or the test above proves nothing."""
    without_batch_checks(conn)
    conn.execute("ALTER TABLE positions DROP CONSTRAINT positions_quantity_check")
    refill(conn, world)
    sold = run_together([partial(batch_seller(world, []), c) for c in seller_connections])
    assert sum(sold) > HELD // LOT  # oversold: the harness sees it
    assert msft_position(conn, world) < 0


def test_batch_timestamps_never_precede_the_account_history(
    conn: psycopg.Connection[Any], world: World
) -> None:
    late = datetime.now(UTC) + timedelta(seconds=2)
    # As a request carries it: executed_at is RFC 3339 text, which the model parses.
    single = TradeRequest.model_validate(
        {
            "account_id": world.account,
            "broker_id": world.broker_a,
            "symbol": "AAPL",
            "side": "buy",
            "quantity": 1,
            "price": Decimal("1"),
            "executed_at": late.isoformat(),
        }
    )
    trades.execute_trade(conn, single)
    # A batch without executed_at comes after the latest trade, even one stamped ahead.
    [after] = trades.execute_batch(
        conn, world.broker_a, [single.model_copy(update={"executed_at": None})]
    )
    assert after.executed_at >= late
    assert all_invariants_hold(conn)


def test_the_lowest_index_wins_whatever_the_rule(client: FlaskClient, world: World) -> None:
    # An oversell at 0 and an unknown symbol after it: the answer names trade 0, not the
    # first refusal of some other kind.
    batch = [order(world, "sell", 1000), order(world, "buy", 1, "NOPE")]
    response = client.post("/v1/trades/batch", json={"trades": batch}, headers=bearer(world.key_a))
    problem = response.get_json()
    assert (response.status_code, problem["code"], problem["batch_index"]) == (
        409,
        "insufficient_holdings",
        0,
    )


def test_an_account_of_another_broker_refuses_the_batch_before_any_rule(
    client: FlaskClient, world: World
) -> None:
    """Accounts are checked to be the caller's before any is locked (SPEC §2.4), so another
    broker's account refuses the batch as a missing one would, wherever it is in the batch."""
    batch = [
        order(world, "sell", 1000),
        order(world, "buy", 1, "NOPE"),
        {**order(world, "buy", 1), "account_id": world.other_account},
    ]
    response = client.post("/v1/trades/batch", json={"trades": batch}, headers=bearer(world.key_a))
    problem = response.get_json()
    assert (response.status_code, problem["code"], problem["batch_index"]) == (404, "not_found", 2)
