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


def quantity_json(quantity: Decimal | int) -> Decimal | int:
    """A quantity as the API writes it: an int when whole, else its digits without trailing
    zeros (the database may carry a scale: 10.0 after 12.5 - 2.5)."""
    if isinstance(quantity, int):
        return quantity
    if quantity == quantity.to_integral_value():
        return int(quantity)
    return quantity.normalize()


def money_text(amount: Decimal, places: int) -> str:
    """Money and prices as the API writes them: text with a fixed number of places ("187.2500",
    "-1872.50"), never a JSON number."""
    return str(amount.quantize(Decimal(1).scaleb(-places)))
