"""Model-based test: random sequences of trades (whole and fractional), all-or-nothing batches,
status changes, stocks made fractionable or whole-only, and holders added and removed, over
several accounts and symbols. The database must accept exactly what a tiny Python model of the
rules accepts, and `holds`, `positions`, the holders and the model must agree after every
step."""

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
# MODELF starts fractionable, the others whole-only; a step may switch any of them.
SYMBOLS = ("AAPL", "MSFT", "MODELF")
FRACTIONABLE_AT_START = {"MODELF"}
# Clients who may hold the accounts: CLIENTS ordinary ones, and one with a broker's tax id.
CLIENTS = 4
BROKER_IDENTITY = CLIENTS - 1

quantities = st.one_of(
    st.integers(1, 60).map(Decimal),
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(60), places=6),
    st.sampled_from([Decimal("0.5"), Decimal("1.25"), Decimal("0.000001")]),
)
trade_op = st.tuples(
    st.just("trade"),
    st.integers(0, ACCOUNTS - 1),
    st.sampled_from(SYMBOLS),
    st.sampled_from(["buy", "sell"]),
    quantities,
)
status_op = st.tuples(
    st.just("status"), st.integers(0, ACCOUNTS - 1), st.sampled_from(["open", "frozen", "closed"])
)
batch_op = st.tuples(st.just("batch"), st.lists(trade_op, min_size=1, max_size=6))
fractionable_op = st.tuples(st.just("fractionable"), st.sampled_from(SYMBOLS), st.booleans())
holder_op = st.tuples(
    st.sampled_from(["add holder", "remove holder"]),
    st.integers(0, ACCOUNTS - 1),
    st.integers(0, CLIENTS - 1),
)
operations = st.lists(
    st.one_of(trade_op, trade_op, trade_op, status_op, batch_op, fractionable_op, holder_op),
    min_size=1,
    max_size=40,
)


def fresh_accounts(conn: psycopg.Connection[Any]) -> tuple[int, list[int], list[int]]:
    """New accounts per example: the ledger cannot be emptied, so each example starts clean.
    Account i is opened for client i; the last client has the broker's own tax id."""
    tag = uuid.uuid4().hex[:10].upper()
    broker = records.add_broker(
        conn, BrokerCreate(name="Model", tax_id=f"MB{tag}", license_no=f"ML{tag}")
    )
    clients = [
        records.add_client(
            conn,
            ClientCreate(
                name="Model client", tax_id=f"MB{tag}" if i == BROKER_IDENTITY else f"MC{i}{tag}"
            ),
        )["client_id"]
        for i in range(CLIENTS)
    ]
    accounts = [
        records.open_account(
            conn, AccountCreate(client_id=clients[i], broker_id=broker["broker_id"])
        )["account_id"]
        for i in range(ACCOUNTS)
    ]
    return broker["broker_id"], accounts, clients


def database_views(
    conn: psycopg.Connection[Any], accounts: list[int]
) -> tuple[dict[Any, Decimal], dict[Any, Decimal]]:
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


def database_holders(conn: psycopg.Connection[Any], accounts: list[int]) -> dict[int, list[int]]:
    current: dict[int, list[int]] = {a: [] for a in accounts}
    for account, client in conn.execute(
        "SELECT account_id, client_id FROM account_holders "
        "WHERE account_id = ANY(%s) AND removed_at IS NULL ORDER BY account_id, position",
        [accounts],
    ):
        current[account].append(client)
    return current


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_database_accepts_exactly_what_the_model_accepts(
    conn: psycopg.Connection[Any], ops: list[tuple[Any, ...]]
) -> None:
    fractionable = set(FRACTIONABLE_AT_START)
    for symbol in SYMBOLS:
        conn.execute(
            "INSERT INTO stocks (symbol, name, fractionable) VALUES (%s, %s, %s) "
            "ON CONFLICT (symbol) DO UPDATE SET fractionable = excluded.fractionable",
            [symbol, symbol, symbol in fractionable],
        )
    broker, accounts, clients = fresh_accounts(conn)
    model: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    status = {a: "open" for a in accounts}
    expected_seq = {a: 0 for a in accounts}
    holders = {a: [clients[i]] for i, a in enumerate(accounts)}

    def model_refusal(
        held: dict[tuple[int, str], Decimal], trade: tuple[Any, ...]
    ) -> tuple[str | None, TradeRequest]:
        _, i, symbol, side, quantity = trade
        account = accounts[i]
        code = None
        if status[account] != "open":
            code = "account_not_open"
        elif quantity != quantity.to_integral_value() and symbol not in fractionable:
            code = "fractional_not_allowed"
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
            after = defaultdict(Decimal, model)
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
        elif op[0] == "fractionable":
            _, symbol, allowed = op
            conn.execute("UPDATE stocks SET fractionable = %s WHERE symbol = %s", [allowed, symbol])
            (fractionable.add if allowed else fractionable.discard)(symbol)
        elif op[0] in ("add holder", "remove holder"):
            _, i, j = op
            account, client = accounts[i], clients[j]
            current = holders[account]
            if op[0] == "add holder":
                expected_code = (
                    "broker_owned_account"
                    if j == BROKER_IDENTITY
                    else "already_exists"
                    if client in current
                    else None
                )
                change = records.add_holder
            else:
                expected_code = (
                    "not_found"
                    if client not in current
                    else "last_holder"
                    if len(current) == 1
                    else None
                )
                change = records.remove_holder
            try:
                change(conn, account, client)
                got_code = None
            except StockledgerError as error:
                got_code = error.code
            assert got_code == expected_code, (op, holders)
            if expected_code is None:
                (current.append if op[0] == "add holder" else current.remove)(client)
            assert database_holders(conn, accounts) == holders
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
