"""Where a request ends (stockledger.framing), as the worker learns it from bytes arriving in
pieces of any size: complete exactly at the request's last byte, never before."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockledger.serve.framing import MAX_HEADER_BYTES, Framing, RequestFraming

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b'{"account_id": 1, "symbol": "AAPL", "side": "buy", "quantity": 1, "price": "1"}'
POST = b"POST /v1/trades HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
CHUNKED = (
    b"POST /v1/trades HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n" % (10, BODY[:10])
    + b"%x;ext=1\r\n%s\r\n" % (len(BODY) - 10, BODY[10:])
    + b"0\r\n\r\n"
)
CHUNKED_WITH_TRAILER = CHUNKED[:-2] + b"X-Trailer: 1\r\n\r\n"


def feed_in_pieces(request: bytes, cuts: list[int], max_body: int = 1024) -> list[Framing]:
    framing = RequestFraming(max_body)
    points = sorted({c % (len(request) + 1) for c in cuts} | {0, len(request)})
    return [framing.feed(request[a:b]) for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize("request_bytes", [GET, POST, CHUNKED, CHUNKED_WITH_TRAILER])
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_complete_exactly_at_the_last_byte(request_bytes: bytes, cuts: list[int]) -> None:
    states = feed_in_pieces(request_bytes, cuts)
    assert states[-1] is Framing.COMPLETE
    assert all(state is Framing.INCOMPLETE for state in states[:-1])


@pytest.mark.parametrize("request_bytes", [GET, POST, CHUNKED])
def test_one_byte_short_is_incomplete(request_bytes: bytes) -> None:
    assert RequestFraming(1024).feed(request_bytes[:-1]) is Framing.INCOMPLETE


def test_a_pipelined_request_behind_it_does_not_matter() -> None:
    framing = RequestFraming(1024)
    assert framing.feed(POST + GET[:5]) is Framing.COMPLETE


@pytest.mark.parametrize(
    ("request_bytes", "state"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", Framing.BODY_TOO_LARGE),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n", Framing.BODY_TOO_LARGE),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"200\r\n" + b"x" * 512 + b"\r\n" + b"201\r\n", Framing.BODY_TOO_LARGE),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEADER_BYTES, Framing.HEADERS_TOO_LARGE),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Framing.MALFORMED),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", Framing.MALFORMED),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Framing.MALFORMED),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n", Framing.MALFORMED),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", Framing.MALFORMED),
    ],
)  # fmt: skip
def test_refusals_are_known_from_the_bytes_so_far(request_bytes: bytes, state: Framing) -> None:
    assert RequestFraming(1024).feed(request_bytes) is state


def test_expect_continue_is_noticed_once_the_headers_are_in() -> None:
    framing = RequestFraming(1024)
    framing.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert framing.expects_continue and framing.awaits_body


@pytest.mark.parametrize("request_bytes", [CHUNKED, CHUNKED_WITH_TRAILER])
def test_a_chunked_body_of_exactly_the_limit_fed_a_byte_at_a_time(request_bytes: bytes) -> None:
    """Each chunk counts once, however many times its size line is read while its data
    arrives (counting it at each read made a slow client's body 'too large')."""
    framing = RequestFraming(max_body=len(BODY))
    states = [framing.feed(request_bytes[i : i + 1]) for i in range(len(request_bytes))]
    assert states[-1] is Framing.COMPLETE and Framing.BODY_TOO_LARGE not in states
    assert RequestFraming(max_body=len(BODY) - 1).feed(request_bytes) is Framing.BODY_TOO_LARGE
