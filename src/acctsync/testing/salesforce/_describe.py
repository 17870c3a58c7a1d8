"""The objects of `FakeSalesforce`'s org as the REST API describes them, and their values.

Holds the describe metadata an org starts with (Account, Contact and Opportunity with
their system fields), the field types the fake tells apart, how a field's value is
stored (datetimes in UTC, to the millisecond; ``SystemModstamp`` to the second), read
from a JSON body and written back to JSON, and `ApiError`, Salesforce's error response,
which every handler raises.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, TypeAlias

from acctsync._errors import InvalidRecordError
from acctsync._formats import format_datetime
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX, OPPORTUNITY_PREFIX
from acctsync._records import FieldValue

Row: TypeAlias = dict[str, Any]
Described: TypeAlias = dict[str, Any]

KEY_PREFIXES: Final = {
    "Account": ACCOUNT_PREFIX,
    "Contact": CONTACT_PREFIX,
    "Opportunity": OPPORTUNITY_PREFIX,
}
NUMBER_TYPES: Final = frozenset({"int", "long", "double", "currency", "percent"})
ID_TYPES: Final = frozenset({"id", "reference"})
COMPOUND_TYPES: Final = frozenset({"address", "location"})
NOT_TEXT: Final = NUMBER_TYPES | COMPOUND_TYPES | {"boolean", "date", "datetime"}
# The org's ID, and its user's, whom every sign-in signs in as and who makes every change.
ORG_ID: Final = "00D000000000001AAA"
USER_ID: Final = "005000000000001AAA"


# -- Describe metadata --------------------------------------------------------------------


def field_entry(name: str, kind: str, **overrides: Any) -> Described:
    """A describe entry; the defaults are those of a plain, writable, optional field."""
    entry: Described = {
        "name": name,
        "label": name,
        "type": kind,
        "calculated": False,
        "compoundFieldName": None,
        "createable": True,
        "updateable": True,
        "nillable": True,
        "defaultedOnCreate": False,
        "externalId": False,
        "unique": False,
        "custom": name.endswith("__c"),
        "referenceTo": [],
    }
    entry.update(overrides)
    return entry


def system_fields(object_type: str) -> list[Described]:
    fixed = {"createable": False, "updateable": False, "defaultedOnCreate": True}
    fields = [
        field_entry("Id", "id", nillable=False, **fixed),
        field_entry("IsDeleted", "boolean", nillable=False, **fixed),
        field_entry("SystemModstamp", "datetime", nillable=False, **fixed),
    ]
    if object_type != "Opportunity":  # opportunities are never merged
        fields.append(
            field_entry("MasterRecordId", "reference", referenceTo=[object_type], **fixed)
        )
    if object_type == "Contact":
        fields.append(field_entry("AccountId", "reference", referenceTo=["Account"]))
    return fields


def _address(prefix: str) -> list[Described]:
    parent = prefix + "Address"
    parts = [("Street", "textarea"), ("City", "string"), ("State", "string")]
    parts += [("PostalCode", "string"), ("Country", "string")]
    return [field_entry(parent, "address", createable=False, updateable=False)] + [
        field_entry(prefix + part, kind, compoundFieldName=parent) for part, kind in parts
    ]


def default_describe() -> dict[str, list[Described]]:
    external = field_entry("External_Id__c", "string", externalId=True, unique=True)
    return {
        "Account": [
            *system_fields("Account"),
            field_entry("Name", "string", nillable=False),
            field_entry("Industry", "picklist"),
            field_entry("AnnualRevenue", "currency"),
            field_entry("NumberOfEmployees", "int"),
            field_entry("Phone", "phone"),
            field_entry("Website", "url"),
            *_address("Billing"),
            field_entry("Tier__c", "string", calculated=True, createable=False, updateable=False),
            external,
        ],
        "Contact": [
            *system_fields("Contact"),
            field_entry("Salutation", "picklist"),
            field_entry("FirstName", "string"),
            field_entry("LastName", "string", nillable=False),
            field_entry("Title", "string"),
            field_entry("Email", "email"),
            field_entry("Phone", "phone"),
            field_entry("MobilePhone", "phone"),
            field_entry("LeadSource", "picklist"),
            field_entry("Birthdate", "date"),
            *_address("Mailing"),
            dict(external),
        ],
        "Opportunity": [
            *system_fields("Opportunity"),
            # Optional in Salesforce; required here, as acctsync's Opportunity has one.
            field_entry("AccountId", "reference", referenceTo=["Account"], nillable=False),
            field_entry("ContactId", "reference", referenceTo=["Contact"]),
            field_entry("Name", "string", nillable=False),
            field_entry("StageName", "picklist", nillable=False),
            field_entry("CloseDate", "date", nillable=False),
            field_entry("Amount", "currency"),
            field_entry("LeadSource", "picklist"),
            dict(external),
        ],
    }


def type_of(value: FieldValue) -> str:
    # bool before int and datetime before date: each is a subclass of the other.
    for kind, name in ((bool, "boolean"), (int, "int"), (datetime, "datetime"), (date, "date")):
        if isinstance(value, kind):
            return name
    return "double" if isinstance(value, float | Decimal) else "string"


def by_name(fields: list[Described]) -> dict[str, Described]:
    # Field names are case-insensitive in SOQL and in the REST API.
    return {entry["name"].lower(): entry for entry in fields}


def object_type_named(describe: dict[str, list[Described]], name: str) -> str:
    """The object type ``name`` names, as the describe spells it."""
    # sObject names are case-insensitive too.
    for object_type in describe:
        if object_type.lower() == name.lower():
            return object_type
    raise ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")


# REST API Developer Guide and SOAP API Developer Guide, "Compound Fields": the keys of
# the Address type (which extends Location) and of the Location type, whatever the
# compound. Each component field's name ends in its key (BillingStreet, MailingLatitude),
# or in its key and "__s" for a custom compound (Loc__Latitude__s); no key ends another.
COMPOUND_KEYS: Final = (
    "street",
    "city",
    "state",
    "stateCode",
    "postalCode",
    "country",
    "countryCode",
    "latitude",
    "longitude",
    "geocodeAccuracy",
)


def compound_key(component: str) -> str | None:
    """The key of ``component`` in its compound's object, or None if the type has none."""
    name = component.lower().removesuffix("__s")
    for key in COMPOUND_KEYS:
        if name.endswith(key.lower()):
            return key
    return None  # a describe entry no Address or Location has: the API shows no such key


