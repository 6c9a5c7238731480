"""What "the same request" means for an Idempotency-Key (the key itself is stored by
trade_idempotent(), in the trade's own transaction: sql/schema.sql)."""

from __future__ import annotations

import hashlib
from datetime import UTC

from stockledger import json_text
from stockledger.json_text import quantity_json
from stockledger.trading.requests import TradeRequest


def request_fingerprint(request: TradeRequest) -> bytes:
    """What "the same request" means for an idempotency key: the same validated trade.

    Hashing the parsed request rather than the raw bytes makes "187.25" and 187.25, key order
    and whitespace, or one instant written with two offsets, the same request.
    """
    canonical = request.model_dump(mode="json")
    # As the API writes a quantity: 10 stays the integer it was hashed as before quantities
    # could be fractional, so a retry across that upgrade still replays.
    canonical["quantity"] = quantity_json(request.quantity)
    # A fee of 0 is no fee, and requests made before fees and lots existed hash as they did.
    if not request.fee:
        canonical.pop("fee")
    if request.lots is None:
        canonical.pop("lots")
    else:
        canonical["lots"] = [
            {"lot_id": pick.lot_id, "quantity": quantity_json(pick.quantity)}
            for pick in request.lots
        ]
    if request.executed_at is not None:
        canonical["executed_at"] = request.executed_at.astimezone(UTC).isoformat()
    text = json_text.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()
