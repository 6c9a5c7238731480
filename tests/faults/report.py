"""Fault-test figures: printed, and appended as JSON lines to $STOCKLEDGER_FAULT_REPORT when set
(docs/reliability.md is written from that file)."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.faults.harness import Audit, Outcomes


def record(
    name: str, audit: Audit | None = None, outcomes: Outcomes | None = None, **figures: Any
) -> None:
    line: dict[str, Any] = {"test": name, **figures}
    if audit is not None:
        line.update(
            acknowledged=audit.acknowledged,
            lost=len(audit.lost),
            duplicated=len(audit.duplicated),
            refused_but_written=len(audit.refused_but_written),
            verify_ok=audit.verify_ok,
            movements_acknowledged=audit.movements_acknowledged,
            movements_lost=len(audit.movements_lost),
            movements_duplicated=len(audit.movements_duplicated),
            overdrafts=audit.overdrafts,
            conservation=audit.conservation,
        )
    if outcomes is not None:
        line.update(
            attempts=outcomes.attempts,
            retries=outcomes.retries,
            refused=len(outcomes.refused),
            unknown=len(outcomes.unknown),
            server_errors=len(outcomes.server_errors),
        )
    print(json.dumps(line))
    path = os.environ.get("STOCKLEDGER_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")
