"""Named SQL queries, loaded once from sql/queries.sql.

A block starts with ``-- name: some_name`` and runs to the next such line, as in procrastinate.
Queries use psycopg's named placeholders (``%(account_id)s``); values are always bound.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def sql_text(filename: str) -> str:
    return resources.files("stockledger").joinpath("sql", filename).read_text(encoding="utf-8")


def parse_named_queries(text: str) -> dict[str, str]:
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def _all() -> dict[str, str]:
    return parse_named_queries(sql_text("queries.sql"))


def query(name: str) -> LiteralString:
    # The text comes from a file shipped in the package, never from input: a literal in all
    # but syntax, which is what psycopg's typing asks for (mypy reads LiteralString as str).
    return _all()[name]
