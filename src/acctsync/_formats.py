"""Salesforce's wire formats: REST JSON records and Change Data Capture events (rule R8).

Both decode into the same records. Salesforce JSON has no date or decimal type, so a
string that has the exact shape of a Salesforce datetime (``2024-01-31T12:00:00.000+0000``)
or date (``2024-01-31``) decodes to `datetime` or `date`; numbers stay ``int`` and
``float`` (or `Decimal`, when the caller parsed the JSON with ``parse_float=Decimal``).

Theory of operation
-------------------
A payload's keys are sorted once: the record attributes (``Id``, ``AccountId``,
``SystemModstamp``, ``IsDeleted``, ``MasterRecordId``, ``attributes``) and the audit
fields (``LastModifiedDate`` and kin) are recognised in any case, as Salesforce field
names are case-insensitive (rule R9); every other key is a field, kept as written (the
engine gives it the org's one spelling). Audit fields are not account information and
are dropped, so that they neither sync nor log activities.

A compound field (an address, a geolocation, a contact's name) is read as its
components: REST nests it beside them, change events nest it instead of them. The
compound itself is never a field. The empty ID (``000000000000000AAA``) is no ID.

Nearly every REST record is plain: attributes as Salesforce spells them, names met
before, scalar values. `decode_record` reads such a record in one pass, checking each
value as it goes, and builds it without the record's own second check; any other
payload takes the general path, which reads every shape and gives every reason (R7).
The engine reads a page of records at once (`_plain_records`): column by column, each
checked in a few passes of C, with the one-pass reader deciding any row they cannot.
Tests hold the three to one result.

Change events come from CometD as JSON and from the Pub/Sub API as whatever the
client made of the Avro: its field lists must be expanded from bitmaps to names, and
an event whose lists are not is refused rather than read as changing nothing.

Anything malformed raises `InvalidRecordError`; no other exception leaves this module.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import compress, repeat
from operator import getitem, is_, is_not, setitem
from typing import Any, Final, cast

from attrs import frozen

from acctsync._errors import InvalidRecordError
from acctsync._ids import ACCOUNT_PREFIX, normalize_id
from acctsync._records import (
    OBJECT_PREFIXES,
    RESERVED_FIELDS,
    UNCHANGED,
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    PartialUpdate,
    Refetch,
    Unchanged,
    checked_account,
    checked_accounts,
    checked_contact,
    checked_contacts,
    field_name_problem,
    parse_object_type,
    text_problem,
)

__all__ = [
    "AUDIT_FIELDS",
    "EMPTY_ID",
    "change_sequence",
    "commit_time",
    "decode_change_event",
    "decode_record",
    "encode_record",
    "event_parts",
    "format_datetime",
    "holds_bitmap",
    "is_empty_id",
    "is_gap",
    "json_value",
    "parse_datetime",
    "text_value",
]

AUDIT_FIELDS: Final = frozenset(
    {
        "CreatedById",
        "CreatedDate",
        "LastActivityDate",
        "LastModifiedById",
        "LastModifiedDate",
        "LastReferencedDate",
        "LastViewedDate",
    }
)
"""Fields Salesforce maintains itself; the decoders drop them, in any case."""

EMPTY_ID: Final = "000000000000000AAA"
"""Salesforce's empty ID: it names no record (an empty lookup in a Data Export file)."""

_EMPTY_IDS: Final = frozenset({EMPTY_ID, EMPTY_ID[:15]})
_SYSTEM_NAMES: Final = {name.lower(): name for name in (*RESERVED_FIELDS, *AUDIT_FIELDS)}
# The system name each name spells, "" for none: a sync meets the same few hundred names
# on every record, so each is case-folded once. Bounded, so that a stream of junk names
# cannot grow it for ever.
_SPELLINGS: dict[object, str] = {}
_SPELLINGS_MAX: Final = 1 << 16

# REST API Developer Guide and SOAP API Developer Guide, "Compound Fields" ("Address
# Compound Fields", "Geolocation Compound Field"): REST gives an address as an object
# of these keys, a geolocation as one of latitude and longitude. Each key is a component
# field, named as the org's describe names it (compoundFieldName): BillingAddress.city
# is BillingCity; a custom Loc__c's latitude is Loc__Latitude__s.
_REST_COMPONENTS: Final = {
    "street": "Street",
    "city": "City",
    "state": "State",
    "stateCode": "StateCode",
    "postalCode": "PostalCode",
    "country": "Country",
    "countryCode": "CountryCode",
    "latitude": "Latitude",
    "longitude": "Longitude",
    "geocodeAccuracy": "GeocodeAccuracy",
}
_ADDRESS_COMPONENTS: Final = tuple(_REST_COMPONENTS.values())
_ADDRESS_SUFFIX: Final = "Address"
_CUSTOM_SUFFIX: Final = "__c"
_NAME_COMPOUND: Final = "Name"  # Contact's name, nested in events as Name.FirstName
_COMPOUND_SUFFIXES: Final = (_ADDRESS_SUFFIX, _CUSTOM_SUFFIX)

# Pub/Sub API Developer Guide, "Event Deserialization Considerations": the header's
# field lists arrive as bitmaps over the Avro schema's field positions ("0x650004E0"),
# with "4-0x10" for the sub-fields of the compound field at position 4. A field name
# starts with a letter, so neither is ever one.
_BITMAP: Final = re.compile(r"(?:[0-9]+-)?0x[0-9A-Fa-f]+")
_FIELD_LISTS: Final = ("changedFields", "nulledFields", "diffFields")

_DATETIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{4})")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SCALARS: Final = frozenset({str, int, float, bool, Decimal})
_CDC_RECORD_TYPES: Final = frozenset({"CREATE", "UNDELETE"})
_CDC_GAPS: Final = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"})


def parse_datetime(text: object, *, record_id: str | None = None, field: str) -> datetime:
    """Parse a Salesforce datetime (``2024-01-31T12:00:00.000+0000``, or with ``Z``)."""
    if not isinstance(text, str) or _DATETIME.fullmatch(text) is None:
        raise InvalidRecordError(
            f"{text!r} is not a Salesforce datetime with a time zone",
            record_id=record_id,
            field=field,
        )
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRecordError(
            f"{text!r} is not a valid datetime", record_id=record_id, field=field
        ) from None


