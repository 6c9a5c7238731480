"""Request bodies and query strings, read strictly before any model sees them.

Bodies: Content-Type application/json, UTF-8, one JSON object, no duplicate keys, no NaN, and
numbers parsed as Decimal (a price is never a float). Anything else is a 400 problem, so a 422
always means "well-formed but invalid". Query strings: each parameter at most once (the model
validation that follows would silently take the first).
"""

from __future__ import annotations

import inspect
import io
import json
import re
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

from flask import Flask, Request, current_app, request
from flask.json.provider import DefaultJSONProvider

from stockledger import json_text
from stockledger.errors import ErrorCode, StockledgerError

F = TypeVar("F", bound=Callable[..., Any])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # {"quantity": 1, "quantity": 1000} is ambiguous; refuse rather than pick one.
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


# No request of this API nests deeper than a few levels (a batch: object, list, object). The
# json module parses recursively, and '[' * 30000 ran it out of stack: a RecursionError, a 500.
MAX_JSON_DEPTH = 32
# A string literal (skipped whole, brackets inside it do not count) or a bracket. The closing
# quote is optional: an unterminated string then runs to the end of the text in one match.
# Required, each quote inside it started a new scan to the end, and a 64 KiB body of \"
# took 9.5 s of CPU (the text is malformed either way; json.loads says so next).
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _check_depth(text: str) -> None:
    depth = 0
    for token in _JSON_STRUCTURE.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def loads_strict(body: str | bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, numbers exact (Decimal), nesting
    at most MAX_JSON_DEPTH levels.

    Raises ValueError (UnicodeDecodeError is one) for anything else.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    _check_depth(text)
    return json.loads(
        text,
        parse_float=Decimal,
        parse_constant=_reject_constant,
        object_pairs_hook=_unique_keys,
    )


class StrictJSONProvider(DefaultJSONProvider):
    sort_keys = False  # answers keep the field order of SPEC §2

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        # Quantities as exact JSON numbers (stockledger.json_text); Flask's own options else.
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return json_text.dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_strict(s)


class StrictRequest(Request):
    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            mimetype = self.mimetype or "missing"
            detail = f"Content-Type must be application/json, not {mimetype}"
        else:
            detail = f"malformed JSON: {e}"
        raise StockledgerError(ErrorCode.INVALID_REQUEST, detail, status=400)


@cache
def _takes_body(view: Any) -> bool:
    # flask-openapi3 validates a body for views with a `body` parameter; the view functions
    # are wrapped with functools.wraps, so the signature is the original's.
    return "body" in inspect.signature(view).parameters


def read_request() -> None:
    """before_request of each API blueprint, after authentication."""
    for name, values in request.args.lists():
        if len(values) != 1:
            raise StockledgerError(ErrorCode.INVALID_REQUEST, f"{name} given {len(values)} times")
    view = current_app.view_functions.get(request.endpoint or "")
    limit = getattr(view, "stockledger_body_limit", None)
    if limit is not None:
        request.max_content_length = limit(current_app)
    # Parsed (and cached by Flask) here, so the validator downstream sees this result.
    if view is not None and _takes_body(view) and not isinstance(request.get_json(), dict):
        raise StockledgerError(
            ErrorCode.INVALID_REQUEST, "the body must be a JSON object", status=400
        )


def larger_body(limit: Callable[[Flask], int]) -> Callable[[F], F]:
    """Mark a view whose body may exceed the app's limit (MAX_CONTENT_LENGTH)."""

    def mark(view: F) -> F:
        view.stockledger_body_limit = limit  # type: ignore[attr-defined]
        return view

    return mark


class FramedBody:
    """WSGI middleware: a body sent without Content-Length (chunked) is read here, at most one
    byte past ``limit``, and handed on as if it had been sent with one.

    Werkzeug applies the request's size limit to such a body by reading up to the limit and
    stopping, silently: 65,536 bytes of a valid trade padded with spaces, followed by garbage,
    were cut at the limit, parsed and executed. With the length known, the same check as for
    Content-Length answers 413 (the view's own, smaller limit included), however the body was
    framed (SPEC §2.8)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("CONTENT_LENGTH") in (None, "") and environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(self.limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            # Decoded already: werkzeug ignores a Content-Length beside "chunked".
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def install(app: Flask, largest_body: int) -> None:
    app.json_provider_class = StrictJSONProvider
    app.json = StrictJSONProvider(app)
    app.request_class = StrictRequest
    app.wsgi_app = FramedBody(app.wsgi_app, largest_body)  # type: ignore[method-assign]
