"""Shapes of requests, validated before the database is touched.

The database enforces the same ranges with named CHECK constraints; validating here as well
gives a caller every field error at once and spares a round trip. Rules about state (holdings,
account status, ordering) are never checked here: only the database can check them race-free.
"""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
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
_PLAIN_DECIMAL = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,16})?$")

Id = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]
Symbol = Annotated[str, Strict(), Field(pattern=SYMBOL_PATTERN)]
Quantity = Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY)]


def _parse_price(value: object) -> Decimal:
    """Exact decimals only: a JSON number (parsed as Decimal, never float) or a plain string."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise PydanticCustomError("price_type", "price must be a decimal string or a number")
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.match(value):
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


Price = Annotated[Decimal, BeforeValidator(_parse_price)]
ExecutedAt = Annotated[AwareDatetime, BeforeValidator(_require_rfc3339_text)]
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


def loads_strict(body: str | bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, numbers exact (Decimal).

    Raises ValueError (UnicodeDecodeError is one) for anything else.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return json.loads(
        text,
        parse_float=Decimal,
        parse_constant=_reject_constant,
        object_pairs_hook=_unique_keys,
    )


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


ModelT = TypeVar("ModelT", bound=BaseModel)


def invalid(exc: ValidationError) -> StockledgerError:
    """A validation failure as one 422 problem listing every field error."""
    errors = field_errors(exc)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return StockledgerError("invalid_request", summary, extra={"errors": errors})


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


Name = Annotated[str, Strict(), Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
TaxId = Annotated[
    str, BeforeValidator(_canonical_tax_id), Strict(), Field(pattern=r"^[A-Z0-9]{1,32}$")
]
Email = Annotated[str, Strict(), Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
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
