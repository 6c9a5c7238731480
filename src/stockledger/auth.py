"""Who is calling: a broker by API key, or the operator by the admin token.

Keys are random (256-bit secrets), shown once, stored only as SHA-256 hashes, and never
logged. The database checks them (broker_of_key(), migration 0007), so that a trade can carry
its own check and cost one round trip. Authorization (which accounts a broker sees) is applied
in the queries themselves: a broker's reads and trades are filtered by its broker_id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from stockledger.db import plain_row
from stockledger.errors import CODE_HEADERS, StockledgerError
from stockledger.queries import query

KEY_PREFIX = "slk"
_KEY = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})")


@dataclass(frozen=True)
class Caller:
    broker_id: int | None  # None for the operator (admin token)

    @property
    def is_admin(self) -> bool:
        return self.broker_id is None


ADMIN = Caller(broker_id=None)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def issue_key(conn: psycopg.Connection[Any], broker_id: int) -> dict[str, Any]:
    """Create a live key for a broker; the only time its full text exists outside the caller."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("insert_broker_key"),
            {"key_id": key_id, "broker_id": broker_id, "secret_hash": _digest(secret)},
        ).fetchone()
    assert row is not None
    created: datetime = row["created_at"]
    return {
        "key_id": key_id,
        "api_key": f"{KEY_PREFIX}_{key_id}_{secret}",
        "created_at": created.isoformat(),
    }


def revoke_key(conn: psycopg.Connection[Any], broker_id: int, key_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("revoke_broker_key"), {"key_id": key_id, "broker_id": broker_id}
        ).fetchone()
    if row is None:
        raise StockledgerError("not_found", "key not found")
    return plain_row(row)


def revoke_all_keys(conn: psycopg.Connection[Any], broker_id: int) -> int:
    """Revoke every live key of a broker; how many there were."""
    return conn.execute(query("revoke_broker_keys"), {"broker_id": broker_id}).rowcount


def _unauthenticated(detail: str) -> StockledgerError:
    return StockledgerError(
        "unauthenticated", detail, headers=dict(CODE_HEADERS["unauthenticated"])
    )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthenticated("missing Authorization: Bearer <api key>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be: Bearer <api key>")
    return token.strip()


def is_admin_token(token: str, admin_token: str | None) -> bool:
    # Compare digests so that neither content nor length leaks through timing.
    return admin_token is not None and hmac.compare_digest(_digest(token), _digest(admin_token))


def parse_key(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed API key; None for anything else."""
    match = _KEY.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def authenticate(
    conn: psycopg.Connection[Any], authorization: str | None, admin_token: str | None
) -> Caller:
    """The caller, or the reason it is refused: 401 (missing, malformed, unknown, revoked
    credentials) or 403 (the key's broker is not active), raised by broker_of_key() for keys."""
    token = bearer_token(authorization)
    if is_admin_token(token, admin_token):
        return ADMIN
    parsed = parse_key(token)
    if parsed is None:
        raise _unauthenticated("unknown credentials")
    key_id, secret = parsed
    row = conn.execute(
        query("broker_of_key"), {"key_id": key_id, "secret_hash": _digest(secret)}
    ).fetchone()
    assert row is not None, "broker_of_key() returns a broker or raises"
    broker_id: int = row[0]
    _known_brokers.remember(key_id, broker_id)
    return Caller(broker_id=broker_id)


@dataclass(frozen=True)
class PresentedKey:
    """An API key presented with a request, not checked yet, and the broker it belonged to
    when this process last checked it. The statement that uses it checks it first."""

    key_id: str
    secret_hash: bytes
    broker_id: int


class _KnownBrokers:
    """key_id -> broker_id of keys this process has seen pass. The pair never changes
    (broker_keys refuses an update of broker_id), so it needs no expiry: what may change,
    revocation and the broker's status, is checked by every statement anyway."""

    LIMIT = 10_000  # live keys of a brokerage are far fewer; a bound all the same

    def __init__(self) -> None:
        self._brokers: dict[str, int] = {}
        self._lock = threading.Lock()

    def remember(self, key_id: str, broker_id: int) -> None:
        with self._lock:
            if len(self._brokers) >= self.LIMIT:
                self._brokers.clear()
            self._brokers[key_id] = broker_id

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._brokers.pop(key_id, None)

    def get(self, key_id: str) -> int | None:
        return self._brokers.get(key_id)


_known_brokers = _KnownBrokers()


def presented_key(authorization: str | None, admin_token: str | None) -> PresentedKey | None:
    """The request's API key, when its check can wait for the statement that uses it: a
    well-formed key this process has seen pass before. None otherwise (authenticate first)."""
    try:
        token = bearer_token(authorization)
    except StockledgerError:
        return None  # authenticate() answers with the reason
    parsed = parse_key(token)
    if parsed is None or is_admin_token(token, admin_token):
        return None
    key_id, secret = parsed
    broker_id = _known_brokers.get(key_id)
    if broker_id is None:
        return None
    return PresentedKey(key_id, _digest(secret), broker_id)


def forget_key(key_id: str) -> None:
    _known_brokers.forget(key_id)
