"""SPEC §1.2, by direct SQL as the table owner: the database itself refuses every violation,
with the SQLSTATE (and constraint name) the application maps, never by message text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support import World, add_stock, column_of, constraint_of, ledger_snapshot, scalar

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

INSERT_TRADE = """
INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price{extra_cols})
VALUES (%(account)s, %(broker)s, %(symbol)s, %(side)s, %(quantity)s, %(price)s{extra_vals})
RETURNING trade_id, seq, executed_at, price
"""


def insert_trade(
    conn: psycopg.Connection[Any],
    world: World,
    *,
    side: str = "buy",
    quantity: int | Decimal = 1,
    price: str = "10",
    symbol: str = "AAPL",
    account: int | None = None,
    broker: int | None = None,
    **extra: Any,
) -> tuple[Any, ...]:
    params = {
        "account": world.account if account is None else account,
        "broker": world.broker_a if broker is None else broker,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        **extra,
    }
    query = INSERT_TRADE.format(
        extra_cols="".join(f", {k}" for k in extra),
        extra_vals="".join(f", %({k})s" for k in extra),
    )
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


def refused(
    conn: psycopg.Connection[Any], sqlstate: str, statement: str, params: Any = None
) -> psycopg.Error:
    before = ledger_snapshot(conn)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement, params)
    assert caught.value.sqlstate == sqlstate, caught.value
    assert ledger_snapshot(conn) == before
    return caught.value


def position(conn: psycopg.Connection[Any], account: int, symbol: str) -> int | None:
    row = conn.execute(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = %s", [account, symbol]
    ).fetchone()
    return None if row is None else row[0]


# Rule 1: no oversell ----------------------------------------------------------------------


def test_plain_insert_is_a_complete_trade_and_updates_positions(
    conn: psycopg.Connection[Any], world: World
) -> None:
    trade_id, seq, executed_at, _ = insert_trade(conn, world, side="sell", quantity=40)
    assert seq == 2 and trade_id > 0 and executed_at is not None
    assert position(conn, world.account, "AAPL") == 60
    holds = conn.execute(
        "SELECT quantity FROM holds WHERE account_id = %s AND symbol = 'AAPL'", [world.account]
    ).fetchone()
    assert holds == (60,)


def test_oversell_by_direct_insert_is_refused(conn: psycopg.Connection[Any], world: World) -> None:
    refused(
        conn,
        "SL001",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        "VALUES (%s, %s, 'AAPL', 'sell', 101, 10)",
        [world.account, world.broker_a],
    )
    assert position(conn, world.account, "AAPL") == 100


def test_selling_a_symbol_never_held_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    refused(
        conn,
        "SL001",
        "SELECT * FROM trade(%s, %s, 'MSFT', 'sell', 1, 10)",
        [world.account, world.broker_a],
    )


def test_selling_everything_leaves_zero_which_holdings_omit(
    conn: psycopg.Connection[Any], world: World
) -> None:
    insert_trade(conn, world, side="sell", quantity=100)
    assert position(conn, world.account, "AAPL") == 0
    assert conn.execute(
        "SELECT count(*) FROM holds WHERE account_id = %s", [world.account]
    ).fetchone() == (0,)


# Rule 2: append-only ledger -----------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE trades SET quantity = 1",
        "UPDATE trades SET price = price WHERE false",  # statement level: even zero rows
        "DELETE FROM trades",
        "DELETE FROM trades WHERE false",
        # Alone, TRUNCATE trades stops earlier, at the foreign key from idempotency_keys
        # (see below); naming both tables, or CASCADE, reaches the ledger's own guard.
        "TRUNCATE trades, idempotency_keys",
        "TRUNCATE trades CASCADE",
    ],
)
def test_ledger_refuses_update_delete_truncate(
    conn: psycopg.Connection[Any], world: World, statement: str, cluster: bool
) -> None:
    if cluster and statement.endswith("WHERE false"):
        # A cluster prunes every shard of a statement that can match no row, and runs no
        # statement trigger (docs/scale-out.md): nothing is refused, and nothing changes.
        before = ledger_snapshot(conn)
        conn.execute(statement)
        assert ledger_snapshot(conn) == before
        return
    refused(conn, "SL008", statement)


def test_plain_truncate_is_refused_too(conn: psycopg.Connection[Any], world: World) -> None:
    refused(conn, "0A000", "TRUNCATE trades")


def test_row_level_guard_still_refuses_without_the_statement_trigger(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # Defence in depth: drop the statement-level trigger and the row-level one still holds.
    with conn.transaction():
        conn.execute("DROP TRIGGER trades_append_only_statement ON trades")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("UPDATE trades SET quantity = 1")
        assert caught.value.sqlstate == "SL008"
        raise_rollback(conn)


def raise_rollback(conn: psycopg.Connection[Any]) -> None:
    raise psycopg.Rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE positions SET quantity = 1000",
        "DELETE FROM positions",
        "INSERT INTO positions (account_id, symbol, quantity, updated_at) "
        "SELECT account_id, 'MSFT', 5, now() FROM accounts",
        "TRUNCATE positions",
    ],
)
def test_positions_refuse_direct_writes(
    conn: psycopg.Connection[Any], world: World, statement: str
) -> None:
    refused(conn, "SL010", statement)


# Rule 3: ordered time -------------------------------------------------------------------------


def test_seq_is_assigned_gapless_per_account(conn: psycopg.Connection[Any], world: World) -> None:
    seqs = [insert_trade(conn, world)[1] for _ in range(5)]
    assert seqs == [2, 3, 4, 5, 6]
    # A refused trade leaves no gap.
    with pytest.raises(psycopg.Error):
        insert_trade(conn, world, side="sell", quantity=10_000)
    assert insert_trade(conn, world)[1] == 7
    # Each account counts on its own.
    assert insert_trade(conn, world, account=world.other_account, broker=world.broker_b)[1] == 1


@pytest.mark.parametrize("column", ["seq", "trade_id"])
def test_database_assigned_columns_cannot_be_supplied(
    conn: psycopg.Connection[Any], world: World, column: str
) -> None:
    refused(
        conn,
        "428C9",
        f"INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, {column}) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 10, 99)",
        [world.account, world.broker_a],
    )


def test_executed_at_never_decreases(conn: psycopg.Connection[Any], world: World) -> None:
    times = [insert_trade(conn, world)[2] for _ in range(20)]
    assert times == sorted(times)


def test_backfill_earlier_than_latest_trade_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    latest = scalar(
        conn, "SELECT max(executed_at) FROM trades WHERE account_id = %s", [world.account]
    )
    refused(
        conn,
        "SL002",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 10, %s)",
        [world.account, world.broker_a, latest - timedelta(microseconds=1)],
    )


def test_backfill_at_or_after_latest_trade_is_accepted(
    conn: psycopg.Connection[Any], world: World
) -> None:
    latest = scalar(
        conn, "SELECT max(executed_at) FROM trades WHERE account_id = %s", [world.account]
    )
    _, _, executed_at, _ = insert_trade(conn, world, executed_at=latest)
    assert executed_at == latest
    # Later trades without a time never go back before it.
    assert insert_trade(conn, world)[2] >= latest


def test_backfill_more_than_5_seconds_ahead_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    ahead = datetime.now(UTC) + timedelta(seconds=30)
    refused(
        conn,
        "SL002",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price, executed_at) "
        "VALUES (%s, %s, 'AAPL', 'buy', 1, 10, %s)",
        [world.account, world.broker_a, ahead],
    )


def test_supplied_time_within_5_seconds_ahead_is_accepted(
    conn: psycopg.Connection[Any], world: World
) -> None:
    ahead = datetime.now(UTC) + timedelta(seconds=2)
    assert insert_trade(conn, world, executed_at=ahead)[2] == ahead


# Rule 4: no broker-owned accounts -----------------------------------------------------------


def test_account_for_a_client_with_a_brokers_tax_id_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    broker_tax = scalar(conn, "SELECT tax_id FROM brokers WHERE broker_id = %s", [world.broker_a])
    client_id = scalar(
        conn,
        "INSERT INTO clients (name, tax_id) VALUES ('Broker as client', %s) RETURNING client_id",
        [broker_tax],
    )
    refused(
        conn,
        "SL007",
        "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s)",
        [client_id, world.broker_b],
    )


def test_broker_with_the_tax_id_of_an_account_owner_is_refused(
    conn: psycopg.Connection[Any], world: World
) -> None:
    owner_tax = scalar(conn, "SELECT tax_id FROM clients WHERE client_id = %s", [world.owner])
    refused(
        conn,
        "SL007",
        "INSERT INTO brokers (name, tax_id, license_no) VALUES ('Sneaky', %s, 'SNEAKY1')",
        [owner_tax],
    )


def test_a_client_without_accounts_may_share_a_tax_id_with_nobody_else(
    conn: psycopg.Connection[Any], world: World
) -> None:
    # A client record alone owns nothing: registering a broker with its tax id is allowed,
    # and from then on that client can never open an account.
    conn.execute("INSERT INTO clients (name, tax_id) VALUES ('Future broker', 'FUTUREB1')")
    conn.execute("SELECT register_broker('Future', 'FUTUREB1', 'FB1')")
    client_id = scalar(conn, "SELECT client_id FROM clients WHERE tax_id = 'FUTUREB1'")
    refused(
        conn,
        "SL007",
        "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s)",
        [client_id, world.broker_a],
    )


def test_every_writer_claims_the_tax_identity_first(
    conn: psycopg.Connection[Any], world: World
) -> None:
    """Rule 4 stands on foreign keys to the claimed identity (migration 0011): a plain insert
    of a broker or an account whose identity nobody claimed is refused; claimed, it goes in."""
    refused(
        conn,
        "23503",
        "INSERT INTO brokers (name, tax_id, license_no) VALUES ('Plain', 'PLAINB1', 'PB-1')",
    )
    conn.execute("SELECT claim_tax_identity('PLAINB1', true)")
    conn.execute(
        "INSERT INTO brokers (name, tax_id, license_no) VALUES ('Plain', 'PLAINB1', 'PB-1')"
    )
    client_id = scalar(
        conn, "INSERT INTO clients (name, tax_id) VALUES ('Plain', 'PLAINC1') RETURNING client_id"
    )
    refused(
        conn,
        "23503",
        "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s)",
        [client_id, world.broker_a],
    )
    conn.execute("SELECT claim_tax_identity('PLAINC1', false)")
    owner_tax_id = scalar(
        conn,
        "INSERT INTO accounts (client_id, broker_id) VALUES (%s, %s) RETURNING owner_tax_id",
        [client_id, world.broker_a],
    )
    assert owner_tax_id == "PLAINC1"  # filled from the client
    # A claim of the other kind is refused with the rule's own code.
    refused(conn, "SL007", "SELECT claim_tax_identity('PLAINC1', true)")
    refused(conn, "SL007", "SELECT claim_tax_identity('PLAINB1', false)")


def test_the_foreign_keys_alone_keep_rule_4(conn: psycopg.Connection[Any], world: World) -> None:
    """Without the read-only checks (the foreign keys are what makes the rule race-free), a
    broker with an owner's tax id is still refused; the checks only give it its own code."""
    conn.execute("DROP TRIGGER brokers_check_tax_identity ON brokers")
    conn.execute("DROP TRIGGER accounts_check_tax_identity ON accounts")
    owner_tax = scalar(conn, "SELECT tax_id FROM clients WHERE client_id = %s", [world.owner])
    error = refused(
        conn,
        "23503",
        "INSERT INTO brokers (name, tax_id, license_no) VALUES ('Sneaky', %s, 'SNEAKY2')",
        [owner_tax],
    )
    assert constraint_of(error) == "brokers_tax_identity_fkey"
    broker_tax = scalar(conn, "SELECT tax_id FROM brokers WHERE broker_id = %s", [world.broker_a])
    client_id = scalar(
        conn,
        "INSERT INTO clients (name, tax_id) VALUES ('Broker as client', %s) RETURNING client_id",
        [broker_tax],
    )
    error = refused(
        conn,
        "23503",
        "INSERT INTO accounts (client_id, broker_id, owner_tax_id) VALUES (%s, %s, %s)",
        [client_id, world.broker_b, broker_tax],
    )
    assert constraint_of(error) == "accounts_tax_identity_fkey"


