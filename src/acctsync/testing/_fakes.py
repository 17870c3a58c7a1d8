"""In-memory fakes of the source and store protocols, for tests and demos.

`InMemorySource` behaves like a small Salesforce org: it keeps the latest version of each
record, deletes an account's contacts with it, moves a merged account's contacts to the
winner without touching their ``SystemModstamp``, recalculates formula fields without
touching it either, and creates records for Convert Person.
`InMemoryStore` is a complete store, kept in dictionaries. `InMemoryEventStream` is a
stream of change events, as a Pub/Sub API subscription delivers them.
"""

from __future__ import annotations

import string
from array import array
from bisect import bisect_left
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from attrs import define, field

from acctsync._activity import ChangeDataValue
from acctsync._errors import ConfigurationError, InvalidRecordError, ReplayUnavailableError
from acctsync._formats import commit_time, decode_record, event_parts, parse_datetime
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX, OPPORTUNITY_PREFIX, normalize_id
from acctsync._protocols import EventBatch
from acctsync._records import (
    OBJECT_PREFIXES,
    Account,
    Change,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    Opportunity,
    RawChangeEvent,
    RawRecord,
    parse_object_type,
)
from acctsync._state import (
    AccountState,
    Batch,
    Conversion,
    ConversionRequest,
    MoveContacts,
    StoredAccount,
    StoredContact,
)

__all__ = ["InMemoryEventStream", "InMemorySource", "InMemoryStore", "make_id"]

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_FIRST_STAMP = datetime(2024, 1, 1, tzinfo=UTC)