def format_datetime(value: datetime) -> str:
    """Format a datetime the way the Salesforce REST API does, in UTC to the millisecond."""
    utc = value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}+0000"


def _system_name(name: object) -> str | None:
    """The record attribute or audit field that ``name`` spells in any case, or None."""
    found = _SPELLINGS.get(name)
    if found is None:
        found = ""
        # Only ASCII folds: the Kelvin sign lowers to "k", and an API name is ASCII.
        if isinstance(name, str) and name.isascii():
            found = _SYSTEM_NAMES.get(name.lower(), "")
        if len(_SPELLINGS) < _SPELLINGS_MAX:
            _SPELLINGS[name] = found
    return found or None


def _split(record: Mapping[Any, Any]) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
    """A payload's record attributes, under their own names, and its fields, audit dropped."""
    attributes: dict[str, Any] = {}
    fields: list[tuple[Any, Any]] = []
    for name, raw in record.items():
        system = _SPELLINGS.get(name)  # the common case, without a call
        if system is None:
            system = _system_name(name)
        if not system:
            fields.append((name, raw))
        elif system in RESERVED_FIELDS:
            if system in attributes and attributes[system] != raw:
                raise InvalidRecordError(
                    "is given twice, in two spellings, with different values", field=system
                )
            attributes[system] = raw
    return attributes, fields


def is_empty_id(value: object) -> bool:
    """Whether ``value`` is the empty ID, in its 18- or 15-character form."""
    return isinstance(value, str) and value in _EMPTY_IDS


def _lookup_id(raw: Any) -> Any:
    """A lookup's ID as given (the record checks it), or None for the empty ID."""
    return None if is_empty_id(raw) else raw


def text_value(raw: str) -> FieldValue:
    """A string field's value: a datetime or date where it has the shape of one, None
    for the empty ID, else the string."""
    if raw == EMPTY_ID:  # an empty lookup, as the Data Export service writes it
        return None
    # Both shapes start with four digits and a hyphen, and are 10 characters or more:
    # most text is told apart here, without a regex.
    size = len(raw)
    if size < 10 or raw[4] != "-":
        return raw
    if size > 10 and _DATETIME.fullmatch(raw):  # a date is all of its ten characters
        try:
            return datetime.fromisoformat(raw).astimezone(UTC)
        except (ValueError, OverflowError):
            return raw
    if size == 10:
        # Dates repeat (birthdates, close dates, one day a mass update): each is read
        # once. Datetimes are rarely met twice, and not remembered.
        known = _DATES.get(raw)
        if known is None:
            known = _date_value(raw)
            if len(_DATES) >= _DATES_MAX:
                _DATES.clear()
            _DATES[raw] = known
        return known
    return raw


def _date_value(raw: str) -> date | str:
    if _DATE.fullmatch(raw):
        try:
            return date.fromisoformat(raw)
        except (ValueError, OverflowError):
            return raw
    return raw


# Ten characters that have a date's start, read: the date, or the text itself.
_DATES: dict[str, date | str] = {}
_DATES_MAX: Final = 1 << 15

# The checksum of each case pattern of an ID's first 15 characters ("1" for a capital
# letter), as `normalize_id` computes it: an ID's suffix checked by one lookup.
_CASES: Final = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "1" * 26 + "0" * 36
)
_CHECKSUMS: dict[str, str] = {}


def id_checksums() -> tuple[Mapping[str, str], Mapping[int, int]]:
    """The suffix `normalize_id` gives each case pattern of an ID's first 15 characters,
    and the translation that makes an ID's pattern (``str.translate``): for a reader
    that checks many IDs at once. Made on first use, from `normalize_id` itself."""
    if not _CHECKSUMS:
        for bits in range(1 << 15):
            spelled = "".join("A" if bits >> i & 1 else "a" for i in range(15))
            _CHECKSUMS[spelled.translate(_CASES)] = normalize_id(spelled)[15:]
    return _CHECKSUMS, _CASES


def _normalized_id(raw: str, prefix: str) -> str:
    """``normalize_id(raw, prefix=prefix)`` of a str: an 18-character ID by a lookup."""
    if len(raw) == 18 and raw.startswith(prefix) and raw.isascii() and raw.isalnum():
        checksums = _CHECKSUMS or id_checksums()[0]
        if checksums[raw.translate(_CASES)[:15]] == raw[15:]:
            return raw
    return normalize_id(raw, prefix=prefix)


_ID_SIZE: Final = 18
_ALNUM: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def field_dicts(
    names: Sequence[str], columns: Sequence[Sequence[FieldValue]], count: int
) -> list[dict[str, FieldValue]]:
    """The ``count`` rows' field maps, each a new dict of ``names`` to its values in the
    ``columns`` (one a name), made in C: a reader of a page by columns builds them so."""
    if len(columns) != len(names) or any(len(column) != count for column in columns):
        raise ValueError("field_dicts takes a column of count values a name")
    # Copies of one dict of the names, each name's values then set a column at a time:
    # a fifth quicker than a dict made of each row's pairs (0.38 µs a row of 3 to 8).
    rows = list(map(dict.copy, repeat(dict.fromkeys(names), count)))
    for name, column in zip(names, columns, strict=True):
        deque(map(setitem, rows, repeat(name), column), maxlen=0)
    return rows


def _heads(count: int) -> Sequence[slice]:
    """Where the first 15 characters of each of ``count`` IDs are, in their joined text:
    kept, as slices are immutable, for pages of up to `_HEADS_MAX`."""
    if count > _HEADS_MAX:
        return _slices(count)
    heads = _HEADS[0]
    if len(heads) < count:
        # A new list, put in place whole: a runner of another org may be reading the
        # one it replaces.
        heads = _HEADS[0] = _slices(count)
    return heads[:count]


def _slices(count: int) -> list[slice]:
    starts = range(0, count * _ID_SIZE, _ID_SIZE)
    return list(map(slice, starts, range(15, count * _ID_SIZE, _ID_SIZE)))


_HEADS: Final[list[list[slice]]] = [[]]  # the kept slices, the largest count's yet
_HEADS_MAX: Final = 1 << 14


def normalized_ids(values: Sequence[str], prefix: str) -> list[str | None]:
    """Each value as `normalize_id` makes it with ``prefix``, or None where it refuses it:
    a column of 18-character IDs checked in a few passes of C, any other one by one."""
    count = len(values)
    joined = "".join(values)
    size = count * _ID_SIZE
    if (
        len(joined) == size
        and set(map(len, values)) == {_ID_SIZE}
        and joined.isascii()
        and not joined.encode().translate(None, _ALNUM)
        and all(joined[i::_ID_SIZE] == prefix[i] * count for i in range(len(prefix)))
    ):
        checksums, case_of = id_checksums()
        cases = joined.translate(case_of)
        expected = "".join(map(checksums.__getitem__, map(cases.__getitem__, _heads(count))))
        # The nth checksum's characters are each ID's 16th, 17th and 18th.
        if all(expected[i::3] == joined[15 + i :: _ID_SIZE] for i in range(3)):
            return list(values)
    out: list[str | None] = []
    for v in values:
        try:
            out.append(normalize_id(v, prefix=prefix))
        except InvalidRecordError:
            out.append(None)
    return out


def _value(raw: object, *, record_id: str, field: str) -> FieldValue:
    if raw is None or isinstance(raw, bool | int | float | Decimal):
        return raw
    if isinstance(raw, str):
        return text_value(raw)
    kind = "an object" if isinstance(raw, Mapping) else type(raw).__name__
    raise InvalidRecordError(f"holds {kind}, not a field value", record_id=record_id, field=field)


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    # type() first: the ABC check costs several times more, on every event.
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidRecordError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _record_id(raw: object, object_type: ObjectType) -> str:
    if raw is None:
        raise InvalidRecordError("missing Id")
    try:
        return normalize_id(raw, prefix=OBJECT_PREFIXES[object_type])
    except InvalidRecordError as error:
        raise InvalidRecordError(
            error.reason, record_id=raw if isinstance(raw, str) else None, field="Id"
        ) from None


def _is_address(name: object) -> bool:
    # Every standard field of Account and Contact whose name ends so is an address
    # compound (BillingAddress, MailingAddress, PersonMailingAddress...).
    return isinstance(name, str) and name.endswith(_ADDRESS_SUFFIX)


def _component_name(compound: str, component: str) -> str | None:
    """The field a compound's component is, or None for a sub-field no object has.

    Change Data Capture Developer Guide, "Get Compound Fields in Change Events": an
    event's BillingAddress.Street is the object's BillingStreet, Name.FirstName its
    FirstName. A custom compound's components end in ``__s`` (REST API Developer Guide,
    "Compound Fields").
    """
    if compound.endswith(_CUSTOM_SUFFIX):
        return f"{compound[: -len(_CUSTOM_SUFFIX)]}__{component}__s"
    if compound.endswith(_ADDRESS_SUFFIX):
        # The Pub/Sub API's Address record has sub-fields no object has ("Xyz" in a
        # real event): they name no field, and are not read.
        if component not in _ADDRESS_COMPONENTS:
            return None
        return compound[: -len(_ADDRESS_SUFFIX)] + component
    if compound == _NAME_COMPOUND:
        return component
    return None


def names_a_person(entity: object, body: Mapping[str, Any], names: Iterable[object]) -> bool:
    """Whether a change event of ``entity`` changes a person account's name, which it nests
    as Salutation, FirstName and LastName (``names``: its changed and nulled fields).

    The whole Name a query reads is the org's to format (Change Data Capture Developer
    Guide, "Creating and Undeleting a Person Account"): the account is read again.
    """
    return entity == "Account" and (
        isinstance(body.get(_NAME_COMPOUND), Mapping)
        or any(isinstance(name, str) and name.startswith(f"{_NAME_COMPOUND}.") for name in names)
    )


def _is_compound(name: str) -> bool:
    """Whether a change event may nest ``name``'s components in an object."""
    return name.endswith(_COMPOUND_SUFFIXES) or name == _NAME_COMPOUND


def _rest_components(
    name: object, raw: Mapping[Any, Any], record_id: str
) -> list[tuple[str, FieldValue]]:
    """The components of a compound field that a REST record holds as an object."""
    shown = name if isinstance(name, str) else repr(name)
    if "attributes" in raw:
        raise InvalidRecordError(
            "holds a related record (a relationship field), not a value;"
            " query the lookup's ID field instead",
            record_id=record_id,
            field=shown,
        )
    compound = isinstance(name, str) and name.endswith(_COMPOUND_SUFFIXES)
    if not compound or not all(key in _REST_COMPONENTS for key in raw):
        raise InvalidRecordError(
            "holds an object that is no address or geolocation compound field",
            record_id=record_id,
            field=shown,
        )
    out: list[tuple[str, FieldValue]] = []
    for key, inner in raw.items():
        component = _component_name(shown, _REST_COMPONENTS[key])
        assert component is not None  # every REST key is an address component
        out.append((component, _value(inner, record_id=record_id, field=component)))
    return out


def _is_null_compound(name: object, record: Mapping[Any, Any]) -> bool:
    """Whether ``name``, null in a REST record, is a compound field's."""
    if type(name) is not str or not name.endswith(_COMPOUND_SUFFIXES):
        return False
    # A custom compound (a geolocation, a custom address) is told from a custom field by
    # the latitude component that both kinds have.
    return name.endswith(_ADDRESS_SUFFIX) or _component_name(name, "Latitude") in record


def decode_record(object_type: str, payload: object) -> Account | Contact | Deletion:
    """Decode one REST JSON record of ``object_type`` (``"Account"`` or ``"Contact"``).

    A record with ``IsDeleted: true`` decodes to a `Deletion`, with its
    ``MasterRecordId`` when it lost a merge. A compound field (``BillingAddress``, a
    geolocation) gives its components, where the record does not hold them itself.
    """
    kind = parse_object_type(object_type)
    if type(payload) is dict:
        plain = _plain_record(kind, payload)
        if plain is not None:
            return plain
    return _any_record(kind, payload)


