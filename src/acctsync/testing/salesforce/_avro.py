"""The Avro side of the org's change events: schemas made from the describe, and values.

Theory of operation: Salesforce writes a Change Data Capture event for the Pub/Sub API as
schemaless Avro binary, decoded with the schema that ``GetSchema`` serves under the
event's schema ID (Pub/Sub API Developer Guide, "Event Data Serialization with Apache
Avro"). `event_schema` makes that schema from an object's describe, as Salesforce makes
its ``AccountChangeEvent`` and ``ContactChangeEvent`` (Change Data Capture Developer
Guide, "Change Event Message Structure"):

- field 0 is the ``ChangeEventHeader`` record, with the fields and Avro types of a real
  event's header, in its order;
- then each of the object's fields as ``["null", T]`` with ``"default": null``, except the
  ones a change event leaves out: ``IsDeleted``, ``SystemModstamp``, formula fields and
  fields derived from other records (``LastActivityDate``, ``PhotoUrl``). ``Id`` and
  ``MasterRecordId`` are not fields of a real event either: the header names the records;
- a compound field (an address, a contact's ``Name``, a geolocation) is one nested record,
  where its first component stands in the describe: ``BillingAddress`` is an ``Address``
  of ``Street``, ``City``, ... (Change Data Capture Developer Guide, "Get Compound Fields
  in Change Events");
- dates and datetimes are longs of epoch milliseconds ("Differences Between Change Events
  Received with Streaming API vs. Pub/Sub API": "Date fields are in Epoch time"),
  currency, double and percent doubles; each field carries a ``doc`` hint
  ``Role:Type`` as Salesforce's schemas do (``CreatedDate:DateTime``), a custom field's
  followed by its id (``Data:DateOnly:00N...``);
- ``CreatedDate``, ``CreatedById``, ``LastModifiedDate`` and ``LastModifiedById``, which
  every change event carries, are added at the end when the describe lacks them.

The schema ID is a digest of the schema's JSON, 22 characters of base64url as Salesforce's
are, so a describe change gives a new ID. `bitmaps` writes a list of changed field names as
the header's bitmaps (Pub/Sub API Developer Guide, "Event Deserialization
Considerations"). This module imports no Avro library: fastavro reads what it makes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from attrs import frozen

from acctsync._errors import InvalidRecordError
from acctsync.testing.salesforce._describe import Described, Row, compound_key

NAMESPACE: Final = "com.sforce.eventbus"
# Change Data Capture Developer Guide, "ChangeEventHeader Fields": the change types. The
# order of the symbols after UPDATE is not published; a subscriber decodes by the schema.
CHANGE_TYPES: Final = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
    "SNAPSHOT",
)
_STRINGS: Final = {"type": "array", "items": "string"}
# The header's fields, in a real event's order and with its types: a real AccountChangeEvent
# payload decoded byte by byte (pozil/pub-sub-api-node-client issue 27).
_HEADER: Final = {
    "type": "record",
    "name": "ChangeEventHeader",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": _STRINGS},
        {
            "name": "changeType",
            "type": {"type": "enum", "name": "ChangeType", "symbols": list(CHANGE_TYPES)},
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": _STRINGS},
        {"name": "diffFields", "type": _STRINGS},
        {"name": "changedFields", "type": _STRINGS},
    ],
}

# "Change Event Message Structure": no IsDeleted, no SystemModstamp, no formula, and no
# field whose value is derived from another record (LastActivityDate, PhotoUrl; a real
# event has no LastViewedDate or LastReferencedDate either). The record IDs are in the
# header, and a real AccountChangeEvent has no MasterRecordId.
_LEFT_OUT: Final = frozenset(
    {
        "Id",
        "IsDeleted",
        "SystemModstamp",
        "MasterRecordId",
        "LastActivityDate",
        "LastViewedDate",
        "LastReferencedDate",
        "PhotoUrl",
    }
)
# The audit fields every change event carries, valued by the change rather than the row,
# with the doc hints of a live platform event's schema ("CreatedDate:DateTime",
# "CreatedBy:EntityId").
AUDIT: Final = {
    "CreatedDate": ("long", "CreatedDate:DateTime"),
    "CreatedById": ("string", "CreatedBy:EntityId"),
    "LastModifiedDate": ("long", "LastModifiedDate:DateTime"),
    "LastModifiedById": ("string", "LastModifiedBy:EntityId"),
}

# The nested records of compound fields, with their members in Salesforce's order: an
# Address as a real AccountChangeEvent decodes (pozil/pub-sub-api-node-client README), a
# person name as Salesforce's Switchable_PersonName (AdrianStrugala/AvroConvert tests), a
# geolocation as the Location type's latitude and longitude (SOAP API Developer Guide,
# "Compound Fields").
_S, _D = "string", "double"
_NESTED: Final = {
    "Address": (
        ("Street", _S),
        ("City", _S),
        ("State", _S),
        ("PostalCode", _S),
        ("Country", _S),
        ("StateCode", _S),
        ("CountryCode", _S),
        ("Latitude", _D),
        ("Longitude", _D),
        ("Xyz", _S),
        ("GeocodeAccuracy", _S),
    ),
    "PersonName": tuple(
        (name, _S)
        for name in ("Salutation", "FirstName", "LastName", "MiddleName", "InformalName", "Suffix")
    ),
    "Location": (("Latitude", _D), ("Longitude", _D)),
}
# Avro type and doc type of each describe type; any other is text.
_TYPES: Final = {
    "boolean": ("boolean", "Boolean"),
    "int": ("int", "Integer"),
    "long": ("long", "Long"),
    "double": ("double", "Double"),
    "currency": ("double", "Currency"),
    "percent": ("double", "Percent"),
    "date": ("long", "DateOnly"),
    "datetime": ("long", "DateTime"),
    "picklist": ("string", "StaticEnum"),
    "multipicklist": ("string", "MultiEnum"),
    "email": ("string", "Email"),
    "phone": ("string", "Phone"),
    "url": ("string", "Url"),
    "id": ("string", "EntityId"),
    "reference": ("string", "EntityId"),
}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)


@frozen
class Member:
    """A field of a compound's nested record, and the describe field it holds (or None)."""

    name: str
    avro: str
    field: str | None
    kind: str | None


