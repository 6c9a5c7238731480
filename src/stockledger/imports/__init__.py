"""A book kept elsewhere, brought in (SPEC §2.9, docs/import.md): `stockledger import FILE`.

document.py reads the JSON document as a stream and checks each record's shape; staging.py
copies the records into temporary tables as they come; apply.py writes them, section by
section in the spec's order, through the writers every other path uses. All in one
transaction: a refusal (the first offending record, by its path) writes nothing, and a dry
run checks everything and then writes nothing either.
"""

from __future__ import annotations

from typing import IO, Any

import psycopg

from stockledger.imports.apply import Refusal, apply_all
from stockledger.imports.document import DocumentError, records
from stockledger.imports.staging import stage

__all__ = ["DocumentError", "Refusal", "load_book"]


def load_book(conn: psycopg.Connection[Any], stream: IO[bytes], *, dry_run: bool) -> dict[str, int]:
    """How many records of each section were imported (or, with dry_run, would be)."""
    with conn.transaction(force_rollback=dry_run):
        counts = stage(conn, records(stream))
        apply_all(conn)
    return counts
