""".ci/run fails when the install or the tests fail, whatever ruff and mypy say afterwards.

The script runs in a scratch copy of the repository layout with every program it calls
replaced by a stub that records its call and exits as the test says, so nothing is installed.
The control runs the script's old form (`pip install … && pytest` under `set -e`, where a
failure on the left of `&&` does not stop the script) and shows the test would have caught it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
OLD_TEST_COMMAND = "pip install -e '.[test]' && pytest\n"
NEW_TEST_COMMAND = "pip install -e '.[test]'\npytest\n"


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f'#!/usr/bin/env bash\necho {name} "$@" >> "$CALLS"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_ci(tmp_path: Path, script: str, failing: set[str]) -> tuple[int, list[str]]:
    root = tmp_path / "clone"
    (root / ".ci").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / ".ci" / "run").write_text(script)
    for helper in (REPOSITORY / "scripts").iterdir():
        status = 1 if helper.name in failing else 0
        (root / "scripts" / helper.name).write_text(
            f'echo {helper.name} >> "$CALLS"\nexit {status}\n'
        )
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    venv_bin = tmp_path / "venv-bin"
    venv_bin.mkdir()
    # python3 -m venv .venv makes an activate script that puts the venv's stubs first.
    _stub(
        stubs,
        "python3",
        f"mkdir -p .venv/bin && echo 'export PATH=\"{venv_bin}:$PATH\"' > .venv/bin/activate",
    )
    for name in ("python", "pip", "pytest", "ruff", "mypy"):
        _stub(venv_bin, name, "exit 1" if name in failing else "exit 0")
    calls = tmp_path / "calls"
    calls.touch()
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(root / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    return done.returncode, calls.read_text().splitlines()


@pytest.fixture
def ci_script() -> str:
    return (REPOSITORY / ".ci" / "run").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_failed_install_fails_ci(tmp_path: Path, ci_script: str) -> None:
    status, calls = _run_ci(tmp_path, ci_script, failing={"pip"})
    assert status != 0, calls
    assert not any(call.startswith(("ruff", "mypy")) for call in calls), calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_failing_tests_fail_ci(tmp_path: Path, ci_script: str) -> None:
    status, calls = _run_ci(tmp_path, ci_script, failing={"pytest"})
    assert status != 0, calls
    assert any(call.startswith("pytest") for call in calls), calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_postgres15_that_cannot_be_set_up_fails_ci(tmp_path: Path, ci_script: str) -> None:
    """The second run must not quietly fall back to the embedded server."""
    status, calls = _run_ci(tmp_path, ci_script, failing={"postgres15"})
    assert status != 0, calls
    assert sum(call.startswith("pytest") for call in calls) == 1, calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_passing_run_passes_and_runs_every_check(tmp_path: Path, ci_script: str) -> None:
    status, calls = _run_ci(tmp_path, ci_script, failing=set())
    assert status == 0, calls
    for program in ("pytest", "ruff", "mypy", "postgres15", "citus-cluster"):
        assert any(call.startswith(program) for call in calls), (program, calls)
    assert sum(call.startswith("pytest") for call in calls) == 3, calls
    assert any(call.startswith("pytest -m citus") for call in calls), calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_control_the_old_and_list_let_a_failed_install_pass(tmp_path: Path, ci_script: str) -> None:
    """The form this replaced: the same harness sees it exit 0 with pip failing."""
    assert NEW_TEST_COMMAND in ci_script
    old = ci_script.replace(NEW_TEST_COMMAND, OLD_TEST_COMMAND)
    status, calls = _run_ci(tmp_path, old, failing={"pip"})
    assert status == 0, calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_control_a_substitution_in_the_command_line_hides_the_failure(
    tmp_path: Path, ci_script: str
) -> None:
    """`VAR="$(failing)" pytest` runs pytest anyway: the harness sees that form pass."""
    separate = 'postgres15_url="$(bash scripts/postgres15)"\nTEST_DATABASE_URL="$postgres15_url"'
    assert separate in ci_script
    inline = ci_script.replace(separate, 'TEST_DATABASE_URL="$(bash scripts/postgres15)"')
    status, calls = _run_ci(tmp_path, inline, failing={"postgres15"})
    assert status == 0, calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_citus_build_that_fails_fails_ci(tmp_path: Path, ci_script: str) -> None:
    """The distributed tier must not be skipped quietly when Citus cannot be built."""
    status, calls = _run_ci(tmp_path, ci_script, failing={"citus-cluster"})
    assert status != 0, calls
    assert not any(call.startswith("pytest -m citus") for call in calls), calls
