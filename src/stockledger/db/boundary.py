"""The one place where PostgreSQL's errors become stockledger's.

The database raises each rule with its own SQLSTATE (class SL, listed in sql/schema.sql) or a
standard SQLSTATE naming a constraint. Everything that executes SQL does so through this
module (``fetch_one``, ``fetch_all``, ``execute``, ``transaction``, ``translated``), which maps
those codes — never message text — to a StockledgerError; above it no driver error exists, as
in procrastinate's connector. tests/sql/test_error_catalog.py proves that every SL code the SQL
raises and every constraint named here is accounted for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from stockledger.errors import (
    ErrorCode,
    StockledgerError,
    not_found,
    retry_conflict,
    unavailable,
)

Params = Mapping[str, Any] | Sequence[Any] | None

# Private SQLSTATEs raised by the schema's functions and triggers: the code, and a fixed detail
# where the database's own message must not reach the caller (None: pass it through).
SQLSTATE_CODES: dict[str, tuple[ErrorCode, str | None]] = {
    "SL001": (ErrorCode.INSUFFICIENT_HOLDINGS, None),
    "SL002": (ErrorCode.OUT_OF_ORDER, None),
    "SL003": (ErrorCode.ACCOUNT_NOT_OPEN, None),
    # Not the broker of record: to that broker the account does not exist (SPEC §2.4), so it
    # answers the same bytes as a missing account (SL009).
    "SL004": (ErrorCode.NOT_FOUND, "account not found"),
    "SL005": (ErrorCode.FORBIDDEN, None),
    "SL006": (ErrorCode.STOCK_NOT_TRADABLE, None),
    "SL007": (ErrorCode.BROKER_OWNED_ACCOUNT, None),
    "SL008": (ErrorCode.LEDGER_APPEND_ONLY, None),
    "SL009": (ErrorCode.NOT_FOUND, "account not found"),
    "SL010": (ErrorCode.DERIVED_DATA, None),
    "SL011": (ErrorCode.IMMUTABLE_FIELD, None),
    "SL012": (ErrorCode.IDEMPOTENCY_KEY_REUSED, None),
    # broker_of_key(): unknown key, wrong secret, revoked key (0007).
    "SL013": (ErrorCode.UNAUTHENTICATED, None),
    "SL014": (ErrorCode.FRACTIONAL_NOT_ALLOWED, None),
    "SL015": (ErrorCode.SUPERVISION_CYCLE, None),
    "SL016": (ErrorCode.LAST_HOLDER, None),
    # A supervisor reads its team's accounts but never trades them (SPEC §2.4): it may know
    # that the account exists, so it is told why.
    "SL017": (ErrorCode.BROKER_NOT_AUTHORIZED, None),
    "SL018": (ErrorCode.NOT_FOUND, "holder not found"),
    "SL019": (ErrorCode.INSUFFICIENT_FUNDS, None),
    "SL020": (ErrorCode.LOT_NOT_AVAILABLE, None),
}

# Unique and foreign-key constraints whose violation has a meaning of its own.
CONSTRAINT_CODES: dict[str, tuple[ErrorCode, str]] = {
    "clients_tax_id_key": (ErrorCode.ALREADY_EXISTS, "a client with this tax id already exists"),
    "brokers_tax_id_key": (ErrorCode.ALREADY_EXISTS, "a broker with this tax id already exists"),
    "brokers_license_no_key": (
        ErrorCode.ALREADY_EXISTS,
        "a broker with this license already exists",
    ),
    "stocks_pkey": (ErrorCode.ALREADY_EXISTS, "this stock is already listed"),
    # Only an import names the ids it inserts (stockledger import keeps a source's ids).
    "clients_pkey": (ErrorCode.ALREADY_EXISTS, "a client with this id already exists"),
    "brokers_pkey": (ErrorCode.ALREADY_EXISTS, "a broker with this id already exists"),
    "accounts_pkey": (ErrorCode.ALREADY_EXISTS, "an account with this id already exists"),
    "trades_client_order_id_key": (
        ErrorCode.ALREADY_EXISTS,
        "this client_order_id was already used for this account",
    ),
    "accounts_client_id_fkey": (ErrorCode.NOT_FOUND, "client not found"),
    "accounts_broker_id_fkey": (ErrorCode.NOT_FOUND, "broker not found"),
    "broker_keys_broker_id_fkey": (ErrorCode.NOT_FOUND, "broker not found"),
    "brokers_manager_id_fkey": (ErrorCode.NOT_FOUND, "manager not found"),
    # A broker named as its own manager: the shortest loop.
    "brokers_manager_id_check": (
        ErrorCode.SUPERVISION_CYCLE,
        "a broker cannot be supervised by itself",
    ),
    "account_holders_account_id_fkey": (ErrorCode.NOT_FOUND, "account not found"),
    "account_holders_client_id_fkey": (ErrorCode.NOT_FOUND, "client not found"),
    "account_holders_current_key": (
        ErrorCode.ALREADY_EXISTS,
        "this client already holds this account",
    ),
    "stock_prices_pkey": (
        ErrorCode.ALREADY_EXISTS,
        "a price of this stock at this as_of is recorded already",
    ),
    "stock_prices_symbol_fkey": (ErrorCode.NOT_FOUND, "stock not found"),
    # Rule 11's last line of defence (the triggers raise SL019 before it).
    "accounts_cash_within_limit": (
        ErrorCode.INSUFFICIENT_FUNDS,
        "the account's cash would go beyond its credit limit",
    ),
}

# Refusals that only timing caused: nothing was written and a retry most likely succeeds.
RETRYABLE: dict[str, str] = {
    "40001": "a concurrent change interfered; retry",  # serialization failure
    "40P01": "a concurrent change interfered; retry",  # deadlock
}
# Reached only by a writer with a stale snapshot (REPEATABLE READ): the seq it computed was
# taken by a concurrent trade.
RETRYABLE_CONSTRAINTS: dict[str, str] = {
    "trades_pkey": "a concurrent trade took this sequence number; retry",
    "account_holders_pkey": "a concurrent change took this holder position; retry",
}
# The server cannot do it now; nothing was written (503 with Retry-After).
UNAVAILABLE: dict[str, str] = {
    "57014": "the request took too long; nothing was written, retry shortly",  # statement_timeout
    "55P03": "the account is busy; nothing was written, retry shortly",  # lock_timeout
    # A read-only transaction: the server is a standby, e.g. just after a failover.
    "25006": "the database is read-only for now (a failover?); nothing was written, retry shortly",
}
_UNAVAILABLE_CLASSES = ("08", "53", "57P")  # connection, resources, operator intervention


def _batch_position(diag: Any) -> dict[str, Any]:
    """{"batch_index": i} when a batch was refused: which trade broke the rule."""
    detail = diag.message_detail or ""
    if not detail.startswith("{"):
        return {}
    try:
        index = json.loads(detail).get("batch_index")
    except ValueError:
        return {}
    return {"batch_index": index} if isinstance(index, int) else {}


def from_database(exc: psycopg.Error) -> StockledgerError:
    """Translate a driver error by SQLSTATE and constraint name."""
    sqlstate = exc.sqlstate or ""
    diag = exc.diag
    message = unsharded_message(diag.message_primary or "database error")
    constraint = unsharded_name(diag.constraint_name or "") or relayed_constraint(sqlstate, message)
    if sqlstate in SQLSTATE_CODES:
        code, fixed_detail = SQLSTATE_CODES[sqlstate]
        return StockledgerError(code, fixed_detail or message, extra=_batch_position(diag))
    if constraint in CONSTRAINT_CODES:
        code, detail = CONSTRAINT_CODES[constraint]
        return StockledgerError(code, detail, extra={"constraint": constraint})
    if constraint in RETRYABLE_CONSTRAINTS:
        return retry_conflict(RETRYABLE_CONSTRAINTS[constraint])
    if sqlstate.startswith(("23", "22")) or sqlstate == "428C9":
        # Integrity (named CHECK, NOT NULL) and data exceptions: the input was invalid.
        extra = {"constraint": constraint} if constraint else {}
        return StockledgerError(
            ErrorCode.INVALID_REQUEST, message, extra=extra | _batch_position(diag)
        )
    if sqlstate in UNAVAILABLE:
        return unavailable(UNAVAILABLE[sqlstate])
    if sqlstate in RETRYABLE:
        return retry_conflict(RETRYABLE[sqlstate])
    if isinstance(exc, psycopg.OperationalError) or sqlstate.startswith(_UNAVAILABLE_CLASSES):
        return unavailable()
    return StockledgerError(ErrorCode.INTERNAL_ERROR, "unexpected database error")


# A Citus worker's error reaches the client through the coordinator with its SQLSTATE, message,
# detail, hint and context only (Citus's remote_commands.c copies no other field): the
# constraint's name is gone from the diagnostics. It is still in PostgreSQL's own message for
# the integrity errors (`… constraint "accounts_client_id_fkey_102009"`), suffixed with the
# shard's id. Read from there, for those errors only, when the field is empty; this needs the
# workers' messages in English (lc_messages = C or en), as PostgreSQL writes them by default.
_RELAYED_CONSTRAINT = re.compile(r'constraint "([a-z0-9_]+)"')

# A shard's name is its table's, index's or constraint's with "_" and the shard's id appended
# ("brokers_license_no_key_102137"); no name of this schema ends that way (db/distribution.py,
# tests/sql/test_error_catalog.py), so the suffix is dropped wherever a name is quoted.
_SHARD_NAME = re.compile(r'"([a-z][a-z0-9_]*?)_[0-9]+"')
_SHARD_SUFFIX = re.compile(r"_[0-9]+$")


def unsharded_message(message: str) -> str:
    """A message as one PostgreSQL would word it: the names it quotes are the tables'."""
    return _SHARD_NAME.sub(r'"\1"', message)


