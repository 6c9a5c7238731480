"""What the scenarios need in the ledger: brokers, accounts with holdings, long histories."""

from __future__ import annotations

from functools import cache
from typing import Any, LiteralString

import psycopg

from stockledger.db.queries import parse_named_queries, sql_text

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN"]  # the pgbench scripts use these four
STARTING_HOLDING = 200
# Shares of each position bought and sold again while the book is set up: a traded book has
# closed lots, and a table the trade path reads that is empty when analyzed gets plans made
# for an empty table (a sell's closures were read by a sequential scan: 170 µs a sell).
SETUP_ROUND_TRIP = 50


@cache
def _statements() -> dict[str, str]:
    return parse_named_queries(sql_text("bench.sql"))


def statement(name: str) -> LiteralString:
    return _statements()[name]  # shipped text, never input (see queries.query)


def load_accounts(conn: psycopg.Connection[Any], accounts: int, brokers: int) -> None:
    """Accounts 1..accounts, brokers 1..brokers, each account holding STARTING_HOLDING of every
    symbol (bought through trade_batch, so the rules applied to the setup too)."""
    params = {"accounts": accounts, "brokers": brokers, "symbols": SYMBOLS}
    for name in ("brokers", "clients", "accounts", "stocks", "prices"):
        conn.execute(statement(name), params)
    row = conn.execute(statement("layout_check"), params).fetchone()
    if row is None or row[0] != accounts:
        raise RuntimeError("bench accounts did not get the ids the pgbench scripts assume")
    conn.execute(statement("bench_sell"))
    for broker in range(1, brokers + 1):
        own = list(range(broker, accounts + 1, brokers))
        account_ids = [a for a in own for _ in SYMBOLS]
        symbols = SYMBOLS * len(own)
        open_positions(conn, broker, account_ids, symbols)


def open_positions(
    conn: psycopg.Connection[Any], broker: int, account_ids: list[int], symbols: list[str]
) -> None:
    """Each (account, symbol) ends holding STARTING_HOLDING: bought with SETUP_ROUND_TRIP more,
    which are sold in the same batch."""
    n = len(account_ids)
    quantities = [STARTING_HOLDING + SETUP_ROUND_TRIP] * n + [SETUP_ROUND_TRIP] * n
    conn.execute(
        "SELECT count(*) FROM trade_batch(%s, %s, %s, %s, %s, %s)",
        [
            broker,
            account_ids * 2,
            symbols * 2,
            ["buy"] * n + ["sell"] * n,
            quantities,
            [100] * n * 2,
        ],
    )


def grow_history(
    conn: psycopg.Connection[Any], account: int, broker: int, trades: int, chunk: int = 10_000
) -> None:
    """Append `trades` trades (buys and sells of one share, alternating) to one account, in
    batches built server-side (no arrays cross the wire)."""
    done = 0
    while done < trades:
        n = min(chunk, trades - done)
        conn.execute(
            """
            SELECT count(*) FROM trade_batch(
                %(broker)s,
                array_fill(%(account)s::bigint, ARRAY[%(n)s]),
                (SELECT array_agg((ARRAY['AAPL','MSFT','GOOG','AMZN'])[1 + (i / 2) %% 4])
                 FROM generate_series(0, %(n)s - 1) i),
                (SELECT array_agg(CASE i %% 2 WHEN 0 THEN 'buy' ELSE 'sell' END)
                 FROM generate_series(0, %(n)s - 1) i),
                array_fill(1::numeric, ARRAY[%(n)s]),
                array_fill(100::numeric, ARRAY[%(n)s]))
            """,
            {"broker": broker, "account": account, "n": n},
        )
        done += n
