"""Proving the books: every ledger invariant, checked in one snapshot (`stockledger verify`)."""