def test_an_accounts_owner_tax_id_is_its_clients_and_never_changes(
    conn: psycopg.Connection[Any], world: World
) -> None:
    refused(
        conn,
        "SL011",
        "UPDATE accounts SET owner_tax_id = 'OTHER1' WHERE account_id = %s",
        [world.account],
    )


@pytest.mark.parametrize(
    ("statement", "column"),
    [
        ("UPDATE clients SET tax_id = 'CHANGED1'", "tax_id"),
        ("UPDATE brokers SET tax_id = 'CHANGED2'", "tax_id"),
        ("UPDATE accounts SET client_id = client_id + 1", "client_id"),
        ("UPDATE accounts SET broker_id = broker_id + 1", "broker_id"),
    ],
)
def test_identity_and_ownership_are_immutable(
    conn: psycopg.Connection[Any], world: World, statement: str, column: str
) -> None:
    error = refused(conn, "SL011", statement)
    assert column_of(error) == column


# Rule 5: account and broker rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "kwargs", "sqlstate"),
    [
        ("UPDATE accounts SET status = 'frozen' WHERE account_id = {account}", {}, "SL003"),
        ("UPDATE accounts SET status = 'closed' WHERE account_id = {account}", {}, "SL003"),
        ("SELECT 1", {"broker": "broker_b"}, "SL004"),
        ("SELECT 1", {"broker": 999_999}, "SL004"),
        ("UPDATE brokers SET status = 'suspended' WHERE broker_id = {broker_a}", {}, "SL005"),
        ("SELECT 1", {"symbol": "OLD"}, "SL006"),
        ("SELECT 1", {"symbol": "NOPE"}, "SL006"),
        ("SELECT 1", {"account": 999_999}, "SL009"),
    ],
)
def test_trade_admission_rules(
    conn: psycopg.Connection[Any], world: World, setup: str, kwargs: dict[str, Any], sqlstate: str
) -> None:
    conn.execute(setup.format(account=world.account, broker_a=world.broker_a))
    params = {
        "account": kwargs.get("account", world.account),
        "broker": world.broker_b
        if kwargs.get("broker") == "broker_b"
        else kwargs.get("broker", world.broker_a),
        "symbol": kwargs.get("symbol", "AAPL"),
    }
    for side in ("buy", "sell"):
        refused(
            conn,
            sqlstate,
            "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
            "VALUES (%(account)s, %(broker)s, %(symbol)s, %(side)s, 1, 10)",
            {**params, "side": side},
        )


