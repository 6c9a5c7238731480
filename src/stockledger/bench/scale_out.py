"""trade() through a Citus coordinator against the same workload on one PostgreSQL (issue 14).

Both databases are migrated and loaded alike (bench accounts, each holding every symbol), then
pgbench calls trade() (buys on random accounts, stockledger/sql/pgbench/buy.sql) for a fixed
time, on each in turn, for each client count and round; the report gives each side's best
round and their ratio. Run by scripts/citus-bench, which starts the cluster and makes the two
databases on the same servers (same binaries, same settings, same machine, same run).

    python -m stockledger.bench.scale_out --cluster URL --single URL [--clients 1,4,16]
        [--seconds 10] [--rounds 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stockledger.bench import data, pgbench
from stockledger.db import migrations
from stockledger.db.pool import connect

ACCOUNTS = 1000
BROKERS = 10


def prepare(url: str) -> None:
    with connect(url) as conn:
        migrations.migrate(conn)
        data.load_accounts(conn, ACCOUNTS, BROKERS)


def trade_throughput(url: str, clients: int, seconds: int) -> dict[str, Any]:
    run = pgbench.run(
        url,
        clients,
        seconds,
        scripts={"buy.sql": 1},
        variables={"accounts": ACCOUNTS, "brokers": BROKERS},
    )
    return asdict(run)


def compare(
    cluster: str, single: str, clients: list[int], seconds: int, rounds: int
) -> list[dict[str, Any]]:
    """Per client count: every round of each side (alternating, so that the machine's drift
    falls on both), the best of each, and cluster / single."""
    rows = []
    for count in clients:
        runs: dict[str, list[dict[str, Any]]] = {"single": [], "cluster": []}
        for _ in range(rounds):
            runs["single"].append(trade_throughput(single, count, seconds))
            runs["cluster"].append(trade_throughput(cluster, count, seconds))
        best = {side: max(r["tps"] for r in side_runs) for side, side_runs in runs.items()}
        rows.append(
            {
                "clients": count,
                "single_tps": best["single"],
                "cluster_tps": best["cluster"],
                "ratio": best["cluster"] / best["single"],
                "runs": runs,
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | one PostgreSQL, trades/s | coordinator + 2 workers, trades/s | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['clients']} | {row['single_tps']:,.0f} | {row['cluster_tps']:,.0f} "
            f"| {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="the coordinator's database URL")
    parser.add_argument("--single", required=True, help="a database on one PostgreSQL")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for url in (args.single, args.cluster):
        prepare(url)
    clients = [int(c) for c in args.clients.split(",")]
    rows = compare(args.cluster, args.single, clients, args.seconds, args.rounds)
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
