"""Records as the SQL store's rows, and back: fields, values and timestamps included.

Rows are tuples in their tables' column order, as `_statements` takes them. Field maps
and values are JSON text in the library's lossless form (`acctsync.make_converter`);
timestamps are integers, microseconds since the Unix epoch in UTC (see `_schema`).
Apart from the store because it is pure translation, with no SQL in it, and because it
is the store's hot path: every row of every batch goes through it, so its speed-minded
choices (orjson to write, the standard library to read) sit together with the reasons
for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import repeat
from operator import attrgetter, is_not
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from acctsync._activity import ChangeDataValue, Origin
from acctsync._apply import micros, micros_of
from acctsync._convert import make_converter
from acctsync._records import Account, Contact, Deletion, FieldValue, ObjectType
from acctsync._state import AccountState, StoredAccount, StoredContact

if TYPE_CHECKING:
    from sqlalchemy import Row

__all__ = ["Codec", "Rows", "micros", "stamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# orjson would write datetimes itself, as bare ISO text; passed through, they reach the
# converter's hook and get the library's tagged form, as from the standard library.
_DATES_BY_HOOK = orjson.OPT_PASSTHROUGH_DATETIME


_DATES_MAX: Final = 1 << 14  # dates whose written form a codec keeps (45 years of days)


def stamp(since_epoch: int) -> datetime:
    """The UTC datetime ``since_epoch`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=since_epoch)


class Codec:
    """Field maps and values to JSON text and back, in the library's lossless form."""

    def __init__(self) -> None:
        converter = make_converter()
        self._load_fields = converter.get_structure_hook(Mapping[str, FieldValue])
        self._load_value = converter.get_structure_hook(FieldValue)
        # JSON calls ``default`` only for what it does not write itself (decimals, dates,
        # datetimes): the converter tags those, and plain values cost no Python call.
        self._tag = converter.get_unstructure_hook(FieldValue)
        # A date's tagged form, written once: a store's dates are a few thousand days,
        # each met again and again (birthdates, close dates), and orjson takes the
        # written form as it is (a Fragment) rather than calling Python to make it anew.
        self._dates: dict[date, orjson.Fragment] = {}
        self._fallback = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), default=self._tag
        ).encode

    def _tagged(self, value: Any) -> Any:
        """What orjson writes for a value it does not write itself: its tagged form."""
        kind = type(value)
        if kind is datetime and value.tzinfo is UTC:  # as decoded records hold them
            # orjson writes a UTC datetime as `datetime.isoformat` does (RFC 3339, with
            # "+00:00" and the microseconds where there are any), in a fifth of its time.
            return orjson.Fragment(b'{"$datetime":' + orjson.dumps(value) + b"}")
        if kind is date:
            fragment = self._dates.get(value)
            if fragment is None:
                if len(self._dates) >= _DATES_MAX:
                    self._dates.clear()
                fragment = orjson.Fragment(orjson.dumps(self._tag(value)))
                self._dates[value] = fragment
            return fragment
        return self._tag(value)

    def _dump(self, value: object) -> str:
        try:
            return orjson.dumps(value, default=self._tagged, option=_DATES_BY_HOOK).decode()
        except TypeError:  # an integer beyond 64 bits: the standard library writes any
            return self._fallback(value)

    def fields(self, fields: Mapping[str, FieldValue]) -> str:
        if not fields:
            return "{}"
        # Records hold a read-only proxy: its copy() is a plain dict, several times faster
        # than dict(proxy), and orjson writes dicts only.
        plain = fields.copy() if type(fields) is MappingProxyType else dict(fields)
        try:  # `_dump`, without a call more for each of a batch's records
            return orjson.dumps(plain, default=self._tagged, option=_DATES_BY_HOOK).decode()
        except TypeError:
            return self._fallback(plain)

    def fields_of(self, maps: Sequence[Mapping[str, FieldValue]]) -> list[str]:
        """`fields` of each map; of records' maps (read-only proxies), in passes of C."""
        if set(map(type, maps)) == _PROXIES:
            proxies = cast("Sequence[MappingProxyType[str, FieldValue]]", maps)
            plains = map(MappingProxyType.copy, proxies)
            try:
                dumped = map(orjson.dumps, plains, repeat(self._tagged), repeat(_DATES_BY_HOOK))
                return list(map(bytes.decode, dumped))
            except TypeError:  # an integer beyond 64 bits: `fields` writes it
                pass
        return list(map(self.fields, maps))

    def read_fields(self, raw: str) -> Mapping[str, FieldValue]:
        # The standard library, not orjson, reads: orjson turns integers beyond 64 bits
        # into floats.
        return self._load_fields(json.loads(raw), Mapping[str, FieldValue])  # type: ignore[no-any-return]

    def value(self, value: FieldValue) -> str:
        return self._dump(value)

    def read_value(self, raw: str) -> FieldValue:
        # Most logged values are null or a string without escapes, whose JSON text is the
        # string in quotes: read without a parse (a log is read a million at a time).
        if raw == "null":
            return None
        if raw[0] == '"' and "\\" not in raw:
            return raw[1:-1]
        return self._load_value(json.loads(raw), FieldValue)  # type: ignore[no-any-return]


class Rows:
    """One org's records as rows of its tables, and rows read back as records."""

    def __init__(self, org: str) -> None:
        self._org = org
        self._codec = Codec()

    def account(self, entry: StoredAccount) -> tuple[object, ...]:
        if isinstance(entry, Deletion):
            deleted_at, master = micros(entry.deleted_at), entry.master_record_id
            sequence = _sequence_text(entry.sequence)
            return (self._org, entry.id, True, deleted_at, master, "{}", "{}", 0, sequence)
        upstream = entry.upstream
        return (
            self._org,
            entry.id,
            False,
            micros(upstream.system_modstamp),
            None,
            self._codec.fields(upstream.fields),
            self._codec.fields(entry.local_edits),
            entry.local_revision,
            _sequence_text(upstream.sequence),
        )

    live: Final[Mapping[str, bool | None]] = MappingProxyType(
        {"deleted": False, "master_record_id": None, "sequence": None}
    )
    """The columns every row of a live record with no sequence has alike, by name:
    `live_accounts` and `live_contacts` leave them out of the rows."""

    def live_accounts(self, entries: Sequence[StoredAccount]) -> list[tuple[object, ...]] | None:
        """`account` of each entry without the columns of `live`, where all are live
        accounts with no sequence (a load's), by columns made in passes of C rather than
        a call of Python a row; else None."""
        if set(map(type, entries)) != _ACCOUNT_STATES or not _unsequenced(map(_UPSTREAM, entries)):
            return None
        upstreams = list(map(_UPSTREAM, entries))
        fields = self._codec.fields_of
        return list(
            zip(
                repeat(self._org, len(entries)),
                map(_ID, upstreams),
                micros_of(map(_STAMP, upstreams)),
                fields(list(map(_FIELDS, upstreams))),
                fields(list(map(_LOCAL_EDITS, entries))),
                map(_LOCAL_REVISION, entries),
                strict=True,
            )
        )

    def live_contacts(self, entries: Sequence[StoredContact]) -> list[tuple[object, ...]] | None:
        """`contact` of each entry without the columns of `live`, as `live_accounts`."""
        if set(map(type, entries)) != _CONTACTS or not _unsequenced(entries):
            return None
        return list(
            zip(
                repeat(self._org, len(entries)),
                map(_ID, entries),
                micros_of(map(_STAMP, entries)),
                map(_ACCOUNT_ID, entries),
                self._codec.fields_of(list(map(_FIELDS, entries))),
                strict=True,
            )
        )

    def contact(self, entry: StoredContact) -> tuple[object, ...]:
        if isinstance(entry, Deletion):
            deleted_at, master = micros(entry.deleted_at), entry.master_record_id
            sequence = _sequence_text(entry.sequence)
            return (self._org, entry.id, True, deleted_at, master, None, "{}", sequence)
        return (
            self._org,
            entry.id,
            False,
            micros(entry.system_modstamp),
            None,
            entry.account_id,
            self._codec.fields(entry.fields),
            _sequence_text(entry.sequence),
        )

    def activity(self, entry: ChangeDataValue) -> tuple[object, ...]:
        return (
            self._org,
            entry.id,
            entry.contact_id,
            entry.account_id,
            entry.field,
            self._codec.value(entry.old_value),
            self._codec.value(entry.new_value),
            entry.origin.value,
            micros(entry.occurred_at),
        )

    def account_state(self, row: Row[Any]) -> StoredAccount:
        if row.deleted:
            return _tombstone("Account", row)
        return AccountState(
            upstream=Account(
                id=row.id,
                fields=self._codec.read_fields(row.fields),
                system_modstamp=stamp(row.system_modstamp),
                sequence=_read_sequence(row.sequence),
            ),
            local_edits=self._codec.read_fields(row.local_edits),
            local_revision=row.local_revision,
        )

    def contact_state(self, row: Row[Any]) -> StoredContact:
        if row.deleted:
            return _tombstone("Contact", row)
        return Contact(
            id=row.id,
            account_id=row.account_id,
            fields=self._codec.read_fields(row.fields),
            system_modstamp=stamp(row.system_modstamp),
            sequence=_read_sequence(row.sequence),
        )

    def entry(self, row: Sequence[Any]) -> ChangeDataValue:
        """A row of the activity log (all its columns, in the table's order) as its entry."""
        _, _, entry_id, contact_id, account_id, field, old, new, origin, occurred_at = row
        read = self._codec.read_value
        return ChangeDataValue(
            id=entry_id,
            contact_id=contact_id,
            account_id=account_id,
            field=field,
            old_value=read(old),
            new_value=read(new),
            origin=_ORIGINS[origin],
            occurred_at=stamp(occurred_at),
        )


_ORIGINS: Final = {origin.value: origin for origin in Origin}
_PROXIES: Final = {MappingProxyType}
_ACCOUNT_STATES: Final = {AccountState}
_CONTACTS: Final = {Contact}
_ID: Final = attrgetter("id")
_STAMP: Final = attrgetter("system_modstamp")
_FIELDS: Final = attrgetter("fields")
_UPSTREAM: Final = attrgetter("upstream")
_LOCAL_EDITS: Final = attrgetter("local_edits")
_LOCAL_REVISION: Final = attrgetter("local_revision")
_ACCOUNT_ID: Final = attrgetter("account_id")
_SEQUENCE: Final = attrgetter("sequence")


def _unsequenced(records: Iterable[Account | Contact | Deletion]) -> bool:
    """Whether no record has a sequence (only events' versions have one)."""
    return not any(map(is_not, map(_SEQUENCE, records), repeat(None)))


def _tombstone(object_type: ObjectType, row: Row[Any]) -> Deletion:
    return Deletion(
        object_type=object_type,
        id=row.id,
        deleted_at=stamp(row.system_modstamp),
        master_record_id=row.master_record_id,
        sequence=_read_sequence(row.sequence),
    )


def _sequence_text(sequence: tuple[int, ...] | None) -> str | None:
    # Text, not a number column: a commit number and a sequence number in one value,
    # and either may pass 64 bits.
    return None if sequence is None else json.dumps(sequence)


def _read_sequence(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(json.loads(text))
