"""Who is calling: a broker by API key, or the operator by the admin token.

Keys (stockledger.registry.keys) are never logged. The database checks them
(broker_of_key()), so that a trade can carry its own check and cost one round trip.
Authorization (which accounts a broker sees) is applied in the queries themselves: a broker's
reads and trades are filtered by its broker_id.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import Any

import psycopg

from stockledger.db.boundary import fetch_value
from stockledger.db.queries import query
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.registry.keys import PresentedKey, digest, parse_key


@dataclass(frozen=True)
class Caller:
    broker_id: int | None  # None for the operator (admin token)

    @property
    def is_admin(self) -> bool:
        return self.broker_id is None


ADMIN = Caller(broker_id=None)


def _unauthenticated(detail: str) -> StockledgerError:
    return StockledgerError(ErrorCode.UNAUTHENTICATED, detail)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthenticated("missing Authorization: Bearer <api key>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be: Bearer <api key>")
    return token.strip()


def is_admin_token(token: str, admin_token: str | None) -> bool:
    # Compare digests so that neither content nor length leaks through timing.
    return admin_token is not None and hmac.compare_digest(digest(token), digest(admin_token))


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
    params = {"key_id": key_id, "secret_hash": digest(secret)}
    broker_id: int | None = fetch_value(conn, query("broker_of_key"), params)
    assert broker_id is not None, "broker_of_key() returns a broker or raises"
    _known_brokers.remember(key_id, broker_id)
    return Caller(broker_id=broker_id)


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
    return PresentedKey(key_id, digest(secret), broker_id)


def forget_key(key_id: str) -> None:
    _known_brokers.forget(key_id)
