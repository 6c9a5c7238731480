"""An existing book meets migrations 0013 and 0014 (issue 15): accounts opened before joint
accounts keep their client as sole primary holder, whole quantities become exact decimals with
their values, idempotency claims still replay, and every invariant holds after. On one
PostgreSQL, and in the distributed tier on a running cluster, as an operator's upgrade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from stockledger.audit.verify import verify
from stockledger.db import migrations
from stockledger.db.pool import connect
from tests.support import Server

pytestmark = pytest.mark.citus

BEFORE_REAL_BOOKS = 12


@pytest.fixture
def book_at_0012(pg_server: Server) -> Iterator[str]:
    """A database at migration 0012 with two accounts, trades on each, and an idempotency claim:
    written with the functions of that schema (whole quantities, bigint)."""
    name = f"sl_upgrade_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    with connect(url) as conn:
        migrations.migrate(conn, migrations=migrations.available()[:BEFORE_REAL_BOOKS])
        conn.execute("INSERT INTO stocks (symbol, name) VALUES ('AAPL', 'Apple')")
        conn.execute("SELECT register_broker('Old broker', 'OLDB1', 'OLD-1')")
        for i in (1, 2):
            conn.execute(
                "INSERT INTO clients (name, tax_id) VALUES (%s, %s)", [f"C{i}", f"OLDC{i}"]
            )
            conn.execute("SELECT open_account(%s, 1)", [i])
        for account, side, quantity in ((1, "buy", 30), (1, "sell", 7), (2, "buy", 5)):
            conn.execute(
                "SELECT * FROM trade(%s, 1, 'AAPL', %s, %s, 10.5)", [account, side, quantity]
            )
        conn.execute(
            "SELECT * FROM trade_idempotent('k1', %s, 2, 1, 'AAPL', 'buy', 1, 10)",
            [b"\x01" * 32],
        )
    yield url
    pg_server.drop_database(name)


def test_an_existing_book_is_carried_over(book_at_0012: str) -> None:
    with connect(book_at_0012) as conn:
        applied = migrations.migrate(conn)
        assert [m.version for m in applied] == list(
            range(BEFORE_REAL_BOOKS + 1, migrations.latest_version() + 1)
        )
        holders = conn.execute(
            "SELECT h.account_id, h.position, h.client_id, h.added_at = a.opened_at, "
            "h.removed_at FROM account_holders h JOIN accounts a USING (account_id) "
            "ORDER BY 1, 2"
        ).fetchall()
        assert holders == [(1, 1, 1, True, None), (2, 1, 2, True, None)]
        positions = conn.execute("SELECT account_id, quantity FROM positions ORDER BY 1").fetchall()
        assert positions == [(1, Decimal(23)), (2, Decimal(6))]
        # The claim stored before answers the same request again, its quantity now numeric.
        replay = conn.execute(
            "SELECT (t.trade).seq, t.position_quantity, t.replayed "
            "FROM trade_idempotent('k1', %s, 2, 1, 'AAPL', 'buy', 1, 10) t",
            [b"\x01" * 32],
        ).fetchone()
        assert replay == (2, Decimal(6), True)
        # And the book goes on: a joint holder, a trade.
        conn.execute("INSERT INTO clients (name, tax_id) VALUES ('C3', 'OLDC3')")
        conn.execute("SELECT add_account_holder(1, 3)")
        conn.execute("SELECT * FROM trade(1, 1, 'AAPL', 'sell', 3, 11)")
        failed = [c.name for c in verify(conn) if not c.holds]
        assert failed == []
