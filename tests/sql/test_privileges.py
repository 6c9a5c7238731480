"""The application's role (stockledger_app) cannot change history or switch the rules off.

Each statement is run twice: as the application, where it must fail with insufficient_privilege
(42501), and as the owner in a rolled-back transaction, where it must not fail for lack of
privilege — the control that shows the first refusal comes from the role, not from a typo."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from stockledger.db.pool import connect
from tests.support import World, is_superuser, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

FORBIDDEN = [
    "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) VALUES ({account}, {broker}, 'AAPL', 'buy', 1, 1)",
    "UPDATE trades SET quantity = 1",
    "DELETE FROM trades",
    "TRUNCATE trades",
    "INSERT INTO positions (account_id, symbol, quantity, updated_at) VALUES ({account}, 'MSFT', 5, now())",
    "UPDATE positions SET quantity = 1000",
    "DELETE FROM positions",
    "INSERT INTO tax_identities (tax_id, is_broker) VALUES ('X1', true)",
    "UPDATE tax_identities SET is_broker = false",
    "ALTER TABLE trades DISABLE TRIGGER ALL",
    "ALTER TABLE positions DISABLE TRIGGER positions_derived_only",
    "DROP TRIGGER trades_admit ON trades",
    "ALTER TABLE positions DROP CONSTRAINT positions_quantity_check",
    "SET session_replication_role = replica",
    "SET ROLE postgres",
    "UPDATE accounts SET client_id = client_id",
    "UPDATE clients SET tax_id = tax_id",
    "SELECT trades_admit()",
    "SELECT trades_admit_batch()",
    # Idempotency claims are written only by trade_idempotent(): a forged or deleted claim
    # would replay the wrong trade or execute a retry twice.
    "INSERT INTO idempotency_keys (broker_id, account_id, idempotency_key, request_hash) VALUES ({broker}, {account}, 'k', sha256('x'))",
    "DELETE FROM idempotency_keys",
    "SELECT * FROM idempotency_keys",
    "CREATE TABLE public.shadow (x int)",
]


SUPERUSER_ONLY = {
    "ALTER TABLE trades DISABLE TRIGGER ALL",
    "SET session_replication_role = replica",
}


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_application_role_is_refused(
    app_db_url: str, conn: psycopg.Connection[Any], world: World, statement: str
) -> None:
    sql = statement.format(account=world.account, broker=world.broker_a)
    with connect(app_db_url) as app:
        with pytest.raises(psycopg.Error) as caught:
            app.execute(sql)
        assert caught.value.sqlstate == "42501", caught.value

    # The control: the owner is not refused for privilege (rules may still refuse it). Two of
    # the statements need a superuser whoever owns the schema: their control only runs when
    # the suite's role is one (the embedded server's is; TEST_DATABASE_URL's need not be).
    if statement in SUPERUSER_ONLY and not is_superuser(conn):
        return
    owner_role = scalar(conn, "SELECT current_user")
    with conn.transaction(force_rollback=True):
        try:
            conn.execute(sql.replace("SET ROLE postgres", f'SET ROLE "{owner_role}"'))
        except psycopg.Error as exc:
            assert exc.sqlstate != "42501", exc


def test_application_role_trades_reads_and_administers(app_db_url: str, world: World) -> None:
    with connect(app_db_url) as app:
        row = app.execute(
            "SELECT (trade).seq, position_quantity FROM trade(%s, %s, 'AAPL', 'sell', 30, 10)",
            [world.account, world.broker_a],
        ).fetchone()
        assert row == (2, 70)
        assert app.execute(
            "SELECT quantity FROM holds WHERE account_id = %s", [world.account]
        ).fetchone() == (70,)
        app.execute("INSERT INTO clients (name, tax_id) VALUES ('By app', 'APPCL1')")
        app.execute("SELECT register_broker('By app', 'APPBR1', 'AB-1')")
        app.execute(
            "UPDATE accounts SET status = 'frozen' WHERE account_id = %s", [world.other_account]
        )
        # The rules still bind it: a plain insert of a broker whose tax id owns an account is
        # refused by the check that runs as the owner (the application cannot read the claims).
        with pytest.raises(psycopg.Error) as caught:
            app.execute(
                "INSERT INTO brokers (name, tax_id, license_no) SELECT 'x', tax_id, 'X-9' FROM clients WHERE client_id = %s",
                [world.owner],
            )
        assert caught.value.sqlstate == "SL007"


def test_temporary_tables_cannot_stand_in_for_the_real_ones(
    app_db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    with connect(app_db_url) as app:
        app.execute(
            "CREATE TEMP TABLE positions (account_id bigint, symbol text, quantity bigint, updated_at timestamptz)"
        )
        app.execute(
            "SELECT * FROM trade(%s, %s, 'AAPL', 'buy', 5, 10)", [world.account, world.broker_a]
        )
        # The trigger functions run as the inserter since 0006: they see the search_path
        # that trade() and trade_batch() pin, not the caller's.
        app.execute(
            "SELECT count(*) FROM trade_batch(%s, ARRAY[%s]::bigint[], ARRAY['AAPL'], "
            "ARRAY['buy'], ARRAY[5]::bigint[], ARRAY[10]::numeric[])",
            [world.broker_a, world.account],
        )
        assert app.execute("SELECT count(*) FROM pg_temp.positions").fetchone() == (0,)
    real = conn.execute(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'AAPL'", [world.account]
    ).fetchone()
    assert real == (110,)


def test_application_role_owns_nothing(conn: psycopg.Connection[Any]) -> None:
    owned = conn.execute(
        """
        SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
        WHERE r.rolname = 'stockledger_app'
        """
    ).fetchone()
    assert owned == (0,)
    attributes = conn.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles WHERE rolname = 'stockledger_app'"
    ).fetchone()
    assert attributes == (False, False, False, False, False)
