"""HTTP trade: POST /trade through `stockledger serve`, driven by wrk (C, with a Lua script).

wrk is the load generator because it costs the machine little: its CPU time is measured in the
same run and reported as the cores it used, which shows it is not what limits the figure.
The server's processes are sampled for their resident memory while the load runs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from stockledger.bench.scenarios import count_rows, p50_ms
from stockledger.config import ServeOptions
from stockledger.db.pool import connect
from stockledger.registry.keys import issue_key
from stockledger.serve.processes import free_port, process_tree

READY_TIMEOUT = 30.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_binary() -> str:
    found = wrk_path()
    if found is None:
        raise RuntimeError(
            "the HTTP scenario needs wrk (Debian package wrk; scripts/install-tools installs it)"
        )
    return found


@contextlib.contextmanager
def served(url: str, options: ServeOptions) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`stockledger serve` on a free loopback port against the benchmark's database."""
    options = replace(options, port=free_port(), access_log=False)
    env = {**os.environ, "DATABASE_URL": url, "STOCKLEDGER_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "stockledger", "serve", *options.flags()]
    # The server's own notes go to a file, shown only if it fails to start.
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://{options.host}:{options.port}"
        try:
            try:
                _wait_ready(base, process)
            except RuntimeError as exc:
                log.seek(0)
                raise RuntimeError(f"{exc}:\n{log.read()}") from None
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"stockledger serve exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("stockledger serve did not become ready")


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class MemorySampler:
    """Peak of the summed RSS of a process tree, sampled every 100 ms in a thread."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_kib = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = process_tree(self.root)
            self.processes = max(self.processes, len(pids))
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(p) for p in pids))
            self._stop.wait(0.1)


def run_wrk(base: str, lua_args: list[str], connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run; its figures, plus the CPU it used (cores = CPU seconds / wall seconds)."""
    script = Path(str(resources.files("stockledger.bench").joinpath("wrk", "trade.lua")))
    command = [wrk_binary(), "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(script), base, "--", *lua_args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.strip()}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures["wrk_cores"] = cpu / wall
    return figures


def http_trade(
    url: str, clients: tuple[int, ...], seconds: int, accounts: int, brokers: int
) -> dict[str, Any]:
    """POST /trade at each client count, authenticated with broker 1's key, a fresh
    Idempotency-Key per request; throughput, p50, p99, refusals and the server's memory."""
    options = ServeOptions(workers=2, threads=max(4, max(clients) // 2))
    with connect(url) as conn:
        key = issue_key(conn, 1)["api_key"]
    last_own = accounts - (accounts - 1) % brokers  # broker 1 owns 1, 1+brokers, ...
    lua_args = [key, "1", str(last_own), str(brokers)]
    runs = []
    with served(url, options) as (base, process):
        run_wrk(base, lua_args, max(clients), max(1, seconds // 5))  # warm the workers
        for connections in clients:
            with connect(url) as conn:
                before = count_rows(conn, "SELECT count(*) FROM trades")
            server_cpu_before = sum(_cpu_seconds(p) for p in process_tree(process.pid))
            with MemorySampler(process.pid) as memory:
                figures = run_wrk(base, lua_args, connections, seconds)
            server_cpu = sum(_cpu_seconds(p) for p in process_tree(process.pid))
            with connect(url) as conn:
                executed = count_rows(conn, "SELECT count(*) FROM trades") - before
            duration = figures["duration_us"] / 1e6
            runs.append(
                {
                    "clients": connections,
                    "rps": figures["requests"] / duration,
                    "requests": figures["requests"],
                    "executed": executed,
                    "refused": figures["non_2xx"],
                    "socket_errors": sum(
                        figures[k]
                        for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
                    ),
                    "p50_ms": figures["p50_us"] / 1000,
                    "p99_ms": figures["p99_us"] / 1000,
                    "wrk_cores": figures["wrk_cores"],
                    "server_cores": (server_cpu - server_cpu_before) / duration,
                    "peak_rss_mib": memory.peak_kib / 1024,
                    "server_processes": memory.processes,
                }
            )
    return {"workers": options.workers, "threads": options.threads, "runs": runs}


def holdings_over_http(url: str, big: int, small: int, samples: int) -> dict[str, Any]:
    """p50 of GET /getHoldings through `stockledger serve` (one keep-alive connection) for an
    account with a long history and one with a short history, both broker 1's."""
    with connect(url) as conn:
        key = issue_key(conn, 1)["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    with served(url, ServeOptions(workers=1, threads=1)) as (base, _process):
        client = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        try:

            def get(account: int) -> None:
                client.request("GET", f"/getHoldings?account_id={account}", headers=headers)
                response = client.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET /getHoldings answered {response.status}")

            big_ms = p50_ms(lambda: get(big), samples)
            small_ms = p50_ms(lambda: get(small), samples)
        finally:
            client.close()
    return {"big": big_ms, "small": small_ms, "ratio": big_ms / small_ms}
