"""Shapes of requests, validated before the database is touched.

The database enforces the same ranges with named CHECK constraints; validating here as well
gives a caller every field error at once and spares a round trip. Rules about state (holdings,
account status, ordering) are never checked here: only the database can check them race-free.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from stockledger.errors import StockledgerError


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
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.-]{0,9}$"
CLIENT_ORDER_ID_PATTERN = r"^[\x21-\x7E]{1,64}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7E]{1,255}$"
_PLAIN_DECIMAL = re.compile(r"[0-9]{1,16}(\.[0-9]{1,16})?")

Id = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]
Symbol = Annotated[str, Strict(), Field(pattern=SYMBOL_PATTERN)]
Quantity = Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY)]


def _parse_price(value: object) -> Decimal:
    """Exact decimals only: a JSON number (parsed as Decimal, never float) or a plain string."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise PydanticCustomError("price_type", "price must be a decimal string or a number")
    if isinstance(value, str):
        # fullmatch: with match() and "$", "1\n" passed ("$" also matches before a final
        # newline) and Decimal() then stripped the newline.
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise PydanticCustomError("price_format", "price must look like 187.25")
        value = Decimal(value)
    price = Decimal(value)
    if not price.is_finite():
        raise PydanticCustomError("price_finite", "price must be a finite number")
    if not Decimal(0) < price < MAX_PRICE:
        raise PydanticCustomError("price_range", "price must be > 0 and < 1,000,000,000,000")
    try:
        exact = price.quantize(PRICE_STEP) == price
    except InvalidOperation:
        exact = False
    if not exact:
        raise PydanticCustomError("price_scale", "price may have at most 4 decimal places")
    return price.quantize(PRICE_STEP)


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
ExecutedAt = Annotated[
    AwareDatetime, BeforeValidator(_require_rfc3339_text), AfterValidator(_within_time_range)
]
ClientOrderId = Annotated[str, Strict(), Field(pattern=CLIENT_ORDER_ID_PATTERN)]


class TradeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Id
    # Optional over HTTP, where the caller's key names the broker; required by the database.
    broker_id: Id | None = None
    symbol: Symbol
    side: Literal["buy", "sell"]
    quantity: Quantity
    price: Price
    executed_at: ExecutedAt | None = None
    client_order_id: ClientOrderId | None = None


MAX_BATCH = 1000


class TradeBatchRequest(BaseModel):
    """Up to 1,000 trades of the calling broker, executed all or nothing, in this order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trades: list[TradeRequest] = Field(min_length=1, max_length=MAX_BATCH)


def _parse_query_id(value: object) -> object:
    # Query values arrive as text; accept plain digits only (not "1.0", " 1", "+1", "1e3").
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,19}", value):
            raise PydanticCustomError("id_format", "must be a positive integer")
        return int(value)
    return value


QueryId = Annotated[int, BeforeValidator(_parse_query_id), Strict(), Field(ge=1, le=MAX_ID)]


class AccountQuery(RequestPartModel):
    """Query string of the seed's GET endpoints: exactly one account_id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: QueryId


