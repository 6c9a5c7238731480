"""The seed dialect's parts that need no database (SPEC §2.7): the loopback fence, the
environment switch, the shapes of pid and shares."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stockledger.config import SettingError, Settings
from stockledger.dialect import middleware, seed


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.1.2.3", False), ("::ffff:10.1.2.3", False), ("0.0.0.0", False), ("::", False),
     ("", False), (None, False), ("localhost", False)],
)  # fmt: skip
def test_loopback_is_the_peer_address_on_this_machine(address: str | None, loopback: bool) -> None:
    assert middleware.is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("tax_id", "pid"),
    [("1001001000", 1001001000), ("0", 0), ("0012", "0012"), ("DE123", "DE123")],
)
def test_pid_is_an_integer_only_when_it_is_the_same_id(tax_id: str, pid: int | str) -> None:
    assert seed.pid(tax_id) == pid


@pytest.mark.parametrize(
    ("quantity", "shares"),
    [("4", "4.0"), ("0", "0.0"), ("3.33", "3.33"), ("2.500", "2.5"), ("100.0", "100.0")],
)
def test_shares_have_at_least_one_decimal_place(quantity: str, shares: str) -> None:
    assert str(seed.seed_shares(Decimal(quantity))) == shares


@pytest.mark.parametrize(("value", "on"), [(None, False), ("", False), ("0", False), ("1", True)])
def test_the_environment_switch(value: str | None, on: bool) -> None:
    env = {} if value is None else {"STOCKLEDGER_SEED_DIALECT": value}
    assert Settings.from_env(env).seed_dialect is on


@pytest.mark.parametrize("value", ["yes", "true", "on", "2", " 1"])
def test_the_environment_switch_refuses_what_it_would_guess(value: str) -> None:
    with pytest.raises(SettingError, match="STOCKLEDGER_SEED_DIALECT"):
        Settings.from_env({"STOCKLEDGER_SEED_DIALECT": value})
