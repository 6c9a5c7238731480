"""History cursors, without a database: opaque, carrying the account, position and filters;
anything else is refused as invalid input, never a 500."""

from __future__ import annotations

import base64
import json

import pytest

from stockledger.errors import ErrorCode, StockledgerError
from stockledger.trading.history import decode_cursor, encode_cursor
from stockledger.trading.requests import TradeFilters


def test_a_cursor_round_trips_with_its_filters() -> None:
    filters = TradeFilters(symbol="AAPL", side="sell")
    state = decode_cursor(encode_cursor(7, 42, filters))
    assert (state.account_id, state.after_seq, state.filters) == (7, 42, filters)


def test_a_cursor_is_url_safe_without_padding() -> None:
    cursor = encode_cursor(1, 1, TradeFilters(client_order_id="x/y+z"))
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


def forged(state: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        "AAAA",
        forged([1, 2, 3]),
        forged({"account_id": 1, "after_seq": -1, "filters": {}}),
        forged({"account_id": 0, "after_seq": 1, "filters": {}}),
        forged({"account_id": 1, "after_seq": 1, "filters": {"limit": 5}}),
        forged({"account_id": 1, "after_seq": 1, "filters": {}, "extra": True}),
    ],
)
def test_a_cursor_not_issued_here_is_invalid_input(cursor: str) -> None:
    with pytest.raises(StockledgerError) as refused:
        decode_cursor(cursor)
    assert refused.value.code == ErrorCode.INVALID_REQUEST
    assert refused.value.extra["errors"][0]["field"] == "cursor"
