"""Trading: single trades, idempotent trades, batches, positions and history."""