def _tagged_id(prefix: str, tag: str, number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
        if not number:
            break
    return normalize_id(prefix + tag + digits.rjust(10, "0"))


def make_id(prefix: str, number: int) -> str:
    """A real-looking 18-character ID: ``make_id("001", 7)`` is Account number 7.

    Different numbers give different IDs; the fake source's own records never collide
    with them.
    """
    if len(prefix) != 3 or not prefix.isalnum():
        raise InvalidRecordError(f"a key prefix is 3 letters or digits, not {prefix!r}")
    if number < 0 or number >= 62**10:
        raise InvalidRecordError(f"number {number} is out of range")
    return _tagged_id(prefix, "Ak", number)


def _placement(item: RawRecord | RawChangeEvent) -> tuple[str, datetime | None]:
    """The stream a raw payload is read in, and its stamp if it has a readable one.

    A payload naming no object acctsync syncs is read with the accounts, so that the
    engine reports it.
    """
    stream, stamp = "Account", None
    try:
        if isinstance(item, RawRecord):
            stream = item.object_type
            stamp = parse_datetime(_stamp_of(item.payload), field="SystemModstamp")
        else:
            _, header = event_parts(item.payload)
            stream = str(header.get("entityName"))
            stamp = commit_time(header)
    except (InvalidRecordError, AttributeError):
        pass
    return (stream if stream in ("Account", "Contact") else "Account"), stamp


def _record_id(item: RawRecord | RawChangeEvent) -> str | None:
    """The ID of a raw REST record that decodes, None for anything else.

    A malformed payload replaces nothing: the engine rejects each one it is given.
    """
    if not isinstance(item, RawRecord):
        return None
    try:
        return decode_record(item.object_type, item.payload).id
    except InvalidRecordError:
        return None


def _only(record: Account | Contact, names: Sequence[str]) -> Account | Contact:
    """``record`` with only the fields ``names`` gives, as a query of those fields reads it."""
    held = {name.lower(): value for name, value in record.fields.items()}
    return attrs.evolve(record, fields={name: held.get(name.lower()) for name in names})


def _stamp_of(payload: Mapping[Any, Any]) -> object:
    """The payload's ``SystemModstamp``, spelled in any case, or None."""
    # Field names are case-insensitive (rule R9) and the decoder reads the stamp of a
    # ``SYSTEMMODSTAMP`` key: the record is placed where that stamp puts it.
    for name, value in payload.items():
        if isinstance(name, str) and name.lower() == "systemmodstamp":
            return value
    return None


def _calculated(fields: Mapping[str, Iterable[str]]) -> dict[ObjectType, tuple[str, ...]]:
    calculated: dict[ObjectType, tuple[str, ...]] = {"Account": (), "Contact": ()}
    for object_type, names in fields.items():
        if isinstance(names, str):
            raise InvalidRecordError(f"formula_fields[{object_type!r}] is one name, not names")
        calculated[parse_object_type(object_type)] = tuple(names)
    return calculated


@define(repr=False)
class InMemorySource:
    """A fake Salesforce org: what you put in comes out of `read_changes`.

    Records are validated as Salesforce validates them (IDs, types); `add_raw` and
    `add_change_event` take payloads as they come off the wire, malformed or not.

    ``formula_fields`` names, per object, the fields the org calculates (formula and
    roll-up summary fields, ``{"Account": ("Score__c",)}``): `read_formulas` reads them,
    in that spelling, and `recalculate` changes them without moving ``SystemModstamp``.
    """

    _formula_fields: dict[ObjectType, tuple[str, ...]] = field(
        factory=dict, converter=_calculated, kw_only=True
    )
    _records: dict[str, dict[str, Account | Contact | Deletion]] = field(
        init=False, factory=lambda: {"Account": {}, "Contact": {}}
    )
    # Raw items with their stream, stamp and record ID (None for events and unreadable IDs).
    # Only appended to, and replaced whole when an item leaves it: a read in progress
    # holds the list it began with, and its items by their places (`read_changes`).
    _raw: list[tuple[str, datetime, str | None, RawRecord | RawChangeEvent]] = field(
        init=False, factory=list
    )
    # The (stream, record ID) of the raw items with an ID: a new version looks here first,
    # so that adding a million records is not a million passes over those added before.
    _raw_ids: set[tuple[str, str]] = field(init=False, factory=set)
    # Each stream's places in ``_raw`` while its items came in read order (by stamp, then
    # ID), as a load of an org's records does: its read takes them as they are, where a
    # key for each and a sort of a million took a twentieth of a sync's time. None once
    # one came out of order, or ``_raw`` was made anew without an item.
    _raw_order: dict[str, array[int] | None] = field(init=False, factory=dict)
    _buried: dict[str, Account | Contact] = field(init=False, factory=dict)
    _deleted_with: dict[str, list[str]] = field(init=False, factory=dict)
    _writes: list[ConversionRequest] = field(init=False, factory=list)
    _conversions: dict[str, Conversion] = field(init=False, factory=dict)
    _opportunities: dict[str, Opportunity] = field(init=False, factory=dict)

    def __repr__(self) -> str:
        return (
            f"<InMemorySource accounts={len(self._records['Account'])}"
            f" contacts={len(self._records['Contact'])} raw={len(self._raw)}"
            f" writes={len(self._writes)}>"
        )

    # -- Changing the org ---------------------------------------------------------------

    def upsert(self, record: Account | Contact) -> None:
        """Create or update a record; it becomes the record's current version."""
        if not isinstance(record, Account | Contact):
            raise InvalidRecordError(f"upsert takes an Account or Contact, not {record!r}")
        kind = "Account" if isinstance(record, Account) else "Contact"
        self._forget_raw(kind, record.id)
        self._records[kind][record.id] = record

    def recalculate(
        self, object_type: ObjectType, record_id: str, values: Mapping[str, FieldValue]
    ) -> None:
        """Give a live record's calculated fields new ``values``, as Salesforce recalculates
        a formula or a roll-up summary: its ``SystemModstamp`` stays as it is.

        Every read shows the new values under the old stamp: a sync whose lookback window
        no longer reaches the stamp never reads them, one whose window does reads them,
        as it would from Salesforce, and applies them as a recalculation, not a save, as
        `formula_fields` tells the engine which fields are calculated. ``values`` name
        fields of ``formula_fields``, in any case. `upsert` of the record with its stamp
        unchanged does the same to any field; this one refuses a field that is not
        calculated, so that a test says what it models.
        """
        kind = parse_object_type(object_type)
        record_id = normalize_id(record_id, prefix=OBJECT_PREFIXES[kind])
        record = self._records[kind].get(record_id)
        if not isinstance(record, Account | Contact):
            raise InvalidRecordError("no live record to recalculate", record_id=record_id)
        calculated = {name.lower(): name for name in self._formula_fields[kind]}
        spelled = {name.lower(): name for name in record.fields}
        fields = dict(record.fields)
        for name, value in values.items():
            if name.lower() not in calculated:
                raise InvalidRecordError(
                    "not a calculated field (see formula_fields)", record_id=record_id, field=name
                )
            fields[spelled.get(name.lower(), calculated[name.lower()])] = value
        self._records[kind][record_id] = attrs.evolve(record, fields=fields)

    def _forget_raw(self, stream: str, record_id: str) -> None:
        """Drop the raw versions of a record: a new version replaces them, as in an org."""
        if (stream, record_id) in self._raw_ids:
            self._raw_ids.discard((stream, record_id))
            self._raw = [raw for raw in self._raw if (raw[0], raw[2]) != (stream, record_id)]
            self._raw_order = dict.fromkeys(self._raw_order)  # the places moved

    def delete(self, deletion: Deletion) -> None:
        """Delete a record as Salesforce does.

        Deleting an account deletes its contacts (stamped with the deletion's time); a
        merge (``master_record_id`` set) moves them to the winner instead, leaving their
        ``SystemModstamp`` as it was.
        """
        if not isinstance(deletion, Deletion):
            raise InvalidRecordError(f"delete takes a Deletion, not {deletion!r}")
        records = self._records[deletion.object_type]
        current = records.get(deletion.id)
        records[deletion.id] = deletion
        if not isinstance(current, Account | Contact):
            return  # deleted already, or never there: nothing more goes to the recycle bin
        self._buried[deletion.id] = current
        if deletion.object_type != "Account":
            return
        contacts = self._records["Contact"]
        members = [
            c for c in contacts.values() if isinstance(c, Contact) and c.account_id == deletion.id
        ]
        if deletion.master_record_id is not None:
            for contact in members:
                contacts[contact.id] = attrs.evolve(contact, account_id=deletion.master_record_id)
            return
        self._deleted_with[deletion.id] = [contact.id for contact in members]
        for contact in members:
            self._buried[contact.id] = contact
            contacts[contact.id] = Deletion(
                object_type="Contact", id=contact.id, deleted_at=deletion.deleted_at
            )

    def purge(self, object_type: ObjectType, record_id: str) -> None:
        """Remove a record beyond the recycle bin: no read returns it any more.

        Purging an account purges its contacts and those deleted with it, as a hard
        delete in Salesforce does. Only `SyncEngine.reconcile` finds out.
        """
        kind = parse_object_type(object_type)
        record_id = normalize_id(record_id, prefix=OBJECT_PREFIXES[kind])
        self._records[kind].pop(record_id, None)
        self._buried.pop(record_id, None)
        if kind != "Account":
            return
        contacts = self._records["Contact"]
        members = [
            i for i, c in contacts.items() if isinstance(c, Contact) and c.account_id == record_id
        ]
        for contact_id in [*members, *self._deleted_with.pop(record_id, [])]:
            contacts.pop(contact_id, None)
            self._buried.pop(contact_id, None)

    def undelete(self, object_type: ObjectType, record_id: str, *, at: datetime) -> None:
        """Restore a deleted record from the recycle bin, stamped ``at``.

        An account comes back with the contacts that were deleted with it.
        """
        record_id = normalize_id(record_id, prefix=OBJECT_PREFIXES[object_type])
        buried = self._buried.pop(record_id, None)
        if buried is None:
            raise InvalidRecordError("not in the recycle bin", record_id=record_id)
        self.upsert(attrs.evolve(buried, system_modstamp=at))
        for contact_id in self._deleted_with.pop(record_id, []):
            contact = self._buried.pop(contact_id, None)
            if contact is not None:
                self.upsert(attrs.evolve(contact, system_modstamp=at))

    def add_raw(self, object_type: str, payload: Mapping[str, Any]) -> None:
        """Add a REST JSON record as the API would return it; it may be malformed.

        It is read by its ``SystemModstamp``, spelled in any case; one without a readable
        stamp is placed at the org's current time, as if it had just been written.
        """
        self._add_raw(RawRecord(object_type=object_type, payload=payload))

    def add_change_event(self, payload: Mapping[str, Any]) -> None:
        """Add a Change Data Capture event payload; it may be malformed.

        It is read by its ``commitTimestamp``, or at the org's current time without one.
        """
        self._add_raw(RawChangeEvent(payload=payload))

    def _add_raw(self, item: RawRecord | RawChangeEvent) -> None:
        stream, stamp = _placement(item)
        # A record's new version replaces the old, as a REST read shows current versions
        # only (a same-stamp copy of an old one would be a later save, rule R3). Events
        # are a history, and malformed payloads are each rejected: they stay.
        record_id = _record_id(item)
        if record_id is not None:
            self._forget_raw(stream, record_id)
            self._records[stream].pop(record_id, None)
            self._raw_ids.add((stream, record_id))
        stamp = stamp or self._next_stamp()
        raw = self._raw
        places = self._raw_order.setdefault(stream, array("q"))
        if places is not None and places:
            _, last_stamp, last_id, _ = raw[places[-1]]
            if _read_key(stamp, record_id) < _read_key(last_stamp, last_id):
                places = self._raw_order[stream] = None
        if places is not None:
            places.append(len(raw))
        raw.append((stream, stamp, record_id, item))

    # -- Reading, as the engine does ----------------------------------------------------

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """Pages of current versions stamped at or after ``since``, by (stamp, Id)."""
        raw = self._raw  # as the read begins: its items keep their places (see ``_raw``)
        places = self._raw_order.get(object_type)
        if places is not None and not self._records[object_type]:
            start = 0 if since is None else bisect_left(places, since, key=lambda at: raw[at][1])
            return _pages(raw, [], places[start:], page_size)
        records: list[Account | Contact | Deletion] = []
        keys: list[tuple[datetime, str, int]] = []
        where = array("q")  # a record's place in ``records`` (as ~place), or a raw item's
        for record in self._records[object_type].values():
            if since is None or record.system_modstamp >= since:
                keys.append((record.system_modstamp, record.id, 0))
                where.append(~len(records))
                records.append(record)
        for position, (stream, stamp, record_id, _) in enumerate(raw):
            if stream == object_type and (since is None or stamp >= since):
                keys.append((*_read_key(stamp, record_id), position + 1))
                where.append(position)
        # No two changes share a stamp, ID and position (a record's position is 0, a raw
        # item's its own). The order is kept as an array, out of the collector's sight: a
        # list of a million changes or keys, held for the whole read, would be walked by
        # each of the reader's full collections.
        order = array("q", map(where.__getitem__, sorted(range(len(keys)), key=keys.__getitem__)))
        return _pages(raw, records, order, page_size)

    def read_all(self, object_type: ObjectType, *, page_size: int) -> Iterator[Sequence[Change]]:
        """Every record of the org, as `read_changes` from the start (`CompleteSource`)."""
        return self.read_changes(object_type, None, page_size=page_size)

    def formula_fields(self, object_type: ObjectType) -> tuple[str, ...]:
        """The fields the org calculates, as given to the constructor (`FormulaSource`)."""
        return self._formula_fields[parse_object_type(object_type)]

    def read_formulas(
        self, object_type: ObjectType, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """Pages of the live records, each with its ``formula_fields`` only (`FormulaSource`).

        By (stamp, Id), in the spelling ``formula_fields`` gives; a field a record lacks
        reads as null, as Salesforce reads a field of the object. A raw payload that
        decodes to a live record is read too; a malformed one is `read_changes`' to give.
        """
        names = self._formula_fields[object_type]
        if not names:
            return
        records = self._records[object_type].values()
        live = [record for record in records if not isinstance(record, Deletion)]
        for stream, _, record_id, raw in self._raw:
            if stream == object_type and record_id is not None and isinstance(raw, RawRecord):
                decoded = decode_record(raw.object_type, raw.payload)
                if not isinstance(decoded, Deletion):
                    live.append(decoded)
        live.sort(key=lambda record: (record.system_modstamp, record.id))
        formulas = [_only(record, names) for record in live]
        for start in range(0, len(formulas), page_size):
            yield formulas[start : start + page_size]

    # -- Convert Person's write side ----------------------------------------------------

    def convert_person(self, request: ConversionRequest) -> Conversion:
        """Create the request's Account, Contact and Opportunity, once per idempotency key."""
        self._writes.append(request)
        done = self._conversions.get(request.idempotency_key)
        if done is not None:
            return done
        for record, required in (
            (request.account_fields, ("Name",)),
            (request.contact_fields, ("LastName",)),
            (request.opportunity_fields, ("Name", "StageName", "CloseDate")),
        ):
            for name in required:
                if record.get(name) in (None, ""):
                    raise InvalidRecordError("REQUIRED_FIELD_MISSING", field=name)
        number = len(self._conversions)
        stamp = self._next_stamp()
        account = Account(
            id=_tagged_id(ACCOUNT_PREFIX, "Cv", number),
            fields=request.account_fields,
            system_modstamp=stamp,
        )
        contact = Contact(
            id=_tagged_id(CONTACT_PREFIX, "Cv", number),
            account_id=account.id,
            fields=request.contact_fields,
            system_modstamp=stamp,
        )
        opportunity = Opportunity(
            id=_tagged_id(OPPORTUNITY_PREFIX, "Cv", number),
            account_id=account.id,
            contact_id=contact.id,
            fields=request.opportunity_fields,
            system_modstamp=stamp,
        )
        self.upsert(account)
        self.upsert(contact)
        self._opportunities[opportunity.id] = opportunity
        conversion = Conversion(
            person_id=request.person_id,
            account_id=account.id,
            contact_id=contact.id,
            opportunity_id=opportunity.id,
        )
        self._conversions[request.idempotency_key] = conversion
        return conversion

    def _next_stamp(self) -> datetime:
        stamps = [raw[1] for raw in self._raw]
        stamps.extend(
            record.system_modstamp
            for records in self._records.values()
            for record in records.values()
        )
        return max(stamps) + timedelta(milliseconds=1) if stamps else _FIRST_STAMP

    def writes(self) -> tuple[ConversionRequest, ...]:
        """Every write the engine asked of this source, oldest first."""
        return tuple(self._writes)

    def opportunities(self) -> tuple[Opportunity, ...]:
        """The opportunities created in this org."""
        return tuple(self._opportunities.values())


def _read_key(stamp: datetime, record_id: str | None) -> tuple[datetime, str]:
    """Where a raw item is read among its stream's: by stamp, then ID (none first)."""
    return stamp, record_id or ""


def _pages(
    raw: Sequence[tuple[str, datetime, str | None, RawRecord | RawChangeEvent]],
    records: Sequence[Account | Contact | Deletion],
    order: Sequence[int],
    page_size: int,
) -> Iterator[list[Change]]:
    """`InMemorySource.read_changes`' pages: the changes at ``order``'s places, each a
    record's (``~place`` in ``records``) or a raw item's (its place in ``raw``)."""
    for start in range(0, len(order), page_size):
        yield [records[~at] if at < 0 else raw[at][3] for at in order[start : start + page_size]]


@define(repr=False)
class InMemoryStore:
    """A complete `Store` in dictionaries: the reference the SQL store is held to."""

    _accounts: dict[str, StoredAccount] = field(init=False, factory=dict)
    _contacts: dict[str, StoredContact] = field(init=False, factory=dict)
    _members: dict[str, dict[str, None]] = field(init=False, factory=dict)
    _log: dict[str, ChangeDataValue] = field(init=False, factory=dict)
    _watermarks: dict[str, datetime] = field(init=False, factory=dict)
    _conversions: dict[str, Conversion] = field(init=False, factory=dict)
    _field_names: dict[str, dict[str, str]] = field(
        init=False, factory=lambda: {"Account": {}, "Contact": {}}
    )
    _checkpoints: dict[str, bytes] = field(init=False, factory=dict)

    def __repr__(self) -> str:
        live = sum(isinstance(a, AccountState) for a in self._accounts.values())
        return (
            f"<InMemoryStore accounts={live}"
            f" contacts={sum(len(m) for m in self._members.values())}"
            f" activities={len(self._log)} checkpoints={len(self._checkpoints)}>"
        )

    # -- What the engine uses -----------------------------------------------------------

    def watermark(self, stream: str) -> datetime | None:
        """The stored watermark of ``stream``."""
        return self._watermarks.get(stream)

    def account_states(self, ids: Collection[str]) -> Mapping[str, StoredAccount]:
        """Stored entries of ``ids``, tombstones included."""
        return {i: self._accounts[i] for i in ids if i in self._accounts}

    def contact_states(self, ids: Collection[str]) -> Mapping[str, StoredContact]:
        """Stored entries of ``ids``, tombstones included."""
        return {i: self._contacts[i] for i in ids if i in self._contacts}

    def count_contacts(self, account_id: str) -> int:
        """The number of live contacts of the account."""
        return len(self._members.get(normalize_id(account_id), ()))

    def contact_ids(self, account_id: str) -> Sequence[str]:
        """The IDs of the account's live contacts."""
        return list(self._members.get(normalize_id(account_id), ()))

    def contact_ids_of(
        self, account_ids: Collection[str], *, up_to: int
    ) -> Mapping[str, Sequence[str]]:
        """The contact IDs of each account with at most ``up_to`` of them (`ContactIndex`)."""
        members = {i: self.contact_ids(i) for i in account_ids}
        return {i: ids for i, ids in members.items() if len(ids) <= up_to}

    def conversion(self, person_id: str) -> Conversion | None:
        """The recorded conversion of ``person_id``."""
        return self._conversions.get(person_id)

    def field_names(self, object_type: ObjectType) -> list[str]:
        """The org's field names of ``object_type``, each in its one spelling."""
        return list(self._field_names[parse_object_type(object_type)].values())

    def checkpoint(self, name: str) -> bytes | None:
        """The position last stored under ``name`` (`CheckpointStore`)."""
        return self._checkpoints.get(name)

    def apply(self, batch: Batch) -> None:
        """Apply ``batch`` whole (see `Batch` for the order)."""
        batch.check()
        for account in batch.accounts:
            self._accounts[account.id] = account
        for contact in batch.contacts:
            self._put_contact(contact)
        for op in batch.contact_ops:
            if isinstance(op, MoveContacts):
                self._move(op.from_account_id, op.to_account_id)
            else:
                self._delete_all(op.account_id)
        for entry in batch.activities:
            self._log.setdefault(entry.id, entry)
        for conversion in batch.conversions:
            self._conversions[conversion.person_id] = conversion
        for name in batch.field_names:
            self._field_names[name.object_type].setdefault(name.name.lower(), name.name)
        for watermark in batch.watermarks:
            self._watermarks[watermark.stream] = watermark.system_modstamp
        for checkpoint in batch.checkpoints:
            self._checkpoints[checkpoint.name] = checkpoint.position

    def _put_contact(self, entry: StoredContact) -> None:
        previous = self._contacts.get(entry.id)
        if isinstance(previous, Contact) and previous.account_id is not None:
            members = self._members[previous.account_id]
            del members[entry.id]
            if not members:
                del self._members[previous.account_id]
        self._contacts[entry.id] = entry
        if isinstance(entry, Contact) and entry.account_id is not None:
            self._members.setdefault(entry.account_id, {})[entry.id] = None

    def _move(self, from_account_id: str, to_account_id: str) -> None:
        moved = self._members.pop(from_account_id, {})
        if not moved:
            return
        members = self._members.setdefault(to_account_id, {})
        for contact_id in moved:
            contact = self._contacts[contact_id]
            assert isinstance(contact, Contact)
            self._contacts[contact_id] = attrs.evolve(contact, account_id=to_account_id)
            members[contact_id] = None

    def _delete_all(self, account_id: str) -> None:
        for contact_id in self._members.pop(account_id, {}):
            contact = self._contacts[contact_id]
            self._contacts[contact_id] = Deletion(
                object_type="Contact",
                id=contact_id,
                deleted_at=contact.system_modstamp,
                sequence=contact.sequence,
            )

    # -- What users read ----------------------------------------------------------------

    def get_account(self, account_id: str) -> Account | None:
        """The live account with its effective values (local edits on top), or None."""
        state = self._accounts.get(normalize_id(account_id))
        return state.effective() if isinstance(state, AccountState) else None

    def get_contact(self, contact_id: str) -> Contact | None:
        """The live contact, or None."""
        contact = self._contacts.get(normalize_id(contact_id))
        return contact if isinstance(contact, Contact) else None

    def activities(self) -> tuple[ChangeDataValue, ...]:
        """The activity log, oldest first."""
        return tuple(self._log.values())

    def accounts(self) -> tuple[Account, ...]:
        """Every live account, with effective values."""
        return tuple(
            state.effective()
            for state in self._accounts.values()
            if isinstance(state, AccountState)
        )

    def contacts(self) -> tuple[Contact, ...]:
        """Every live contact."""
        return tuple(c for c in self._contacts.values() if isinstance(c, Contact))

    def live_ids(self, object_type: ObjectType) -> list[str]:
        """The IDs of every live account or contact (`ListingStore`)."""
        if parse_object_type(object_type) == "Account":
            return [i for i, state in self._accounts.items() if isinstance(state, AccountState)]
        return [i for i, contact in self._contacts.items() if isinstance(contact, Contact)]


def _replay_id(number: int) -> bytes:
    return number.to_bytes(8, "big")


def _batch_size(instance: object, attribute: object, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"batch_size must be an int >= 1: {value!r}")


def _idle(instance: object, attribute: object, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ConfigurationError(f"idle must be None or an int >= 0: {value!r}")


@define(repr=False)
class InMemoryEventStream:
    """A fake `EventStream`: the events you `publish` come out of `events`, in batches.

    Replay ids are eight bytes, the count of events published up to and including that
    one, big-endian: the first event's is 1, and position 0 is before every event.
    Batches hold at most ``batch_size`` events. When no event is waiting, an iteration
    yields a keepalive (no events, the latest position); after ``idle`` keepalives in a
    row it ends, so that a test following it returns (``idle=0``: it ends as soon as no
    event waits). With ``idle=None`` it never ends: stop the follow with its ``stop``
    event, or close the iterator.

    Events published while an iteration runs come out of it, as from a live
    subscription. `expire_before` forgets old events, as Salesforce does after its
    retention period.
    """

    _name: str = field(default="in-memory", kw_only=True)
    _batch_size: int = field(default=100, kw_only=True, validator=_batch_size)
    _idle: int | None = field(default=1, kw_only=True, validator=_idle)
    _events: list[RawChangeEvent] = field(init=False, factory=list)
    _held_from: int = field(init=False, default=0)
    _subscriptions: list[bytes | None] = field(init=False, factory=list)

    def __repr__(self) -> str:
        return (
            f"<InMemoryEventStream name={self._name!r} events={len(self._events)}"
            f" held_from={self._held_from} subscriptions={len(self._subscriptions)}>"
        )

    @property
    def name(self) -> str:
        """The stream's name, under which a store keeps its checkpoint."""
        return self._name

    @property
    def position(self) -> bytes:
        """The replay id of the last event published (position 0 before any)."""
        return _replay_id(len(self._events))

    @property
    def subscriptions(self) -> tuple[bytes | None, ...]:
        """The ``after`` of each iteration of `events` begun, oldest first."""
        return tuple(self._subscriptions)

    def publish(self, payload: Mapping[str, Any]) -> bytes:
        """Append one change event payload (it may be malformed); return its replay id.

        Its origin is ``replay <hex of the replay id>``, as `EventStream` says.
        """
        replay_id = _replay_id(len(self._events) + 1)
        self._events.append(RawChangeEvent(payload=payload, origin=f"replay {replay_id.hex()}"))
        return replay_id

    def expire_before(self, position: bytes) -> None:
        """Forget the events before ``position``: resuming from an earlier one raises
        `ReplayUnavailableError`, as from a replay id past Salesforce's retention."""
        self._held_from = max(self._held_from, self._index(position))

    def events(self, after: bytes | None) -> Iterator[EventBatch]:
        """Batches of the events published after ``after`` (None: from the first ``next``).

        Raises `ReplayUnavailableError` at the first ``next`` when ``after`` is expired,
        or is no position of this stream.
        """
        self._subscriptions.append(after)
        upto = len(self._events) if after is None else self._resumable(after)
        idle = 0
        while True:
            waiting = self._events[upto : upto + self._batch_size]
            if waiting:
                upto += len(waiting)
                idle = 0
            elif self._idle is not None and idle >= self._idle:
                return
            else:
                idle += 1
            yield EventBatch(events=waiting, position=_replay_id(upto))

    def _index(self, position: bytes) -> int:
        if not isinstance(position, bytes) or len(position) != 8:
            raise ReplayUnavailableError(
                f"{position!r} is no position of this stream", position=position
            )
        number = int.from_bytes(position, "big")
        if number > len(self._events):
            raise ReplayUnavailableError(
                f"{position.hex()} is past the last event of this stream", position=position
            )
        return number

    def _resumable(self, after: bytes) -> int:
        number = self._index(after)
        if number < self._held_from:
            raise ReplayUnavailableError(
                f"the events after {after.hex()} are no longer held", position=after
            )
        return number
