"""stockledger: a PostgreSQL-first stock trading backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    # Imported on use so that `stockledger --help` does not pay for Flask.
    from stockledger.http.app import create_app as factory

    return factory(*args, **kwargs)
