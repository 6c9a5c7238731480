"""Named SQL queries, loaded once from sql/queries/<area>.sql (trading, registry, audit).

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
    # One namespace over every area's file: a name defined in two areas is an error.
    folder = resources.files("stockledger").joinpath("sql", "queries")
    queries: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, text in parse_named_queries(entry.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice ({entry.name})")
            queries[name] = text
    return queries


def query(name: str) -> LiteralString:
    # The text comes from a file shipped in the package, never from input: a literal in all
    # but syntax, which is what psycopg's typing asks for (mypy reads LiteralString as str).
    return _all()[name]
