"""Running the pgbench that ships with the embedded server, and reading its report."""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from stockledger.db.binaries import pg_binary

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class PgbenchRun:
    clients: int
    tps: float
    transactions: int
    failed: int
    p50_ms: float
    p99_ms: float


def script(name: str) -> Path:
    """A pgbench script shipped in stockledger/sql/pgbench/."""
    return Path(str(resources.files("stockledger").joinpath("sql", "pgbench", name)))


def initialize(url: str, scale: int) -> None:
    _run([str(pg_binary("pgbench")), "-i", "-q", "-s", str(scale), url])


def run(
    url: str,
    clients: int,
    seconds: int,
    *,
    builtin: str | None = None,
    scripts: dict[str, int] | None = None,
    variables: dict[str, int] | None = None,
) -> PgbenchRun:
    """pgbench for a fixed time; latency percentiles from its per-transaction log."""
    with tempfile.TemporaryDirectory(prefix="stockledger-pgbench-") as tmp:
        command = [
            str(pg_binary("pgbench")),
            "-n",  # no vacuum of pgbench's own tables (they may not exist)
            "-c", str(clients),
            "-j", str(min(clients, 2)),
            "-T", str(seconds),
            "-l", "--log-prefix", str(Path(tmp) / "tx"),
        ]  # fmt: skip
        if builtin:
            command += ["-b", builtin]
        for name, weight in (scripts or {}).items():
            command += ["-f", f"{script(name)}@{weight}"]
        for name, value in (variables or {}).items():
            command += ["-D", f"{name}={value}"]
        output = _run([*command, url])
        latencies = _latencies_ms(Path(tmp))
    tps = _TPS.search(output)
    done = _DONE.search(output)
    failed = _FAILED.search(output)
    if tps is None or done is None or not latencies:
        raise RuntimeError(f"pgbench printed no result:\n{output}")
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return PgbenchRun(
        clients=clients,
        tps=float(tps.group(1)),
        transactions=int(done.group(1)),
        failed=int(failed.group(1)) if failed else 0,
        p50_ms=cuts[49],
        p99_ms=cuts[98],
    )


def _latencies_ms(directory: Path) -> list[float]:
    # Each line: client_id transaction_no latency_us script_no epoch_s epoch_us
    latencies = []
    for log in directory.glob("tx*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]) / 1000)
    return latencies


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr
