"""The org's change-event log: the events Change Data Capture publishes for its writes.

Theory of operation: each write to the org's Accounts and Contacts is one transaction,
handed to `ChangeLog.commit` as the rows before and after it (`Change`). The log turns it
into change events as Salesforce does (Change Data Capture Developer Guide, "Change Event
Body Fields", "ChangeEventHeader Fields", "Merged Change Events"):

- a new record is a ``CREATE`` with all its values; a record back from the recycle bin an
  ``UNDELETE`` with all its values; a record moved to the recycle bin a ``DELETE`` with
  none;
- an edited record is an ``UPDATE`` whose body holds only the changed fields (the others
  null), whose ``changedFields`` names them and ``LastModifiedDate``, and whose
  ``nulledFields`` names those set to null. A save that changed no field (an API write, or
  an arranged row with a new stamp) still moves ``LastModifiedDate``, and is an
  ``UPDATE`` of that alone;
- ``changedFields`` is empty for any other change type;
- the same change to several records of one object in one transaction (the deletion of an
  account's contacts, their move to a merge's winner) is one event naming them all in
  ``recordIds``;
- every event of a transaction has its ``transactionKey`` and ``commitNumber``, and its
  ``sequenceNumber`` within it: accounts' events first, then contacts', as a merge deletes
  the losers before it moves their children. ``commitTimestamp`` is the time the
  transaction stamped its records with, to the second as ``SystemModstamp`` is (a real
  event's is a whole second: pozil/pub-sub-api-node-client issue 27), and
  ``commitNumber`` grows with each transaction, as large as Salesforce's.

Each event is kept with the schema of its object as the describe was when it was made
(`acctsync.testing.salesforce._avro`), its values already in Avro's types, and its field
lists as names; the Pub/Sub server writes the bitmaps and the binary when it delivers it.
Positions number the events from 1; a replay ID is a position and a tag of the org's.
"""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from attrs import Factory, define, frozen

from acctsync._formats import EMPTY_ID
from acctsync.testing.salesforce._avro import (
    AUDIT,
    EventSchema,
    avro_value,
    bitmaps,
    event_schema,
    millis,
    record_values,
)
from acctsync.testing.salesforce._describe import USER_ID, Described, Row

# Change Data Capture Developer Guide, "Subscription Channels": the standard channel of all
# the selected objects' events, and each object's own.
CHANNELS: Final = {
    "/data/ChangeEvents": frozenset({"Account", "Contact"}),
    "/data/AccountChangeEvent": frozenset({"Account"}),
    "/data/ContactChangeEvent": frozenset({"Contact"}),
}
OBJECTS: Final = ("Account", "Contact")
GAP_TYPES: Final = ("CREATE", "UPDATE", "DELETE", "UNDELETE")
# A real commitNumber is a long past 2**53 (1709303151782928388 in issue 27), which some
# Avro libraries have mangled (forcedotcom/pub-sub-api issue 44): the fake's are as large.
_COMMIT_BASE: Final = 1_709_303_151_000_000_000
_REPLAY_ID_SIZE: Final = 10


@frozen
class Change:
    """One record's rows before and after a transaction (None: no row)."""

    object_type: str
    before: Row | None
    after: Row | None


@frozen(kw_only=True)
class Event:
    """A change event in the log, as made: its values in Avro's types, its lists as names."""

    position: int
    uuid: str
    schema: EventSchema
    header: Mapping[str, Any]
    """The header's fields but the three field lists."""
    values: Mapping[str, Any]
    changed: tuple[str, ...]
    nulled: tuple[str, ...]

    @property
    def object_type(self) -> str:
        return self.schema.object_type

    def payload(self, hidden: Collection[str]) -> dict[str, Any]:
        """The record Salesforce writes in Avro for a user denied the fields ``hidden``.

        ``hidden`` are lower-case describe names. Change Data Capture Developer Guide,
        "Field-Level Security": the schema keeps every field, but an event delivered to a
        user holds none the user may not see.
        """
        denied = {path for name, path in self.schema.paths().items() if name in hidden}
        values = dict(self.values)
        for path in denied:
            name, _, member = path.partition(".")
            nested = values[name]
            if not member:
                values[name] = None
            elif nested is not None:
                values[name] = {**nested, member: None}
        header = {
            **self.header,
            "nulledFields": bitmaps(self.schema, (p for p in self.nulled if p not in denied)),
            "diffFields": [],
            "changedFields": bitmaps(self.schema, (p for p in self.changed if p not in denied)),
        }
        return {"ChangeEventHeader": header, **values}


