"""The document's records, copied into temporary tables as they are read (COPY): memory stays
flat in the file's size, and the sections can then be applied in the spec's order whatever
their order in the file."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any

import psycopg
from psycopg import sql

from stockledger.db.queries import query
from stockledger.imports.document import Record

# Each section's staged columns after ord, as the record's fields are named.
COLUMNS: dict[str, tuple[str, ...]] = {
    "stocks": ("symbol", "name", "fractionable", "active", "price", "price_as_of"),
    "clients": ("client_id", "name", "tax_id", "email", "address"),
    "brokers": ("broker_id", "name", "tax_id", "license_no", "manager_id", "status"),
    "accounts": ("account_id", "broker_id", "holders", "credit_limit", "lot_method", "status"),
    "cash": ("account_id", "kind", "amount", "reference"),
    "trades": (
        "account_id", "symbol", "side", "quantity", "price", "executed_at", "seq", "fee",
        "client_order_id",
    ),
}  # fmt: skip


def table(section: str) -> sql.Identifier:
    """A section's staging table (import_stocks, …): named here, never from input."""
    if section not in COLUMNS:
        raise ValueError(f"no section {section!r}")
    return sql.Identifier(f"import_{section}")


def stage(conn: psycopg.Connection[Any], records: Iterable[Record]) -> dict[str, int]:
    """Copy every record into its section's table; how many each section has."""
    conn.execute(query("import_staging"))
    counts = dict.fromkeys(COLUMNS, 0)
    with conn.cursor() as cur:
        # A section's records are contiguous in the document: one COPY each.
        for section, group in groupby(records, key=lambda record: record.section):
            names = COLUMNS[section]
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                table(section), sql.SQL(", ").join(map(sql.Identifier, ("ord", *names)))
            )
            with cur.copy(statement) as copy:
                for record in group:
                    fields = record.value.model_dump()
                    copy.write_row((record.index, *(fields[name] for name in names)))
                    counts[section] += 1
    return counts
