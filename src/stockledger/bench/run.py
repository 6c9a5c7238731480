"""The whole benchmark: start the server, load, run each scenario, compute the ratios."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stockledger.audit.verify import verify
from stockledger.bench import data, scenarios, web
from stockledger.bench.scenarios import Plan
from stockledger.bench.servers import LEDGER_DB, bench_server
from stockledger.db.pool import connect


def machine() -> dict[str, Any]:
    memory_kib = 0
    try:
        with open("/proc/meminfo") as meminfo:
            memory_kib = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def run(database_url: str | None, plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": plan.__dict__,
        "machine": machine(),
    }
    with bench_server(database_url) as server:
        results["server"] = {"kind": server.description, **server.settings()}
        progress("db ceiling: pgbench tpcb-like")
        results["db_ceiling"] = scenarios.db_ceiling(server, plan)
        url = server.ledger_database()
        try:
            with connect(url) as conn:
                data.load_accounts(conn, plan.accounts, plan.brokers)
            progress("db trade: pgbench calling trade()")
            results["db_trade"] = scenarios.db_trade(url, plan)
            if web.wrk_path() is None:
                progress("http trade: SKIPPED, wrk is not installed (scripts/install-tools)")
            else:
                progress("http trade: wrk against stockledger serve")
                results["http_trade"] = web.http_trade(
                    url, plan.clients, plan.seconds, plan.accounts, plan.brokers
                )
            progress("hot account")
            results["hot_account"] = scenarios.hot_account(url, plan)
            progress("batch: trade_batch()")
            results["batch"] = scenarios.batch(url, plan, plan.batches, plan.batch_size)
            results["batch_large"] = scenarios.batch(
                url, plan, plan.large_batches, plan.large_batch_size
            )
            progress("holdings flatness: loading the long histories")
            results["holdings"] = scenarios.holdings_flatness(url, plan)
            progress("holdings flatness: GET /getHoldings")
            results["holdings"]["http_p50_ms"] = web.holdings_over_http(
                url, *scenarios.holdings_accounts(plan), plan.samples
            )
            with connect(url) as conn:
                results["verify"] = {c.name: c.holds for c in verify(conn)}
        finally:
            server.drop_database(LEDGER_DB)
    results["ratios"] = ratios(results)
    return results


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    ceiling = {r["clients"]: r["tps"] for r in results["db_ceiling"]}
    figures: dict[str, Any] = {
        "db_trade_over_ceiling": {
            str(r["clients"]): r["tps"] / ceiling[r["clients"]] for r in results["db_trade"]
        },
        "holdings_big_over_small": results["holdings"]["http_p50_ms"]["ratio"],
        "holdings_query_big_over_small": results["holdings"]["positions_ratio"],
        "portfolio_query_big_over_small": results["holdings"]["portfolio_ratio"],
        "holds_view_big_over_small": results["holdings"]["holds_view_ratio"],
        "batch_trades_per_second": results["batch"]["trades_per_second"],
        "batch_large_trades_per_second": results["batch_large"]["trades_per_second"],
    }
    # SPEC §5 compares "each side at its best client count": the best throughput over the
    # client counts against the ceiling's best, wherever each falls.
    best_ceiling = max(results["db_ceiling"], key=lambda r: r["tps"])
    best_trade = max(results["db_trade"], key=lambda r: r["tps"])
    figures["db_trade_best_over_ceiling_best"] = best_trade["tps"] / best_ceiling["tps"]
    figures["best_client_counts"] = {"db_ceiling": best_ceiling["clients"]}
    figures["best_client_counts"]["db_trade"] = best_trade["clients"]
    if "http_trade" in results:
        runs = results["http_trade"]["runs"]
        best_web = max(runs, key=lambda r: r["rps"])
        figures["http_trade_over_ceiling"] = {
            str(r["clients"]): r["rps"] / ceiling[r["clients"]] for r in runs
        }
        figures["http_trade_best_over_ceiling_best"] = best_web["rps"] / best_ceiling["tps"]
        figures["best_client_counts"]["http_trade"] = best_web["clients"]
    return figures