def test_reopened_account_and_reactivated_broker_trade_again(
    conn: psycopg.Connection[Any], world: World
) -> None:
    conn.execute("UPDATE accounts SET status = 'frozen' WHERE account_id = %s", [world.account])
    conn.execute("UPDATE brokers SET status = 'suspended' WHERE broker_id = %s", [world.broker_a])
    conn.execute("UPDATE accounts SET status = 'open' WHERE account_id = %s", [world.account])
    conn.execute("UPDATE brokers SET status = 'active' WHERE broker_id = %s", [world.broker_a])
    assert insert_trade(conn, world)[1] == 2


# Rule 6: named CHECK constraints on every domain value ---------------------------------------


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("INSERT INTO clients (name, tax_id) VALUES ('', 'T1')", "clients_name_check"),
        ("INSERT INTO clients (name, tax_id) VALUES ('N', 'lower1')", "clients_tax_id_check"),
        ("INSERT INTO clients (name, tax_id) VALUES ('N', 'DE-123')", "clients_tax_id_check"),
        (
            "INSERT INTO clients (name, tax_id, email) VALUES ('N', 'T2', 'not-an-email')",
            "clients_email_check",
        ),
        (
            "INSERT INTO brokers (name, tax_id, license_no) VALUES ('N', 'T3', 'bad license')",
            "brokers_license_no_check",
        ),
        (
            "INSERT INTO brokers (name, tax_id, license_no, status) VALUES ('N', 'T4', 'L9', 'gone')",
            "brokers_status_check",
        ),
        ("INSERT INTO stocks (symbol, name) VALUES ('aapl', 'lower')", "stocks_symbol_check"),
        (
            "INSERT INTO stocks (symbol, name) VALUES ('ABCDEFGHIJK', 'too long')",
            "stocks_symbol_check",
        ),
        ("INSERT INTO stocks (symbol, name) VALUES ('1AB', 'digit first')", "stocks_symbol_check"),
        ("INSERT INTO stocks (symbol, name) VALUES ('XYZ', '  ')", "stocks_name_check"),
        ("UPDATE accounts SET status = 'asleep'", "accounts_status_check"),
        (
            "INSERT INTO clients (name, tax_id) SELECT 'Dup', tax_id FROM clients LIMIT 1",
            "clients_tax_id_key",
        ),
        (
            "INSERT INTO brokers (name, tax_id, license_no) SELECT 'Dup', 'T5', license_no FROM brokers LIMIT 1",
            "brokers_license_no_key",
        ),
        ("INSERT INTO stocks (symbol, name) VALUES ('AAPL', 'again')", "stocks_pkey"),
        (
            "INSERT INTO accounts (client_id, broker_id) VALUES (999999, 1)",
            "accounts_client_id_fkey",
        ),
    ],
)
def test_reference_data_constraints(
    conn: psycopg.Connection[Any], world: World, statement: str, constraint: str
) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    assert caught.value.sqlstate in {"23514", "23505", "23503"}
    assert constraint_of(caught.value) == constraint


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"side": "hold"}, "trades_side_check"),
        ({"quantity": 0}, "trades_quantity_check"),
        ({"quantity": -5}, "trades_quantity_check"),
        ({"quantity": 1_000_000_001}, "trades_quantity_check"),
        ({"price": "0"}, "trades_price_check"),
        ({"price": "-1"}, "trades_price_check"),
        ({"price": "1000000000000"}, "trades_price_check"),
        ({"price": "1.23456"}, "trades_price_check"),
        ({"price": "NaN"}, "trades_price_check"),
        ({"client_order_id": "has space"}, "trades_client_order_id_check"),
        ({"client_order_id": "x" * 65}, "trades_client_order_id_check"),
        ({"client_order_id": ""}, "trades_client_order_id_check"),
    ],
)
def test_trade_value_constraints(
    conn: psycopg.Connection[Any], world: World, overrides: dict[str, Any], constraint: str
) -> None:
    before = ledger_snapshot(conn)
    side = overrides.pop("side", "buy")
    with pytest.raises(psycopg.Error) as caught:
        insert_trade(conn, world, side=side, **overrides)
    assert caught.value.sqlstate == "23514"
    assert constraint_of(caught.value) == constraint
    assert ledger_snapshot(conn) == before


