"""Every failure the user can see, with its stable code, and the one translation from PostgreSQL.

The database raises each rule with its own SQLSTATE (class SL, see
sql/migrations/0001_ledger.sql) or a standard SQLSTATE with a named constraint. This module maps
those codes (never message text) to a ``StockledgerError``, which the API renders as
problem+json (RFC 9457) and the CLI as a one-line message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

# code -> (HTTP status, title). The codes are part of the public contract (SPEC §2.2).
CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "Invalid request"),
    "unauthenticated": (401, "Unauthenticated"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "insufficient_holdings": (409, "Insufficient holdings"),
    "out_of_order": (409, "Execution time out of order"),
    "account_not_open": (409, "Account not open"),
    "broker_not_authorized": (403, "Broker not authorized"),
    "stock_not_tradable": (409, "Stock not tradable"),
    "already_exists": (409, "Already exists"),
    "broker_owned_account": (409, "Broker-owned account refused"),
    "immutable_field": (409, "Field cannot be changed"),
    "ledger_append_only": (409, "Ledger is append-only"),
    "derived_data": (409, "Positions are derived from trades"),
    "conflict": (409, "Conflicting concurrent change"),
    "idempotency_key_reused": (422, "Idempotency key reused"),
    "request_in_progress": (409, "Request in progress"),
    "payload_too_large": (413, "Payload too large"),
    "service_unavailable": (503, "Service unavailable"),
    "internal_error": (500, "Internal error"),
}


@dataclass
class StockledgerError(Exception):
    code: str
    detail: str
    status: int = 0
    # Extra members of the problem object, e.g. the field errors of a validation failure.
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown error code {self.code!r}")
        if not self.status:
            self.status = CODES[self.code][0]
        super().__init__(f"{self.code}: {self.detail}")

    @property
    def title(self) -> str:
        return CODES[self.code][1]

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://stockledger.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        body.update(self.extra)
        return body


def not_found(what: str) -> StockledgerError:
    return StockledgerError("not_found", f"{what} not found")


def unavailable(detail: str = "the database is unreachable; retry shortly") -> StockledgerError:
    return StockledgerError("service_unavailable", detail, headers={"Retry-After": "1"})


# Private SQLSTATEs raised by the schema's functions and triggers: code, and a fixed detail
# where the database's own message must not reach the caller (None: pass it through).
SQLSTATE_CODES: dict[str, tuple[str, str | None]] = {
    "SL001": ("insufficient_holdings", None),
    "SL002": ("out_of_order", None),
    "SL003": ("account_not_open", None),
    # Not the broker of record: to that broker the account does not exist (SPEC §2.4), so it
    # answers the same bytes as a missing account (SL009).
    "SL004": ("not_found", "account not found"),
    "SL005": ("forbidden", None),
    "SL006": ("stock_not_tradable", None),
    "SL007": ("broker_owned_account", None),
    "SL008": ("ledger_append_only", None),
    "SL009": ("not_found", "account not found"),
    "SL010": ("derived_data", None),
    "SL011": ("immutable_field", None),
    "SL012": ("idempotency_key_reused", None),
    # broker_of_key(): unknown key, wrong secret, revoked key (0007).
    "SL013": ("unauthenticated", None),
}

# Headers a problem of this code always carries (RFC 9110: a 401 names its scheme).
CODE_HEADERS: dict[str, dict[str, str]] = {
    "unauthenticated": {"WWW-Authenticate": 'Bearer realm="stockledger"'},
}

# Unique and foreign-key constraints whose violation has a meaning of its own.
CONSTRAINT_CODES: dict[str, tuple[str, str]] = {
    "clients_tax_id_key": ("already_exists", "a client with this tax id already exists"),
    "brokers_tax_id_key": ("already_exists", "a broker with this tax id already exists"),
    "brokers_license_no_key": ("already_exists", "a broker with this license already exists"),
    "stocks_pkey": ("already_exists", "this stock is already listed"),
    "trades_client_order_id_key": (
        "already_exists",
        "this client_order_id was already used for this account",
    ),
    "accounts_client_id_fkey": ("not_found", "client not found"),
    "accounts_broker_id_fkey": ("not_found", "broker not found"),
    "broker_keys_broker_id_fkey": ("not_found", "broker not found"),
    # Reached only by a writer with a stale snapshot (REPEATABLE READ): the seq it computed
    # was taken by a concurrent trade. Nothing was written; a retry succeeds.
    "trades_pkey": ("conflict", "a concurrent trade took this sequence number; retry"),
}

_UNAVAILABLE_CLASSES = ("08", "53", "57P")  # connection, resources, operator intervention
# statement_timeout and lock_timeout: nothing was written, and a retry may well succeed.
_TIMEOUTS = {"57014": "the request took too long", "55P03": "the account is busy"}
_RETRYABLE = ("40001", "40P01")  # serialization failure, deadlock


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
    message = diag.message_primary or "database error"
    if sqlstate in SQLSTATE_CODES:
        code, fixed_detail = SQLSTATE_CODES[sqlstate]
        return StockledgerError(
            code,
            fixed_detail or message,
            extra=_batch_position(diag),
            headers=dict(CODE_HEADERS.get(code, {})),
        )
    constraint = diag.constraint_name or ""
    if constraint in CONSTRAINT_CODES:
        code, detail = CONSTRAINT_CODES[constraint]
        return StockledgerError(code, detail, extra={"constraint": constraint})
    if sqlstate.startswith("23") or sqlstate.startswith("22") or sqlstate == "428C9":
        # Integrity (named CHECK, NOT NULL) and data exceptions: the input was invalid.
        extra = {"constraint": constraint} if constraint else {}
        return StockledgerError("invalid_request", message, extra=extra | _batch_position(diag))
    if sqlstate in _TIMEOUTS:
        return unavailable(f"{_TIMEOUTS[sqlstate]}; nothing was written, retry shortly")
    if sqlstate in _RETRYABLE:
        return StockledgerError("conflict", "a concurrent change interfered; retry")
    if isinstance(exc, psycopg.OperationalError) or sqlstate.startswith(_UNAVAILABLE_CLASSES):
        return unavailable()
    return StockledgerError("internal_error", "unexpected database error")


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


def translate(exc: BaseException) -> StockledgerError | None:
    """A StockledgerError for anything the API or CLI should answer with; None otherwise."""
    if isinstance(exc, StockledgerError):
        return exc
    if isinstance(exc, PoolTimeout):
        return unavailable()
    if isinstance(exc, psycopg.Error):
        return from_database(exc)
    return None
