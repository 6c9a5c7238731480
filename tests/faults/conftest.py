"""Fault tests: each starts its own PostgreSQL (it is killed, stopped and restarted) and its
own `stockledger serve`. CI runs the bounded versions; `pytest -m slow tests/faults` runs the
long ones (docs/reliability.md has their figures)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Brokerage, KillablePostgres, make_brokerage


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[KillablePostgres]:
    server = KillablePostgres(tmp_path / "pg")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def brokerage(pg: KillablePostgres) -> Brokerage:
    return make_brokerage(pg, accounts=8)
