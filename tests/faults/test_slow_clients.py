"""Stalled and slow clients against `stockledger serve` with 2 workers x 4 threads (SPEC §2.8):
8 x the threads in connections that send part of a request and stall, send their headers a
byte a second, or their body a byte a second. Meanwhile a normal client alternates
`GET /healthz` and an authenticated trade; every answer must come within 2 s.

Negative control: gunicorn's stock gthread worker reads a request in a thread with blocking
reads, so the stalled connections take every thread and the normal client is starved; the
same harness reports it. The chunked-body test sends a trade padded past the body limit with
`Transfer-Encoding: chunked`: 413, nothing traded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import psycopg

from stockledger.config import DEFAULT_BODY_LIMIT
from tests.faults.harness import Brokerage, serving
from tests.faults.report import record

WORKERS, THREADS = 2, 4
STALLED = 4 * WORKERS * THREADS  # partial request line and headers, then nothing
DRIPPING_HEADERS = 2 * WORKERS * THREADS  # a header byte a second
DRIPPING_BODIES = 2 * WORKERS * THREADS  # a body byte a second
SECONDS = 8.0
ALLOWED_DELAY = 2.0


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    sock.setblocking(False)
    return sock


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.send(data)
        return True
    except OSError:  # closed by the server: its deadline passed
        return False


def hold_threads(brokerage: Brokerage, log: Path, **env: str) -> dict[str, Any]:
    account = brokerage.accounts[0]
    auth = {"Authorization": f"Bearer {brokerage.api_key}", "Content-Type": "application/json"}
    with serving(brokerage, log, workers=WORKERS, threads=THREADS, **env) as (base, server):
        host, port = base.removeprefix("http://").split(":")
        address = (host, int(port))
        stalled = [_connect(address) for _ in range(STALLED)]
        for sock in stalled:
            _send(sock, b"GET /healthz HTTP/1.1\r\n")
        header_text = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
        dripping_headers = [_connect(address) for _ in range(DRIPPING_HEADERS)]
        body_head = (
            f"POST /v1/trades HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        ).encode()
        dripping_bodies = [_connect(address) for _ in range(DRIPPING_BODIES)]
        for sock in dripping_bodies:
            _send(sock, body_head)
        time.sleep(0.5)  # let the worker see them all before the normal client starts

        trade = {"account_id": account, "symbol": "AAPL", "side": "buy", "quantity": 1}
        normal: list[tuple[str, int, float]] = []
        next_drip = time.monotonic()
        dripped = 0
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            if time.monotonic() >= next_drip:
                for sock in dripping_headers:
                    _send(sock, header_text[dripped : dripped + 1])
                for sock in dripping_bodies:
                    _send(sock, b" ")
                dripped += 1
                next_drip += 1.0
            for method, path, body in (
                ("GET", "/healthz", None),
                ("POST", "/v1/trades", json.dumps({**trade, "price": "1.5"})),
            ):
                connection = http.client.HTTPConnection(*address, timeout=ALLOWED_DELAY + 3)
                started = time.monotonic()
                try:
                    connection.request(method, path, body, auth)
                    response = connection.getresponse()
                    response.read()
                    normal.append((path, response.status, time.monotonic() - started))
                except (OSError, http.client.HTTPException):
                    normal.append((path, 0, time.monotonic() - started))
                finally:
                    connection.close()
        closed_by_server = 0
        for sock in stalled + dripping_headers + dripping_bodies:
            with contextlib.suppress(BlockingIOError, OSError):
                closed_by_server += sock.recv(4096) != b"" or True
            sock.close()
        alive = server.process.poll() is None
    slowest = max((t for _, _, t in normal), default=None)
    return {
        "threads": WORKERS * THREADS,
        "slow_connections": STALLED + DRIPPING_HEADERS + DRIPPING_BODIES,
        "normal_requests": len(normal),
        "normal_failed": sum(1 for _, s, _ in normal if s not in (200, 201)),
        "normal_slowest_s": round(slowest, 3) if slowest is not None else None,
        "healthz_slowest_s": round(max(t for p, _, t in normal if p == "/healthz"), 3),
        "trade_slowest_s": round(max(t for p, _, t in normal if p != "/healthz"), 3),
        "server_alive": alive,
    }


def test_slow_clients_do_not_delay_anyone(brokerage: Brokerage, tmp_path: Path) -> None:
    figures = hold_threads(brokerage, tmp_path / "serve.log")
    record("stalled and slow clients", **figures)
    assert figures["server_alive"]
    assert figures["normal_requests"] >= 10 and figures["normal_failed"] == 0, figures
    assert figures["normal_slowest_s"] < ALLOWED_DELAY, figures


def test_control_stock_gthread_worker_is_held(brokerage: Brokerage, tmp_path: Path) -> None:
    figures = hold_threads(brokerage, tmp_path / "serve.log", STOCKLEDGER_WORKER_CLASS="gthread")
    record("control: stalled clients, stock gthread worker", **figures)
    assert figures["normal_failed"] > 0 or figures["normal_slowest_s"] >= ALLOWED_DELAY, figures


def _chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_chunked_body_over_the_limit_is_413_and_trades_nothing(
    brokerage: Brokerage, tmp_path: Path
) -> None:
    """A valid trade padded with spaces past the limit, then garbage: cut at the limit, the
    part read was a valid trade and was executed (201). Crossed here: the view's limit
    (64 KiB, answered by the app) and the worker's (the largest body, 512 KiB)."""
    account = brokerage.accounts[0]
    trade = json.dumps(
        {"account_id": account, "symbol": "AAPL", "side": "buy", "quantity": 1, "price": "1.25"}
    ).encode()
    before = _trades(brokerage)
    answers = []
    with serving(brokerage, tmp_path / "serve.log", workers=1, threads=2) as (base, _server):
        host, port = base.removeprefix("http://").split(":")
        for pad in (DEFAULT_BODY_LIMIT, 4 * DEFAULT_BODY_LIMIT, 16 * DEFAULT_BODY_LIMIT):
            body = trade.ljust(pad, b" ") + b"GARBAGE-NOT-JSON{{{{"
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            headers = {
                "Authorization": f"Bearer {brokerage.api_key}",
                "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
            }
            connection.request("POST", "/v1/trades", _chunked(body), headers)
            response = connection.getresponse()
            problem = json.loads(response.read())
            connection.close()
            answers.append((pad, response.status, problem.get("code")))
    assert answers == [(pad, 413, "payload_too_large") for pad, _, _ in answers], answers
    assert _trades(brokerage) == before


def _trades(brokerage: Brokerage) -> int:
    with psycopg.connect(brokerage.url) as conn:
        row = conn.execute("SELECT count(*) FROM trades").fetchone()
    assert row is not None
    return int(row[0])