def _plain_record(kind: ObjectType, record: dict[Any, Any]) -> Account | Contact | None:
    """A live record as Salesforce sends nearly all of them, decoded and checked in one
    pass; None for any other, which `_any_record` decodes or rejects.

    Plain: record attributes spelled as Salesforce spells them, a valid ``Id`` and
    ``SystemModstamp``, no compound field but null ones, field names that are API names
    and values that are text, finite numbers, booleans or null. What its keys are is
    learnt once per set of keys (`_shape`), since a query's records share theirs. It
    makes every check that the record's construction makes, so it builds the record
    without them (`checked_account`): a sync reads a million records of this kind.
    """
    keys = tuple(record)
    shape = _SHAPES.get(keys, _UNKNOWN)
    if shape is _UNKNOWN:
        shape = _shape(keys)
    if shape is None:
        return None
    shape = cast("_Shape", shape)
    values = tuple(record.values())
    fields: dict[str, FieldValue] = {}
    for at, name, compound in shape.fields:
        raw = values[at]
        kind_of = type(raw)
        if kind_of is str:
            if not raw.isascii() and text_problem(raw) is not None:
                return None
            # Most text has no date's shape and is no empty ID: told so without a call.
            if (len(raw) < 10 or raw[4] != "-") and raw != EMPTY_ID:
                fields[name] = raw
            else:
                fields[name] = text_value(raw)
        elif raw is None:
            if not compound:  # a compound's null is no field
                fields[name] = None
        elif kind_of is bool or kind_of is int or _finite(raw):
            fields[name] = raw
        else:
            return None
    record_id, stamp = values[shape.id_at], values[shape.stamp_at]
    if type(record_id) is not str or type(stamp) is not str:
        return None
    if shape.declared_at is not None:
        declared = values[shape.declared_at]
        if declared is not None and (
            type(declared) is not dict or declared.get("type") not in (None, kind)
        ):
            return None
    modstamp = text_value(stamp)
    if type(modstamp) is not datetime:
        return None
    if shape.deleted_at is not None and values[shape.deleted_at] is not False:
        return None
    try:
        record_id = _normalized_id(record_id, OBJECT_PREFIXES[kind])
        if kind == "Account":
            return checked_account(id=record_id, fields=fields, system_modstamp=modstamp)
        account_id = None if shape.account_at is None else values[shape.account_at]
        if type(account_id) is str:
            if account_id in _EMPTY_IDS:
                account_id = None
            else:
                account_id = _ACCOUNT_IDS.get(account_id) or _account_id(account_id)
        elif account_id is not None:
            return None
    except InvalidRecordError:
        return None
    return checked_contact(
        id=record_id, account_id=account_id, fields=fields, system_modstamp=modstamp
    )


@frozen
class _Shape:
    """Where a plain record's attributes are among its keys, and which keys are fields.

    ``fields`` holds each field's position, name, and whether its null is a compound's,
    which is no field (`_is_null_compound`).
    """

    id_at: int
    stamp_at: int
    declared_at: int | None
    deleted_at: int | None
    account_at: int | None
    fields: tuple[tuple[int, str, bool], ...]


# The shape of each set of keys met, None for keys no plain record has; bounded, so
# that a stream of odd records cannot grow it for ever.
_SHAPES: dict[tuple[Any, ...], _Shape | None] = {}
_SHAPES_MAX: Final = 1 << 12
_UNKNOWN: Final = object()
# Contacts' account IDs as `normalize_id` makes them: many contacts name one account.
_ACCOUNT_IDS: dict[str, str] = {}
_ACCOUNT_IDS_MAX: Final = 1 << 17


def _shape(keys: tuple[Any, ...]) -> _Shape | None:
    """What `_plain_record` needs to know of records with these keys, learnt once."""
    attributes: dict[str, int] = {}
    fields: list[tuple[int, str, bool]] = []
    shape = None
    record = dict.fromkeys(keys)  # what `_is_null_compound` looks at: the keys
    for at, name in enumerate(keys):
        system = _system_name(name)
        if system is not None:
            if system != name and system not in AUDIT_FIELDS:
                break  # one in two spellings, maybe: `_split` compares them
            attributes[system] = at
        elif field_name_problem(name) is not None:
            break  # named so, a field is not plain; `_any_record` says what is wrong
        else:
            fields.append((at, name, _is_null_compound(name, record)))
    else:
        if "Id" in attributes and "SystemModstamp" in attributes:
            shape = _Shape(
                id_at=attributes["Id"],
                stamp_at=attributes["SystemModstamp"],
                declared_at=attributes.get("attributes"),
                deleted_at=attributes.get("IsDeleted"),
                account_at=attributes.get("AccountId"),
                fields=tuple(fields),
            )
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    _SHAPES[keys] = shape
    return shape


def _account_id(raw: str) -> str:
    account_id = normalize_id(raw, prefix=ACCOUNT_PREFIX)
    if len(_ACCOUNT_IDS) >= _ACCOUNT_IDS_MAX:
        _ACCOUNT_IDS.clear()
    _ACCOUNT_IDS[raw] = account_id
    return account_id


def _finite(raw: object) -> bool:
    """Whether ``raw`` is a float or `Decimal` that a record takes: a finite one."""
    if type(raw) is float:
        return math.isfinite(raw)
    return type(raw) is Decimal and raw.is_finite()


