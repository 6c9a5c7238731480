"""The seed's dialect in front of the app (SPEC §2.7): which requests are the dialect's, and
who may send them.

A WSGI middleware, as http/trade_path.py is: it takes a GET of /getOwner, /getHoldings or
/trade whose query names `aid` and not `account_id`; everything else goes to the app unchanged
(a request with `account_id` is the stockledger API). The seed had no authentication, so the
fence is the peer's address: a client that is not on loopback hears 404 not_found, as if the
dialect did not exist. Answers are always 200 and compact, as Flask's jsonify writes them;
what is not an answer of the seed's (the database unreachable, a bug) is the app's problem.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import parse_qs

import psycopg
from flask import Response

from stockledger import json_text
from stockledger.db.pool import Database
from stockledger.dialect import seed
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.http.problems import error_response, problem_response
from stockledger.serve import metrics

JSON = "application/json"
# What each request takes, exactly once each; any other parameter makes it malformed.
PARAMETERS = {
    "/getOwner": ("aid",),
    "/getHoldings": ("aid", "sym"),
    "/trade": ("aid", "sym", "type", "shares", "price"),
}
ANSWERS: dict[str, seed.Answer] = {
    "/getOwner": seed.owners,
    "/getHoldings": seed.shares,
    "/trade": seed.trade,
}


class SeedDialect:
    """WSGI middleware in front of the app (``fallback``), on when the operator turns it on."""

    def __init__(self, fallback: Any, database: Database) -> None:
        self.fallback = fallback
        self.database = database

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET" or path not in PARAMETERS:
            return self.fallback(environ, start_response)
        query_string = environ.get("QUERY_STRING", "")
        fields = parse_qs(query_string, keep_blank_values=True)
        if "aid" not in fields or "account_id" in fields:
            return self.fallback(environ, start_response)
        started = time.perf_counter()
        if not is_loopback(environ.get("REMOTE_ADDR")):
            response = problem_response(StockledgerError(ErrorCode.NOT_FOUND, "no such resource"))
        else:
            response = self._answer(path, _parameters(fields, PARAMETERS[path]))
        metrics.request_done("GET", path, response.status_code, time.perf_counter() - started)
        return response(environ, start_response)

    def _answer(self, path: str, parameters: dict[str, str] | None) -> Response:
        try:
            conn: psycopg.Connection[Any] = self.database.getconn()
            try:
                answer = ANSWERS[path](conn, parameters)
            finally:
                self.database.putconn(conn)
        except Exception as exc:  # not a refusal: answered as the app answers it
            return error_response(exc, f"GET {path} (seed dialect)")
        # As Flask's jsonify writes it: compact, keys in order, a final newline.
        body = json_text.dumps(answer, separators=(",", ":"), sort_keys=True) + "\n"
        return Response(body, 200, mimetype=JSON)


def is_loopback(address: str | None) -> bool:
    """The peer is on this machine (127.0.0.0/8, ::1, or either mapped into IPv6)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _parameters(fields: dict[str, list[str]], names: tuple[str, ...]) -> dict[str, str] | None:
    """Each named parameter given once and nothing else; None when the request is malformed."""
    if set(fields) != set(names) or any(len(values) != 1 for values in fields.values()):
        return None
    return {name: fields[name][0] for name in names}
