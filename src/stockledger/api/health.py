"""Probes for the process (healthz) and for its database (readyz)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from stockledger import migrations
from stockledger.api import database
from stockledger.errors import unavailable

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    # Alive means the process answers; it must not depend on the database.
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    with database().connection() as conn:
        missing = migrations.pending(conn)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise unavailable(f"migrations pending ({names}): run stockledger migrate")
    return jsonify({"status": "ready", "schema_version": migrations.latest_version()})
