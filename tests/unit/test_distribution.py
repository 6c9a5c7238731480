"""The placement lists of db/distribution.py, without a database."""

from __future__ import annotations

from stockledger.db import distribution


def test_no_placed_table_is_named_like_a_shard() -> None:
    # SL011's message names the table by dropping a shard's suffix (migration 0012).
    assert distribution.shard_like([*distribution.PER_ACCOUNT, *distribution.REFERENCE]) == []


def test_a_name_ending_like_a_shard_is_caught() -> None:
    # The control: the check above can fail.
    assert distribution.shard_like(["accounts", "trades_2026", "lots_fifo"]) == ["trades_2026"]


def test_each_table_has_one_placement() -> None:
    named = [*distribution.PER_ACCOUNT, *distribution.REFERENCE, *distribution.COORDINATOR_ONLY]
    assert len(named) == len(set(named))
