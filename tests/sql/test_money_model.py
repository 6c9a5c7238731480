"""Model-based test of the money side (SPEC §1.4, §1.5; rules 11 and 12): random deposits,
withdrawals, buys and sells (whole and fractional, with fees, by each lot method and by named
lots), credit limits and lot methods changed, and all-or-nothing batches, over several accounts.
The database must accept and refuse exactly what a Python model of §1.4-§1.5 does, and every
balance, lot, closure and position figure must equal the model's, to the cent, after every
step. The model computes shares exactly (fractions) and rounds half away from zero once."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stockledger.books.cash import move_cash
from stockledger.books.requests import CashMovement
from stockledger.errors import StockledgerError
from stockledger.registry import records
from stockledger.registry.requests import AccountChange, AccountCreate, BrokerCreate, ClientCreate
from stockledger.trading import trades
from stockledger.trading.requests import LotPick, TradeRequest

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

ACCOUNTS = 3
SYMBOLS = ("MONEYA", "MONEYB")  # both fractionable: rule 9 has a model test of its own
CENT = Decimal("0.01")


def cents(value: Fraction) -> Decimal:
    """Rounded to the cent, half away from zero (PostgreSQL's round(numeric, 2))."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)  # 28 digits: ample here
    return exact.quantize(CENT, rounding=ROUND_HALF_UP)


def share(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """§1.5: part/whole of total, rounded to the cent (exactly, through fractions)."""
    value = Fraction(total) * Fraction(part) / Fraction(whole)
    sign = -1 if value < 0 else 1
    return sign * cents(abs(value))


def amount_of(side: str, quantity: Decimal, price: Decimal, fee: Decimal) -> Decimal:
    notional = cents(Fraction(quantity) * Fraction(price))
    return -(notional + fee) if side == "buy" else notional - fee


@dataclass
class Lot:
    symbol: str
    quantity: Decimal
    remaining: Decimal
    cost: Decimal
    remaining_cost: Decimal


@dataclass
class Book:
    """One account as §1.4-§1.5 describe it."""

    cash: Decimal = Decimal(0)
    limit: Decimal | None = None
    method: str = "fifo"
    seq: int = 0
    lots: dict[int, Lot] = field(default_factory=dict)
    closures: dict[tuple[int, int], tuple[Decimal, Decimal, Decimal]] = field(default_factory=dict)
    realized: dict[str, Decimal] = field(default_factory=dict)

    def held(self, symbol: str) -> Decimal:
        return sum(
            (lot.remaining for lot in self.lots.values() if lot.symbol == symbol), Decimal(0)
        )

    def refusal(self, t: Order) -> str | None:
        """The code the database answers, in the order it checks (None: accepted)."""
        amount = amount_of(t.side, t.quantity, t.price, t.fee)
        if amount < 0 and self.limit is not None and self.cash + amount < -self.limit:
            return "insufficient_funds"
        if t.side == "sell" and self.held(t.symbol) < t.quantity:
            return "insufficient_holdings"
        for lot_id, wanted in t.named or []:
            lot = self.lots.get(lot_id)
            if (
                lot is None
                or lot.symbol != t.symbol
                or lot.remaining < wanted
                or lot.remaining == 0
            ):
                return "lot_not_available"
        return None

    def apply(self, t: Order) -> None:
        self.seq += 1
        amount = amount_of(t.side, t.quantity, t.price, t.fee)
        self.cash += amount
        if t.side == "buy":
            self.lots[self.seq] = Lot(t.symbol, t.quantity, t.quantity, -amount, -amount)
            return
        picks = t.named if t.named is not None else self.in_method_order(t)
        left, given = t.quantity, Decimal(0)
        for lot_id, wanted in picks:
            lot = self.lots[lot_id]
            take = min(wanted, left)
            left -= take
            if take == lot.remaining:
                cost = lot.remaining_cost
            else:
                cost = min(share(lot.cost, take, lot.quantity), lot.remaining_cost)
            proceeds = amount - given if left == 0 else share(amount, take, t.quantity)
            given += proceeds
            lot.remaining -= take
            lot.remaining_cost -= cost
            self.closures[(self.seq, lot_id)] = (take, cost, proceeds)
            self.realized[t.symbol] = self.realized.get(t.symbol, Decimal(0)) + proceeds - cost
            if left == 0:
                break
        assert left == 0

    def in_method_order(self, t: Order) -> list[tuple[int, Decimal]]:
        open_lots = [
            (i, lot) for i, lot in self.lots.items() if lot.symbol == t.symbol and lot.remaining > 0
        ]
        if self.method == "lifo":
            open_lots.sort(key=lambda item: -item[0])
        elif self.method == "hifo":
            open_lots.sort(
                key=lambda item: (-Fraction(item[1].cost) / Fraction(item[1].quantity), item[0])
            )
        else:
            open_lots.sort(key=lambda item: item[0])
        return [(i, lot.remaining) for i, lot in open_lots]


@dataclass(frozen=True)
class Order:
    account: int  # index
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    # (lot index in the account's lots so far, fraction of the sell) - resolved at run time.
    named: list[tuple[int, Decimal]] | None = None


quantities = st.one_of(
    st.integers(1, 40).map(Decimal),
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(40), places=6),
    # Small lots, so that sells cross several of them and shares round to odd cents.
    st.sampled_from([Decimal(1), Decimal(3), Decimal("0.3"), Decimal("0.001")]),
)
prices = st.sampled_from(
    [Decimal("1.5"), Decimal("10.0001"), Decimal("0.3333"), Decimal("187.25"), Decimal("0.0051")]
)
fees = st.sampled_from([Decimal(0), Decimal(0), Decimal("0.01"), Decimal("1.50"), Decimal("99.99")])
order = st.builds(
    Order,
    account=st.integers(0, ACCOUNTS - 1),
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from(["buy", "buy", "sell"]),
    quantity=quantities,
    price=prices,
    fee=fees,
)
named_sell = st.tuples(
    st.just("named sell"),
    st.integers(0, ACCOUNTS - 1),
    st.sampled_from(SYMBOLS),
    # Lots by their rank among the account's lots (any symbol, open or not), and how many
    # shares of each: the selection may name a lot that cannot serve.
    st.lists(
        st.tuples(st.integers(0, 12), quantities), min_size=1, max_size=3, unique_by=lambda p: p[0]
    ),
    prices,
    fees,
)
# A sell of part of what the model holds, so that sells succeed and cross several lots.
part_sell = st.tuples(
    st.just("part sell"),
    st.integers(0, 100),  # which of the positions held, modulo their number
    st.sampled_from([Decimal(1), Decimal("0.5"), Decimal("0.9"), Decimal("0.333333")]),
    prices,
    fees,
)
movement = st.tuples(
    st.sampled_from(["deposit", "withdrawal"]),
    st.integers(0, ACCOUNTS - 1),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5000), places=2),
)
limit_op = st.tuples(
    st.just("limit"),
    st.integers(0, ACCOUNTS - 1),
    st.one_of(st.none(), st.sampled_from([Decimal(0), Decimal(100), Decimal("2500.50")])),
)
method_op = st.tuples(
    st.just("method"), st.integers(0, ACCOUNTS - 1), st.sampled_from(["fifo", "lifo", "hifo"])
)
batch_op = st.tuples(st.just("batch"), st.lists(order, min_size=1, max_size=6))
operations = st.lists(
    st.one_of(
        order.map(lambda o: ("trade", o)),
        order.map(lambda o: ("trade", o)),
        order.map(lambda o: ("trade", o)),
        part_sell,
        part_sell,
        named_sell,
        movement,
        limit_op,
        method_op,
        batch_op,
    ),
    min_size=10,
    max_size=40,
)


