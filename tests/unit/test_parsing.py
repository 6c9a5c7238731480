"""Reading input exactly, without a database: strict JSON, prices, times, tax ids."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from stockledger.errors import ErrorCode, StockledgerError
from stockledger.fields import validate
from stockledger.http.strict_json import _JSON_STRUCTURE, MAX_JSON_DEPTH, loads_strict
from stockledger.registry.requests import ClientCreate
from stockledger.trading.requests import TradeRequest


def test_numbers_are_exact_decimals_never_floats() -> None:
    parsed = loads_strict(b'{"price": 187.25, "quantity": 10}')
    assert parsed == {"price": Decimal("187.25"), "quantity": 10}
    assert isinstance(parsed["price"], Decimal)


@pytest.mark.parametrize(
    "text",
    [
        '{"quantity": 1, "quantity": 1000}',  # ambiguous: refused, not one picked
        '{"price": NaN}',
        '{"price": Infinity}',
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        b'{"name": "\xff"}',
    ],
)
def test_strict_json_refuses(text: Any) -> None:
    with pytest.raises(ValueError):
        loads_strict(text.encode() if isinstance(text, str) else text)


def test_nesting_up_to_the_limit_parses() -> None:
    assert loads_strict("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None


def test_the_depth_scan_reads_an_unterminated_string_in_one_match() -> None:
    """The scan before json.loads must stay linear: with the closing quote required, each
    quote inside an unterminated string started a new scan to the end, and a 64 KiB body of
    \\" cost 9.5 s of CPU. One match from the first quote to the end means no rescans."""
    text = '"' + '\\"' * 1000
    match = _JSON_STRUCTURE.match(text)
    assert match is not None and match.end() == len(text)


TRADE = {"account_id": 1, "broker_id": 1, "symbol": "AAPL", "side": "buy", "quantity": 1}


@pytest.mark.parametrize(
    ("price", "exact"),
    [("187.25", Decimal("187.2500")), (Decimal("0.0001"), Decimal("0.0001")), (5, Decimal("5"))],
)
def test_prices_are_read_exactly(price: Any, exact: Decimal) -> None:
    assert validate(TradeRequest, {**TRADE, "price": price}).price == exact


@pytest.mark.parametrize(
    "price", ["1e3", " 1", "1\n", "0", "-1", "1.00001", 1.5, True, "1000000000000", "NaN"]
)
def test_prices_that_are_not_plain_exact_decimals_are_refused(price: Any) -> None:
    with pytest.raises(StockledgerError) as refused:
        validate(TradeRequest, {**TRADE, "price": price})
    assert refused.value.code == ErrorCode.INVALID_REQUEST
    assert refused.value.extra["errors"][0]["field"] == "price"


@pytest.mark.parametrize(
    "executed_at", ["0001-01-01T00:00:00+14:00", "1899-12-31T23:59:59Z", 1700000000, "tomorrow"]
)
def test_times_outside_the_range_or_not_rfc3339_are_refused(executed_at: Any) -> None:
    with pytest.raises(StockledgerError):
        validate(TradeRequest, {**TRADE, "price": "1", "executed_at": executed_at})


def test_tax_ids_are_stored_canonical() -> None:
    client = validate(ClientCreate, {"name": "Ada", "tax_id": "us-123 45"})
    assert client.tax_id == "US12345"