def _plain_records(
    kind: ObjectType, payloads: Sequence[dict[Any, Any]], names: set[str]
) -> list[Account | Contact | None]:
    """`_plain_record` of each payload, read a page at a time: the same record, or None.
    The field names of the records read are put in ``names`` (a set of keys at a time),
    so that a reader checks their spellings once, not once a record.

    A query's page holds a few sets of keys (a null field is still a key), so the
    payloads are read a set at a time, as columns: each column is checked and converted
    in a few passes of C (its types, its text joined, its numbers summed, its dates and
    datetimes by shape) rather than value by value. A row that a column cannot show to
    be plain is read alone by `_plain_record`, which decides.
    """
    count = len(payloads)
    out: list[Account | Contact | None] = [None] * count
    # Each payload's keys as a tuple, made once: a page of several sets of keys then
    # groups them without making each again (0.55 to 0.40 µs a payload, most of it the
    # first reading of the payload), and a page of one costs what it did.
    keys = list(map(tuple, payloads))
    groups: dict[tuple[Any, ...], Sequence[int]] = dict.fromkeys(keys, ())
    if len(groups) == 1:  # most pages: one query's fields
        groups = dict.fromkeys(groups, range(count))
    else:
        places: dict[tuple[Any, ...], list[int]] = {key: [] for key in groups}
        for at, key in enumerate(keys):
            places[key].append(at)
        groups = cast("dict[tuple[Any, ...], Sequence[int]]", places)
    del keys
    for key, rows in groups.items():
        shape = _SHAPES.get(key, _UNKNOWN)
        if shape is _UNKNOWN:
            shape = _shape(key)
        if shape is None:
            continue  # no record with these keys is plain
        if len(rows) < _GROUP_MIN:  # too few for columns to pay
            for at in rows:
                out[at] = _named(_plain_record(kind, payloads[at]), names)
            continue
        group = payloads if len(rows) == count else list(map(payloads.__getitem__, rows))
        decoded = _plain_group(kind, cast("_Shape", shape), group, names)
        if len(rows) == count:
            return decoded
        for at, record in zip(rows, decoded, strict=True):
            out[at] = record
    return out


_GROUP_MIN: Final = 4  # payloads of one set of keys that are read as columns
_NONE: Final = frozenset({type(None)})
_STRINGS: Final = frozenset({str})
_AS_IS: Final = frozenset({type(None), bool, int})
_NUMBERS: Final = frozenset({type(None), bool, int, float})
_TEXTS: Final = frozenset({type(None), str})
_DATETIMES: Final = frozenset({datetime})
_BOOLS: Final = frozenset({bool})
_DICTS: Final = frozenset({dict})
_NONE_AS_EMPTY: Final = {None: ""}
_FIFTH: Final = slice(4, 5)  # where a date or datetime has its first hyphen
_EMPTY_START: Final = EMPTY_ID[:15]
# Datetimes as REST and Bulk write them, by length, each digit as 9: text of one of these
# shapes is one `_DATETIME` matches.
_DATETIME_SHAPES: Final = {
    28: b"9999-99-99T99:99:99.999+9999",
    24: b"9999-99-99T99:99:99.999Z",
}
_DIGITS_AS_NINES: Final = bytes.maketrans(b"0123456789", b"9" * 10)


def _named(record: Account | Contact | None, names: set[str]) -> Account | Contact | None:
    """``record``, its field names put in ``names``."""
    if record is not None:
        names.update(record.fields)
    return record


def _plain_group(
    kind: ObjectType, shape: _Shape, payloads: Sequence[dict[Any, Any]], read_names: set[str]
) -> list[Account | Contact | None]:
    """`_plain_records` of payloads that all have ``shape``'s keys, in their order."""
    count = len(payloads)
    columns = list(zip(*map(dict.values, payloads), strict=True))
    bad: set[int] = set()  # rows not shown plain here: `_plain_record` reads them
    names: list[str] = []
    values: list[Sequence[FieldValue]] = []
    for at, name, compound in shape.fields:
        column = columns[at]
        types = set(map(type, column))
        if compound:
            # A compound's null is no field; a row holding more is for `_plain_record`.
            if types != _NONE:
                bad.update(compress(range(count), map(is_not, column, repeat(None))))
            continue
        names.append(name)
        values.append(_field_column(column, types, bad))
    ids = normalized_ids(_strings(columns[shape.id_at], bad), OBJECT_PREFIXES[kind])
    if None in ids:
        bad.update(compress(range(count), map(is_, ids, repeat(None))))
    stamps = _text_values(_strings(columns[shape.stamp_at], bad))
    if set(map(type, stamps)) != _DATETIMES:
        bad.update(i for i, stamp in enumerate(stamps) if type(stamp) is not datetime)
    if shape.declared_at is not None:
        _check_declared(kind, columns[shape.declared_at], bad)
    if shape.deleted_at is not None:
        flags = columns[shape.deleted_at]
        if set(map(type, flags)) != _BOOLS or True in flags:
            bad.update(compress(range(count), map(is_not, flags, repeat(False))))
    accounts: list[str | None] = []
    if kind == "Contact":
        if shape.account_at is None:
            accounts = [None] * count
        else:
            accounts = _account_ids(columns[shape.account_at], bad)
    fields = field_dicts(names, values, count)
    read_names.update(names)  # a name no row kept only costs a reader its quick check
    kept: Sequence[int] = range(count)
    if bad:
        kept = [i for i in kept if i not in bad]
        ids = list(map(ids.__getitem__, kept))
        stamps = list(map(stamps.__getitem__, kept))
        fields = list(map(fields.__getitem__, kept))
        if accounts:
            accounts = list(map(accounts.__getitem__, kept))
    plain_ids, plain_stamps = cast("list[str]", ids), cast("list[datetime]", stamps)
    built: list[Account | Contact | None] = [
        *(
            checked_accounts(plain_ids, fields, plain_stamps)
            if kind == "Account"
            else checked_contacts(plain_ids, accounts, fields, plain_stamps)
        )
    ]
    if not bad:
        return built
    out: list[Account | Contact | None] = [None] * count
    for at, record in zip(kept, built, strict=True):
        out[at] = record
    for at in bad:
        out[at] = _named(_plain_record(kind, payloads[at]), read_names)
    return out


def _field_column(column: Sequence[Any], types: set[type], bad: set[int]) -> Sequence[FieldValue]:
    """A field's values as `_plain_record` reads them; rows it would not read go in ``bad``."""
    if types <= _AS_IS:
        return column
    if types <= _NUMBERS:
        # An infinity or a nan makes the sum one: a finite sum is of finite numbers.
        try:
            if math.isfinite(sum(filter(None, column), 0.0)):
                return column
        except OverflowError:  # an int beyond a float's range
            pass
    elif str in types and types <= _TEXTS:
        return _text_column(column, type(None) in types, bad)
    return _each_value(column, bad)


