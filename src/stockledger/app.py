"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask

from stockledger.api import health, problems, seed
from stockledger.config import Settings
from stockledger.db import Database


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> Flask:
    """Build the app for one process. ``database_url`` is the resolved URL (the embedded
    server's, when ``serve`` started one); it defaults to ``settings.database_url``."""
    settings = settings or Settings.from_env()
    url = database_url or settings.database_url
    if not url:
        raise ValueError("create_app needs a database URL (serve resolves the embedded one)")
    logging.getLogger("stockledger").setLevel(settings.log_level)

    app = Flask("stockledger")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["stockledger.db"] = Database(url, settings)
    app.extensions["stockledger.settings"] = settings

    problems.register(app)
    app.register_blueprint(seed.blueprint)
    app.register_blueprint(health.blueprint)
    return app
