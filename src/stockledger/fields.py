"""The field types every request is made of, and how a validation failure is reported.

Requests are validated before the database is touched. The database enforces the same ranges
with named CHECK constraints; validating here as well gives a caller every field error at once
and spares a round trip. Rules about state (holdings,
account status, ordering) are never checked here: only the database can check them race-free.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from stockledger.errors import ErrorCode, StockledgerError
from stockledger.json_text import canonical_quantity


class RequestPartModel(BaseModel):
    """A header or query model. flask-openapi3 asks such a model for its JSON schema on every
    request it validates (to look fields up by alias); generating it took a fifth of the CPU
    of POST /trade. The schema of a class never changes, so it is built once per arguments
    and a copy handed out (callers may edit what they get)."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (cls, args, tuple(sorted(kwargs.items())))
        schema = _SCHEMAS.get(key)
        if schema is None:
            schema = _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(schema)


_SCHEMAS: dict[Any, dict[str, Any]] = {}


MAX_ID = 2**63 - 1
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("1000000000000")
PRICE_STEP = Decimal("0.0001")
MAX_FEE = Decimal("1000000000000")
MAX_CASH = Decimal("1000000000000000")
CENT = Decimal("0.01")
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.-]{0,9}$"
CLIENT_ORDER_ID_PATTERN = r"^[\x21-\x7E]{1,64}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7E]{1,255}$"
_PLAIN_DECIMAL = re.compile(r"[0-9]{1,16}(\.[0-9]{1,16})?")

Id = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]
Symbol = Annotated[str, Strict(), Field(pattern=SYMBOL_PATTERN)]


def _exact_decimal(value: object, field: str, example: str) -> Decimal:
    """A JSON number (an int, or a Decimal: never a float) or a plain decimal string, finite.
    Errors are typed by the field: ``price_type``, ``quantity_format``…"""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise PydanticCustomError(f"{field}_type", f"{field} must be a decimal string or a number")
    if isinstance(value, str):
        # fullmatch: with match() and "$", "1\n" passed ("$" also matches before a final
        # newline) and Decimal() then stripped the newline.
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise PydanticCustomError(f"{field}_format", f"{field} must look like {example}")
        value = Decimal(value)
    number = Decimal(value)
    if not number.is_finite():
        raise PydanticCustomError(f"{field}_finite", f"{field} must be a finite number")
    return number


def _require_places(number: Decimal, field: str, places: int) -> None:
    step = Decimal(1).scaleb(-places)
    try:
        exact = number.quantize(step) == number
    except InvalidOperation:
        exact = False
    if not exact:
        raise PydanticCustomError(
            f"{field}_scale", f"{field} may have at most {places} decimal places"
        )


def _parse_price(value: object) -> Decimal:
    """Exact, > 0 and < 1,000,000,000,000, at most 4 places; stored with scale 4."""
    price = _exact_decimal(value, "price", "187.25")
    if not Decimal(0) < price < MAX_PRICE:
        raise PydanticCustomError("price_range", "price must be > 0 and < 1,000,000,000,000")
    _require_places(price, "price", 4)
    return price.quantize(PRICE_STEP)


def _money(value: object, field: str, minimum: Decimal, maximum: Decimal, strict: bool) -> Decimal:
    """Cents (at most 2 places), at least ``minimum`` (above it when ``strict``), below
    ``maximum``; with scale 2, as the database stores it."""
    amount = _exact_decimal(value, field, "12.50")
    low_ok = amount > minimum if strict else amount >= minimum
    if not (low_ok and amount < maximum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise PydanticCustomError(f"{field}_range", f"{field} must be {bound} and < {maximum:,}")
    _require_places(amount, field, 2)
    return amount.quantize(CENT)


def _parse_fee(value: object) -> Decimal:
    return _money(value, "fee", Decimal(0), MAX_FEE, strict=False)


def _parse_cash_amount(value: object) -> Decimal:
    return _money(value, "amount", Decimal(0), MAX_CASH, strict=True)


def _parse_credit_limit(value: object) -> Decimal:
    return _money(value, "credit_limit", Decimal(0), MAX_CASH, strict=False)


def _parse_quantity(value: object) -> Decimal:
    """Exact (SPEC §2), > 0, at most 1,000,000,000, at most 6 decimal places. Whether a
    fraction is allowed depends on the stock: only the database knows (rule 9)."""
    quantity = _exact_decimal(value, "quantity", "10 or 2.5")
    if not Decimal(0) < quantity <= MAX_QUANTITY:
        raise PydanticCustomError("quantity_range", "quantity must be > 0 and <= 1,000,000,000")
    _require_places(quantity, "quantity", 6)
    # One form per value, so that 10, "10" and 10.0 are one request (idempotency fingerprints).
    return canonical_quantity(quantity)


def _require_rfc3339_text(value: object) -> object:
    # pydantic's lax datetime parsing would also take a Unix timestamp; RFC 3339 text only.
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "must be an RFC 3339 string")
    return value


