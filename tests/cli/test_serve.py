"""`serve` and `demo` as real processes with the embedded PostgreSQL and a data directory."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stockledger.serve.processes import free_port
from tests.support import Served, clean_env, http, http_text, run_cli


def test_trades_persist_across_serve_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_args = ["serve", "--data-dir", str(data), "--port", str(port), "--workers", "1"]

    server = Served(serve_args, env, tmp_path / "first.log")
    try:
        server.wait_ready(base)
        # One-shot commands attach to the running embedded server (and leave it running).
        cli = ["--data-dir", str(data)]
        client = run_cli(*cli, "client", "add", "--name", "P", "--tax-id", "P1", "--json", env=env)
        broker = run_cli(
            *cli,
            "broker",
            "add",
            "--name",
            "B",
            "--tax-id",
            "B1",
            "--license",
            "L1",
            "--json",
            env=env,
        )
        run_cli(*cli, "stock", "add", "AAPL", "--name", "Apple", env=env)
        account = run_cli(
            *cli,
            "account",
            "open",
            "--client",
            str(client["client_id"]),
            "--broker",
            str(broker["broker_id"]),
            "--json",
            env=env,
        )
        body = {
            "account_id": account["account_id"],
            "broker_id": broker["broker_id"],
            "symbol": "AAPL",
            "side": "buy",
            "quantity": 10,
            "price": "187.25",
        }
        key = broker["api_key"]
        status, first = http("POST", f"{base}/trade", body, key)
        assert status == 201, first
    finally:
        assert server.stop() == 0, server.output()
    # serve started the embedded server, so serve stopped it.
    assert not (data / "pgdata" / "postmaster.pid").exists()

    server = Served(serve_args, env, tmp_path / "second.log")
    try:
        server.wait_ready(base)
        status, holdings = http(
            "GET", f"{base}/getHoldings?account_id={account['account_id']}", token=key
        )
        assert status == 200
        assert holdings["holdings"] == [{"symbol": "AAPL", "quantity": 10}]
        status, second = http("POST", f"{base}/trade", {**body, "side": "sell", "quantity": 4}, key)
        assert status == 201
        assert second["trade"]["seq"] == 2 and second["position"]["quantity"] == 6
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="the demo prints curl commands; curl is not installed"
)
def test_demo_prints_curl_commands_that_work(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["demo", "--port", str(port), "--data-dir", str(tmp_path / "demo")]
    # The restart turns the seed's dialect on (SPEC §2.7): serve says so, the demo prints its
    # requests, and a real server answers them from loopback.
    for attempt, flags in (("first start", []), ("restart", ["--seed-dialect"])):
        demo = Served(args + flags, clean_env(), tmp_path / f"{attempt}.log")
        try:
            demo.wait_ready(base)
            output = demo.output()
            assert ("created" if attempt == "first start" else "already present") in output
            assert ("the seed's dialect is on" in output) == bool(flags), output
            assert (f"{base}/getOwner?aid=" in output) == bool(flags), output
            commands = [line for line in output.splitlines() if line.startswith("curl ")]
            assert len(commands) >= 4, output
            assert all("$" not in c for c in commands), "commands must be complete, no variables"
            for command in commands:
                result = subprocess.run(
                    ["bash", "-c", command], capture_output=True, text=True, timeout=30
                )
                assert result.returncode == 0, (command, result.stdout, result.stderr)
                assert '"code"' not in result.stdout, (command, result.stdout)
                if "aid=" in command:  # the seed's sentinels are 200s too
                    assert "-1" not in result.stdout and "fail" not in result.stdout, result.stdout
                if "http_code" in command:  # a refusal, which says what it prints
                    expected = re.search(r"# prints ([0-9]{3})$", command)
                    assert expected, command
                    assert result.stdout.strip() == expected.group(1), (command, result.stdout)
        finally:
            assert demo.stop() == 0, demo.output()


def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--workers", "2"]
    server = Served(args, clean_env(), tmp_path / "serve.log")
    try:
        server.wait_ready(base)
        for _ in range(40):
            assert http("GET", f"{base}/healthz")[0] == 200
        # Whichever worker answers, it reports the samples of both.
        for _ in range(6):
            text = http_text(f"{base}/metrics")
            line = 'stockledger_http_requests_total{method="GET",route="/healthz",status="200"}'
            counts = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
            assert counts and counts[0] >= 40, text[:2000]
            assert "stockledger_db_pool_connections" in text
    finally:
        assert server.stop() == 0, server.output()
