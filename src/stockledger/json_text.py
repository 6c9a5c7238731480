"""JSON text as the API and the CLI write it, where a Decimal is a JSON number with exactly its
digits.

Quantities are JSON numbers (SPEC §2): a whole quantity an integer (``10``), a fractional one
with its decimals (``3.33``), never through a float, which cannot hold every quantity of six
decimal places (999999999.999999 has sixteen digits). The json module writes only the numbers
it gets as int or float; simplejson writes a Decimal as it is (``use_decimal``). Money is text
(``"187.2500"``) before it gets here, so a Decimal that reaches the encoder is a quantity.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson


def dumps(value: Any, **options: Any) -> str:
    return simplejson.dumps(value, use_decimal=True, **options)


def canonical_quantity(quantity: Decimal) -> Decimal:
    """One form per value: no exponent, no trailing zeros (10, 2.5). The database may carry a
    scale (10.0 after 12.5 - 2.5), a request another (10, "10", 10.0, 1e1)."""
    if quantity == quantity.to_integral_value():
        return quantity.quantize(Decimal(1))
    return quantity.normalize()


def quantity_json(quantity: Decimal | int) -> Decimal | int:
    """A quantity as the API writes it: an int when whole, else its canonical digits."""
    if isinstance(quantity, int):
        return quantity
    canonical = canonical_quantity(quantity)
    return int(canonical) if canonical == canonical.to_integral_value() else canonical


def money_text(amount: Decimal, places: int) -> str:
    """Money and prices as the API writes them: text with a fixed number of places ("187.2500",
    "-1872.50"), never a JSON number."""
    return str(amount.quantize(Decimal(1).scaleb(-places)))
