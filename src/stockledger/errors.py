"""Every failure a caller can see: a stable code (SPEC §2.2), its HTTP status and title.

Nothing above the database layer raises anything else: stockledger.db.boundary turns each
driver error into one of these where the SQL runs. The API renders them as problem+json
(RFC 9457), the CLI as one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The public error codes. A member, not a string, so that a typo is a type error."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INSUFFICIENT_HOLDINGS = "insufficient_holdings"
    OUT_OF_ORDER = "out_of_order"
    ACCOUNT_NOT_OPEN = "account_not_open"
    BROKER_NOT_AUTHORIZED = "broker_not_authorized"
    STOCK_NOT_TRADABLE = "stock_not_tradable"
    ALREADY_EXISTS = "already_exists"
    BROKER_OWNED_ACCOUNT = "broker_owned_account"
    IMMUTABLE_FIELD = "immutable_field"
    LEDGER_APPEND_ONLY = "ledger_append_only"
    DERIVED_DATA = "derived_data"
    CONFLICT = "conflict"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    REQUEST_IN_PROGRESS = "request_in_progress"
    FRACTIONAL_NOT_ALLOWED = "fractional_not_allowed"
    SUPERVISION_CYCLE = "supervision_cycle"
    LAST_HOLDER = "last_holder"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    LOT_NOT_AVAILABLE = "lot_not_available"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"


# code -> (HTTP status, title); every member has one (tests/unit/test_error_codes.py).
CODES: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.INVALID_REQUEST: (422, "Invalid request"),
    ErrorCode.UNAUTHENTICATED: (401, "Unauthenticated"),
    ErrorCode.FORBIDDEN: (403, "Forbidden"),
    ErrorCode.NOT_FOUND: (404, "Not found"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "Method not allowed"),
    ErrorCode.INSUFFICIENT_HOLDINGS: (409, "Insufficient holdings"),
    ErrorCode.OUT_OF_ORDER: (409, "Execution time out of order"),
    ErrorCode.ACCOUNT_NOT_OPEN: (409, "Account not open"),
    ErrorCode.BROKER_NOT_AUTHORIZED: (403, "Broker not authorized"),
    ErrorCode.STOCK_NOT_TRADABLE: (409, "Stock not tradable"),
    ErrorCode.ALREADY_EXISTS: (409, "Already exists"),
    ErrorCode.BROKER_OWNED_ACCOUNT: (409, "Broker-owned account refused"),
    ErrorCode.IMMUTABLE_FIELD: (409, "Field cannot be changed"),
    ErrorCode.LEDGER_APPEND_ONLY: (409, "History is append-only"),
    ErrorCode.DERIVED_DATA: (409, "Derived data, kept by the database"),
    ErrorCode.CONFLICT: (409, "Conflicting concurrent change"),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: (422, "Idempotency key reused"),
    ErrorCode.REQUEST_IN_PROGRESS: (409, "Request in progress"),
    ErrorCode.FRACTIONAL_NOT_ALLOWED: (409, "Fractional quantity not allowed"),
    ErrorCode.SUPERVISION_CYCLE: (409, "Supervision cycle"),
    ErrorCode.LAST_HOLDER: (409, "Last holder"),
    ErrorCode.INSUFFICIENT_FUNDS: (409, "Insufficient funds"),
    ErrorCode.LOT_NOT_AVAILABLE: (409, "Lot not available"),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, "Payload too large"),
    ErrorCode.SERVICE_UNAVAILABLE: (503, "Service unavailable"),
    ErrorCode.INTERNAL_ERROR: (500, "Internal error"),
}

# Headers a problem of this code always carries (RFC 9110: a 401 names its scheme).
CODE_HEADERS: dict[ErrorCode, dict[str, str]] = {
    ErrorCode.UNAUTHENTICATED: {"WWW-Authenticate": 'Bearer realm="stockledger"'},
}

# Seconds a caller told to retry should wait (Retry-After): long enough for a lock holder
# or a reconnecting pool to finish, short enough not to matter to a person.
RETRY_AFTER_SECONDS = 1


@dataclass
class StockledgerError(Exception):
    code: ErrorCode
    detail: str
    status: int = 0
    # Extra members of the problem object, e.g. the field errors of a validation failure.
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.code = ErrorCode(self.code)
        if not self.status:
            self.status = CODES[self.code][0]
        self.headers = CODE_HEADERS.get(self.code, {}) | self.headers
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
            "code": str(self.code),
        }
        body.update(self.extra)
        return body


def not_found(what: str) -> StockledgerError:
    return StockledgerError(ErrorCode.NOT_FOUND, f"{what} not found")


def _retry_later() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def unavailable(detail: str = "the database is unreachable; retry shortly") -> StockledgerError:
    return StockledgerError(ErrorCode.SERVICE_UNAVAILABLE, detail, headers=_retry_later())


def retry_conflict(detail: str) -> StockledgerError:
    """A conflict that nothing but timing caused: nothing was written, and the same request
    again will most likely succeed, so it says when (Retry-After)."""
    return StockledgerError(ErrorCode.CONFLICT, detail, headers=_retry_later())
