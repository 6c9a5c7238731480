"""HTTP API: one blueprint per resource; the seed's three endpoints kept exactly."""

from __future__ import annotations

from flask import current_app

from stockledger.db import Database


def database() -> Database:
    db: Database = current_app.extensions["stockledger.db"]
    return db
