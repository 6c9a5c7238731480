"""Slow and abusive clients against `stockledger serve` with its default 2 workers x 4 threads:
200 connections opened and left idle, oversized bodies, absurd page sizes. A normal client
keeps being served the whole time, and nothing crashes.

Negative control: gunicorn's stock gthread worker gives each new connection a thread until
its first byte (up to 5 s); the 200 idle connections starve the normal client, and the
harness reports it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from stockledger.config import DEFAULT_BODY_LIMIT
from tests.faults.harness import Brokerage, serving
from tests.faults.report import record

IDLE = 200
SECONDS = 5.0
NORMAL_TIMEOUT = 2.0  # a normal request answered later than this counts as starved


def abuse(brokerage: Brokerage, log: Path, **env: str) -> dict[str, Any]:
    account = brokerage.accounts[0]
    auth = {"Authorization": f"Bearer {brokerage.api_key}", "Content-Type": "application/json"}
    with serving(brokerage, log, workers=2, threads=4, **env) as (base, server):
        address = base.removeprefix("http://")
        host, port = address.split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(IDLE)]
        stop = threading.Event()
        abusive: list[int] = []

        def abuser() -> None:
            # Just over the limit: small enough to be sent whole, so the 413 can be read.
            over = json.dumps({"account_id": account, "pad": "x" * (DEFAULT_BODY_LIMIT + 1024)})
            # Far over: the server answers 413 and closes while it is still being sent.
            huge = json.dumps({"account_id": account, "pad": "x" * (4 * 1024 * 1024)})
            while not stop.is_set():
                for method, path, body in (
                    ("POST", "/v1/trades", over),
                    ("POST", "/v1/trades", huge),
                    ("GET", f"/v1/accounts/{account}/trades?limit=1000000000", None),
                ):
                    connection = http.client.HTTPConnection(address, timeout=5)
                    try:
                        connection.request(method, path, body, auth)
                        response = connection.getresponse()
                        response.read()
                        abusive.append(response.status)
                    except (OSError, http.client.HTTPException):
                        abusive.append(0)  # the server may close on a body it refuses
                    finally:
                        connection.close()

        abusers = [threading.Thread(target=abuser) for _ in range(2)]
        for thread in abusers:
            thread.start()
        normal: list[tuple[int, float]] = []
        deadline = time.monotonic() + SECONDS
        trade = {"account_id": account, "symbol": "AAPL", "side": "buy", "quantity": 1}
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(address, timeout=NORMAL_TIMEOUT)
            started = time.monotonic()
            try:
                connection.request(
                    "POST", "/v1/trades", json.dumps({**trade, "price": "1.5"}), auth
                )
                response = connection.getresponse()
                response.read()
                normal.append((response.status, time.monotonic() - started))
            except (OSError, http.client.HTTPException):
                normal.append((0, time.monotonic() - started))
            finally:
                connection.close()
        stop.set()
        for thread in abusers:
            thread.join(timeout=60)
        closed_by_server = 0
        for sock in idle:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                closed_by_server += sock.recv(1) == b""
            sock.close()
        alive = server.process.poll() is None
    latencies = sorted(t for _, t in normal)
    return {
        "idle_connections": IDLE,
        "idle_closed_by_server": closed_by_server,
        "normal_requests": len(normal),
        "normal_failed": sum(1 for s, _ in normal if s != 201),
        "normal_slowest_s": round(latencies[-1], 3) if latencies else None,
        "abusive_requests": len(abusive),
        "abusive_statuses": sorted(set(abusive)),
        "server_alive": alive,
    }


def test_abusive_clients_do_not_starve_normal_ones(brokerage: Brokerage, tmp_path: Path) -> None:
    figures = abuse(brokerage, tmp_path / "serve.log")
    record("slow and abusive clients", **figures)
    assert figures["server_alive"]
    assert figures["normal_requests"] > 20 and figures["normal_failed"] == 0, figures
    assert figures["normal_slowest_s"] < NORMAL_TIMEOUT
    assert figures["abusive_requests"] > 0
    assert set(figures["abusive_statuses"]) <= {0, 413, 422}, figures["abusive_statuses"]
    assert 422 in figures["abusive_statuses"] and 413 in figures["abusive_statuses"]


def test_control_stock_gthread_worker_is_starved(brokerage: Brokerage, tmp_path: Path) -> None:
    figures = abuse(brokerage, tmp_path / "serve.log", STOCKLEDGER_WORKER_CLASS="gthread")
    record("control: stock gthread worker", **figures)
    assert figures["normal_failed"] > 0
