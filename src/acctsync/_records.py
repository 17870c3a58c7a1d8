"""The records acctsync moves: values that validate themselves at construction.

Every record is a frozen, slotted, keyword-only attrs class. IDs are normalised to their
18-character form (rule R6), timestamps must be timezone-aware and are kept in UTC, and
field values are limited to the types Salesforce fields decode into. A record that breaks
any of this cannot exist: construction raises `InvalidRecordError`.
"""

from __future__ import annotations

import enum
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import repeat
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

from attrs import field, frozen

from acctsync._errors import InvalidRecordError
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX, OPPORTUNITY_PREFIX, normalize_id

__all__ = [
    "CHECKED_FIELD_NAMES",
    "RESERVED_FIELDS",
    "UNCHANGED",
    "Account",
    "Change",
    "Contact",
    "Deletion",
    "FieldValue",
    "ObjectType",
    "Opportunity",
    "PartialUpdate",
    "Person",
    "RawChangeEvent",
    "RawRecord",
    "Refetch",
    "Unchanged",
    "Unreadable",
    "check_field",
    "checked_account",
    "checked_accounts",
    "checked_contact",
    "checked_contacts",
    "field_name_problem",
    "fields_attribute",
    "parse_object_type",
    "same_value",
    "sequence_attribute",
    "text_problem",
]

FieldValue: TypeAlias = str | int | float | Decimal | bool | date | datetime | None
"""What a field holds: the JSON scalars plus the types Salesforce dates and numbers decode to."""

ObjectType: TypeAlias = Literal["Account", "Contact"]
"""The Salesforce objects acctsync syncs."""

OBJECT_PREFIXES: Final[Mapping[str, str]] = MappingProxyType(
    {"Account": ACCOUNT_PREFIX, "Contact": CONTACT_PREFIX}
)

RESERVED_FIELDS: Final = frozenset(
    {"Id", "AccountId", "SystemModstamp", "IsDeleted", "MasterRecordId", "attributes"}
)
"""Names that are record attributes, not fields: a ``fields`` mapping may not use them.

Salesforce field names are case-insensitive (rule R9): ``ID`` and ``systemmodstamp`` are
these names too.
"""

_RESERVED_FOLDED: Final = frozenset(name.lower() for name in RESERVED_FIELDS)
# An API name: a letter, then letters, digits and underscores (``Billing_Code__c``,
# ``ns__Score__c``, ``Location__Latitude__s``), as Salesforce allows them; the length
# limit is generous (Salesforce's own is 40 plus a namespace and suffix).
_API_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAX_FIELD_NAME: Final = 255
_PLAIN_TYPES: Final = frozenset({str, int, bool, date, type(None)})
CHECKED_FIELD_NAMES: Final[set[str]] = set()
"""Names `field_name_problem` found valid: a sync sees the same few hundred names on
every record, so each is checked once, and a decoder may take one found here as checked.

Bounded, so that a stream of junk names cannot grow it for ever."""
_CHECKED_NAMES_MAX: Final = 1 << 16