def fresh_accounts(conn: psycopg.Connection[Any]) -> tuple[int, list[int]]:
    tag = uuid.uuid4().hex[:10].upper()
    broker = records.add_broker(
        conn, BrokerCreate(name="Money", tax_id=f"MM{tag}", license_no=f"MM{tag}")
    )
    accounts = []
    for i in range(ACCOUNTS):
        client = records.add_client(conn, ClientCreate(name="Money client", tax_id=f"MC{i}{tag}"))
        accounts.append(
            records.open_account(
                conn, AccountCreate(client_id=client["client_id"], broker_id=broker["broker_id"])
            )["account_id"]
        )
    return broker["broker_id"], accounts


def request_of(broker: int, account: int, t: Order) -> TradeRequest:
    return TradeRequest(
        account_id=account,
        broker_id=broker,
        symbol=t.symbol,
        side=t.side,  # type: ignore[arg-type]
        quantity=t.quantity,
        price=t.price,
        fee=t.fee,
        lots=None if t.named is None else [LotPick(lot_id=i, quantity=q) for i, q in t.named],
    )


def database_books(conn: psycopg.Connection[Any], accounts: list[int]) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sql, [accounts]).fetchall()]

    return {
        "cash": rows("SELECT account_id, cash FROM accounts WHERE account_id = ANY(%s) ORDER BY 1"),
        "lots": rows(
            "SELECT account_id, lot_id, symbol, quantity, remaining, cost, remaining_cost "
            "FROM lots WHERE account_id = ANY(%s) ORDER BY 1, 2"
        ),
        "closures": rows(
            "SELECT account_id, seq, lot_id, quantity, cost_basis, proceeds, realized "
            "FROM lot_closures WHERE account_id = ANY(%s) ORDER BY 1, 2, 3"
        ),
        "positions": rows(
            "SELECT account_id, symbol, quantity, cost_basis, realized FROM positions "
            "WHERE account_id = ANY(%s) AND (quantity <> 0 OR realized <> 0) ORDER BY 1, 2"
        ),
    }