# Every time a caller supplies lies in [EARLIEST_TIME, LATEST_TIME), a range that Python,
# PostgreSQL and RFC 3339 all represent in any offset: "0001-01-01T00:00:00+14:00" is year 0
# in UTC, which PostgreSQL stores and Python cannot read back (SPEC §2.8). The database
# refuses trade times before EARLIEST_TIME too (trades_admit); later ones than now + 5 s
# were refused already.
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9999, 1, 1, tzinfo=UTC)


def _within_time_range(value: datetime) -> datetime:
    # The year test first: converting a time near year 1 or 9999 to UTC can overflow.
    if not EARLIEST_TIME.year <= value.year < LATEST_TIME.year or not (
        EARLIEST_TIME <= value < LATEST_TIME
    ):
        raise PydanticCustomError(
            "datetime_range", "must be from 1900-01-01T00:00:00Z to before 9999-01-01T00:00:00Z"
        )
    return value


Price = Annotated[Decimal, BeforeValidator(_parse_price)]
Quantity = Annotated[
    Decimal,
    BeforeValidator(_parse_quantity),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_QUANTITY},
                {"type": "string", "pattern": r"^[0-9]{1,16}(\.[0-9]{1,16})?$"},
            ],
            "description": "shares: whole, or with up to 6 decimal places where the stock is "
            "fractionable",
            "examples": [10, 2.5],
        }
    ),
]
_MONEY_TEXT = {"type": "string", "pattern": r"^[0-9]{1,16}(\.[0-9]{1,2})?$"}
Fee = Annotated[
    Decimal,
    BeforeValidator(_parse_fee),
    WithJsonSchema(
        {"oneOf": [{"type": "number", "minimum": 0}, _MONEY_TEXT], "examples": ["1.50"]}
    ),
]
CashAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_cash_amount),
    WithJsonSchema(
        {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, _MONEY_TEXT], "examples": ["1000.00"]}
    ),
]
CreditLimit = Annotated[
    Decimal,
    BeforeValidator(_parse_credit_limit),
    WithJsonSchema({"oneOf": [{"type": "number", "minimum": 0}, _MONEY_TEXT], "examples": ["0"]}),
]
ExecutedAt = Annotated[
    AwareDatetime, BeforeValidator(_require_rfc3339_text), AfterValidator(_within_time_range)
]
ClientOrderId = Annotated[str, Strict(), Field(pattern=CLIENT_ORDER_ID_PATTERN)]


def parse_query_id(value: object) -> object:
    # Query values arrive as text; accept plain digits only (not "1.0", " 1", "+1", "1e3").
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,19}", value):
            raise PydanticCustomError("id_format", "must be a positive integer")
        return int(value)
    return value


QueryId = Annotated[int, BeforeValidator(parse_query_id), Strict(), Field(ge=1, le=MAX_ID)]


# An answer stays small whatever the request: a 476 KB batch of unknown keys was answered
# with a 10.8 MB list of every one of them. The first MAX_FIELD_ERRORS are listed, each field
# path cut to MAX_FIELD_TEXT characters (an unknown key is the caller's own text), and the
# problem says how many there were in all.
MAX_FIELD_ERRORS = 20
MAX_FIELD_TEXT = 100


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FIELD_TEXT else text[: MAX_FIELD_TEXT - 1] + "…"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return [
        {
            "field": _clip(".".join(str(part) for part in error["loc"]) or "body"),
            "message": _clip(error["msg"]),
            "type": error["type"],
        }
        for error in errors[:MAX_FIELD_ERRORS]
    ]


ModelT = TypeVar("ModelT", bound=BaseModel)


def invalid(exc: ValidationError) -> StockledgerError:
    """A validation failure as one 422 problem listing its first MAX_FIELD_ERRORS errors."""
    errors = field_errors(exc)
    total = exc.error_count()
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    extra: dict[str, Any] = {"errors": errors}
    if total > len(errors):
        summary += f"; and {total - len(errors)} more"
        extra["error_count"] = total
    return StockledgerError(ErrorCode.INVALID_REQUEST, summary, extra=extra)


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from exc
