"""`stockledger bench --quick`: a smoke test that the benchmark runs end to end and produces
every figure. It asserts figures exist and the books balance, never a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import clean_env, stockledger_command


def test_bench_quick_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [*stockledger_command(), "bench", "--quick", "--json", str(out)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "db ceiling" in result.stdout and "batch:" in result.stdout
    figures = json.loads(out.read_text())
    assert {r["clients"] for r in figures["db_ceiling"]} == {1, 4}
    assert all(r["tps"] > 0 and r["transactions"] > 0 for r in figures["db_trade"])
    assert all(r["failed"] == 0 for r in figures["db_trade"] + [figures["hot_account"]])
    assert figures["holdings"]["http_p50_ms"]["big"] > 0
    for batch in (figures["batch"], figures["batch_large"]):
        assert batch["trades"] == batch["batches"] * batch["batch_size"] > 0
    assert figures["batch_large"]["batch_size"] > figures["batch"]["batch_size"]
    assert figures["holdings"]["big_account_trades"] > figures["holdings"]["small_account_trades"]
    assert set(figures["ratios"]) >= {
        "db_trade_over_ceiling",
        "holdings_big_over_small",
        "batch_trades_per_second",
        "batch_large_trades_per_second",
        "db_trade_best_over_ceiling_best",
    }
    best_ceiling = max(r["tps"] for r in figures["db_ceiling"])
    assert figures["ratios"]["db_trade_best_over_ceiling_best"] == pytest.approx(
        max(r["tps"] for r in figures["db_trade"]) / best_ceiling
    )
    best = figures["ratios"]["best_client_counts"]
    assert best["db_ceiling"] == max(figures["db_ceiling"], key=lambda r: r["tps"])["clients"]
    assert "each side at its best client count" in result.stdout
    assert all(figures["verify"].values()), figures["verify"]
    # wrk comes from scripts/install-tools: CI must run the HTTP scenario, a laptop may lack it.
    if shutil.which("wrk") is None and os.environ.get("CI") != "true":
        assert "wrk is not installed" in result.stderr
        return
    http_runs = figures["http_trade"]["runs"]
    assert [r["clients"] for r in http_runs] == [1, 4]
    assert all(r["rps"] > 0 and r["executed"] > 0 and r["socket_errors"] == 0 for r in http_runs)
    assert all(r["peak_rss_mib"] > 0 and r["server_processes"] >= 3 for r in http_runs)
    assert set(figures["ratios"]["http_trade_over_ceiling"]) == {"1", "4"}
    assert figures["ratios"]["http_trade_best_over_ceiling_best"] == pytest.approx(
        max(r["rps"] for r in http_runs) / best_ceiling
    )
    assert best["http_trade"] == max(http_runs, key=lambda r: r["rps"])["clients"]
