"""The benchmark's figures as a table, as JSON, and as a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def table(results: dict[str, Any]) -> str:
    lines = [
        f"stockledger bench — {results['started_at']}, {results['machine']['cpus']} CPUs, "
        f"PostgreSQL {results['server']['server_version']} "
        f"(synchronous_commit={results['server']['synchronous_commit']})",
        "",
        f"{'scenario':<34}{'clients':>8}{'tps':>12}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}",
    ]
    ceiling = {r["clients"]: r["tps"] for r in results["db_ceiling"]}
    for r in results["db_ceiling"]:
        lines.append(_row("db ceiling (pgbench tpcb-like)", r, 1.0))
    for r in results["db_trade"]:
        lines.append(_row("db trade (trade() via pgbench)", r, r["tps"] / ceiling[r["clients"]]))
    web = results.get("http_trade", {"runs": []})
    for r in web["runs"]:
        row = {**r, "tps": r["rps"]}
        lines.append(_row("http trade (POST /trade, wrk)", row, r["rps"] / ceiling[r["clients"]]))
    hot = results["hot_account"]
    lines.append(_row("hot account (one account)", hot, None))
    lines += ["", _best_line(results), ""]
    if web["runs"]:
        lines.append(
            f"http trade: gunicorn {web['workers']} workers x {web['threads']} threads; "
            f"peak RSS of the server processes {_most(web, 'peak_rss_mib'):.0f} MiB; "
            f"wrk used at most {_most(web, 'wrk_cores'):.2f} cores, the server "
            f"{_most(web, 'server_cores'):.2f}; refused (expected, oversells) "
            f"{sum(r['refused'] for r in web['runs']):,}, socket errors "
            f"{sum(r['socket_errors'] for r in web['runs'])}"
        )
    lines += [
        f"batch: {batch['trades_per_second']:,.0f} trades/s "
        f"({batch['batches']} batches of {batch['batch_size']}, every rule per trade)"
        for batch in (results["batch"], results["batch_large"])
    ]
    h = results["holdings"]
    lines += [
        f"holdings flatness over {h['ledger_trades']:,} trades: GET /getHoldings p50 "
        f"{h['http_p50_ms']['big']:.3f} ms ({h['big_account_trades']:,} trades) vs "
        f"{h['http_p50_ms']['small']:.3f} ms ({h['small_account_trades']:,}) "
        f"= ratio {h['http_p50_ms']['ratio']:.2f}",
        f"  its query alone: {h['positions_p50_ms']['big']:.3f} ms vs "
        f"{h['positions_p50_ms']['small']:.3f} ms = ratio {h['positions_ratio']:.2f}",
        f"  GET /v1/accounts/{{id}}/portfolio's query: {h['portfolio_p50_ms']['big']:.3f} ms vs "
        f"{h['portfolio_p50_ms']['small']:.3f} ms = ratio {h['portfolio_ratio']:.2f}",
        f"  the holds view instead: {h['holds_view_p50_ms']['big']:.1f} ms vs "
        f"{h['holds_view_p50_ms']['small']:.3f} ms = ratio {h['holds_view_ratio']:.0f}",
        "verify after the run: "
        + ("all invariants hold" if all(results["verify"].values()) else str(results["verify"])),
    ]
    return "\n".join(lines)


def _best_line(results: dict[str, Any]) -> str:
    """SPEC §5's form of the two throughput ratios: each side at its best client count."""
    ratios, best = results["ratios"], results["ratios"]["best_client_counts"]
    line = (
        f"each side at its best client count (SPEC §5): db trade / ceiling "
        f"{ratios['db_trade_best_over_ceiling_best']:.2f} "
        f"({best['db_trade']} vs {best['db_ceiling']} clients)"
    )
    if "http_trade" in best:
        line += (
            f", http trade / ceiling {ratios['http_trade_best_over_ceiling_best']:.2f} "
            f"({best['http_trade']} vs {best['db_ceiling']} clients)"
        )
    return line


def _most(web: dict[str, Any], figure: str) -> float:
    return max(float(r[figure]) for r in web["runs"])


def _row(name: str, r: dict[str, Any], ratio: float | None) -> str:
    ratio_text = f"{ratio:>8.2f}" if ratio is not None else f"{'':>8}"
    return (
        f"{name:<34}{r['clients']:>8}{r['tps']:>12,.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
        f"{ratio_text}"
    )


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'stockledger[bench]'") from exc
    web_runs = results.get("http_trade", {"runs": []})["runs"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, runs in (
        ("pgbench tpcb-like", results["db_ceiling"]),
        ("trade()", results["db_trade"]),
        ("POST /trade (HTTP)", [{**r, "tps": r["rps"]} for r in web_runs]),
    ):
        left.plot([r["clients"] for r in runs], [r["tps"] for r in runs], marker="o", label=label)
    # SPEC §5's targets, as multiples of the ceiling's best: where each line must reach.
    best_ceiling = max(r["tps"] for r in results["db_ceiling"])
    for factor, label, colour in ((2.0, "trade() target", "C1"), (0.5, "HTTP target", "C2")):
        left.axhline(factor * best_ceiling, linestyle="--", linewidth=1, color=colour)
        left.annotate(
            f"{label}: {factor:g}x the best ceiling",
            (1, factor * best_ceiling),
            textcoords="offset points",
            xytext=(2, 3),
            fontsize=8,
            color=colour,
        )
    left.set_xlabel("clients")
    left.set_ylabel("transactions per second")
    left.set_xscale("log", base=2)
    left.legend(loc="upper left", bbox_to_anchor=(0, 0.93), fontsize=9)
    left.set_title("Throughput against the database's ceiling")
    h = results["holdings"]
    names = ["positions\n(big)", "positions\n(small)", "holds view\n(big)", "holds view\n(small)"]
    values = [
        h["positions_p50_ms"]["big"],
        h["positions_p50_ms"]["small"],
        h["holds_view_p50_ms"]["big"],
        h["holds_view_p50_ms"]["small"],
    ]
    right.bar(names, values)
    right.set_yscale("log")
    right.set_ylabel("p50 ms (log)")
    right.set_title("Holdings read: long vs short history")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
