"""POST /trade and POST /v1/trades in the ordinary case, without Flask's request machinery.

A profile of a trade request under load put about a third of the worker's Python time in
Flask's request context, routing, before- and after-request hooks and flask-openapi3's header
and body validation, around a view whose own work (validate, execute, encode) is smaller than
that. This middleware answers the ordinary trade itself: a POST of a JSON object to one of
the two trade routes, no query string, under an API key this process has seen pass (checked
again by the trade's own statement, as in the Flask view).

Everything else goes to the Flask app unchanged, with the body put back: another route or
method, another content type, the admin token, an unknown key, any input the models refuse.
So every refusal of input still has one author. What this path answers itself is what comes
after the statement ran: the 201 (or the replay of an Idempotency-Key), and the database's
refusals, rendered by the app's own problem_response. tests/http/test_trade_path.py proves
the answers equal, byte for byte, to the app's with this path off.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import psycopg
from flask import Response
from pydantic import ValidationError

from stockledger import json_text
from stockledger.config import Settings
from stockledger.db.pool import Database
from stockledger.http import auth
from stockledger.http.params import IdempotencyHeader
from stockledger.http.problems import error_response
from stockledger.http.strict_json import loads_strict
from stockledger.registry.keys import PresentedKey
from stockledger.serve import metrics
from stockledger.trading import trades
from stockledger.trading.requests import TradeRequest

_log = logging.getLogger(__name__)

# The trade routes, as the app's url rules name them in the metrics.
TRADE_ROUTES = frozenset({"/trade", "/v1/trades"})
JSON = "application/json"


class TradePath:
    """WSGI middleware in front of the Flask app (``fallback``)."""

    def __init__(self, fallback: Any, settings: Settings, database: Database) -> None:
        self.fallback = fallback
        self.settings = settings
        self.database = database

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        taken = self._ordinary_trade(environ)
        if taken is None:
            return self.fallback(environ, start_response)
        request, key, idempotency_key = taken
        route = environ["PATH_INFO"]
        response = self._execute(route, request, key, idempotency_key)
        if response is None:
            # The key is no longer its broker's (broker_keys refuses that change, so this does
            # not happen): nothing was written, and the app authenticates afresh.
            auth.forget_key(key.key_id)
            return self.fallback(environ, start_response)
        metrics.request_done("POST", route, response.status_code, time.perf_counter() - started)
        metrics.pool_observed(self.database.pool.get_stats)
        return response(environ, start_response)

    def _ordinary_trade(
        self, environ: dict[str, Any]
    ) -> tuple[TradeRequest, PresentedKey, str | None] | None:
        """The validated trade, its key and its Idempotency-Key, if the request is ordinary;
        None (the body put back for the app) otherwise."""
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") not in TRADE_ROUTES
            or environ.get("QUERY_STRING")
            or environ.get("CONTENT_TYPE") != JSON
        ):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= self.settings.max_body_bytes:
            return None
        key = auth.presented_key(environ.get("HTTP_AUTHORIZATION"), self.settings.admin_token)
        if key is None:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # for the app, should it answer instead
        try:
            fields = loads_strict(body)
            if not isinstance(fields, dict):
                return None
            header = IdempotencyHeader.model_validate(
                {"Idempotency-Key": environ["HTTP_IDEMPOTENCY_KEY"]}
                if "HTTP_IDEMPOTENCY_KEY" in environ
                else {}
            )
            request = TradeRequest.model_validate(fields)
        except (ValueError, ValidationError):  # ValidationError is a ValueError too
            return None
        if request.broker_id not in (None, key.broker_id):
            return None
        return request.model_copy(update={"broker_id": key.broker_id}), key, header.idempotency_key

    def _execute(
        self, route: str, request: TradeRequest, key: PresentedKey, idempotency_key: str | None
    ) -> Response | None:
        try:
            conn: psycopg.Connection[Any] = self.database.getconn()
            try:
                result = trades.execute_trade_for_key(conn, request, key, idempotency_key)
            finally:
                self.database.putconn(conn)
        except Exception as exc:  # answered as the app answers it (one function for both)
            return error_response(exc, f"POST {route}")
        if result is None:
            return None
        # As the app's jsonify writes it: compact, ASCII, keys in order, a final newline.
        body = json_text.dumps(result.to_json(), separators=(",", ":")) + "\n"
        response = Response(body, 201, mimetype=JSON)
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        else:
            metrics.trade_executed(request.side)
        return response
