"""Probes for the process (healthz) and for its database (readyz)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from stockledger import migrations
from stockledger.api import database
from stockledger.errors import unavailable
from stockledger.queries import query

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    # Alive means the process answers; it must not depend on the database.
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    expected = migrations.latest_version()
    with database().connection() as conn:
        row = conn.execute(query("schema_version")).fetchone()
    version = row[0] if row else 0
    if version != expected:
        raise unavailable(f"schema version {version}, expected {expected}: run stockledger migrate")
    return jsonify({"status": "ready", "schema_version": version})