def _each_value(column: Sequence[Any], bad: set[int]) -> list[FieldValue]:
    """`_field_column` of any column, value by value, as `_plain_record` reads each."""
    out: list[FieldValue] = []
    for at, raw in enumerate(column):
        kind_of = type(raw)
        if kind_of is str:
            if not raw.isascii() and text_problem(raw) is not None:
                bad.add(at)
            out.append(text_value(raw))
        elif raw is None or kind_of is bool or kind_of is int or _finite(raw):
            out.append(raw)
        else:
            bad.add(at)
            out.append(None)
    return out


def _text_column(column: Sequence[Any], nulls: bool, bad: set[int]) -> Sequence[FieldValue]:
    """`_field_column` of text and nulls: only values with a date's start, or the empty
    ID, are read by `text_value`."""
    texts: Sequence[str] = list(map(_NONE_AS_EMPTY.get, column, column)) if nulls else column
    count = len(texts)
    joined = "".join(texts)
    if not joined.isascii():
        try:
            joined.encode()
        except UnicodeEncodeError:  # a lone surrogate, somewhere
            bad.update(at for at, text in enumerate(texts) if text_problem(text) is not None)
    # Without a hyphen or fifteen zeros, no value has a date's start or is the empty ID.
    if "-" not in joined and _EMPTY_START not in joined:
        return column
    # Most such columns hold dates met before, and nulls: each read by one lookup. A text
    # not met before is None there, as a null is: the counts of None tell.
    known = list(map(_DATES.get, column))
    if known.count(None) == column.count(None):
        return cast("list[FieldValue]", known)
    fifths = list(map(getitem, texts, repeat(_FIFTH)))
    dated = fifths.count("-")
    empty = EMPTY_ID in texts
    if not dated and not empty:
        return column
    if dated == count:  # no null: a null reads as "", of no date's shape
        return _text_values(texts)
    read = list(compress(range(count), map("-".__eq__, fifths)))
    if empty:
        read = sorted({*read, *compress(range(count), map(EMPTY_ID.__eq__, texts))})
    out: list[FieldValue] = list(column)
    for at, value in zip(read, _text_values(list(map(texts.__getitem__, read))), strict=True):
        out[at] = value
    return out


def _text_values(texts: Sequence[str]) -> list[FieldValue]:
    """`text_value` of each text: a column of dates by `_DATES`, one of datetimes as REST
    writes them by their shape, parsed in one pass."""
    sizes = set(map(len, texts))
    if sizes == {10}:
        known = list(map(_DATES.get, texts))
        if None not in known:
            return cast("list[FieldValue]", known)
        return [text_value(t) if k is None else k for k, t in zip(known, texts, strict=True)]
    if len(sizes) == 1:
        shape = _DATETIME_SHAPES.get(sizes.pop())
        joined = "".join(texts)
        if (
            shape is not None
            and joined.isascii()
            and joined.encode().translate(_DIGITS_AS_NINES) == shape * len(texts)
        ):
            try:
                parsed = map(datetime.fromisoformat, texts)
                return list(map(datetime.astimezone, parsed, repeat(UTC)))
            except (ValueError, OverflowError):  # a month 13, say: text, as text_value says
                pass
    return list(map(text_value, texts))


def _strings(column: Sequence[Any], bad: set[int]) -> Sequence[str]:
    """The column, its rows that hold no str in ``bad`` (and as "", which is no ID)."""
    if set(map(type, column)) == _STRINGS:
        return column
    out: list[str] = []
    for at, raw in enumerate(column):
        if type(raw) is str:
            out.append(raw)
        else:
            bad.add(at)
            out.append("")
    return out


def _check_declared(kind: ObjectType, column: Sequence[Any], bad: set[int]) -> None:
    """Put in ``bad`` the rows whose ``attributes`` declare no record of ``kind``."""
    if set(map(type, column)) == _DICTS:
        declared = list(map(dict.get, column, repeat("type")))
        if declared.count(kind) == len(declared):
            return
    for at, raw in enumerate(column):
        if raw is not None and (type(raw) is not dict or raw.get("type") not in (None, kind)):
            bad.add(at)


def _account_ids(column: Sequence[Any], bad: set[int]) -> list[str | None]:
    """A contact column's account IDs as `_plain_record` reads them; refused ones in ``bad``."""
    count = len(column)
    known: list[str | None] = [None] * count
    if set(map(type, column)) <= _TEXTS:
        known = list(map(_ACCOUNT_IDS.get, column))
        if None not in known:
            return known
    for at, raw in enumerate(column):
        if known[at] is not None or raw is None:
            continue
        if type(raw) is not str:
            bad.add(at)
        elif raw not in _EMPTY_IDS:
            try:
                known[at] = _account_id(raw)
            except InvalidRecordError:
                bad.add(at)
    return known


def _any_record(kind: ObjectType, payload: object) -> Account | Contact | Deletion:
    """`decode_record` for any payload: every shape it reads, every reason it rejects."""
    record = _mapping(payload, "a record")
    attributes, items = _split(record)
    declared = attributes.get("attributes")
    if declared is not None:
        declared = _mapping(declared, "attributes").get("type")
        if declared is not None and declared != kind:
            raise InvalidRecordError(f"attributes.type is {declared!r}, expected {kind!r}")
    record_id = _record_id(attributes.get("Id"), kind)
    modstamp = attributes.get("SystemModstamp")
    if modstamp is None:
        raise InvalidRecordError("missing SystemModstamp", record_id=record_id)
    stamp = parse_datetime(modstamp, record_id=record_id, field="SystemModstamp")
    deleted = attributes.get("IsDeleted", False)
    if not isinstance(deleted, bool):
        raise InvalidRecordError("IsDeleted must be true or false", record_id=record_id)
    if deleted:
        return Deletion(
            object_type=kind,
            id=record_id,
            deleted_at=stamp,
            master_record_id=_lookup_id(attributes.get("MasterRecordId")),
        )
    fields: dict[str, FieldValue] = {}
    compounds: list[tuple[str, FieldValue]] = []
    for name, raw in items:
        if raw is None:
            if not _is_null_compound(name, record):
                fields[name] = None
        elif type(raw) in _SCALARS or not isinstance(raw, Mapping):
            fields[name] = _value(raw, record_id=record_id, field=name)
        else:
            compounds.extend(_rest_components(name, raw, record_id))
    if compounds:
        # The component's own value wins: FIELDS(ALL) gives both, and a record may hold
        # only some components.
        held = {name.lower() for name, _ in items if isinstance(name, str)}
        fields.update((name, value) for name, value in compounds if name.lower() not in held)
    if kind == "Account":
        return Account(id=record_id, fields=fields, system_modstamp=stamp)
    return Contact(
        id=record_id,
        account_id=_lookup_id(attributes.get("AccountId")),
        fields=fields,
        system_modstamp=stamp,
    )


