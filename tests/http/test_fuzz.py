"""Fuzzing: schemathesis generates requests from the served /openapi.json, valid and invalid.

Every answer must be no 5xx, have a documented status and content type, and conform to the
documented schema; requests that violate the schema must be refused (4xx). Brokers' routes are
called with broker A's key, administration with the admin token.
STOCKLEDGER_FUZZ_EXAMPLES sets the examples per operation and mode (default 25).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stockledger.http.routes import seed as seed_routes
from tests.support import ADMIN_TOKEN, World

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

EXAMPLES = int(os.environ.get("STOCKLEDGER_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def fuzz(app: Flask, token_for: Any, mode: GenerationMode) -> Counter[int]:
    """Run every operation of the served document; how many answers of each status."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    statuses: Counter[int] = Counter()
    checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation the document describes wrongly
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            headers = {"Authorization": f"Bearer {token_for(case.operation)}"}
            response = case.call_and_validate(headers=headers, checks=checks)
            statuses[response.status_code] += 1

        try:
            run()
        except Unsatisfiable:
            # Nothing to make invalid: an operation without parameters or body (/healthz).
            assert mode == GenerationMode.NEGATIVE
    return statuses


def token_chooser(world: World) -> Any:
    def token_for(operation: Any) -> str:
        tags = operation.definition.raw.get("tags", [])
        return ADMIN_TOKEN if "administration" in tags else world.key_a

    return token_for


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_served_document_holds_under_fuzzing(
    app: Flask, world: World, mode: GenerationMode, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = fuzz(app, token_chooser(world), mode)
    with capsys.disabled():
        print(f"\nschemathesis {mode.value}: {statuses.total()} requests, {dict(statuses)}")
    assert statuses.total() >= 20 * min(EXAMPLES, 5)
    assert not any(status >= 500 for status in statuses)  # checked per call too


@pytest.mark.parametrize(
    ("flaw", "caught_by"),
    [
        ("answers 500", "ServerError"),
        ("answers off-schema", "JsonSchemaError"),
    ],
)
def test_fuzzing_catches_a_flawed_route(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch, flaw: str, caught_by: str
) -> None:
    """The control: GET /getHoldings made to fail in each way must fail the fuzz run."""

    def flawed(*_args: Any) -> dict[str, Any]:
        if flaw == "answers 500":
            raise RuntimeError("a bug")
        return {"account_id": "one", "holdings": None}

    monkeypatch.setattr(seed_routes, "holdings", flawed)
    with pytest.raises((AssertionError, BaseExceptionGroup)) as caught:
        fuzz(app, token_chooser(world), GenerationMode.POSITIVE)
    assert caught_by in failure_names(caught.value)


def failure_names(exc: BaseException) -> set[str]:
    """The class names of a failure and, for a group of failures, of each member."""
    names = {type(exc).__name__}
    for member in getattr(exc, "exceptions", ()):
        names |= failure_names(member)
    return names


CONTROL_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["Cc", "L", "N", "Zs"]), min_size=1
).filter(lambda text: any(ord(c) < 0x20 or ord(c) == 0x7F for c in text))


@settings(max_examples=EXAMPLES * 4, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(text=CONTROL_TEXT, field=st.sampled_from(["client", "broker", "stock", "email"]))
def test_text_fields_with_control_characters_are_refused(
    client: FlaskClient, text: str, field: str
) -> None:
    """Every text field of administration, with control characters (NUL among them, which
    PostgreSQL text cannot hold at all): 422, never a 5xx, nothing created."""
    path, body = {
        "client": ("/v1/clients", {"name": text, "tax_id": "CTRL1"}),
        "broker": ("/v1/brokers", {"name": text, "tax_id": "CTRL2", "license_no": "CTRL-2"}),
        "stock": ("/v1/stocks", {"symbol": "CTRL", "name": text}),
        "email": ("/v1/clients", {"name": "Ok", "tax_id": "CTRL3", "email": f"a{text}@b.co"}),
    }[field]
    response = client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 422, (text, response.get_json())
