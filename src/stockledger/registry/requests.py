"""What the operator's requests look like: clients, brokers, accounts, stocks, statuses."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from stockledger.fields import Id, Symbol

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


class AccountStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["open", "frozen", "closed"]


class BrokerStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["active", "suspended"]