def test_not_null_everywhere_it_is_required(conn: psycopg.Connection[Any], world: World) -> None:
    for statement in (
        "INSERT INTO clients (name, tax_id) VALUES (NULL, 'T6')",
        "INSERT INTO stocks (symbol, name) VALUES ('NN', NULL)",
        "INSERT INTO trades (account_id, broker_id, symbol, side, quantity, price) "
        f"VALUES ({world.account}, {world.broker_a}, 'AAPL', 'buy', 1, NULL)",
    ):
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement)
        assert caught.value.sqlstate == "23502"


def test_prices_are_stored_exactly_with_four_places(
    conn: psycopg.Connection[Any], world: World
) -> None:
    assert str(insert_trade(conn, world, price="187.25")[3]) == "187.2500"
    assert str(insert_trade(conn, world, price="0.0001")[3]) == "0.0001"
    assert str(insert_trade(conn, world, price="187.250000")[3]) == "187.2500"
    assert str(insert_trade(conn, world, price="999999999999.9999")[3]) == "999999999999.9999"


def test_client_order_id_is_unique_per_account_and_broker(
    conn: psycopg.Connection[Any], world: World
) -> None:
    insert_trade(conn, world, client_order_id="ORDER-1")
    with pytest.raises(psycopg.Error) as caught:
        insert_trade(conn, world, client_order_id="ORDER-1")
    assert constraint_of(caught.value) == "trades_client_order_id_key"
    # The same id on another account is someone else's order.
    insert_trade(
        conn, world, account=world.other_account, broker=world.broker_b, client_order_id="ORDER-1"
    )


