"""Pub/Sub API change events: Avro payloads into the events a CometD client receives.

Theory of operation
-------------------
The Pub/Sub API sends each event as schemaless Avro binary with the id of the schema it
was written with, whose JSON ``GetSchema`` gives (Pub/Sub API Developer Guide, "Event
Data Serialization with Apache Avro"). `ChangeEventSchema` reads one such schema once,
then turns each payload into the dict CometD delivers for the same event, which is what
`decode_change_event` reads. The differences it undoes are those the Change Data Capture
Developer Guide lists ("Differences Between Change Events Received with Streaming API vs.
Pub/Sub API"):

- the header's ``changedFields``, ``nulledFields`` and ``diffFields`` are bitmaps over
  the schema's field positions: they become field names (see `ChangeEventSchema.names`);
- dates and datetimes are epoch milliseconds: they become Salesforce's strings;
- every field is present, null when unchanged or empty: a null field is left out, as
  CometD leaves it out. An update then says what changed through its header alone, and a
  field set to null through ``nulledFields``. A compound field (an address, a name) is
  a nested object of its components that hold a value, as CometD sends it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Final, cast

import fastavro
from fastavro.schema import SchemaParseException, UnknownType, expand_schema

from acctsync._errors import ConfigurationError
from acctsync._formats import format_datetime

__all__ = ["ChangeEventSchema"]

_HEADER: Final = "ChangeEventHeader"
_FIELD_LISTS: Final = ("changedFields", "nulledFields", "diffFields")
# Pub/Sub API Developer Guide, "Event Deserialization Considerations": the first entry
# is a bitmap over the schema's top-level fields ("0x650004E0"), each further one
# "{position}-{bitmap}" over the fields of the compound field at that position ("4-0x10").
# Bit i, counted from the least significant bit of the whole hex number, is field i.
_BITMAP: Final = re.compile(r"(?:([0-9]+)-)?0x([0-9A-Fa-f]*)")
_GAPPABLE: Final = frozenset({"CREATE", "UPDATE", "DELETE", "UNDELETE"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_Read = Callable[[Any], Any]


def _plain(raw: Any) -> Any:
    # fastavro reads a timestamp-millis or date logical type as a datetime or a date.
    if isinstance(raw, datetime):
        return format_datetime(raw)
    if isinstance(raw, date):
        return raw.isoformat()
    return raw


def _datetime(raw: Any) -> Any:
    if isinstance(raw, int) and not isinstance(raw, bool):
        moment = _EPOCH + timedelta(milliseconds=raw)
        if moment.year < 1000:  # isoformat pads the year, as format_datetime does not
            return format_datetime(moment)
        # format_datetime's text, faster: a datetime field is in every event.
        return moment.isoformat(timespec="milliseconds")[:-6] + "+0000"
    return _plain(raw)


def _date(raw: Any) -> Any:
    # A date is epoch milliseconds too, at midnight UTC: Salesforce has no other epoch
    # unit ("Date fields are in Epoch time").
    if isinstance(raw, int) and not isinstance(raw, bool):
        return (_EPOCH + timedelta(milliseconds=raw)).date().isoformat()
    return _plain(raw)


def _time(raw: Any) -> Any:
    # Milliseconds since midnight, written as REST and CometD write a time: 10:30:00.000Z.
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 86_400_000:
        seconds, millis = divmod(raw, 1000)
        minutes, second = divmod(seconds, 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}:{second:02d}.{millis:03d}Z"
    return _plain(raw)


# Salesforce names a field's type second in its "doc", in its own words, after its role
# and before a custom field's id: "CreatedDate:DateTime", "CreatedBy:EntityId",
# "Data:Address", "Data:DateOnly:00NDp000009Rr9I" (as in the schemas GetSchema gives). A
# date's is not published: both names Salesforce uses for one are taken.
_TEMPORAL: Final[Mapping[str, _Read]] = {
    "DateTime": _datetime,
    "Date": _date,
    "DateOnly": _date,
    "TimeOnly": _time,
}


def _compound(components: Mapping[str, _Read], raw: Any) -> Any:
    if not isinstance(raw, Mapping):  # Account.Name is a string, or a person's name record
        return _plain(raw)
    return {
        name: components.get(name, _plain)(value)
        for name, value in raw.items()
        if value is not None
    }


def _branches(field: Mapping[str, Any]) -> list[Any]:
    kind = field["type"]
    return kind if isinstance(kind, list) else [kind]


def _record_of(field: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The record a field holds, where it is a compound field (one branch of its union)."""
    for branch in _branches(field):
        if isinstance(branch, Mapping) and branch.get("type") == "record":
            return branch
    return None


def _reader(field: Mapping[str, Any]) -> _Read:
    """How to read a non-null value of ``field`` into what CometD sends."""
    record = _record_of(field)
    if record is not None:
        return partial(_compound, {f["name"]: _reader(f) for f in record["fields"]})
    doc = field.get("doc")
    kind = doc.split(":")[1:2] if isinstance(doc, str) else []
    return _TEMPORAL.get(kind[0], _plain) if kind else _plain


