"""Model-based test: random sequences of trades, all-or-nothing batches and status changes over
several accounts and symbols. The database must accept exactly what a tiny Python model of the rules accepts, and
`holds`, `positions` and the model must agree after every step."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockledger.errors import StockledgerError
from stockledger.registry import records
from stockledger.registry.requests import AccountCreate, BrokerCreate, ClientCreate
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

ACCOUNTS = 3
SYMBOLS = ("AAPL", "MSFT")

trade_op = st.tuples(
    st.just("trade"),
    st.integers(0, ACCOUNTS - 1),
    st.sampled_from(SYMBOLS),
    st.sampled_from(["buy", "sell"]),
    st.integers(1, 60),
)
status_op = st.tuples(
    st.just("status"), st.integers(0, ACCOUNTS - 1), st.sampled_from(["open", "frozen", "closed"])
)
batch_op = st.tuples(st.just("batch"), st.lists(trade_op, min_size=1, max_size=6))
operations = st.lists(
    st.one_of(trade_op, trade_op, trade_op, status_op, batch_op), min_size=1, max_size=40
)


def fresh_accounts(conn: psycopg.Connection[Any]) -> tuple[int, list[int]]:
    """New accounts per example: the ledger cannot be emptied, so each example starts clean."""
    tag = uuid.uuid4().hex[:10].upper()
    broker = records.add_broker(
        conn, BrokerCreate(name="Model", tax_id=f"MB{tag}", license_no=f"ML{tag}")
    )
    accounts = []
    for i in range(ACCOUNTS):
        client = records.add_client(conn, ClientCreate(name="Model client", tax_id=f"MC{i}{tag}"))
        accounts.append(
            records.open_account(
                conn, AccountCreate(client_id=client["client_id"], broker_id=broker["broker_id"])
            )["account_id"]
        )
    return broker["broker_id"], accounts


def database_views(
    conn: psycopg.Connection[Any], accounts: list[int]
) -> tuple[dict[Any, int], dict[Any, int]]:
    positions = {
        (a, s): q
        for a, s, q in conn.execute(
            "SELECT account_id, symbol, quantity FROM positions WHERE account_id = ANY(%s) AND quantity <> 0",
            [accounts],
        )
    }
    holds = {
        (a, s): q
        for a, s, q in conn.execute(
            "SELECT account_id, symbol, quantity FROM holds WHERE account_id = ANY(%s)", [accounts]
        )
    }
    return positions, holds


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_database_accepts_exactly_what_the_model_accepts(
    conn: psycopg.Connection[Any], ops: list[tuple[Any, ...]]
) -> None:
    for symbol in SYMBOLS:
        conn.execute(
            "INSERT INTO stocks (symbol, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [symbol, symbol],
        )
    broker, accounts = fresh_accounts(conn)
    model: dict[tuple[int, str], int] = defaultdict(int)
    status = {a: "open" for a in accounts}
    expected_seq = {a: 0 for a in accounts}

    def model_refusal(
        held: dict[tuple[int, str], int], trade: tuple[Any, ...]
    ) -> tuple[str | None, TradeRequest]:
        _, i, symbol, side, quantity = trade
        account = accounts[i]
        code = None
        if status[account] != "open":
            code = "account_not_open"
        elif side == "sell" and held[(account, symbol)] < quantity:
            code = "insufficient_holdings"
        request = TradeRequest(
            account_id=account,
            broker_id=broker,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=Decimal("1.5"),
        )
        return code, request

    for op in ops:
        if op[0] == "batch":
            after = defaultdict(int, model)
            model_failure: tuple[int, str] | None = None
            requests = []
            for index, trade in enumerate(op[1]):
                code, request = model_refusal(after, trade)
                requests.append(request)
                if code is not None and model_failure is None:
                    model_failure = (index, code)
                key = (request.account_id, request.symbol)
                after[key] += request.quantity if request.side == "buy" else -request.quantity
            try:
                executed = trades.execute_batch(conn, broker, requests)
                db_failure = None
            except StockledgerError as error:
                db_failure = (error.extra.get("batch_index"), error.code)
            assert db_failure == model_failure, (op, dict(model))
            if model_failure is None:
                model = after
                for trade in executed:
                    expected_seq[trade.account_id] += 1
                    assert trade.seq == expected_seq[trade.account_id]
        elif op[0] == "status":
            _, i, new_status = op
            conn.execute(
                "UPDATE accounts SET status = %s WHERE account_id = %s", [new_status, accounts[i]]
            )
            status[accounts[i]] = new_status
        else:
            model_code, request = model_refusal(model, op)
            try:
                result = trades.execute_trade(conn, request)
                db_code = None
            except StockledgerError as error:
                db_code = error.code
            assert db_code == model_code, (op, dict(model))
            if model_code is None:
                key = (request.account_id, request.symbol)
                model[key] += request.quantity if request.side == "buy" else -request.quantity
                expected_seq[request.account_id] += 1
                assert result.position_quantity == model[key]
                assert result.trade.seq == expected_seq[request.account_id]

        positions, holds = database_views(conn, accounts)
        expected = {k: v for k, v in model.items() if v != 0}
        assert positions == expected
        assert holds == expected
