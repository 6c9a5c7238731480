"""What a request knows about itself: its pooled connection, its caller, its authorization.

A request borrows one pooled connection (on first use) and returns it at teardown, so
authentication and the work of the view share it. Authentication runs before the view (in a
blueprint's before_request), hence before request validation: an unauthenticated caller
learns nothing, not even which fields are wrong.

The trade routes may defer the check of a known key to the trade's own statement (one round
trip instead of two). Any problem answered before that statement ran checks the key first
(credentials_first), so the order callers see is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from flask import current_app, g, request

from stockledger.config import Settings
from stockledger.db.pool import Database
from stockledger.errors import ErrorCode, StockledgerError
from stockledger.http import auth
from stockledger.registry.keys import PresentedKey


def database() -> Database:
    db: Database = current_app.extensions["stockledger.db"]
    return db


def settings() -> Settings:
    value: Settings = current_app.extensions["stockledger.settings"]
    return value


def connection() -> psycopg.Connection[Any]:
    """This request's connection, taken from the pool on first use."""
    conn: psycopg.Connection[Any] | None = g.get("stockledger_conn")
    if conn is None:
        conn = database().getconn()
        g.stockledger_conn = conn
    return conn


def release_connection(_exc: BaseException | None = None) -> None:
    conn = g.pop("stockledger_conn", None)
    if conn is not None:
        database().putconn(conn)


def caller() -> auth.Caller:
    """The authenticated caller of this request (401/403 otherwise), checked once."""
    who: auth.Caller | None = g.get("stockledger_caller")
    if who is None:
        authorization = request.headers.get("Authorization")
        who = auth.authenticate(connection(), authorization, settings().admin_token)
        g.stockledger_caller = who
    return who


F = TypeVar("F", bound=Callable[..., Any])


def key_checked_by_statement(view: F) -> F:
    """Mark a view whose statement checks the caller's API key itself (trade_for_key)."""
    view.stockledger_key_checked_by_statement = True  # type: ignore[attr-defined]
    return view


def presented_key() -> PresentedKey | None:
    """The key of this request whose check was deferred to the view's statement, if any."""
    key: PresentedKey | None = g.get("stockledger_presented_key")
    return key


def key_checked() -> None:
    """The view's statement has checked (or is checking) the presented key."""
    g.pop("stockledger_presented_key", None)


def credentials_first() -> None:
    """Before a problem is answered: a presented key not checked yet is checked now, and
    refuses the request (401/403) if it does not pass."""
    if g.pop("stockledger_presented_key", None) is not None:
        caller()


def admin_only(view: F) -> F:
    """Mark a view as administration: only the admin token may call it."""
    view.stockledger_admin_only = True  # type: ignore[attr-defined]
    return view


def authorize() -> None:
    """before_request of every protected blueprint: a broker key or the admin token, and the
    admin token alone for administration views."""
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "stockledger_key_checked_by_statement", False):
        key = auth.presented_key(request.headers.get("Authorization"), settings().admin_token)
        if key is not None:
            g.stockledger_presented_key = key
            return
    who = caller()
    if getattr(view, "stockledger_admin_only", False) and not who.is_admin:
        detail = "administration needs the admin token"
        if settings().admin_token is None:
            detail = "administration over HTTP is off: STOCKLEDGER_ADMIN_TOKEN is not set"
        raise StockledgerError(ErrorCode.FORBIDDEN, detail)


def broker_caller() -> auth.Caller:
    """Only a broker may trade: the operator's token reads and administers, it does not trade."""
    who = caller()
    if who.is_admin:
        raise StockledgerError(ErrorCode.FORBIDDEN, "trades are submitted with a broker's API key")
    return who


def protect(blueprint: Any) -> None:
    """Authorize before anything else about the request is read; then read the query and the
    body strictly (the models validate them next, in the view's wrapper)."""
    from stockledger.http.strict_json import read_request

    blueprint.before_request(authorize)
    blueprint.before_request(read_request)
