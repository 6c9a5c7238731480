"""The boundary's translation, SQLSTATE by SQLSTATE, without a database: each code a caller can
see, its status, and the Retry-After of the refusals that only timing caused."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from stockledger.db.boundary import (
    CONSTRAINT_CODES,
    SQLSTATE_CODES,
    from_database,
    translated,
    unsharded_message,
)
from stockledger.errors import CODES, ErrorCode, StockledgerError


class _Diag:
    def __init__(self, message: str, constraint: str | None, detail: str | None) -> None:
        self.message_primary = message
        self.constraint_name = constraint
        self.message_detail = detail


def driver_error(
    sqlstate: str,
    constraint: str | None = None,
    detail: str | None = None,
    base: type[psycopg.Error] = psycopg.DatabaseError,
    message: str | None = None,
) -> psycopg.Error:
    """A driver error as psycopg raises it after a server's refusal (sqlstate, diag)."""

    class Refusal(base):  # type: ignore[valid-type,misc]
        @property
        def sqlstate(self) -> str:
            return sqlstate

        @property
        def diag(self) -> Any:
            return _Diag(message or f"refused ({sqlstate})", constraint, detail)

    error: psycopg.Error = Refusal("refused")
    return error


def test_every_code_has_a_status_and_a_title() -> None:
    assert set(CODES) == set(ErrorCode)
    for code, (status, title) in CODES.items():
        assert 400 <= status < 600 and title, code


def test_a_code_that_is_not_one_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        StockledgerError("insufficent_holdings", "typo")  # type: ignore[arg-type]


def test_the_problem_body_carries_the_code_as_text() -> None:
    problem = StockledgerError(ErrorCode.NOT_FOUND, "account not found").problem()
    assert json.loads(json.dumps(problem)) == {
        "type": "https://stockledger.dev/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "account not found",
        "code": "not_found",
    }


@pytest.mark.parametrize("sqlstate", sorted(SQLSTATE_CODES))
def test_each_rule_of_the_schema_maps_to_its_code(sqlstate: str) -> None:
    error = from_database(driver_error(sqlstate))
    assert error.code == SQLSTATE_CODES[sqlstate][0]
    assert error.status == CODES[error.code][0]


def test_another_brokers_account_reads_exactly_as_a_missing_one() -> None:
    foreign, missing = from_database(driver_error("SL004")), from_database(driver_error("SL009"))
    assert foreign.problem() == missing.problem()


def test_a_401_names_its_scheme() -> None:
    assert "WWW-Authenticate" in from_database(driver_error("SL013")).headers


@pytest.mark.parametrize("constraint", sorted(CONSTRAINT_CODES))
def test_named_constraints_map_to_their_codes(constraint: str) -> None:
    error = from_database(driver_error("23505", constraint))
    assert (error.code, error.detail) == CONSTRAINT_CODES[constraint]


@pytest.mark.parametrize(
    ("sqlstate", "constraint", "code", "status"),
    [
        ("25006", None, ErrorCode.SERVICE_UNAVAILABLE, 503),  # read-only: a standby after failover
        ("57014", None, ErrorCode.SERVICE_UNAVAILABLE, 503),  # statement_timeout
        ("55P03", None, ErrorCode.SERVICE_UNAVAILABLE, 503),  # lock_timeout
        ("40001", None, ErrorCode.CONFLICT, 409),  # serialization failure
        ("40P01", None, ErrorCode.CONFLICT, 409),  # deadlock
        ("23505", "trades_pkey", ErrorCode.CONFLICT, 409),  # a stale snapshot's seq
    ],
)
def test_refusals_that_only_timing_caused_say_when_to_retry(
    sqlstate: str, constraint: str | None, code: ErrorCode, status: int
) -> None:
    error = from_database(driver_error(sqlstate, constraint))
    assert (error.code, error.status) == (code, status)
    assert error.headers["Retry-After"] == "1"
    assert "retry" in error.detail


def test_a_conflict_of_the_callers_own_making_does_not_say_retry() -> None:
    error = from_database(driver_error("23505", "trades_client_order_id_key"))
    assert error.code == ErrorCode.ALREADY_EXISTS and "Retry-After" not in error.headers


def test_invalid_input_and_the_batch_position() -> None:
    error = from_database(
        driver_error("23514", "trades_price_check", detail=json.dumps({"batch_index": 7}))
    )
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.extra == {"constraint": "trades_price_check", "batch_index": 7}


def test_a_lost_connection_is_unavailable_and_anything_else_internal() -> None:
    lost = from_database(driver_error("08006", base=psycopg.OperationalError))
    assert lost.code == ErrorCode.SERVICE_UNAVAILABLE and lost.headers["Retry-After"]
    odd = from_database(driver_error("XX000"))
    assert odd.code == ErrorCode.INTERNAL_ERROR and "XX000" not in odd.detail


def test_nothing_but_stockledger_errors_leave_the_boundary() -> None:
    with pytest.raises(StockledgerError) as caught, translated():
        raise driver_error("SL001")
    assert caught.value.code == ErrorCode.INSUFFICIENT_HOLDINGS
    assert isinstance(caught.value.__cause__, psycopg.Error)  # kept for the operator's log


def relayed(sqlstate: str, message: str) -> psycopg.Error:
    """An error as a Citus coordinator relays a worker's: no constraint name in its fields."""
    return driver_error(sqlstate, None, message=message)


@pytest.mark.parametrize(
    ("sqlstate", "message", "code", "constraint"),
    [
        (
            "23505",
            'duplicate key value violates unique constraint "trades_client_order_id_key_102041"',
            ErrorCode.ALREADY_EXISTS,
            "trades_client_order_id_key",
        ),
        (
            "23503",
            'insert or update on table "accounts_102142" violates foreign key constraint '
            '"accounts_broker_id_fkey_102142"',
            ErrorCode.NOT_FOUND,
            "accounts_broker_id_fkey",
        ),
        (
            "23514",
            'new row for relation "clients_102136" violates check constraint '
            '"clients_name_check_102136"',
            ErrorCode.INVALID_REQUEST,
            "clients_name_check",
        ),
    ],
)
def test_an_error_relayed_by_citus_maps_as_the_local_one(
    sqlstate: str, message: str, code: ErrorCode, constraint: str
) -> None:
    local = from_database(driver_error(sqlstate, constraint))
    relayed_error = from_database(relayed(sqlstate, message))
    assert relayed_error.code == local.code == code
    assert relayed_error.extra.get("constraint") == constraint


def test_control_without_the_relayed_name_a_duplicate_is_no_longer_already_exists() -> None:
    error = from_database(relayed("23505", "duplicate key value violates a constraint"))
    assert error.code == ErrorCode.INVALID_REQUEST


def test_a_shards_constraint_name_in_the_field_maps_as_the_tables() -> None:
    # A reference table's replica on the coordinator answers locally: the field is filled,
    # with the shard's copy's name.
    error = from_database(driver_error("23505", "brokers_license_no_key_102137"))
    assert (error.code, error.extra.get("constraint")) == (
        ErrorCode.ALREADY_EXISTS,
        "brokers_license_no_key",
    )


def test_a_message_names_tables_not_shards() -> None:
    message = 'new row for relation "clients_102136" violates check constraint "x_check_7"'
    assert unsharded_message(message) == (
        'new row for relation "clients" violates check constraint "x_check"'
    )
    # Digits that are not a quoted shard suffix stay.
    assert unsharded_message("account 4 holds 0 shares, cannot sell 5") == (
        "account 4 holds 0 shares, cannot sell 5"
    )