def model_books(books: dict[int, Book]) -> dict[str, Any]:
    positions = []
    for account, book in sorted(books.items()):
        for symbol in SYMBOLS:
            quantity = book.held(symbol)
            realized = book.realized.get(symbol, Decimal(0))
            if quantity != 0 or realized != 0:
                cost = sum(
                    (
                        lot.remaining_cost
                        for lot in book.lots.values()
                        if lot.symbol == symbol and lot.remaining > 0
                    ),
                    Decimal(0),
                )
                positions.append((account, symbol, quantity, cost, realized))
    return {
        "cash": [(a, b.cash) for a, b in sorted(books.items())],
        "lots": [
            (a, i, lot.symbol, lot.quantity, lot.remaining, lot.cost, lot.remaining_cost)
            for a, b in sorted(books.items())
            for i, lot in sorted(b.lots.items())
        ],
        "closures": [
            (a, seq, lot_id, q, cost, proceeds, proceeds - cost)
            for a, b in sorted(books.items())
            for (seq, lot_id), (q, cost, proceeds) in sorted(b.closures.items())
        ],
        "positions": positions,
    }


def outcome(call: Any, *args: Any) -> tuple[str | None, Any]:
    try:
        return None, call(*args)
    except StockledgerError as error:
        return error.code, error


