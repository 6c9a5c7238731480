"""PostgreSQL stopped under a running API: requests fail fast with 503 and Retry-After,
/readyz fails, /healthz passes; PostgreSQL started again: the same server process recovers.

Negative control: a server whose pool waits longer for a connection than the 2 s budget (as
this one once did, 5 s) is reported as hanging.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import Brokerage, KillablePostgres, serving
from tests.faults.report import record

BUDGET_SECONDS = 2.0


def call(
    base: str, method: str, path: str, token: str | None = None, trade: dict[str, Any] | None = None
) -> tuple[int, Any, float]:
    """status, body (with its Retry-After), seconds taken; a fresh connection each time."""
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    body = None
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    try:
        if trade is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(trade)
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        payload = json.loads(response.read() or b"{}")
        payload["_retry_after"] = response.getheader("Retry-After")
        return response.status, payload, time.monotonic() - started
    finally:
        connection.close()


def outage(
    pg: KillablePostgres, brokerage: Brokerage, log: Path, probes: int = 10, **env: str
) -> dict[str, Any]:
    trade = {"account_id": brokerage.accounts[0], "symbol": "AAPL", "side": "buy"}
    trade.update(quantity=1, price="100.5")
    key = brokerage.api_key
    figures: dict[str, Any] = {}
    with serving(brokerage, log, workers=2, threads=8, **env) as (base, server):
        # Every worker's pool holds live connections when the database goes away.
        for _ in range(8):
            assert call(base, "POST", "/v1/trades", key, trade)[0] == 201
        pg.stop()
        during = [call(base, "POST", "/v1/trades", key, trade) for _ in range(probes)]
        account = f"/v1/accounts/{brokerage.accounts[0]}"
        during += [call(base, "GET", account, key) for _ in range(probes // 2)]
        readyz = call(base, "GET", "/readyz")
        healthz = call(base, "GET", "/healthz")
        figures.update(
            statuses_during=sorted({s for s, _, _ in during}),
            codes_during=sorted({b.get("code") for _, b, _ in during}),
            retry_after=sorted({str(b["_retry_after"]) for _, b, _ in during}),
            slowest_during_s=max(t for _, _, t in [*during, readyz]),
            readyz_during=readyz[0],
            healthz_during=healthz[0],
        )
        pg.restart()
        started = time.monotonic()
        recovered = None
        while time.monotonic() - started < 30:
            if call(base, "POST", "/v1/trades", key, trade)[0] == 201:
                recovered = time.monotonic() - started
                break
            time.sleep(0.1)
        figures.update(
            recovered_after_s=recovered,
            readyz_after=call(base, "GET", "/readyz")[0],
            same_server_process=server.process.poll() is None,
        )
    return figures


def test_outage_answers_503_fast_and_recovers(
    pg: KillablePostgres, brokerage: Brokerage, tmp_path: Path
) -> None:
    figures = outage(pg, brokerage, tmp_path / "serve.log")
    record("db outage", **figures)
    assert figures["statuses_during"] == [503]
    assert figures["codes_during"] == ["service_unavailable"]
    assert figures["retry_after"] == ["1"]
    assert figures["slowest_during_s"] < BUDGET_SECONDS
    assert figures["readyz_during"] == 503 and figures["healthz_during"] == 200
    assert figures["recovered_after_s"] is not None, "the API did not recover"
    assert figures["readyz_after"] == 200 and figures["same_server_process"]


def test_control_a_slow_pool_is_reported_as_hanging(
    pg: KillablePostgres, brokerage: Brokerage, tmp_path: Path
) -> None:
    figures = outage(
        pg, brokerage, tmp_path / "serve.log", probes=2, STOCKLEDGER_POOL_TIMEOUT_SECONDS="5"
    )
    record("control: db outage, 5 s pool timeout", **figures)
    assert figures["slowest_during_s"] >= BUDGET_SECONDS
