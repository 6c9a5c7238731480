"""The Flask application factory."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from stockledger.config import Settings, check_admin_token
from stockledger.db.pool import Database
from stockledger.dialect.middleware import SeedDialect
from stockledger.http import openapi, problems, strict_json
from stockledger.http.context import release_connection
from stockledger.http.routes import accounts, administration, books, health, seed, stocks, trades
from stockledger.http.trade_path import TradePath
from stockledger.serve import metrics


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> Flask:
    """Build the app for one process. ``database_url`` is the resolved URL (the embedded
    server's, when ``serve`` started one); it defaults to ``settings.database_url``."""
    settings = settings or Settings.from_env()
    url = database_url or settings.database_url
    if not url:
        raise ValueError("create_app needs a database URL (serve resolves the embedded one)")
    if settings.admin_token is not None:
        # Settings made in code skip from_env's check; the same rule, not a second one.
        check_admin_token(settings.admin_token)
    logging.getLogger("stockledger").setLevel(settings.log_level)

    app = openapi.create_openapi_app("stockledger")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    strict_json.install(app, max(settings.max_body_bytes, settings.max_batch_body_bytes))
    database = Database(url, settings)
    app.extensions["stockledger.db"] = database
    app.extensions["stockledger.settings"] = settings

    problems.register(app)
    for blueprint in (seed, accounts, books, trades, stocks, administration, health):
        app.register_api(blueprint.blueprint)
    openapi.register_document_routes(app)
    app.teardown_request(release_connection)
    _measure_requests(app, database)
    if settings.trade_path:
        # Inside FramedBody: the body it sees always has a Content-Length.
        framed = app.wsgi_app
        assert isinstance(framed, strict_json.FramedBody)
        framed.app = TradePath(framed.app, settings, database)
    if settings.seed_dialect:
        # In front of everything else: its requests are GETs with no body, and none of them
        # is the API's (a request with account_id goes on to the app).
        app.wsgi_app = SeedDialect(app.wsgi_app, database)  # type: ignore[method-assign]
    return app


def _measure_requests(app: Flask, database: Database) -> None:
    @app.before_request
    def start_clock() -> None:
        g.stockledger_started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        started = g.get("stockledger_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            elapsed = time.perf_counter() - started
            metrics.request_done(request.method, route, response.status_code, elapsed)
            metrics.pool_observed(database.pool.get_stats)
        return response