MAX_PAGE = 1000
QueryLimit = Annotated[int, BeforeValidator(_parse_query_id), Strict(), Field(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_-]{1,512}$")]


QueryTime = ExecutedAt  # the same RFC 3339 text, in a query string


class TradeFilters(RequestPartModel):
    """The filters of a trade history; a cursor carries them from page to page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol | None = None
    side: Literal["buy", "sell"] | None = None
    since: QueryTime | None = Field(default=None, description="executed_at at or after (RFC 3339)")
    until: QueryTime | None = Field(
        default=None, description="executed_at strictly before (RFC 3339)"
    )
    client_order_id: ClientOrderId | None = Field(default=None, description="look one trade up")


class TradePageQuery(TradeFilters):
    limit: QueryLimit = Field(100, description=f"page size, at most {MAX_PAGE}")
    cursor: Cursor | None = Field(
        None, description="next_cursor of the previous page; it keeps that page's filters"
    )


class AccountPath(BaseModel):
    account_id: Id


class TradePath(BaseModel):
    trade_id: Id


class BrokerPath(BaseModel):
    broker_id: Id


class BrokerKeyPath(BaseModel):
    broker_id: Id
    key_id: Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{16}$")]


class IdempotencyHeader(RequestPartModel):
    # Every request header reaches this model; only this one is read.
    model_config = ConfigDict(extra="ignore", frozen=True)

    idempotency_key: Annotated[
        str | None,
        Field(pattern=IDEMPOTENCY_KEY_PATTERN),
        # Documented as the optional string it is (not "string or null").
        WithJsonSchema({"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}),
    ] = Field(
        None,
        alias="Idempotency-Key",
        description="retry with the same key and body to get the first answer back",
    )


class AccountStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["open", "frozen", "closed"]


class BrokerStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["active", "suspended"]


# Parsing ------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # {"quantity": 1, "quantity": 1000} is ambiguous; refuse rather than pick one.
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


# No request of this API nests deeper than a few levels (a batch: object, list, object). The
# json module parses recursively, and '[' * 30000 ran it out of stack: a RecursionError, a 500.
MAX_JSON_DEPTH = 32
# A string literal (skipped whole, brackets inside it do not count) or a bracket. The closing
# quote is optional: an unterminated string then runs to the end of the text in one match.
# Required, each quote inside it started a new scan to the end, and a 64 KiB body of \"
# took 9.5 s of CPU (the text is malformed either way; json.loads says so next).
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _check_depth(text: str) -> None:
    depth = 0
    for token in _JSON_STRUCTURE.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def loads_strict(body: str | bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, numbers exact (Decimal), nesting
    at most MAX_JSON_DEPTH levels.

    Raises ValueError (UnicodeDecodeError is one) for anything else.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    _check_depth(text)
    return json.loads(
        text,
        parse_float=Decimal,
        parse_constant=_reject_constant,
        object_pairs_hook=_unique_keys,
    )


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
    return StockledgerError("invalid_request", summary, extra=extra)


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from exc


# Administration -----------------------------------------------------------------------------

_TAX_ID_SEPARATORS = re.compile(r"[\s./-]")


def _canonical_tax_id(value: object) -> object:
    # "de-123 456" and "DE123456" are one legal identity; the database stores (and its CHECK
    # demands) the canonical form, so the broker-owned-account rule compares like with like.
    if isinstance(value, str):
        return _TAX_ID_SEPARATORS.sub("", value).upper()
    return value


# No control characters in names (NUL cannot even be stored: PostgreSQL text refuses it), and
# no leading or trailing space. Patterns are matched by pydantic's regex engine, where "$" is
# the end of the text; the OpenAPI document carries them to clients as they are.
_PRINTABLE = r"[^\x00-\x1f\x7f]"
_PRINTABLE_NOT_SPACE = r"[^\s\x00-\x1f\x7f]"
NAME_PATTERN = rf"^{_PRINTABLE_NOT_SPACE}({_PRINTABLE}*{_PRINTABLE_NOT_SPACE})?$"
Name = Annotated[str, Strict(), Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
TaxId = Annotated[
    str, BeforeValidator(_canonical_tax_id), Strict(), Field(pattern=r"^[A-Z0-9]{1,32}$")
]
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f]+"
EMAIL_PATTERN = rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$"
Email = Annotated[str, Strict(), Field(max_length=254, pattern=EMAIL_PATTERN)]
LicenseNo = Annotated[str, Strict(), Field(pattern=r"^[A-Z0-9][A-Z0-9./-]{0,31}$")]


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    tax_id: TaxId
    email: Email | None = None


class BrokerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    tax_id: TaxId
    license_no: LicenseNo


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Id
    broker_id: Id


class StockCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol
    name: Name