def json_value(value: FieldValue) -> object:
    """A field value as REST JSON writes it (a `Decimal` becomes a JSON number)."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def encode_record(record: Account | Contact | Deletion) -> dict[str, Any]:
    """Encode a record as the REST API returns it (the inverse of `decode_record`).

    REST JSON has no decimal type: a `Decimal` becomes a JSON number.
    """
    if isinstance(record, Deletion):
        return {
            "attributes": {"type": record.object_type},
            "Id": record.id,
            "IsDeleted": True,
            "MasterRecordId": record.master_record_id,
            "SystemModstamp": format_datetime(record.deleted_at),
        }
    out: dict[str, Any] = {
        "attributes": {"type": "Account" if isinstance(record, Account) else "Contact"},
        "Id": record.id,
    }
    if isinstance(record, Contact):
        out["AccountId"] = record.account_id
    out.update((name, json_value(value)) for name, value in record.fields.items())
    out["SystemModstamp"] = format_datetime(record.system_modstamp)
    return out


def _string_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if type(value) is list and all(type(item) is str for item in value):
        return list(value)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidRecordError(f"{what} must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise InvalidRecordError(f"{what} must be a list of strings")
    return list(value)


def _header_number(value: object) -> int | None:
    """A non-negative integer of a change event header, given as a number or in digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def commit_time(header: Mapping[str, Any]) -> datetime:
    """The ``commitTimestamp`` of a change event header, as a UTC datetime."""
    millis = _header_number(header.get("commitTimestamp"))
    if millis is None:
        raise InvalidRecordError("ChangeEventHeader.commitTimestamp must be epoch milliseconds")
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise InvalidRecordError(f"commitTimestamp {millis} is out of range") from None


