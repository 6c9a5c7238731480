"""Every error leaves as application/problem+json (RFC 9457) with a stable code."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from stockledger.errors import ErrorCode, StockledgerError
from stockledger.serve import metrics

_log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# Werkzeug's own HTTP errors (routing, body size) mapped onto our codes.
_HTTP_CODES = {
    400: ErrorCode.INVALID_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.INVALID_REQUEST,
}


def problem_response(error: StockledgerError) -> Response:
    metrics.rejected(error.code)
    response = Response(json.dumps(error.problem()), error.status, mimetype=PROBLEM_JSON)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def credentials_refused() -> Response | None:
    """The answer to a request whose deferred key check fails, if it does: an unauthenticated
    caller hears that first, whatever else was wrong with its request."""
    from stockledger.http.context import credentials_first

    try:
        credentials_first()
    except StockledgerError as error:
        return problem_response(error)
    return None


def _handle_http(exc: HTTPException) -> Response:
    refused = credentials_refused()
    if refused is not None:
        return refused
    if exc.response is not None:
        # abort(response): an answer already made (a validation problem from flask-openapi3).
        return exc.response  # type: ignore[return-value]
    status = exc.code or 500
    fallback = ErrorCode.INVALID_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR
    code = _HTTP_CODES.get(status, fallback)
    detail = {
        404: "no such resource",
        405: f"{request.method} is not allowed here",
        413: "the request body is larger than the limit",
    }.get(status, exc.description or exc.name)
    error = StockledgerError(code, detail, status=status)
    response = problem_response(error)
    if status == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response


def error_response(exc: Exception, where: str) -> Response:
    """The answer to anything raised while handling a request (``where``: its method and
    path, for the log): a StockledgerError as its problem, anything else as a 500 that says
    nothing inside. The Flask handler and the trade path (trade_path.py) both answer so."""
    if isinstance(exc, StockledgerError):
        if exc.status >= 500:
            # The database's own words (the translated error's cause) for the operator.
            _log.warning("%s on %s: %s", exc.code, where, exc.__cause__ or exc)
        return problem_response(exc)
    # A bug: log it with its traceback for the operator, tell the caller nothing inside.
    _log.error("unhandled error on %s", where, exc_info=exc)
    return problem_response(
        StockledgerError(ErrorCode.INTERNAL_ERROR, "an unexpected error occurred")
    )


def _handle_any(exc: Exception) -> Response:
    refused = credentials_refused()
    if refused is not None:
        return refused
    return error_response(exc, f"{request.method} {request.path}")


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(Exception, _handle_any)