@frozen
class EventField:
    """A top-level field of a change event's body, at its place in the schema."""

    name: str
    avro: str  # the Avro type of a value, or the nested record's name
    kind: str | None  # the describe type; None for a compound, or an audit field it lacks
    members: tuple[Member, ...] = ()  # a compound's nested record; () for a plain field

    @property
    def compound(self) -> bool:
        return bool(self.members)


@frozen
class EventSchema:
    """The Avro schema of an object's change events, and where each field stands in it."""

    object_type: str
    schema_id: str
    json: str
    fields: tuple[EventField, ...]
    """The body's fields; the one at index ``i`` is at schema position ``i + 1``."""

    def position(self, name: str) -> int:
        """The schema position of the top-level field ``name`` (the header is at 0)."""
        for index, field in enumerate(self.fields):
            if field.name == name:
                return index + 1
        raise KeyError(name)

    def paths(self) -> dict[str, str]:
        """Each describe field the body holds, by lower-case name: its path in the event
        (``Phone``, or ``BillingAddress.City`` for a compound's member)."""
        out: dict[str, str] = {}
        for field in self.fields:
            if not field.compound:
                out[field.name.lower()] = field.name
            for member in field.members:
                if member.field is not None:
                    out[member.field.lower()] = f"{field.name}.{member.name}"
        return out


def event_schema(object_type: str, described: Sequence[Described]) -> EventSchema:
    """The schema of ``object_type``'s change events, made from its describe."""
    names = {entry["name"] for entry in described}
    members: dict[str, list[Described]] = {}
    for entry in described:
        parent = entry.get("compoundFieldName")
        if parent and parent != entry["name"]:  # Account's Name names itself: not a compound
            members.setdefault(parent, []).append(entry)
    fields: list[EventField] = []
    placed: set[str] = set()
    for entry in described:
        name, parent = entry["name"], entry.get("compoundFieldName")
        compound = parent if parent in members else name if name in members else None
        if compound is not None:
            if compound not in placed:
                placed.add(compound)
                kind = next((e["type"] for e in described if e["name"] == compound), None)
                fields.append(_compound(compound, kind, members[compound]))
        elif name in AUDIT:
            fields.append(EventField(name, AUDIT[name][0], None))
        elif name not in _LEFT_OUT and not entry.get("calculated"):
            fields.append(
                EventField(name, _TYPES.get(entry["type"], ("string",))[0], entry["type"])
            )
    fields += [
        EventField(name, avro, None) for name, (avro, _) in AUDIT.items() if name not in names
    ]
    schema = {
        "type": "record",
        "name": f"{object_type}ChangeEvent",
        "namespace": NAMESPACE,
        "fields": [{"name": "ChangeEventHeader", "type": _HEADER}, *_body(fields)],
    }
    text = json.dumps(schema, separators=(",", ":"))
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:16])
    return EventSchema(object_type, digest.decode().rstrip("="), text, tuple(fields))


def _compound(name: str, kind: str | None, components: list[Described]) -> EventField:
    record = (
        "Address"
        if kind == "address" or (kind is None and name.endswith("Address"))
        else "Location"
        if kind == "location"
        else "PersonName"
    )
    held: dict[str, Described] = {}
    for entry in components:
        # An address's member is named by its component's key (BillingCity is City); a
        # name's by the component itself (FirstName).
        key = compound_key(entry["name"]) if record != "PersonName" else entry["name"]
        if key is not None:
            held.setdefault(key[0].upper() + key[1:], entry)
    return EventField(
        name,
        record,
        None,
        tuple(
            Member(
                member,
                avro,
                held[member]["name"] if member in held else None,
                held[member]["type"] if member in held else None,
            )
            for member, avro in _NESTED[record]
        ),
    )


