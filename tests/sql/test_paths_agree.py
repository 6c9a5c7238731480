"""The two statements of each trading rule agree: trades_admit (single trades, row by row) and
trades_admit_batch (batches, set-wise) accept and refuse the same trades with the same codes.

Hypothesis draws a state (positions, account statuses, an earlier trade's time) and a list of
trades over accounts of this broker, another broker's, a missing one, listed, inactive and
unknown stocks, buys, sells, backfill times in and out of order. Each list is tried, inside a
savepoint rolled back afterwards, three ways: each trade as a single trade, in order; each
trade as a one-trade batch, in order; and the whole list as one batch. Sequentially, the first
refusal is (index, code); the batch must refuse with the same index and code, or accept all
when the singles did. The one documented difference is modelled: a batch naming an account the
broker may not trade is refused for the first such trade before any rule is checked (SPEC §2.4:
nothing about a foreign account's state may show).

The control runs the same comparison against a batch trigger with one rule weakened (a sell
may take the position below zero) and must find a disagreement.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stockledger.errors import ErrorCode, StockledgerError
from stockledger.registry import records
from stockledger.registry.requests import AccountCreate, BrokerCreate, ClientCreate
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

SYMBOLS = ("AAPL", "MSFT", "OLD", "NOPE")  # OLD is inactive, NOPE is not listed
OWN = 2  # accounts of the broker under test: 0 and 1; 2 is another broker's, 3 does not exist

trade_strategy = st.tuples(
    st.sampled_from([0] * 8 + [1] * 8 + [2, 3]),  # account index: mostly this broker's
    st.sampled_from(SYMBOLS[:2] * 4 + SYMBOLS[2:]),  # mostly listed stocks
    st.sampled_from(["buy", "sell", "sell"]),
    st.integers(1, 40),
    st.sampled_from([None, None, None, "past", "recent", "future"]),
)
state_strategy = st.tuples(
    st.lists(
        st.integers(0, 60), min_size=OWN * 2, max_size=OWN * 2
    ),  # held per (account, AAPL/MSFT)
    st.lists(st.sampled_from(["open"] * 6 + ["frozen", "closed"]), min_size=OWN, max_size=OWN),
)


class Brokerage:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        tag = uuid.uuid4().hex[:10].upper()
        self.conn = conn
        for symbol in ("AAPL", "MSFT", "OLD"):
            conn.execute(
                "INSERT INTO stocks (symbol, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [symbol, symbol],
            )
        conn.execute("UPDATE stocks SET active = (symbol <> 'OLD')")
        brokers = [
            records.add_broker(
                conn, BrokerCreate(name="P", tax_id=f"PB{i}{tag}", license_no=f"PL{i}{tag}")
            )["broker_id"]
            for i in range(2)
        ]
        self.broker = brokers[0]
        self.accounts = []
        for i, broker in enumerate([brokers[0]] * OWN + [brokers[1]]):
            client = records.add_client(conn, ClientCreate(name="P", tax_id=f"PC{i}{tag}"))
            account = records.open_account(
                conn, AccountCreate(client_id=client["client_id"], broker_id=broker)
            )
            self.accounts.append(account["account_id"])
        self.accounts.append(10**12)  # no such account

    def set_state(self, held: list[int], statuses: list[str]) -> datetime:
        """Positions and statuses as drawn; returns the latest trade time of the accounts."""
        for i in range(OWN):
            for j, symbol in enumerate(("AAPL", "MSFT")):
                if held[i * 2 + j]:
                    self.single(self.request(i, symbol, "buy", held[i * 2 + j], None, None))
        for i, status in enumerate(statuses):
            self.conn.execute(
                "UPDATE accounts SET status = %s WHERE account_id = %s", [status, self.accounts[i]]
            )
        latest = self.conn.execute("SELECT max(executed_at) FROM trades").fetchone()
        return latest[0] if latest and latest[0] else datetime.now(UTC)

    def request(
        self,
        i: int,
        symbol: str,
        side: str,
        quantity: int,
        when: str | None,
        latest: datetime | None,
    ) -> TradeRequest:
        executed_at = None
        if when is not None and latest is not None:
            executed_at = {
                "past": latest - timedelta(days=1),
                "recent": latest,
                "future": datetime.now(UTC) + timedelta(minutes=5),
            }[when]
        # model_construct: the database must see these as drawn (a time in the future, an
        # unknown symbol), not as the API's validation would let them through.
        return TradeRequest.model_construct(
            account_id=self.accounts[i],
            broker_id=self.broker,
            symbol=symbol,
            side=side,
            quantity=Decimal(quantity),
            price=Decimal("10"),
            executed_at=executed_at,
            client_order_id=None,
        )

    def single(self, request: TradeRequest) -> None:
        trades.execute_trade(self.conn, request)

    def batch(self, requests: list[TradeRequest]) -> None:
        trades.execute_batch(self.conn, self.broker, requests)


class Rollback(Exception):
    pass


def outcome_of(conn: psycopg.Connection[Any], attempt: Any) -> tuple[int | None, ErrorCode | None]:
    """(index, code) of the first refusal, (None, None) if all went through; rolled back."""
    result: tuple[int | None, ErrorCode | None] = (None, None)
    try:
        with conn.transaction():
            result = attempt()
            raise Rollback
    except Rollback:
        pass
    return result


def sequential(
    conn: psycopg.Connection[Any], requests: list[TradeRequest], run: Any
) -> tuple[int | None, ErrorCode | None]:
    def attempt() -> tuple[int | None, ErrorCode | None]:
        for index, request in enumerate(requests):
            try:
                with conn.transaction():
                    run(request)
            except StockledgerError as error:
                return index, error.code
        return None, None

    return outcome_of(conn, attempt)


def as_one_batch(b: Brokerage, requests: list[TradeRequest]) -> tuple[int | None, ErrorCode | None]:
    def attempt() -> tuple[int | None, ErrorCode | None]:
        try:
            with b.conn.transaction():
                b.batch(requests)
        except StockledgerError as error:
            return error.extra.get("batch_index"), error.code
        return None, None

    return outcome_of(b.conn, attempt)


def expected_of_batch(
    b: Brokerage, requests: list[TradeRequest], singles: tuple[int | None, ErrorCode | None]
) -> tuple[int | None, ErrorCode | None]:
    """What the whole batch must answer, given what the singles answered in order."""
    foreign = [i for i, r in enumerate(requests) if r.account_id in b.accounts[OWN:]]
    if foreign:
        return foreign[0], ErrorCode.NOT_FOUND
    return singles


def compare(
    b: Brokerage, state: Any, ops: list[Any], note: Callable[[str], object] = print
) -> list[str]:
    """Every disagreement between the paths for this state and these trades (all undone)."""
    problems: list[str] = []

    def attempt() -> tuple[int | None, ErrorCode | None]:
        latest = b.set_state(*state)
        requests = [b.request(i, sym, side, qty, when, latest) for i, sym, side, qty, when in ops]
        singles = sequential(b.conn, requests, b.single)
        one_trade_batches = sequential(b.conn, requests, lambda r: b.batch([r]))
        whole = as_one_batch(b, requests)
        note(f"singles: {singles[1] or 'accepted'}; batch: {whole[1] or 'accepted'}")
        if one_trade_batches != singles:
            problems.append(f"one-trade batches {one_trade_batches} != singles {singles}")
        expected = expected_of_batch(b, requests, singles)
        if whole != expected:
            problems.append(f"batch {whole} != expected {expected} (singles {singles})")
        return None, None

    outcome_of(b.conn, attempt)
    return problems


@pytest.fixture
def brokerage(conn: psycopg.Connection[Any]) -> Brokerage:
    return Brokerage(conn)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(state=state_strategy, ops=st.lists(trade_strategy, min_size=1, max_size=6))
def test_single_trades_and_batches_accept_and_refuse_alike(
    brokerage: Brokerage, state: Any, ops: list[Any]
) -> None:
    assert compare(brokerage, state, ops, note=event) == []


def test_control_a_weakened_batch_rule_is_caught(conn: psycopg.Connection[Any]) -> None:
    b = Brokerage(conn)
    # The batch path loses its oversell check: positions may go below zero for batches only
    # (the CHECK on positions is dropped, and the batch trigger's own check is defeated by
    # replaying the position write without it).
    conn.execute("ALTER TABLE positions DROP CONSTRAINT positions_quantity_check")
    source = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE proname = 'trades_admit_batch'"
    ).fetchone()
    assert source is not None and "SL001" in source[0]
    weakened = source[0].replace("'SL001'", "NULL")
    conn.execute(
        "CREATE OR REPLACE FUNCTION trades_admit_batch() RETURNS trigger LANGUAGE plpgsql AS $body$"
        + weakened
        + "$body$"
    )
    problems = compare(b, ([5, 0, 0, 0], ["open", "open"]), [(0, "AAPL", "sell", 10, None)])
    assert problems, "the comparison did not notice a batch that oversells"
