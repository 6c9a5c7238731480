"""gunicorn workers killed -9 mid-request while brokers trade with idempotency keys: the master
starts new workers, the clients retry what they did not hear back, and every acknowledged trade
is in the ledger exactly once.

Negative control: the same kills with retries that carry no key write some trades twice (a
worker killed after its commit and before its reply), and the audit reports them.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from stockledger.serve.processes import process_tree
from tests.faults.harness import (
    Audit,
    Brokerage,
    Outcomes,
    TradingClients,
    assert_books_conserved,
    audit,
    serving,
)
from tests.faults.report import record


def worker_crashes(
    tmp_path: Path, brokerage: Brokerage, kills: int, clients: int, use_keys: bool = True
) -> tuple[Audit, Outcomes, int]:
    rng = random.Random(kills)
    killed = 0
    with serving(brokerage, tmp_path / "serve.log") as (base, server):
        traders = TradingClients(base, brokerage, clients, use_keys=use_keys)
        with traders:
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 0.8))
                workers = [p for p in process_tree(server.process.pid) if p != server.process.pid]
                if workers:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    killed += 1
            time.sleep(1.5)  # the master has replaced them; trade on a whole system again
        assert server.process.poll() is None, "the gunicorn master died"
        result = audit(brokerage, traders.outcomes)
    return result, traders.outcomes, killed


def check_clean(name: str, result: Audit, outcomes: Outcomes, killed: int) -> None:
    record(name, kills=killed, audit=result, outcomes=outcomes)
    assert killed > 0 and result.acknowledged > 0
    assert outcomes.retries > 0, "no request was interrupted: the kills did not land"
    assert not outcomes.unknown and not outcomes.server_errors
    assert result.lost == [] and result.duplicated == [], (result.lost[:5], result.duplicated[:5])
    assert result.refused_but_written == [] and result.wrong_trade == []
    assert result.verify_ok, result.verify_output
    assert_books_conserved(result)


def test_worker_crashes_lose_and_duplicate_nothing(tmp_path: Path, brokerage: Brokerage) -> None:
    result, outcomes, killed = worker_crashes(tmp_path, brokerage, kills=15, clients=16)
    check_clean("app crash", result, outcomes, killed)


@pytest.mark.slow
def test_worker_crashes_long(tmp_path: Path, brokerage: Brokerage) -> None:
    result, outcomes, killed = worker_crashes(tmp_path, brokerage, kills=100, clients=32)
    check_clean("app crash (long)", result, outcomes, killed)


def test_control_retries_without_keys_duplicate(tmp_path: Path, brokerage: Brokerage) -> None:
    result, outcomes, killed = worker_crashes(
        tmp_path, brokerage, kills=15, clients=16, use_keys=False
    )
    record(
        "control: app crash, retries without keys", kills=killed, audit=result, outcomes=outcomes
    )
    assert result.duplicated, "the audit did not see the duplicates of key-less retries"