def _custom_field_id(name: str) -> str:
    """A custom field's 15-character id (``00N...``), the same for a name every time."""
    return f"00N{zlib.crc32(name.lower().encode()):012d}"


def _body(fields: list[EventField]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    defined: set[str] = set()
    for field in fields:
        avro: Any
        if field.compound:
            doc = f"Data:{field.avro}"
            if field.avro in defined:
                avro = field.avro  # Avro names a record once; later fields refer to it
            else:
                defined.add(field.avro)
                avro = {
                    "type": "record",
                    "name": field.avro,
                    "fields": [
                        {"name": m.name, "type": ["null", m.avro], "default": None}
                        for m in field.members
                    ],
                }
        elif field.name in AUDIT:
            avro, doc = field.avro, AUDIT[field.name][1]
        else:
            avro = field.avro
            role = "ForeignKey" if field.kind == "reference" else "Data"
            doc = f"{role}:{_TYPES.get(field.kind or '', ('string', 'Text'))[1]}"
            if field.name.lower().endswith("__c"):
                doc += f":{_custom_field_id(field.name)}"  # a real schema's, as GetSchema's
        out.append({"name": field.name, "type": ["null", avro], "doc": doc, "default": None})
    return out


# -- Values -------------------------------------------------------------------------------


def millis(value: datetime) -> int:
    """``value`` in milliseconds since 1970 (UTC), as a change event's times are."""
    return (value - _EPOCH) // _MILLISECOND


def avro_value(avro: str, value: Any, *, field: str) -> Any:
    """A row's ``value`` as the Avro type ``avro`` holds it; InvalidRecordError if it cannot."""
    if value is None:
        return None
    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if avro == "boolean" and isinstance(value, bool):
        return value
    if avro == "double" and number:
        return float(value)
    if avro == "long" and isinstance(value, date):
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return millis(value)
    if avro in ("int", "long") and number and float(value).is_integer():
        return int(value)
    if avro == "string":
        # Text that another type's value went into: as the REST API writes it.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, date):
            return value.isoformat()
        return f"{value:f}" if isinstance(value, Decimal) else str(value)
    raise InvalidRecordError(
        f"{value!r} cannot be sent in a change event as Avro {avro}", field=field
    )


def record_values(
    schema: EventSchema, row: Row, only: Iterable[str] | None = None
) -> dict[str, Any]:
    """The body of an event holding ``row``'s values (audit fields null).

    With ``only`` (paths, as `EventSchema.paths` gives them), the other fields are null,
    as in an update; a compound is null unless one of its members is named.
    """
    named = None if only is None else set(only)
    out: dict[str, Any] = {}
    for field in schema.fields:
        if not field.compound:
            value = None
            if field.name not in AUDIT and (named is None or field.name in named):
                value = avro_value(field.avro, row.get(field.name), field=field.name)
            out[field.name] = value
            continue
        nested: dict[str, Any] = {}
        for member in field.members:
            path = f"{field.name}.{member.name}"
            value = None
            if member.field is not None and (named is None or path in named):
                value = avro_value(member.avro, row.get(member.field), field=member.field)
            nested[member.name] = value
        shown = (
            any(v is not None for v in nested.values())
            if named is None
            else any(f"{field.name}.{m.name}" in named for m in field.members)
        )
        out[field.name] = nested if shown else None
    return out


def bitmaps(schema: EventSchema, paths: Iterable[str]) -> list[str]:
    """``paths`` as Salesforce writes a header's field list for the Pub/Sub API.

    "Event Deserialization Considerations": the first element is a hex bitmap over the
    schema's top-level positions, where bit ``i`` (``1 << i``) is the field at position
    ``i``; then ``"{position}-{bitmap}"`` over the members of the compound at that
    position. A compound's own bit is not set for its members, as in the BillingAddress
    change of pozil/pub-sub-api-node-client's README; the first element is left out when
    no top-level field is named.
    """
    top = 0
    nested: dict[int, int] = {}
    for path in paths:
        name, _, member = path.partition(".")
        position = schema.position(name)
        if not member:
            top |= 1 << position
            continue
        members = [m.name for m in schema.fields[position - 1].members]
        nested[position] = nested.get(position, 0) | 1 << members.index(member)
    out = [_hex(top)] if top else []
    return out + [f"{position}-{_hex(bits)}" for position, bits in sorted(nested.items())]


def _hex(bits: int) -> str:
    # Whole bytes, upper case, as in the guide's '0x650004E0' and a real event's '0x2080'.
    digits = 2 * max(1, (bits.bit_length() + 7) // 8)
    return f"0x{bits:0{digits}X}"
