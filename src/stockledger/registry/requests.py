"""What the operator's requests look like: clients, brokers, accounts, stocks, statuses."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from stockledger.fields import CreditLimit, ExecutedAt, Id, Price, Symbol

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
# Lines of a postal address, separated by newlines; no other control character.
ADDRESS_PATTERN = r"^[^\s\x00-\x1f\x7f]([^\x00-\x09\x0b-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
Address = Annotated[str, Strict(), Field(min_length=1, max_length=500, pattern=ADDRESS_PATTERN)]
# A joint account's holders, primary first; a brokerage's joint accounts have a few.
MAX_HOLDERS = 20


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    tax_id: TaxId
    email: Email | None = None
    address: Address | None = None


class BrokerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    tax_id: TaxId
    license_no: LicenseNo


class AccountCreate(BaseModel):
    """holders (primary first) for a joint account, or client_id for one holder: one of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Id | None = None
    holders: list[Id] | None = Field(
        default=None, min_length=1, max_length=MAX_HOLDERS, description="client ids, primary first"
    )
    broker_id: Id

    @model_validator(mode="after")
    def _one_way_to_name_holders(self) -> Self:
        if (self.client_id is None) == (self.holders is None):
            raise ValueError("give either client_id or holders")
        if self.holders is not None and len(set(self.holders)) != len(self.holders):
            raise ValueError("a client is named twice in holders")
        return self

    @property
    def holder_ids(self) -> list[int]:
        return self.holders if self.holders is not None else [self.client_id]  # type: ignore[list-item]


class HolderAdd(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Id


class StockCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: Symbol
    name: Name
    fractionable: bool = Field(default=False, description="whether fractions of a share trade")


class StockChange(BaseModel):
    """The fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name | None = None
    active: bool | None = None
    fractionable: bool | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give name, active or fractionable")
        if any(getattr(self, name) is None for name in self.model_fields_set):
            raise ValueError("name, active and fractionable cannot be null")
        return self


class PriceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    price: Price
    as_of: ExecutedAt | None = Field(default=None, description="when the price held (default: now)")


class AccountChange(BaseModel):
    """status, credit_limit (§1.4; null for none: every trade is booked) and/or lot_method
    (§1.5). Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["open", "frozen", "closed"] | None = None
    credit_limit: CreditLimit | None = Field(
        default=None, description="how far below zero the cash may go; 0 is a cash account"
    )
    lot_method: Literal["fifo", "lifo", "hifo"] | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give status, credit_limit or lot_method")
        for name in ("status", "lot_method"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class BrokerStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["active", "suspended"]


class BrokerChange(BaseModel):
    """status, and/or manager_id (the supervising broker; null for none). Fields left out stay
    as they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["active", "suspended"] | None = None
    manager_id: Id | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give status or manager_id")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        return self