def change_sequence(header: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The order of a change among those of one commit time: the record's ``sequence``.

    Change Data Capture Developer Guide, "Change Event Header Fields": ``commitNumber``
    numbers committed transactions in order, ``sequenceNumber`` the changes within one.
    It is ``(commitNumber, sequenceNumber)``, ``(commitNumber,)`` when the sequence
    number is unreadable, and None when the commit number is.
    """
    commit = _header_number(header.get("commitNumber"))
    if commit is None:
        return None
    number = _header_number(header.get("sequenceNumber"))
    return (commit,) if number is None else (commit, number)


def holds_bitmap(header: Mapping[str, Any]) -> bool:
    """Whether a change event header's field lists hold an unexpanded Pub/Sub bitmap.

    `decode_change_event` refuses such an event: which fields changed cannot be read
    without the event's schema.
    """
    lists = (header.get(key) for key in _FIELD_LISTS)
    return any(
        isinstance(name, str) and _BITMAP.fullmatch(name) is not None
        for names in lists
        if type(names) is list or (isinstance(names, Sequence) and not isinstance(names, str))
        for name in names
    )


def _field_list(header: Mapping[str, Any], key: str, record_id: str) -> list[str]:
    names = _string_list(header.get(key), f"ChangeEventHeader.{key}")
    for name in names:
        if _BITMAP.fullmatch(name):
            raise InvalidRecordError(
                f"holds {name!r}, an unexpanded Pub/Sub bitmap: expand the field lists"
                " with the event's schema before handing the event over",
                record_id=record_id,
                field=f"ChangeEventHeader.{key}",
            )
    return names


def _is_diff(raw: object) -> bool:
    # Change Data Capture Developer Guide, "Data Differences in Event Fields": over
    # CometD a long text field's update may come as {"diff": "<unified diff>"}.
    return (
        type(raw) not in _SCALARS and isinstance(raw, Mapping) and len(raw) == 1 and "diff" in raw
    )


def _put(
    fields: dict[str, FieldValue],
    diffed: list[str],
    name: str,
    raw: object,
    *,
    record_id: str,
    partial: bool,
) -> None:
    """Read one field of an event body into ``fields``, a compound as its components.

    In an update (``partial``) a compound's null component is left out: over the Pub/Sub
    API an unchanged field is null, and a field set to null is in ``nulledFields``.
    """
    if type(raw) in _SCALARS:  # most fields: no ABC checks
        fields[name] = _value(raw, record_id=record_id, field=name)
    elif _is_diff(raw):
        diffed.append(name)
    elif isinstance(raw, Mapping):
        if not _is_compound(name):
            # Avro's JSON form of a union ({"string": "Retail"}), say: not a value.
            raise InvalidRecordError(
                "holds an object, and is no compound field", record_id=record_id, field=name
            )
        for component, inner in raw.items():
            flat = _component_name(name, str(component))
            if flat is not None and (inner is not None or not partial):
                fields[flat] = _value(inner, record_id=record_id, field=flat)
    elif raw is not None or not _is_address(name):
        fields[name] = _value(raw, record_id=record_id, field=name)


def _clear(fields: dict[str, FieldValue], name: str, body: Mapping[str, Any]) -> None:
    """Set the field ``name`` to None, each component of a whole compound."""
    compound, _, component = name.partition(".")
    if _system_name(compound) is not None:
        return
    if component:
        flat = _component_name(compound, component)
        if flat is not None:
            fields[flat] = None
    elif _is_address(name):
        prefix = name[: -len(_ADDRESS_SUFFIX)]
        fields.update((prefix + part, None) for part in _ADDRESS_COMPONENTS)
    elif isinstance(body.get(name), Mapping):
        # A custom compound is only known as one by the object the event nests it in.
        for part in body[name]:
            flat = _component_name(name, str(part))
            if flat is not None:
                fields[flat] = None
    else:
        fields[name] = None


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def is_gap(change_type: str | None, record_ids: Sequence[str]) -> bool:
    """Whether a change event says changes were lost: a gap type or a wildcard record ID.

    `decode_change_event` turns such an event into a `Refetch`.
    """
    gap = change_type == "GAP_OVERFLOW" or change_type in _CDC_GAPS
    return gap or any(i.endswith("*") for i in record_ids)


def event_parts(event: object) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The payload of a change event message and its ``ChangeEventHeader``."""
    body = _mapping(event, "a change event")
    if "ChangeEventHeader" not in body:
        if isinstance(body.get("data"), Mapping):
            body = _mapping(body["data"], "data")
        if "payload" in body:
            body = _mapping(body["payload"], "payload")
    return body, _mapping(body.get("ChangeEventHeader"), "ChangeEventHeader")


def decode_change_event(
    event: object,
) -> list[Account | Contact | Deletion | PartialUpdate | Refetch]:
    """Decode a Change Data Capture event into one change per record it names.

    ``event`` is the event payload (the object holding ``ChangeEventHeader``), or a
    message wrapping it under ``payload`` or ``data.payload``. CREATE and UNDELETE give
    full records, UPDATE a `PartialUpdate` of the changed fields, DELETE a `Deletion`,
    each with the header's `change_sequence`; gap events (and a wildcard record ID) give
    a `Refetch`, since their changes are lost, and so do fields that came as a diff and a
    person account's name.
    Field lists still holding Pub/Sub bitmaps raise `InvalidRecordError`.
    """
    body, header = event_parts(event)
    kind = parse_object_type(header.get("entityName"))
    change_type = header.get("changeType")
    if not isinstance(change_type, str):
        raise InvalidRecordError("ChangeEventHeader.changeType must be a string")
    record_ids = _string_list(header.get("recordIds"), "ChangeEventHeader.recordIds")
    if change_type == "GAP_OVERFLOW" or any(i.endswith("*") for i in record_ids):
        return [Refetch(object_type=kind, ids=(), reason=change_type)]
    ids = [normalize_id(i, prefix=OBJECT_PREFIXES[kind]) for i in record_ids if not is_empty_id(i)]
    if not ids:
        raise InvalidRecordError("ChangeEventHeader.recordIds names no record")
    if change_type in _CDC_GAPS:
        return [Refetch(object_type=kind, ids=tuple(ids), reason=change_type)]
    stamp = commit_time(header)
    sequence = change_sequence(header)
    changed, nulled, diffed = (_field_list(header, key, ids[0]) for key in _FIELD_LISTS)
    if not all(isinstance(name, str) for name in body):
        raise InvalidRecordError("field names must be strings", record_id=ids[0])
    try:
        attributes, items = _split(body)
    except InvalidRecordError as error:
        raise InvalidRecordError(error.reason, record_id=ids[0], field=error.field) from None
    if change_type == "DELETE":
        master = _lookup_id(attributes.get("MasterRecordId"))
        return [
            Deletion(
                object_type=kind,
                id=i,
                deleted_at=stamp,
                master_record_id=master,
                sequence=sequence,
            )
            for i in ids
        ]
    fields: dict[str, FieldValue] = {}
    out: list[Account | Contact | Deletion | PartialUpdate | Refetch]
    person_name = names_a_person(kind, body, (*changed, *nulled))
    if change_type in _CDC_RECORD_TYPES:
        for name, raw in items:
            if name != "ChangeEventHeader":
                _put(fields, diffed, name, raw, record_id=ids[0], partial=False)
        for name in nulled:
            _clear(fields, name, body)
        account_id = _lookup_id(attributes.get("AccountId"))
        if kind == "Account":
            out = [
                Account(id=i, fields=fields, system_modstamp=stamp, sequence=sequence) for i in ids
            ]
        else:
            out = [
                Contact(
                    id=i,
                    account_id=account_id,
                    fields=fields,
                    system_modstamp=stamp,
                    sequence=sequence,
                )
                for i in ids
            ]
    elif change_type == "UPDATE":
        skipped = {*diffed, *nulled}
        for name in changed:
            if name in skipped:
                continue
            compound, _, component = name.partition(".")
            if _system_name(compound) is not None:
                continue
            if component:
                parent = body.get(compound)
                if parent is not None and not isinstance(parent, Mapping):
                    raise InvalidRecordError(
                        f"names {name!r} changed, and {compound} holds no object",
                        record_id=ids[0],
                        field=compound,
                    )
                raw = parent.get(component) if isinstance(parent, Mapping) else None
                flat = _component_name(compound, component)
                if _is_diff(raw):
                    diffed.append(name)
                elif flat is not None:
                    fields[flat] = _value(raw, record_id=ids[0], field=flat)
            else:
                _put(fields, diffed, name, body.get(name), record_id=ids[0], partial=True)
        for name in nulled:
            _clear(fields, name, body)
        new_account: str | Unchanged | None = UNCHANGED
        moved = any(_system_name(name) == "AccountId" for name in (*changed, *nulled))
        if kind == "Contact" and moved:
            new_account = _lookup_id(attributes.get("AccountId"))
        out = [
            PartialUpdate(
                object_type=kind,
                id=i,
                fields=fields,
                account_id=new_account,
                system_modstamp=stamp,
                sequence=sequence,
            )
            for i in ids
        ]
    else:
        raise InvalidRecordError(f"unknown changeType {change_type!r}", record_id=ids[0])
    reasons = ["diffFields: " + ", ".join(_unique(diffed))] if diffed else []
    if person_name:
        reasons.append("a person account's Name, read whole")
    if reasons:
        out.append(Refetch(object_type=kind, ids=tuple(ids), reason="; ".join(reasons)))
    return out