def unsharded_name(name: str) -> str:
    """A constraint's name, not its shard's copy's."""
    return _SHARD_SUFFIX.sub("", name)


def relayed_constraint(sqlstate: str, message: str) -> str:
    """The constraint a relayed integrity error names in its message ("" if none)."""
    if not sqlstate.startswith("23"):
        return ""
    match = _RELAYED_CONSTRAINT.search(message)
    return match[1] if match else ""


_CONNECTION_FAILED = re.compile(r"connection to (server (?:at|on) .*?) failed: (?:FATAL:\s+)?(.*)")


def connection_failure(exc: psycopg.OperationalError) -> str:
    """What an operator needs to hear when a connection cannot be made: which server, and
    whether the password, the database or the address was wrong. libpq reports these as
    text without an SQLSTATE; the text names the server and the user, never the password.
    (Over HTTP the answer stays "unreachable": a caller learns nothing of the database.)"""
    text = str(exc)
    match = _CONNECTION_FAILED.search(text)
    if match:
        return f"cannot connect to the database {match[1]}: {match[2].strip()}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"cannot connect to the database: {first}"


@contextmanager
def translated() -> Iterator[None]:
    """Run a block that talks to PostgreSQL; its driver errors leave as StockledgerError."""
    try:
        yield
    except PoolTimeout:
        raise unavailable() from None
    except psycopg.Error as exc:
        raise from_database(exc) from exc


@contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """conn.transaction(), whose commit (where deferred checks fire) is translated too."""
    with translated(), conn.transaction():
        yield


def fetch_one(
    conn: psycopg.Connection[Any], sql: LiteralString, params: Params = None
) -> dict[str, Any] | None:
    with translated(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchone()


def fetch_existing(
    conn: psycopg.Connection[Any], sql: LiteralString, params: Params, what: str
) -> dict[str, Any]:
    """The one row a lookup must find; 404 not_found (naming ``what``) when there is none."""
    row = fetch_one(conn, sql, params)
    if row is None:
        raise not_found(what)
    return row


def fetch_all(
    conn: psycopg.Connection[Any], sql: LiteralString, params: Params = None
) -> list[dict[str, Any]]:
    with translated(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def fetch_value(conn: psycopg.Connection[Any], sql: LiteralString, params: Params = None) -> Any:
    """The first column of the first row (None without a row)."""
    with translated():
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def execute(conn: psycopg.Connection[Any], sql: LiteralString, params: Params = None) -> int:
    """Run a statement for its effect; the number of rows it touched."""
    with translated():
        return conn.execute(sql, params).rowcount
