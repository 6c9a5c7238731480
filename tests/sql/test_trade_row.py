"""One trade row: the view trade_rows declares a trade's columns once; the trade functions
return it, and the Python model that carries a trade (and is its JSON and OpenAPI schema)
has exactly its columns, in its order."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from stockledger.trading.trades import Trade

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)


def view_columns(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        """
        SELECT attname FROM pg_attribute
        WHERE attrelid = 'trade_rows'::regclass AND attnum > 0 AND NOT attisdropped
        ORDER BY attnum
        """
    ).fetchall()
    return [row[0] for row in rows]


def differences(model_fields: list[str], columns: list[str]) -> list[str]:
    return [] if model_fields == columns else [f"model {model_fields} != view {columns}"]


def test_the_model_has_the_views_columns_in_order(conn: psycopg.Connection[Any]) -> None:
    assert differences(list(Trade.model_fields), view_columns(conn)) == []


def test_control_a_model_missing_a_column_is_caught(conn: psycopg.Connection[Any]) -> None:
    assert differences(list(Trade.model_fields)[:-1], view_columns(conn)) != []


def test_the_trade_functions_return_the_view(conn: psycopg.Connection[Any]) -> None:
    returns = dict(
        conn.execute(
            """
            SELECT p.proname, format_type(p.prorettype, NULL)
                   || coalesce(' ' || array_to_string(
                          ARRAY(SELECT format_type(t, NULL)
                                FROM unnest(p.proallargtypes) WITH ORDINALITY a(t, i)
                                WHERE p.proargmodes[a.i] = 't'), ','), '')
            FROM pg_proc p
            WHERE p.proname IN ('trade', 'trade_idempotent', 'trade_batch')
            """
        ).fetchall()
    )
    assert returns["trade_batch"].startswith("trade_rows")
    assert returns["trade"] == "record trade_rows,numeric,jsonb"
    assert returns["trade_idempotent"] == "record trade_rows,numeric,jsonb,boolean"


def test_a_read_and_the_functions_give_the_same_row(
    conn: psycopg.Connection[Any], world: Any
) -> None:
    executed = conn.execute(
        "SELECT (t.trade).* FROM trade(%s, %s, 'AAPL', 'buy', 3, 12.5) t",
        [world.account, world.broker_a],
    ).fetchone()
    assert executed is not None
    read = conn.execute("SELECT * FROM trade_rows WHERE trade_id = %s", [executed[0]]).fetchone()
    assert read == executed
