"""Probes for the process (healthz) and its database (readyz), and the metrics."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from stockledger.db import migrations
from stockledger.errors import unavailable
from stockledger.http.context import connection
from stockledger.http.openapi import problems
from stockledger.http.responses import Health, Readiness
from stockledger.serve import metrics

TAG = Tag(name="operations", description="Probes and metrics (no credentials)")
blueprint = APIBlueprint("health", __name__, abp_tags=[TAG])


@blueprint.get("/healthz", responses={200: Health})
def healthz() -> Response:
    """The process is alive (never depends on the database)"""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz", responses={200: Readiness, **problems(503)})
def readyz() -> Response:
    """The database is reachable and its schema is current"""
    missing = migrations.pending(connection())
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise unavailable(f"migrations pending ({names}): run stockledger migrate")
    return jsonify({"status": "ready", "schema_version": migrations.latest_version()})


@blueprint.get(
    "/metrics",
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
def get_metrics() -> Response:
    """Prometheus metrics of all the server's workers"""
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
