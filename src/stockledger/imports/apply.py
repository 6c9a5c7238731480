"""The staged sections applied in the spec's order (SPEC §2.9), each record through the
writers every other path uses: the registry's inserts and functions and their triggers,
move_cash(), and trade_batch() for the trades. Python decides nothing the rules decide. It
only keeps track of which record it is writing, to name the first one that is refused.

Registry records and cash movements are written one statement each. Trades are written in
chunks of the document's order, one trade_batch() per broker of record in the chunk: a broker's
batch names its first refused trade exactly, and the brokers' accounts are disjoint, so the
chunk's first refused record is the first among their first refusals.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from stockledger.db.boundary import fetch_all, translated
from stockledger.db.queries import query
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.imports.staging import table

# Trades per chunk; each broker of record in a chunk is one trade_batch() call.
CHUNK = 10_000


# What trade_batch() puts before a refusal: the trade's index in that call, not the document's.
_BATCH_PREFIX = re.compile(r"^trade [0-9]+ of the batch: ")


@dataclass(eq=False)  # not frozen: raising sets __traceback__
class Refusal(Exception):
    """The first record of the document that a rule refuses, and why."""

    section: str
    index: int
    code: str
    detail: str

    @property
    def path(self) -> str:
        return f"{self.section}[{self.index}]"

    def __str__(self) -> str:
        return f"{self.path}: {self.code}: {self.detail}"


def staged(conn: psycopg.Connection[Any], section: str) -> Iterator[dict[str, Any]]:
    """A section's records in document order, read through a server-side cursor."""
    with conn.cursor(name=f"import_read_{section}", row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY ord").format(table(section)))
        yield from cur


def write(
    conn: psycopg.Connection[Any], section: str, ord_: int, name: LiteralString, params: Any
) -> dict[str, Any] | None:
    """One statement for one record (its row, if it returns one); a refusal names the record."""
    try:
        with translated(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query(name), params)
            return cur.fetchone() if cur.description is not None else None
    except StockledgerError as exc:
        raise Refusal(section, ord_, str(exc.code), exc.detail) from exc


def apply_all(conn: psycopg.Connection[Any]) -> None:
    """Every section, in order; statuses last, so that what the source did while an account
    was open, a broker active or a stock listed is booked before they change."""
    with translated():
        conn.execute(query("import_ids_continue"))
    for stock in staged(conn, "stocks"):
        write(conn, "stocks", stock["ord"], "import_stock", stock)
        if stock["price"] is not None:
            write(conn, "stocks", stock["ord"], "import_stock_price", stock)
    for client in staged(conn, "clients"):
        write(conn, "clients", client["ord"], "import_client", client)
    for broker in staged(conn, "brokers"):
        write(conn, "brokers", broker["ord"], "import_broker", broker)
    # Managers once every broker exists: a broker may name one listed after it.
    for broker in staged(conn, "brokers"):
        if broker["manager_id"] is not None:
            write(conn, "brokers", broker["ord"], "import_broker_manager", broker)
    for account in staged(conn, "accounts"):
        _account(conn, account)
    for movement in staged(conn, "cash"):
        write(conn, "cash", movement["ord"], "import_cash", movement)
    _trades(conn)
    for account in staged(conn, "accounts"):
        if account["status"] != "open":
            write(conn, "accounts", account["ord"], "import_account_status", account)
    for broker in staged(conn, "brokers"):
        if broker["status"] != "active":
            write(conn, "brokers", broker["ord"], "import_broker_status", broker)
    for stock in staged(conn, "stocks"):
        if not stock["active"]:
            write(conn, "stocks", stock["ord"], "import_stock_inactive", stock)


def _account(conn: psycopg.Connection[Any], account: dict[str, Any]) -> None:
    ord_, holders = account["ord"], account["holders"]
    write(conn, "accounts", ord_, "import_claim_holders", account)
    row = write(conn, "accounts", ord_, "import_account", {**account, "holder": holders[0]})
    assert row is not None
    for client_id in holders[1:]:
        params = {"account_id": row["account_id"], "client_id": client_id}
        write(conn, "accounts", ord_, "import_holder", params)


def _trades(conn: psycopg.Connection[Any]) -> None:
    chunk: list[dict[str, Any]] = []
    for trade in staged(conn, "trades"):
        chunk.append(trade)
        if len(chunk) == CHUNK:
            _chunk(conn, chunk)
            chunk = []
    if chunk:
        _chunk(conn, chunk)


def _chunk(conn: psycopg.Connection[Any], trades: list[dict[str, Any]]) -> None:
    accounts = sorted({t["account_id"] for t in trades})
    rows = fetch_all(conn, query("import_brokers_of_record"), {"account_ids": accounts})
    broker_of = {row["account_id"]: row["broker_id"] for row in rows}
    refusals: list[Refusal] = []
    by_broker: dict[int, list[dict[str, Any]]] = {}
    for trade in trades:
        broker = broker_of.get(trade["account_id"])
        if broker is None:
            detail = f"account {trade['account_id']} does not exist"
            refusals.append(Refusal("trades", trade["ord"], str(ErrorCode.NOT_FOUND), detail))
            break  # the later trades of the chunk cannot come first
        by_broker.setdefault(broker, []).append(trade)
    for broker, batch in by_broker.items():
        refusal = _batch(conn, broker, batch)
        if refusal is not None:
            refusals.append(refusal)
    if refusals:
        raise min(refusals, key=lambda refusal: refusal.index)


def _batch(
    conn: psycopg.Connection[Any], broker: int, batch: list[dict[str, Any]]
) -> Refusal | None:
    """One broker's trades of a chunk through trade_batch(), in a savepoint: its first
    refused trade (or a seq that is not the account's next), or None."""
    columns = {
        "broker_id": broker,
        "account_ids": [t["account_id"] for t in batch],
        "symbols": [t["symbol"] for t in batch],
        "sides": [t["side"] for t in batch],
        "quantities": [t["quantity"] for t in batch],
        "prices": [t["price"] for t in batch],
        "executed_ats": [t["executed_at"] for t in batch],
        "client_order_ids": [t["client_order_id"] for t in batch],
        "fees": [t["fee"] for t in batch],
    }
    try:
        with translated(), conn.transaction():
            rows = fetch_all(conn, query("trade_batch"), columns)
    except StockledgerError as exc:
        index = exc.extra.get("batch_index")
        trade = batch[index] if isinstance(index, int) and 0 <= index < len(batch) else batch[0]
        detail = _BATCH_PREFIX.sub("", exc.detail)
        return Refusal("trades", trade["ord"], str(exc.code), detail)
    for trade, row in zip(batch, rows, strict=True):
        if trade["seq"] is not None and trade["seq"] != row["seq"]:
            return Refusal(
                "trades",
                trade["ord"],
                str(ErrorCode.OUT_OF_ORDER),
                f"seq {trade['seq']} is not the next of account {trade['account_id']} "
                f"({row['seq']} is)",
            )
    return None