def field_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a field (rules R9, R10), or None when it can."""
    if not isinstance(name, str) or not name:
        return "a field name must be a non-empty string"
    if name in CHECKED_FIELD_NAMES:
        return None
    if len(name) > MAX_FIELD_NAME:
        return f"a field name is at most {MAX_FIELD_NAME} characters, not {len(name)}"
    if not name.isascii() or _API_NAME.fullmatch(name) is None:
        return "is not a Salesforce API name (a letter, then letters, digits and underscores)"
    if name.lower() in _RESERVED_FOLDED:
        return "is a record attribute, not a field"
    if len(CHECKED_FIELD_NAMES) < _CHECKED_NAMES_MAX:
        CHECKED_FIELD_NAMES.add(name)
    return None


def text_problem(value: str) -> str | None:
    """Why the string ``value`` cannot be stored (rule R10), or None when it can.

    Salesforce text is Unicode: a lone surrogate (``"\\ud83d"`` in JSON) is not.
    """
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"is not valid Unicode text (a lone surrogate at position {error.start})"
    return None


def check_field(name: object, value: object, *, record_id: str | None = None) -> None:
    """Raise `InvalidRecordError` unless ``name`` may name a field holding ``value``."""
    problem = field_name_problem(name)
    if problem is not None:
        # Shown as written only when that is plain text: a report, a log line or a JSON
        # document must be able to hold it (R10).
        if isinstance(name, str) and name.isascii() and name.isprintable():
            shown = name if len(name) <= MAX_FIELD_NAME else _short(name)
        else:
            shown = _short(name)
        raise InvalidRecordError(problem, record_id=record_id, field=shown)
    assert isinstance(name, str)
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise InvalidRecordError(problem, record_id=record_id, field=name)
        return
    if type(value) in _PLAIN_TYPES:
        return
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidRecordError(
                "datetimes must be timezone-aware", record_id=record_id, field=name
            )
    elif isinstance(value, float | Decimal):
        # Decimal.is_finite, not math.isfinite: a Decimal may be finite beyond float range.
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        if not finite:
            raise InvalidRecordError(
                f"{value!r} is not a finite number", record_id=record_id, field=name
            )
    elif not isinstance(value, str | int | date):
        raise InvalidRecordError(
            f"values of type {type(value).__name__} are not supported",
            record_id=record_id,
            field=name,
        )


def _short(name: object) -> str:
    """A name fit to show in an error: a long one cut, control characters escaped."""
    shown = repr(name)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def _freeze_fields(value: object) -> Mapping[str, FieldValue]:
    if not isinstance(value, Mapping):
        raise InvalidRecordError(f"fields must be a mapping, not {type(value).__name__}")
    return MappingProxyType(dict(value))


def _fields_repr(fields: Mapping[str, FieldValue]) -> str:
    return repr(dict(fields))


def fields_attribute() -> Any:
    """An attrs attribute holding a frozen copy of a field mapping."""
    return field(factory=dict, converter=_freeze_fields, hash=False, repr=_fields_repr)


def _check_fields(record_id: str | None, fields: Mapping[str, FieldValue]) -> None:
    for name, value in fields.items():
        # Most fields are known names holding ASCII text, numbers, booleans or nothing:
        # pass them without a call.
        plain = type(value) in _PLAIN_TYPES
        if plain and name in CHECKED_FIELD_NAMES and (type(value) is not str or value.isascii()):
            continue
        check_field(name, value, record_id=record_id)


def _utc(value: object) -> datetime:
    if type(value) is datetime and value.tzinfo is UTC:  # as sources mostly give them
        return value
    if not isinstance(value, datetime):
        raise InvalidRecordError(f"a timestamp must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidRecordError(f"timestamp {value.isoformat()} is naive; give it a timezone")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRecordError(f"timestamp {value.isoformat()} is out of range in UTC") from None


def _sequence(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidRecordError(f"a sequence is a tuple of integers, not {value!r}")
    sequence = tuple(value)
    if not sequence or any(isinstance(i, bool) or not isinstance(i, int) for i in sequence):
        raise InvalidRecordError(f"a sequence is a non-empty tuple of integers, not {value!r}")
    return sequence


def sequence_attribute() -> Any:
    """The ``sequence`` attribute of a record version: its finer order within one stamp."""
    return field(default=None, converter=_sequence)


def _account_id(value: object) -> str:
    return normalize_id(value, prefix=ACCOUNT_PREFIX)


def _contact_id(value: object) -> str:
    return normalize_id(value, prefix=CONTACT_PREFIX)


def _opportunity_id(value: object) -> str:
    return normalize_id(value, prefix=OPPORTUNITY_PREFIX)


def _optional_account_id(value: object) -> str | None:
    return None if value is None else _account_id(value)


def _optional_contact_id(value: object) -> str | None:
    return None if value is None else _contact_id(value)


def _kind(value: FieldValue) -> type:
    # bool is an int and datetime is a date in Python, but not in Salesforce.
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float | Decimal):
        return Decimal
    if isinstance(value, datetime):
        return datetime
    return type(value)


def same_value(a: FieldValue, b: FieldValue) -> bool:
    """Whether two field values are the same value (``1 == 1.0``, but ``1 != True``).

    A float is the `Decimal` of its shortest repr: ``1234.56 == Decimal("1234.56")``.
    Salesforce wrote one text, ``1234.56``; REST JSON read without ``parse_float=Decimal``
    makes it a float, Bulk CSV a `Decimal`, and a sync that reads by both must see one
    value.
    """
    if type(a) is type(b):
        return a == b
    if a is None or b is None or _kind(a) is not _kind(b):
        return False
    if isinstance(a, float) and isinstance(b, Decimal):
        return Decimal(repr(a)) == b
    if isinstance(a, Decimal) and isinstance(b, float):
        return a == Decimal(repr(b))
    return a == b


@frozen(kw_only=True)
class Account:
    """A Salesforce Account as of ``system_modstamp``.

    ``sequence`` orders versions that share a ``SystemModstamp``, where the source knows
    their order (a change event's ``commitNumber`` and ``sequenceNumber``); None where it
    does not (rule R3).
    """

    id: str = field(converter=_account_id)
    fields: Mapping[str, FieldValue] = fields_attribute()
    system_modstamp: datetime = field(converter=_utc)
    sequence: tuple[int, ...] | None = sequence_attribute()

    def __attrs_post_init__(self) -> None:
        _check_fields(self.id, self.fields)


@frozen(kw_only=True)
class Contact:
    """A Salesforce Contact; ``account_id`` is its one account, or None (rule S4).

    ``sequence`` is as on `Account`.
    """

    id: str = field(converter=_contact_id)
    account_id: str | None = field(default=None, converter=_optional_account_id)
    fields: Mapping[str, FieldValue] = fields_attribute()
    system_modstamp: datetime = field(converter=_utc)
    sequence: tuple[int, ...] | None = sequence_attribute()

    def __attrs_post_init__(self) -> None:
        _check_fields(self.id, self.fields)


@frozen(kw_only=True)
class Opportunity:
    """A Salesforce Opportunity, as created by Convert Person (rule S6)."""

    id: str = field(converter=_opportunity_id)
    account_id: str = field(converter=_account_id)
    contact_id: str | None = field(default=None, converter=_optional_contact_id)
    fields: Mapping[str, FieldValue] = fields_attribute()
    system_modstamp: datetime = field(converter=_utc)

    def __attrs_post_init__(self) -> None:
        _check_fields(self.id, self.fields)


def _person_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError("a person id must be a non-empty string")
    problem = text_problem(value)
    if problem is not None:  # no store could keep it (R10)
        raise InvalidRecordError(f"a person id {problem}")
    return value


@frozen(kw_only=True)
class Person:
    """A local person (a Marketo lead) that Convert Person can turn into a contact.

    ``contact_id`` is the Salesforce Contact the person is already synced to, if any.
    """

    id: str = field(converter=_person_id)
    fields: Mapping[str, FieldValue] = fields_attribute()
    contact_id: str | None = field(default=None, converter=_optional_contact_id)

    def __attrs_post_init__(self) -> None:
        _check_fields(self.id, self.fields)


def checked_account(
    *, id: str, fields: dict[str, FieldValue], system_modstamp: datetime
) -> Account:
    """An `Account` of values that its construction would check and keep as they are,
    built without checking them again.

    For a decoder that checks each value as it reads it (the REST decoder's common case),
    so that a record is checked once: ``id`` is in its 18-character form; ``fields`` is a
    new dict, not used elsewhere, of names in `CHECKED_FIELD_NAMES` holding values that
    `check_field` passes; ``system_modstamp`` is a datetime in UTC.
    """
    account = object.__new__(Account)
    # As the frozen class's own __init__ sets its attributes, less the converters.
    _set = object.__setattr__
    _set(account, "id", id)
    _set(account, "fields", MappingProxyType(fields))
    _set(account, "system_modstamp", system_modstamp)
    _set(account, "sequence", None)
    return account


def checked_contact(
    *,
    id: str,
    account_id: str | None,
    fields: dict[str, FieldValue],
    system_modstamp: datetime,
) -> Contact:
    """A `Contact` built as `checked_account` builds an `Account`; ``account_id`` is None
    or an Account ID in its 18-character form."""
    contact = object.__new__(Contact)
    _set = object.__setattr__
    _set(contact, "id", id)
    _set(contact, "account_id", account_id)
    _set(contact, "fields", MappingProxyType(fields))
    _set(contact, "system_modstamp", system_modstamp)
    _set(contact, "sequence", None)
    return contact


def checked_accounts(
    ids: Sequence[str], fields: Sequence[dict[str, FieldValue]], stamps: Sequence[datetime]
) -> list[Account]:
    """`checked_account` of each ``ids[i]``, ``fields[i]`` and ``stamps[i]``, for a reader
    of thousands of records at a time: each attribute is set on all of them in one pass
    of C, with no bytecode a record."""
    _same_lengths(ids, fields, stamps)
    accounts = list(map(object.__new__, repeat(Account, len(ids))))
    # The frozen classes refuse setattr: their own __init__ sets the slots as these do.
    _each(Account.id, accounts, ids)
    _each(Account.fields, accounts, map(MappingProxyType, fields))
    _each(Account.system_modstamp, accounts, stamps)
    _each(Account.sequence, accounts, repeat(None))
    return accounts


def checked_contacts(
    ids: Sequence[str],
    account_ids: Sequence[str | None],
    fields: Sequence[dict[str, FieldValue]],
    stamps: Sequence[datetime],
) -> list[Contact]:
    """`checked_contact` of each ``ids[i]``, ``account_ids[i]``, ``fields[i]`` and
    ``stamps[i]``, as `checked_accounts`."""
    _same_lengths(ids, account_ids, fields, stamps)
    contacts = list(map(object.__new__, repeat(Contact, len(ids))))
    _each(Contact.id, contacts, ids)
    _each(Contact.account_id, contacts, account_ids)
    _each(Contact.fields, contacts, map(MappingProxyType, fields))
    _each(Contact.system_modstamp, contacts, stamps)
    _each(Contact.sequence, contacts, repeat(None))
    return contacts


def _same_lengths(*columns: Sequence[object]) -> None:
    if len({len(column) for column in columns}) > 1:
        raise ValueError("checked records need one value of each attribute a record")


def _each(slot: Any, records: list[Any], values: Iterable[object]) -> None:
    """Set the attribute whose slot descriptor is ``slot`` on each record, to the value
    at the same place."""
    deque(map(slot.__set__, records, values), maxlen=0)


def parse_object_type(value: object) -> ObjectType:
    """Return ``value`` as an `ObjectType`, or raise `InvalidRecordError`."""
    if value == "Account":
        return "Account"
    if value == "Contact":
        return "Contact"
    raise InvalidRecordError(f"unknown object type {value!r}; expected 'Account' or 'Contact'")


@frozen(kw_only=True)
class Deletion:
    """A record deleted in Salesforce at ``deleted_at`` (rule R4).

    ``master_record_id`` names the winner when the deletion is the losing side of a merge;
    ``sequence`` is as on `Account`.
    """

    object_type: ObjectType = field(converter=parse_object_type)
    id: str
    deleted_at: datetime = field(converter=_utc)
    master_record_id: str | None = None
    sequence: tuple[int, ...] | None = sequence_attribute()

    def __attrs_post_init__(self) -> None:
        prefix = OBJECT_PREFIXES[self.object_type]
        object.__setattr__(self, "id", normalize_id(self.id, prefix=prefix))
        if self.master_record_id is not None:
            master = normalize_id(self.master_record_id, prefix=prefix)
            if master == self.id:
                raise InvalidRecordError("a record cannot be merged into itself", record_id=master)
            object.__setattr__(self, "master_record_id", master)

    @property
    def system_modstamp(self) -> datetime:
        """The deletion's place in the record's history: when it was deleted."""
        return self.deleted_at


class Unchanged(enum.Enum):
    """The type of `UNCHANGED`."""

    UNCHANGED = "UNCHANGED"


UNCHANGED: Final = Unchanged.UNCHANGED
"""Marks an attribute a `PartialUpdate` leaves as it is."""


@frozen(kw_only=True)
class PartialUpdate:
    """An update that carries only the fields that changed (a Change Data Capture UPDATE).

    The engine merges it onto the stored upstream values; the other fields keep theirs.
    ``account_id`` is a contact's new account, or `UNCHANGED`; ``sequence`` is as on
    `Account`.
    """

    object_type: ObjectType = field(converter=parse_object_type)
    id: str
    fields: Mapping[str, FieldValue] = fields_attribute()
    account_id: str | Unchanged | None = UNCHANGED
    system_modstamp: datetime = field(converter=_utc)
    sequence: tuple[int, ...] | None = sequence_attribute()

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self, "id", normalize_id(self.id, prefix=OBJECT_PREFIXES[self.object_type])
        )
        if self.account_id is not UNCHANGED:
            if self.object_type != "Contact":
                raise InvalidRecordError("only a contact has an account id", record_id=self.id)
            if self.account_id is not None:
                account_id = normalize_id(self.account_id, prefix=ACCOUNT_PREFIX)
                object.__setattr__(self, "account_id", account_id)
        _check_fields(self.id, self.fields)


def _id_tuple(ids: Iterable[str]) -> tuple[str, ...]:
    if isinstance(ids, str):
        raise InvalidRecordError("ids must be a sequence of IDs, not one string")
    return tuple(ids)


@frozen(kw_only=True)
class Refetch:
    """Records that must be fetched again because a change to them was lost.

    Produced for Change Data Capture gap events; empty ``ids`` means the whole object
    (``GAP_OVERFLOW``). ``reason`` says what caused it.
    """

    object_type: ObjectType = field(converter=parse_object_type)
    ids: tuple[str, ...] = field(default=(), converter=_id_tuple)
    reason: str

    def __attrs_post_init__(self) -> None:
        prefix = OBJECT_PREFIXES[self.object_type]
        object.__setattr__(self, "ids", tuple(normalize_id(i, prefix=prefix) for i in self.ids))


@frozen(kw_only=True)
class RawRecord:
    """A Salesforce REST JSON record as a source received it, not yet decoded (rule R8).

    It may be malformed: the engine decodes it and rejects it with a reason if it is.
    ``origin`` says where it was read (``"accounts.csv:17"``); a rejection names it.
    """

    object_type: str
    payload: Mapping[str, Any] = field(hash=False)
    origin: str | None = None


@frozen(kw_only=True)
class RawChangeEvent:
    """A Change Data Capture event payload (with its ``ChangeEventHeader``), not yet decoded.

    ``origin`` says where it was read (a replay id, say); a rejection names it.
    """

    payload: Mapping[str, Any] = field(hash=False)
    origin: str | None = None


@frozen(kw_only=True)
class Unreadable:
    """An item a source found but could not read (a broken CSV row, invalid JSON).

    The engine reports it as a rejection, with ``reason`` and ``origin``, and applies
    the rest of the page (rule R7).
    """

    object_type: str
    reason: str
    record_id: str | None = None
    field: str | None = None
    origin: str | None = None


Change: TypeAlias = (
    Account
    | Contact
    | Deletion
    | PartialUpdate
    | Refetch
    | RawRecord
    | RawChangeEvent
    | Unreadable
)
"""One item of a source's page."""