def _as_is(field: Mapping[str, Any], read: _Read) -> bool:
    """Whether ``field``'s values are read as fastavro gives them: no logical type to
    write as text, no type named in its ``doc``, no compound."""
    return read is _plain and not any(
        isinstance(branch, Mapping) and "logicalType" in branch for branch in _branches(field)
    )


class ChangeEventSchema:
    """A change event's Avro schema, as ``GetSchema`` gives it: reads its payloads.

    `event` turns a payload into the event a CometD client receives, for
    `acctsync.decode_change_event` or `acctsync.sources.cdc.ChangeEventSource`. A schema
    that is not a change event's (no ``ChangeEventHeader`` first) raises
    `ConfigurationError`.
    """

    __slots__ = ("_components", "_fields", "_names", "_parsed", "schema_id")

    def __init__(self, schema_json: str, *, schema_id: str = "") -> None:
        self.schema_id = schema_id
        """The schema's id, as events name it."""
        try:
            schema = json.loads(schema_json)
            self._parsed = fastavro.parse_schema(schema)
            # The schema with named types written out where they are used: a field's
            # record is then at hand, whichever field first defined it.
            fields: Sequence[Mapping[str, Any]] = cast("Any", expand_schema(schema))["fields"]
        except (ValueError, TypeError, KeyError, SchemaParseException, UnknownType) as error:
            raise ConfigurationError(
                f"schema {schema_id!r} is not an Avro record schema: {error}"
            ) from None
        if not fields or fields[0].get("name") != _HEADER or _record_of(fields[0]) is None:
            raise ConfigurationError(
                f"schema {schema_id!r} is not a change event's: its first field is no {_HEADER}"
            )
        self._names = tuple(str(f["name"]) for f in fields)
        # Each compound field's components, by its position: the nested bitmaps' fields.
        self._components: dict[int, tuple[str, ...]] = {}
        for position, field in enumerate(fields):
            record = _record_of(field)
            if record is not None and position:
                self._components[position] = tuple(str(f["name"]) for f in record["fields"])
        # Each field but the header: its name, how to read a value (None: as it is), and
        # a compound's components.
        readers: list[tuple[str, _Read | None, tuple[str, ...] | None]] = []
        for position, field in enumerate(fields[1:], start=1):
            read = _reader(field)
            components = self._components.get(position)
            readers.append((str(field["name"]), None if _as_is(field, read) else read, components))
        self._fields = tuple(readers)

    def __repr__(self) -> str:
        return f"<ChangeEventSchema {self.schema_id!r} fields={len(self._names)}>"

    def names(self, bitmaps: Sequence[str]) -> tuple[list[str], bool]:
        """The field names a header's field list names, and whether it named only fields.

        ``bitmaps`` is the list as the Pub/Sub API sends it (``["0x400000", "4-0x06"]``):
        a compound's sub-fields come as ``BillingAddress.City``. A bit past the schema's
        fields, a position that is no compound field, or an entry that is no bitmap names
        no field: the answer then says the list was not whole.
        """
        names: list[str] = []
        whole = True
        for entry in bitmaps:
            match = _BITMAP.fullmatch(entry)
            if match is None:
                whole = whole and not entry  # an empty entry names nothing
                continue
            position, digits = match.groups()
            prefix, among = "", self._names
            if position is not None:
                parent = int(position)
                if parent not in self._components:
                    whole = False
                    continue
                prefix, among = f"{self._names[parent]}.", self._components[parent]
            bits = int(digits or "0", 16)
            whole = whole and bits >> len(among) == 0
            while bits:
                index = (bits & -bits).bit_length() - 1
                bits &= bits - 1
                if index < len(among):
                    names.append(prefix + among[index])
        return names, whole

    def event(self, payload: bytes) -> dict[str, Any]:
        """The event ``payload`` (schemaless Avro of this schema) as CometD delivers it.

        An event whose field lists name positions the schema does not have cannot say
        what it changed: it comes out as the gap event of its type (``GAP_UPDATE``...),
        so that its records are read again rather than read as changing less than they
        did. A payload that is not of this schema raises fastavro's error (``EOFError``,
        ``ValueError``...).
        """
        record = cast(
            "dict[str, Any]", fastavro.schemaless_reader(io.BytesIO(payload), self._parsed, None)
        )
        header: dict[str, Any] = record[_HEADER]  # read for this call: changed in place
        whole = True
        for key in _FIELD_LISTS:
            listed = header.get(key)
            if listed:
                header[key], complete = self.names(listed)
                whole = whole and complete
            else:
                header[key] = []
        if not whole and header.get("changeType") in _GAPPABLE:
            header["changeType"] = f"GAP_{header['changeType']}"
        nulled = header["nulledFields"]
        event: dict[str, Any] = {_HEADER: header}
        for name, read, components in self._fields:
            raw = record.get(name)
            if raw is None:
                # A compound set to null as a whole: CometD's shape of it, with its
                # components, so that each is cleared, a custom one's too.
                if components is not None and name in nulled:
                    event[name] = dict.fromkeys(components)
            elif read is None:
                event[name] = raw
            else:
                value = read(raw)
                if value != {}:
                    event[name] = value
        return event