@frozen(kw_only=True)
class PublishedEvent:
    """A change event the org published, as a Pub/Sub API client receives it, decoded."""

    replay_id: bytes
    schema_id: str
    payload: Mapping[str, Any]
    """The event as Avro decodes it with its schema: ``ChangeEventHeader`` (whose field
    lists are bitmaps, as Salesforce writes them), then every field, null when not sent."""
    changed_fields: tuple[str, ...]
    """The names ``changedFields`` stands for (``BillingAddress.City`` for a member)."""
    nulled_fields: tuple[str, ...]
    """The names ``nulledFields`` stands for."""


# One event before it is numbered: records changed alike share one.
@define
class _Draft:
    schema: EventSchema
    change_type: str
    record_ids: list[str]
    values: dict[str, Any]
    changed: tuple[str, ...] = ()
    nulled: tuple[str, ...] = ()

    def alike(self, other: _Draft) -> bool:
        return self.change_type in ("UPDATE", "DELETE") and (
            self.schema,
            self.change_type,
            self.values,
            self.changed,
            self.nulled,
        ) == (other.schema, other.change_type, other.values, other.changed, other.nulled)


@define
class ChangeLog:
    """The org's change events, oldest first; the caller holds the org's lock.

    ``wake`` is called after each append, for subscribers waiting on the lock.
    """

    wake: Callable[[], None]
    events: list[Event] = Factory(list)
    expired: int = 0
    """Events expired so far: the first kept is at position ``expired + 1``."""
    quiet: int = 0
    """While above 0, changes make no events (`FakeSalesforce.without_events`)."""
    schemas: dict[str, EventSchema] = Factory(dict)
    """Every schema an event was made with, by ID: `GetSchema` serves them all."""
    _transactions: int = 0
    _tag: bytes = Factory(lambda: secrets.token_bytes(_REPLAY_ID_SIZE - 8))
    _salt: int = Factory(lambda: secrets.randbits(64))
    _layouts: dict[tuple[Any, ...], EventSchema] = Factory(dict)
    _current: dict[str, tuple[Sequence[Described], int, EventSchema]] = Factory(dict)
    _created: dict[str, int] = Factory(dict)

    @property
    def last(self) -> int:
        """The position of the newest event (0 before the first)."""
        return self.expired + len(self.events)

    def schema(self, object_type: str, described: Sequence[Described]) -> EventSchema:
        """The current schema of ``object_type``'s events, for its describe ``described``."""
        # The fake changes a describe by replacing its list or adding to it: the same list
        # of the same length is the same describe, with no need to read it again.
        current = self._current.get(object_type)
        if current is not None and current[0] is described and current[1] == len(described):
            return current[2]
        layout = (
            object_type,
            *(
                (e["name"], e["type"], e.get("compoundFieldName"), bool(e.get("calculated")))
                for e in described
            ),
        )
        found = self._layouts.get(layout)
        if found is None:
            found = self._layouts[layout] = event_schema(object_type, described)
            self.schemas[found.schema_id] = found
        self._current[object_type] = (described, len(described), found)
        return found

    def commit(
        self,
        changes: Sequence[Change],
        *,
        at: datetime,
        origin: str,
        describe: Mapping[str, Sequence[Described]],
        saves: bool = False,
    ) -> None:
        """Append the events of one transaction that changed ``changes``, stamped ``at``.

        With ``saves``, each change is a save of its record (an API write), an update
        even when it leaves the record as it was; else a record whose fields and stamp
        are unchanged was not saved.
        """
        if self.quiet:
            return
        stamp = millis(at)
        drafts: list[_Draft] = []
        for object_type in OBJECTS:
            mine = [change for change in changes if change.object_type == object_type]
            if not mine:
                continue
            schema = self.schema(object_type, describe[object_type])
            for change in mine:
                draft = self._draft(schema, change, stamp, saves)
                if draft is None:
                    continue
                same = next((d for d in drafts if d.alike(draft)), None)
                if same is None:
                    drafts.append(draft)
                else:
                    same.record_ids += draft.record_ids
        self._append(drafts, stamp, origin)

    def gap(
        self,
        object_type: str,
        record_ids: Sequence[str],
        change_type: str,
        *,
        at: datetime,
        describe: Mapping[str, Sequence[Described]],
    ) -> None:
        """Append a gap event (``GAP_CREATE``... ``GAP_OVERFLOW``): a header, no values.

        Change Data Capture Developer Guide, "Gap Events" and "Overflow Events": Salesforce
        sends one in place of the change events it could not make, naming the records
        (an overflow names none: the empty ID).
        """
        schema = self.schema(object_type, describe[object_type])
        ids = list(record_ids) if change_type != "GAP_OVERFLOW" else [EMPTY_ID]
        values = dict.fromkeys((field.name for field in schema.fields), None)
        self._append([_Draft(schema, change_type, ids, values)], millis(at), "")

    def expire(self, before: datetime | None) -> int:
        """Drop the oldest events committed before ``before`` (all, when None); how many."""
        count = len(self.events)
        if before is not None:
            limit = millis(before)
            count = next(
                (i for i, e in enumerate(self.events) if e.header["commitTimestamp"] >= limit),
                count,
            )
        del self.events[:count]
        self.expired += count
        return count

    def replay_id(self, position: int) -> bytes:
        """The replay ID of ``position``: 10 opaque bytes, as Salesforce's are on the wire."""
        return position.to_bytes(8, "big") + self._tag

    def position(self, replay_id: bytes) -> int | None:
        """The position a replay ID names, or None if the log holds no such event.

        Pub/Sub API Developer Guide, "Handling Errors": a replay ID must refer to an event
        within the retention window. Position 0, which a keepalive names before the first
        event, stays valid until an event expires.
        """
        if len(replay_id) != _REPLAY_ID_SIZE or replay_id[8:] != self._tag:
            return None
        position = int.from_bytes(replay_id[:8], "big")
        if self.expired < position <= self.last or position == self.expired == 0:
            return position
        return None

    def read(
        self, after: int, objects: frozenset[str], limit: int
    ) -> tuple[list[Event], int] | None:
        """Up to ``limit`` events of ``objects`` after position ``after``, and the position
        read up to; None when events after ``after`` have expired."""
        if after < self.expired:
            return None
        found: list[Event] = []
        position = after
        for event in itertools.islice(self.events, after - self.expired, None):
            if len(found) == limit:
                break
            position = event.position
            if event.object_type in objects:
                found.append(event)
        return found, position

    def _draft(
        self, schema: EventSchema, change: Change, stamp: int, saved: bool
    ) -> _Draft | None:
        before, after = change.before, change.after
        was = before is not None and not before["IsDeleted"]
        if after is None or after["IsDeleted"]:
            # A purge (no row after) makes no event; a move to the recycle bin a DELETE,
            # whose Pub/Sub body holds every field, null.
            if not was or after is None:
                return None
            values = dict.fromkeys((field.name for field in schema.fields), None)
            return _Draft(schema, "DELETE", [after["Id"]], values)
        record_id = after["Id"]
        if not was:
            change_type = "CREATE" if before is None else "UNDELETE"
            if change_type == "CREATE":
                self._created[record_id] = stamp
            values = record_values(schema, after)
            audit = {
                "CreatedDate": after.get("CreatedDate") or self._created.get(record_id),
                "CreatedById": after.get("CreatedById") or USER_ID,
                "LastModifiedDate": stamp,
                "LastModifiedById": USER_ID,
            }
            for name, value in audit.items():
                values[name] = avro_value(AUDIT[name][0], value, field=name)
            return _Draft(schema, change_type, [record_id], values)
        assert before is not None  # was live
        changed: list[str] = []
        nulled: list[str] = []
        for field in schema.fields:
            if field.name == "LastModifiedDate":
                changed.append(field.name)
                continue
            pairs = (
                [(f"{field.name}.{m.name}", m.field) for m in field.members if m.field]
                if field.compound
                else []
                if field.name in AUDIT
                else [(field.name, field.name)]
            )
            for path, name in pairs:
                if before.get(name) != after.get(name):
                    changed.append(path)
                    if after.get(name) is None:
                        nulled.append(path)
        unchanged = before["SystemModstamp"] == after["SystemModstamp"]
        if changed == ["LastModifiedDate"] and unchanged and not saved:
            return None  # not saved: nothing to announce
        values = record_values(schema, after, only=changed)
        values["LastModifiedDate"] = stamp
        return _Draft(schema, "UPDATE", [record_id], values, tuple(changed), tuple(nulled))

    def _append(self, drafts: list[_Draft], stamp: int, origin: str) -> None:
        if not drafts:
            return
        self._transactions += 1
        number = self._transactions
        for sequence, draft in enumerate(drafts, start=1):
            position = self.last + 1
            header = {
                "entityName": draft.schema.object_type,
                "recordIds": draft.record_ids,
                "changeType": draft.change_type,
                "changeOrigin": origin,
                "transactionKey": str(uuid.UUID(int=self._salt << 64 | number)),
                "sequenceNumber": sequence,
                "commitTimestamp": stamp,
                "commitNumber": _COMMIT_BASE + number,
                "commitUser": USER_ID,
            }
            self.events.append(
                Event(
                    position=position,
                    uuid=str(uuid.UUID(int=(self._salt ^ 1) << 64 | position)),
                    schema=draft.schema,
                    header=header,
                    values=draft.values,
                    changed=draft.changed,
                    nulled=draft.nulled,
                )
            )
        self.wake()
