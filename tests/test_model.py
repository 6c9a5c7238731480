"""Model-based test: random sequences of trades and status changes over several accounts and
symbols. The database must accept exactly what a tiny Python model of the rules accepts, and
`holds`, `positions` and the model must agree after every step."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockledger import admin, errors, ledger
from stockledger.models import AccountCreate, BrokerCreate, ClientCreate, TradeRequest

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
operations = st.lists(st.one_of(trade_op, trade_op, trade_op, status_op), min_size=1, max_size=40)


def fresh_accounts(conn: psycopg.Connection[Any]) -> tuple[int, list[int]]:
    """New accounts per example: the ledger cannot be emptied, so each example starts clean."""
    tag = uuid.uuid4().hex[:10].upper()
    broker = admin.add_broker(
        conn, BrokerCreate(name="Model", tax_id=f"MB{tag}", license_no=f"ML{tag}")
    )
    accounts = []
    for i in range(ACCOUNTS):
        client = admin.add_client(conn, ClientCreate(name="Model client", tax_id=f"MC{i}{tag}"))
        accounts.append(
            admin.open_account(
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

    for op in ops:
        if op[0] == "status":
            _, i, new_status = op
            conn.execute(
                "UPDATE accounts SET status = %s WHERE account_id = %s", [new_status, accounts[i]]
            )
            status[accounts[i]] = new_status
            continue
        _, i, symbol, side, quantity = op
        account = accounts[i]
        if status[account] != "open":
            model_code = "account_not_open"
        elif side == "sell" and model[(account, symbol)] < quantity:
            model_code = "insufficient_holdings"
        else:
            model_code = None
        request = TradeRequest(
            account_id=account,
            broker_id=broker,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=Decimal("1.5"),
        )
        try:
            result = ledger.execute_trade(conn, request)
            db_code = None
        except psycopg.Error as exc:
            db_code = errors.from_database(exc).code
        assert db_code == model_code, (op, dict(model))
        if model_code is None:
            model[(account, symbol)] += quantity if side == "buy" else -quantity
            expected_seq[account] += 1
            assert result.position_quantity == model[(account, symbol)]
            assert result.trade.seq == expected_seq[account]

        positions, holds = database_views(conn, accounts)
        expected = {k: v for k, v in model.items() if v != 0}
        assert positions == expected
        assert holds == expected
