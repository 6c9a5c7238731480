"""Who is calling: a broker by API key, or the operator by the admin token.

Keys are random (256-bit secrets), shown once, stored only as SHA-256 hashes, compared in
constant time, and never logged. Authorization (which accounts a broker sees) is applied in
the queries themselves: a broker's reads and trades are filtered by its broker_id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from stockledger.db import plain_row
from stockledger.errors import StockledgerError
from stockledger.queries import query

KEY_PREFIX = "slk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")


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


def _unauthenticated(detail: str) -> StockledgerError:
    return StockledgerError(
        "unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="stockledger"'}
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


def authenticate(
    conn: psycopg.Connection[Any], authorization: str | None, admin_token: str | None
) -> Caller:
    token = bearer_token(authorization)
    if is_admin_token(token, admin_token):
        return ADMIN
    match = _KEY.match(token)
    if match is None:
        raise _unauthenticated("unknown credentials")
    key_id, secret = match.groups()
    row = conn.execute(query("broker_key"), {"key_id": key_id}).fetchone()
    # The digest is compared even when no row matched, so a miss costs what a hit costs.
    stored: bytes = row[1] if row else b"\0" * 32
    if not hmac.compare_digest(_digest(secret), stored) or row is None:
        raise _unauthenticated("unknown credentials")
    broker_id, _, revoked, status = row
    if revoked:
        raise _unauthenticated("this key has been revoked")
    if status != "active":
        raise StockledgerError("forbidden", f"broker {broker_id} is {status}")
    return Caller(broker_id=broker_id)