@settings(
    max_examples=int(os.environ.get("STOCKLEDGER_MONEY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
# Two one-share lots sold together for an odd number of cents: the proceeds split in halves
# that both round up, unless the closure that completes the sell takes what is left.
@example(
    ops=[
        ("trade", Order(0, "MONEYA", "buy", Decimal(1), Decimal("1.5"), Decimal(0))),
        ("trade", Order(0, "MONEYA", "buy", Decimal(1), Decimal("1.5"), Decimal(0))),
        ("trade", Order(0, "MONEYA", "sell", Decimal(2), Decimal("1.5"), Decimal("0.01"))),
    ]
)
def test_the_books_equal_the_model_after_every_step(
    conn: psycopg.Connection[Any], ops: list[tuple[Any, ...]]
) -> None:
    for symbol in SYMBOLS:
        conn.execute(
            "INSERT INTO stocks (symbol, name, fractionable) VALUES (%s, %s, true) "
            "ON CONFLICT (symbol) DO NOTHING",
            [symbol, symbol],
        )
    broker, accounts = fresh_accounts(conn)
    books = {a: Book() for a in accounts}

    for op in ops:
        kind = op[0]
        if kind in ("deposit", "withdrawal"):
            _, i, amount = op
            book = books[accounts[i]]
            expected = "insufficient_funds" if kind == "withdrawal" and book.cash < amount else None
            code, _ = outcome(move_cash, conn, accounts[i], CashMovement(kind=kind, amount=amount))
            assert code == expected, op
            if code is None:
                book.cash += amount if kind == "deposit" else -amount
        elif kind == "limit":
            _, i, limit = op
            book = books[accounts[i]]
            expected = "insufficient_funds" if limit is not None and book.cash < -limit else None
            change = AccountChange(credit_limit=limit)
            code, _ = outcome(records.change_account, conn, accounts[i], change)
            assert code == expected, op
            if code is None:
                book.limit = limit
        elif kind == "method":
            _, i, method = op
            records.change_account(conn, accounts[i], AccountChange(lot_method=method))
            books[accounts[i]].method = method
        elif kind == "named sell":
            _, i, symbol, picks, price, fee = op
            book = books[accounts[i]]
            lot_ids = sorted(book.lots)
            named = [
                (lot_ids[rank] if rank < len(lot_ids) else 10_000 + rank, quantity)
                for rank, quantity in picks
            ]
            total = sum((q for _, q in named), Decimal(0))
            t = Order(i, symbol, "sell", total, price, fee, named)
            expected = book.refusal(t)
            code, _ = outcome(trades.execute_trade, conn, request_of(broker, accounts[i], t))
            assert code == expected, (op, book)
            if code is None:
                book.apply(t)
        elif kind == "part sell":
            _, pick, part, price, fee = op
            held = [(i, s) for i in range(ACCOUNTS) for s in SYMBOLS if books[accounts[i]].held(s)]
            if not held:
                continue
            i, symbol = held[pick % len(held)]
            book = books[accounts[i]]
            quantity = (book.held(symbol) * part).quantize(
                Decimal("0.000001"), rounding="ROUND_DOWN"
            )
            if quantity == 0:
                continue
            t = Order(i, symbol, "sell", quantity, price, fee)
            expected = book.refusal(t)
            code, _ = outcome(trades.execute_trade, conn, request_of(broker, accounts[i], t))
            assert code == expected, (op, book)
            if code is None:
                book.apply(t)
        elif kind == "batch":
            trial = {a: _copy(b) for a, b in books.items()}
            failure = None
            for index, t in enumerate(op[1]):
                code = trial[accounts[t.account]].refusal(t)
                if code is not None:
                    failure = (index, code)
                    break
                trial[accounts[t.account]].apply(t)
            requests = [request_of(broker, accounts[t.account], t) for t in op[1]]
            code, result = outcome(trades.execute_batch, conn, broker, requests)
            got = None if code is None else (result.extra.get("batch_index"), code)
            assert got == failure, (op, books)
            if failure is None:
                books = trial
        else:
            t = op[1]
            book = books[accounts[t.account]]
            expected = book.refusal(t)
            code, result = outcome(
                trades.execute_trade, conn, request_of(broker, accounts[t.account], t)
            )
            assert code == expected, (op, book)
            if code is None:
                book.apply(t)
                assert result.trade.amount == amount_of(t.side, t.quantity, t.price, t.fee)

        assert database_books(conn, accounts) == model_books(books), op


def _copy(book: Book) -> Book:
    return Book(
        cash=book.cash,
        limit=book.limit,
        method=book.method,
        seq=book.seq,
        lots={i: Lot(**vars(lot)) for i, lot in book.lots.items()},
        closures=dict(book.closures),
        realized=dict(book.realized),
    )
