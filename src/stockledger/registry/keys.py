"""Brokers' API keys: issued (shown once), stored as SHA-256 hashes, revoked at once.

A key is ``slk_<key_id>_<secret>``: a public id to find the row, a 256-bit secret whose hash
the database compares (broker_of_key(), sql/schema.sql). A broker may hold several live keys,
so rotation needs no downtime.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from stockledger.db.boundary import execute, fetch_existing, fetch_one
from stockledger.db.pool import plain_row
from stockledger.db.queries import query

KEY_PREFIX = "slk"
_KEY = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})")


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed API key; None for anything else."""
    match = _KEY.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class PresentedKey:
    """An API key presented with a request, not checked yet, and the broker it belonged to
    when this process last checked it. The statement that uses it checks it first."""

    key_id: str
    secret_hash: bytes
    broker_id: int


def issue_key(conn: psycopg.Connection[Any], broker_id: int) -> dict[str, Any]:
    """Create a live key for a broker; the only time its full text exists outside the caller."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    params = {"key_id": key_id, "broker_id": broker_id, "secret_hash": digest(secret)}
    row = fetch_one(conn, query("insert_broker_key"), params)
    assert row is not None
    created: datetime = row["created_at"]
    return {
        "key_id": key_id,
        "api_key": f"{KEY_PREFIX}_{key_id}_{secret}",
        "created_at": created.isoformat(),
    }


def revoke_key(conn: psycopg.Connection[Any], broker_id: int, key_id: str) -> dict[str, Any]:
    """Revoke one key of a broker; revoking a revoked key answers it as it is."""
    params = {"key_id": key_id, "broker_id": broker_id}
    revoked = fetch_one(conn, query("revoke_broker_key"), params)
    if revoked is None:
        # Revoked already (here or by a concurrent call, whose commit this statement sees),
        # or not a key of this broker.
        revoked = fetch_existing(conn, query("broker_key"), params, "key")
    return plain_row(revoked)


def revoke_all_keys(conn: psycopg.Connection[Any], broker_id: int) -> int:
    """Revoke every live key of a broker; how many there were."""
    return execute(conn, query("revoke_broker_keys"), {"broker_id": broker_id})