# -- Values -------------------------------------------------------------------------------


def _millis(value: datetime) -> datetime:
    # Salesforce keeps datetimes to the millisecond.
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def instant(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidRecordError(f"{what} must be a timezone-aware datetime, not {value!r}")
    return _millis(value.astimezone(UTC))


def modstamp(value: object, what: str) -> datetime:
    """``value`` as a ``SystemModstamp``: in UTC, to the second.

    Salesforce keeps it to the second (the API shows ``.000`` milliseconds), so two
    saves in one second share a stamp (help article 000387261; salesforce.stackexchange
    q. 234824).
    """
    return instant(value, what).replace(microsecond=0)


def stored(value: FieldValue) -> FieldValue:
    return instant(value, "a datetime") if isinstance(value, datetime) else value


def wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def dumps(value: Any) -> str:
    """JSON text, with a `Decimal` written as the exact number it is."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return f"{value:f}"
    return json.dumps(value)


def typed(kind: str, raw: Any) -> FieldValue:
    """``raw`` as a value of ``kind``; TypeError, ValueError or ArithmeticError if it is none."""
    if isinstance(raw, dict | list):
        raise TypeError(kind)
    if kind == "boolean" or isinstance(raw, bool):
        if kind == "boolean" and isinstance(raw, bool):
            return raw
        if kind in NOT_TEXT:
            raise TypeError(kind)
        return "true" if raw else "false"
    if kind in NUMBER_TYPES:
        number = Decimal(raw)  # Salesforce reads a number in a string, too
        if not number.is_finite():
            raise ValueError(kind)
        if kind in ("int", "long"):
            if number != number.to_integral_value():
                raise ValueError(kind)
            return int(number)
        return raw if isinstance(raw, int) else number
    if kind in ("date", "datetime") and not isinstance(raw, str):
        raise TypeError(kind)
    if kind == "date":
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError(kind)
        return date.fromisoformat(raw)
    if kind == "datetime":
        parsed = datetime.fromisoformat(re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", raw))
        # Salesforce reads a datetime without an offset as UTC.
        return instant(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), kind)
    return raw if isinstance(raw, str) else dumps(raw)


# -- Errors -------------------------------------------------------------------------------


class ApiError(Exception):
    """A Salesforce error response: ``[{"message", "errorCode"[, "fields"]}]``."""

    def __init__(
        self, status: int, code: str, message: str, *, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Any = [{"message": message, "errorCode": code}]
        if fields is not None:
            self.body[0]["fields"] = fields


def malformed(message: str) -> ApiError:
    return ApiError(400, "MALFORMED_QUERY", message)


def no_column(name: str, object_type: str) -> ApiError:
    return ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{object_type}'.")