def test_new_stock_is_tradable_at_once(conn: psycopg.Connection[Any], world: World) -> None:
    add_stock(conn, "NEW.A")
    insert_trade(conn, world, symbol="NEW.A")
    assert position(conn, world.account, "NEW.A") == 1


# Migration 0008 rewrote two printable-ASCII rules from a bounded regex repetition into a
# length bound and an unbounded one (the first cost a quarter of an idempotent trade's CPU).
# The domains must accept exactly what the original expressions accepted.
PRINTABLE_RULES = [
    ("trade_client_order_id", r"^[\x21-\x7E]{1,64}$", 64),
    ("idempotency_key_text", r"^[\x21-\x7E]{1,255}$", 255),
]
EDGE_CHARACTERS = ["!", "~", "a", " ", "\t", "\x7f", "é", "€", "\U0001f600"]


def _edge_values(limit: int) -> list[str]:
    values = ["", "a" * limit, "a" * (limit + 1), "~" * (limit - 1) + "é"]
    values += [c for c in EDGE_CHARACTERS] + ["x" + c + "y" for c in EDGE_CHARACTERS]
    # multi-byte characters counted as one each would fit; counted in bytes they do not
    values += ["é" * (limit // 2 + 1)]
    return values


@pytest.mark.parametrize(("domain", "original", "limit"), PRINTABLE_RULES)
def test_printable_rules_accept_exactly_what_the_original_regex_did(
    conn: psycopg.Connection[Any], domain: str, original: str, limit: int
) -> None:
    checked = 0
    for value in _edge_values(limit):
        expected = scalar(conn, "SELECT %s ~ %s", [value, original])
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SELECT %s::{}").format(sql.Identifier(domain)), [value])
            accepted = True
        except psycopg.errors.CheckViolation:
            accepted = False
        assert accepted == expected, (domain, value)
        checked += 1
    assert checked > 20


@pytest.mark.parametrize(
    "broken",
    [
        r"^[\x21-\x7E]*$",  # lets the empty string through
        r"^[\x21-\x7E]{1,65}$",  # a bound one too loose
        r"^[\x20-\x7E]{1,64}$",  # lets a space through
    ],
)
def test_the_edge_values_tell_a_wrong_rule_apart(
    conn: psycopg.Connection[Any], broken: str
) -> None:
    # The control: the values above are not all accepted alike by a slightly wrong rule.
    original, limit = PRINTABLE_RULES[0][1], PRINTABLE_RULES[0][2]
    differ = [
        value
        for value in _edge_values(limit) + _edge_values(PRINTABLE_RULES[1][2])
        if conn.execute("SELECT %s ~ %s, %s ~ %s", [value, original, value, broken]).fetchone()
        in ((True, False), (False, True))
    ]
    assert differ
