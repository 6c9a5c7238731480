"""A book's document (SPEC §2.9, docs/import.md): its records, read one at a time and checked
for shape, each named by its path in the document (``trades[17]``).

The document is one JSON object whose keys are sections; each section an array of records.
It is read as a stream of parser events (ijson), and each record is built alone, so memory
stays flat however long the file. Numbers arrive as int and Decimal, never float, and each
record is validated by the same field types as the API's requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Annotated, Any, Literal, Self

import ijson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stockledger.books.requests import Reference
from stockledger.fields import (
    CashAmount,
    ClientOrderId,
    CreditLimit,
    ExecutedAt,
    Fee,
    Id,
    Price,
    Quantity,
    Symbol,
)
from stockledger.registry.requests import MAX_HOLDERS, Address, Email, LicenseNo, Name, TaxId


class _Record(BaseModel):
    # An unknown field is refused, not ignored: a misspelt "credit_limt" must not silently
    # book an account without its limit.
    model_config = ConfigDict(extra="forbid", frozen=True)


class StockRecord(_Record):
    symbol: Symbol
    name: Name
    fractionable: bool = False
    # False: listed, traded in the source's past, no longer tradable (set after the trades).
    active: bool = True
    price: Price | None = None
    price_as_of: ExecutedAt | None = None


class ClientRecord(_Record):
    client_id: Id | None = None
    name: Name
    tax_id: TaxId
    email: Email | None = None
    address: Address | None = None


class BrokerRecord(_Record):
    broker_id: Id | None = None
    name: Name
    tax_id: TaxId
    license_no: LicenseNo
    manager_id: Id | None = None
    status: Literal["active", "suspended"] = "active"


class AccountRecord(_Record):
    account_id: Id | None = None
    broker_id: Id
    holders: Annotated[list[Id], Field(min_length=1, max_length=MAX_HOLDERS)]
    credit_limit: CreditLimit | None = None
    lot_method: Literal["fifo", "lifo", "hifo"] = "fifo"
    status: Literal["open", "frozen", "closed"] = "open"

    @model_validator(mode="after")
    def _each_holder_once(self) -> Self:
        # As the API's AccountCreate says it: a shape, checked before anything is written.
        if len(set(self.holders)) != len(self.holders):
            raise ValueError("a client is named twice in holders")
        return self


class CashRecord(_Record):
    account_id: Id
    kind: Literal["deposit", "withdrawal"]
    amount: CashAmount
    reference: Reference | None = None


class TradeRecord(_Record):
    account_id: Id
    symbol: Symbol
    side: Literal["buy", "sell"]
    quantity: Quantity
    price: Price
    executed_at: ExecutedAt | None = None
    seq: Id | None = None
    fee: Fee | None = None
    client_order_id: ClientOrderId | None = None


# The sections, in the order they are applied (SPEC §2.9), whatever their order in the file.
SECTIONS: dict[str, type[_Record]] = {
    "stocks": StockRecord,
    "clients": ClientRecord,
    "brokers": BrokerRecord,
    "accounts": AccountRecord,
    "cash": CashRecord,
    "trades": TradeRecord,
}


class DocumentError(ValueError):
    """A document that cannot be read as a book, naming where (``trades[17]``, or ``$`` for
    the document itself)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Record:
    section: str
    index: int
    value: _Record

    @property
    def path(self) -> str:
        return f"{self.section}[{self.index}]"


class _UniqueKeys(dict[str, Any]):
    """A JSON object that refuses a key given twice (the API's strict_json refuses it too):
    which of two values a reader keeps is a guess."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            raise DocumentError("", f"the key {key!r} is given twice")
        super().__setitem__(key, value)


def records(stream: IO[bytes]) -> Iterator[Record]:
    """Every record of the document, in document order, validated."""
    path = "$"
    try:
        events = ijson.parse(stream, use_float=False)
        prefix, event, _ = next(events, ("", "end", None))
        if event != "start_map":
            raise DocumentError("$", "a book is one JSON object of sections")
        seen: set[str] = set()
        for prefix, event, value in events:
            if event == "end_map" and prefix == "":
                break
            # Only the object's keys reach here: each section is consumed whole below.
            section = str(value)
            path = section
            if section not in SECTIONS:
                names = ", ".join(SECTIONS)
                raise DocumentError(section, f"not a section of a book ({names})")
            if section in seen:
                raise DocumentError(section, "the section is given twice")
            seen.add(section)
            _, event, _ = next(events)
            if event != "start_array":
                raise DocumentError(section, "a section is an array of records")
            # The path names the record being read, so that a parse error inside it names it.
            path = f"{section}[0]"
            for index, item in enumerate(_items(events, section)):
                yield Record(section, index, _validated(section, path, item))
                path = f"{section}[{index + 1}]"
            path = "$"
        if next(events, None) is not None:
            raise DocumentError("$", "text after the document's end")
    except ijson.JSONError as exc:
        raise DocumentError(path, f"not valid JSON ({exc})") from None
    except DocumentError as exc:
        if exc.path == "":  # raised while building a record: the record is the path
            raise DocumentError(path, exc.message) from None
        raise


def _items(events: Iterator[tuple[str, str, Any]], section: str) -> Iterator[Any]:
    """The values of the array being read, one at a time, up to its end."""
    item_prefix = f"{section}.item"
    for prefix, event, value in events:
        if event == "end_array" and prefix == section:
            return
        if event in ("start_map", "start_array"):
            builder = ijson.ObjectBuilder(map_type=_UniqueKeys)
            builder.event(event, value)
            for inner_prefix, inner_event, inner_value in events:
                builder.event(inner_event, inner_value)
                if inner_prefix == item_prefix and inner_event in ("end_map", "end_array"):
                    break
            yield builder.value
        else:
            yield value


def _validated(section: str, path: str, item: Any) -> _Record:
    model = SECTIONS[section]
    if not isinstance(item, dict):
        raise DocumentError(path, "a record is a JSON object")
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        raise DocumentError(f"{path}{where}", error["msg"]) from None
