"""64 sells of one share each, released together over HTTP against a position of 16: exactly
16 execute, 48 are refused, the ledger never goes below zero. Repeated.

Negative control: with the holdings check switched off (the trigger that applies a trade to
its position disabled, as the owner could), the same storm oversells and the check sees it.
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from stockledger.db.pool import connect
from tests.faults.harness import Brokerage, serving
from tests.faults.report import record
from tests.support import without_oversell_checks

SELLERS = 64
POSITION = 16


def oversold_rows(url: str, account: int, symbol: str) -> int:
    """Ledger rows after which the account's running holding of the symbol is below zero."""
    with connect(url) as conn:
        row = conn.execute(
            """
            SELECT count(*) FILTER (WHERE running < 0) FROM (
                SELECT sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END)
                       OVER (ORDER BY seq) AS running
                FROM trades WHERE account_id = %s AND symbol = %s) ledger
            """,
            [account, symbol],
        ).fetchone()
    return int(row[0]) if row else 0


def storm(base: str, brokerage: Brokerage, account: int) -> list[int]:
    """SELLERS connections, each opened first; one barrier releases every sell at once."""
    barrier = threading.Barrier(SELLERS)
    statuses: list[int] = []
    lock = threading.Lock()
    body = json.dumps(
        {"account_id": account, "symbol": "AAPL", "side": "sell", "quantity": 1, "price": "1.5"}
    )
    headers = {
        "Authorization": f"Bearer {brokerage.api_key}",
        "Content-Type": "application/json",
    }

    def sell() -> None:
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
        connection.connect()
        barrier.wait(timeout=30)
        try:
            connection.request("POST", "/v1/trades", body, headers)
            response = connection.getresponse()
            response.read()
            with lock:
                statuses.append(response.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=sell) for _ in range(SELLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def run_storms(brokerage: Brokerage, log: Path, rounds: int) -> dict[str, Any]:
    account = brokerage.accounts[0]
    executed, refused, other = [], 0, 0
    with serving(brokerage, log) as (base, _server), connect(brokerage.url) as conn:
        for _ in range(rounds):
            # Bring the position to exactly POSITION shares (the setup left 20).
            held = conn.execute(
                "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'AAPL'",
                [account],
            ).fetchone()
            missing = POSITION - (held[0] if held else 0)
            side = "buy" if missing > 0 else "sell"
            if missing:
                conn.execute(
                    "SELECT * FROM trade(%s, %s, 'AAPL', %s, %s, 1.5)",
                    [account, brokerage.broker_id, side, abs(missing)],
                )
            statuses = storm(base, brokerage, account)
            executed.append(statuses.count(201))
            refused += statuses.count(409)
            other += len(statuses) - statuses.count(201) - statuses.count(409)
    return {
        "rounds": rounds,
        "sellers": SELLERS,
        "position": POSITION,
        "executed_per_round": sorted(set(executed)),
        "refused": refused,
        "other_statuses": other,
        "oversells": oversold_rows(brokerage.url, account, "AAPL"),
    }


def check(figures: dict[str, Any]) -> None:
    assert figures["oversells"] == 0
    assert figures["executed_per_round"] == [POSITION]
    assert figures["refused"] == figures["rounds"] * (SELLERS - POSITION)
    assert figures["other_statuses"] == 0


def test_oversell_storm(brokerage: Brokerage, tmp_path: Path) -> None:
    figures = run_storms(brokerage, tmp_path / "serve.log", rounds=5)
    record("oversell storm", **figures)
    check(figures)


@pytest.mark.slow
def test_oversell_storm_long(brokerage: Brokerage, tmp_path: Path) -> None:
    figures = run_storms(brokerage, tmp_path / "serve.log", rounds=100)
    record("oversell storm (long)", **figures)
    check(figures)


def test_control_without_the_holdings_check_the_storm_oversells(
    brokerage: Brokerage, tmp_path: Path
) -> None:
    with connect(brokerage.url) as conn:
        without_oversell_checks(conn)
    figures = run_storms(brokerage, tmp_path / "serve.log", rounds=1)
    record("control: storm without the holdings check", **figures)
    assert figures["oversells"] > 0
