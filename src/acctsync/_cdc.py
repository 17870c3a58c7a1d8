"""Change Data Capture events as a `Source`: push from a subscriber, pull by the engine.

Theory of operation
-------------------
The caller runs the subscriber (CometD, the Pub/Sub API) and hands each event to
`ChangeEventSource.add` with its replay id. The source holds events in arrival order
until the caller calls `ChangeEventSource.commit` after a sync that read them returned;
until then every sync reads them again, which is harmless: the engine recognises versions
it has applied. `ChangeEventSource.checkpoint` is the replay id to resume the
subscription from, so it passes only committed events.

The engine's watermark is a datetime, and events have no ``SystemModstamp``: an event's
stamp is its ``commitTimestamp``, and `read_changes` orders events by (stamp, record id,
``(commitNumber, sequenceNumber)``, arrival) and leaves out those stamped before
``since``. Events go out as `RawChangeEvent` with origin ``replay <id>``, so that the
engine decodes them and rejects a malformed one with a reason.

Two kinds of event need the records themselves, which only a full source (a live org
through its REST API, say) can give: the ``fallback``.

- A gap event (``GAP_*``, ``GAP_OVERFLOW``, a wildcard record ID) says changes were lost,
  and so does, in effect, an event whose field lists are still Pub/Sub bitmaps: which
  fields changed cannot be read from it. Both objects are read again from the fallback
  from a little before the gap's commit time, whole, merged into the events by stamp.
  Whole, because `Source.read_changes` cannot ask for some IDs only (a REST source reads
  the same rows either way), and because the engine's watermark is then honest: it moves
  to records read in full up to that stamp, not to the current versions of a few records
  while other changes are still in transit. Both, because the records are read as they
  are now while older events of the other object may still be to come: an account's
  deletion would delete a contact read as created after it.
- An Account ``DELETE`` event does not say whether it was a merge (``MasterRecordId`` is
  not in events), and a merge must move the loser's contacts to the winner (rule R4). The
  fallback is asked for the deleted account; its `Deletion`, which names the winner,
  takes the event's place when it is the same deletion (stamped no later than the event).

Without a fallback, gap events go to the engine, which reports them in
`SyncReport.refetch`, an event with bitmaps is rejected, and an Account ``DELETE`` is a
plain deletion.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from itertools import count
from operator import itemgetter
from typing import Any, Final, TypeAlias

import attrs
from attrs import define, field, frozen

from acctsync._errors import ConfigurationError, InvalidRecordError
from acctsync._formats import (
    change_sequence,
    commit_time,
    decode_change_event,
    decode_record,
    event_parts,
    holds_bitmap,
    is_empty_id,
    is_gap,
    names_a_person,
    parse_datetime,
)
from acctsync._ids import normalize_id
from acctsync._protocols import Source
from acctsync._records import (
    Account,
    Change,
    Contact,
    Deletion,
    ObjectType,
    PartialUpdate,
    RawChangeEvent,
    RawRecord,
)

__all__ = ["ChangeEventSource", "ReplayId"]

ReplayId: TypeAlias = int | str | bytes
"""A replay id, kept as given: an ``int`` from CometD, opaque ``bytes`` from the Pub/Sub API."""

_STREAMS: Final = frozenset({"Account", "Contact"})
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)

# The order items go out in: (stamp, record id, 0 for a fallback record and 1 for an
# event, an event's (commitNumber, sequenceNumber), then its place in that sequence).
_Key: TypeAlias = tuple[datetime, str, int, tuple[int, ...], int]


@frozen(kw_only=True)
class _Event:
    """An event as it arrived, with what routing it needs read from its header."""

    position: int
    replay_id: ReplayId | None  # None: no resume point of its own (see `from_events`)
    item: RawChangeEvent
    stream: ObjectType
    known: bool  # its entityName is Account or Contact: a gap or delete in it is ours
    stamp: datetime | None
    sequence: tuple[int, ...] | None
    change_type: str | None
    record_ids: tuple[str, ...]
    unreadable_fields: bool  # its field lists hold Pub/Sub bitmaps
    diffed: bool  # it carries a long text field's change as a diff, not its value
    person_name: bool  # it changes a person account's name (`names_a_person`)

    @property
    def key(self) -> _Key:
        first = self.record_ids[0] if self.record_ids else ""
        return (self.stamp or _EARLIEST, first, 1, self.sequence or (), self.position)

    @property
    def needs_records(self) -> bool:
        """Whether the event's changes can only be read from the records themselves."""
        return (
            self.unreadable_fields
            or self.diffed
            or self.person_name
            or is_gap(self.change_type, self.record_ids)
        )


def _replay_id(value: object) -> ReplayId:
    if isinstance(value, bool) or not isinstance(value, int | str | bytes):
        raise InvalidRecordError(
            f"a replay id is an int, str or bytes, not {type(value).__name__}"
        )
    return value


def _checkpoint(value: object) -> ReplayId | None:
    try:
        return None if value is None else _replay_id(value)
    except InvalidRecordError as error:
        raise ConfigurationError(f"checkpoint: {error.reason}") from None


def _message_replay_id(message: object) -> object:
    """The replay id a message carries, None if it carries none.

    ``data.event.replayId`` of a CometD message (or ``event.replayId`` of its data), or
    ``replayId`` beside the ``payload`` of an event as a Pub/Sub API client hands it over
    (pozil/pub-sub-api-node-client's README shows one).
    """
    if not isinstance(message, Mapping):
        return None
    for holder in (message.get("data"), message):
        event = holder.get("event") if isinstance(holder, Mapping) else None
        if isinstance(event, Mapping) and event.get("replayId") is not None:
            return event["replayId"]
    if "payload" in message:
        return message.get("replayId")
    return None


def _origin(replay_id: ReplayId) -> str:
    return f"replay {replay_id.hex() if isinstance(replay_id, bytes) else replay_id}"


def _read_event(position: int, replay_id: ReplayId | None, item: RawChangeEvent) -> _Event:
    """Read what routing needs; whatever is unreadable is left for the engine to reject."""
    stream: ObjectType = "Account"  # a payload naming no synced object goes to the engine
    known, stamp, sequence, change_type = False, None, None, None
    unreadable_fields = diffed = person_name = False
    record_ids: tuple[str, ...] = ()
    try:
        body, header = event_parts(item.payload)
    except InvalidRecordError:
        pass
    else:
        entity = header.get("entityName")
        if entity == "Contact":
            stream = "Contact"
        known = isinstance(entity, str) and entity in _STREAMS
        with suppress(InvalidRecordError):
            stamp = commit_time(header)
        sequence = change_sequence(header)
        raw_type = header.get("changeType")
        change_type = raw_type if isinstance(raw_type, str) else None
        ids = header.get("recordIds")
        if type(ids) is list or (isinstance(ids, Sequence) and not isinstance(ids, str)):
            record_ids = tuple(i for i in ids if isinstance(i, str) and not is_empty_id(i))
        unreadable_fields = holds_bitmap(header)
        # CDC Developer Guide, "Change Event Fields": diffFields names the text fields sent
        # as a diff (over CometD, as {"diff": ...}): only the record has their value. A
        # scalar is no diff, and is told apart without the slower check for a Mapping.
        diffed = bool(header.get("diffFields")) or any(
            "diff" in value
            for value in body.values()
            if type(value) not in _SCALARS and isinstance(value, Mapping)
        )
        named = [
            name
            for key in ("changedFields", "nulledFields")
            if isinstance(names := header.get(key), Sequence) and not isinstance(names, str)
            for name in names
        ]
        person_name = names_a_person(entity, body, named)
    return _Event(
        position=position,
        replay_id=replay_id,
        item=item,
        stream=stream,
        known=known,
        stamp=stamp,
        sequence=sequence,
        change_type=change_type,
        record_ids=record_ids,
        unreadable_fields=unreadable_fields,
        diffed=diffed,
        person_name=person_name,
    )


def _normalized(record_id: str) -> str:
    """An ID in its 18-character form where it is one, else as it is."""
    try:
        return normalize_id(record_id)
    except InvalidRecordError:
        return record_id


def _stamp_and_id(item: Change) -> tuple[datetime, str] | None:
    """Where a fallback's item goes in the order, if it can be read without decoding."""
    if isinstance(item, Account | Contact | Deletion | PartialUpdate):
        return item.system_modstamp, item.id
    try:
        if isinstance(item, RawRecord):
            record_id = item.payload.get("Id")
            stamp = parse_datetime(item.payload.get("SystemModstamp"), field="SystemModstamp")
            return stamp, record_id if isinstance(record_id, str) else ""
        if isinstance(item, RawChangeEvent):
            event = _read_event(0, 0, item)
            if event.stamp is not None:
                return event.stamp, event.record_ids[0] if event.record_ids else ""
    except (InvalidRecordError, AttributeError):
        pass
    return None


def _account_deletion(item: Change) -> Deletion | None:
    if isinstance(item, RawRecord):
        try:
            item = decode_record(item.object_type, item.payload)
        except (InvalidRecordError, AttributeError):
            return None
    if isinstance(item, Deletion) and item.object_type == "Account":
        return item
    return None


def _margin(instance: object, attribute: object, value: timedelta) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ConfigurationError(f"refetch_margin must be a timedelta >= 0: {value!r}")


@define(repr=False, eq=False)
class ChangeEventSource:
    """A `Source` over Change Data Capture events that the caller's subscriber receives.

    ``fallback`` is a full source (the org's REST API, say) that gap events and Account
    deletions are read from again; ``checkpoint`` is the replay id the subscription was
    resumed from, if any; ``refetch_margin`` is how far before a gap's commit time the
    fallback is read, for records stamped when their transaction began.

    `add` may be called from the subscriber's thread while a sync runs: events that
    arrive during a sync wait for the next one.
    """

    _fallback: Source | None = field(default=None, kw_only=True)
    _checkpoint: ReplayId | None = field(default=None, kw_only=True, converter=_checkpoint)
    _refetch_margin: timedelta = field(
        default=timedelta(minutes=5), kw_only=True, validator=_margin
    )
    _events: list[_Event] = field(init=False, factory=list)
    _committed: set[int] = field(init=False, factory=set)
    _arrived: int = field(init=False, default=0)
    _read_upto: dict[ObjectType, int] = field(init=False, factory=dict)
    _lock: threading.Lock = field(init=False, factory=threading.Lock)

    @classmethod
    def from_events(
        cls,
        events: Iterable[RawChangeEvent],
        *,
        fallback: Source | None = None,
        refetch_margin: timedelta = timedelta(minutes=5),
    ) -> ChangeEventSource:
        """A source holding ``events``, in this order, as an `EventStream` delivered them.

        They are held as they are, origins included, without replay ids of their own:
        committing them leaves `checkpoint` where it was, since the stream's position is
        its batch's (`EventBatch.position`), which the caller stores. `SyncEngine.follow`
        reads each batch of a stream through one.
        """
        source = cls(fallback=fallback, refetch_margin=refetch_margin)
        for item in events:
            if not isinstance(item, RawChangeEvent):
                raise InvalidRecordError(f"from_events takes RawChangeEvents, not {item!r}")
            source._events.append(_read_event(source._arrived, None, item))
            source._arrived += 1
        return source

    def __repr__(self) -> str:
        fallback = type(self._fallback).__name__ if self._fallback is not None else None
        return (
            f"<ChangeEventSource pending={self.pending} added={self._arrived} fallback={fallback}>"
        )

    @property
    def checkpoint(self) -> ReplayId | None:
        """The replay id to resume the subscription from, to persist after `commit`.

        It is the last event that, with every event that arrived before it, was read by
        a sync that then returned; None until there is one (or the ``checkpoint`` given).
        """
        return self._checkpoint

    @property
    def pending(self) -> int:
        """How many events are held: added, and not yet committed."""
        return len(self._events) - len(self._committed)

    def add(self, event: Mapping[str, Any], *, replay_id: ReplayId | None = None) -> None:
        """Hold one event, as received, until a sync applies it and `commit` is called.

        ``event`` is a CometD message (``{"data": {"payload": ..., "event": {"replayId":
        ...}}}``) or a Pub/Sub API client's event (``{"replayId": ..., "payload": ...}``),
        whose replay id is read from it, or an event payload (the object holding
        ``ChangeEventHeader``) with ``replay_id`` given. Add events in the order they were
        delivered. The payload may be malformed: the engine rejects it with a reason.
        Raises `InvalidRecordError` when there is no replay id.
        """
        found = replay_id if replay_id is not None else _message_replay_id(event)
        if found is None:
            raise InvalidRecordError(
                "no replay id: pass replay_id= with an event payload that has none"
            )
        replay = _replay_id(found)
        item = RawChangeEvent(payload=event, origin=_origin(replay))
        with self._lock:
            self._events.append(_read_event(self._arrived, replay, item))
            self._arrived += 1

    def commit(self) -> None:
        """Let go of the events the last sync read, and move `checkpoint` past them.

        Call it after `SyncEngine.sync` returned, never after one that raised: the events
        it read would be lost. Events that arrived since the sync's reads stay held.
        """
        with self._lock:
            upto, self._read_upto = self._read_upto, {}
            self._committed.update(
                event.position
                for event in self._events
                if event.position < upto.get(event.stream, 0)
            )
            # The checkpoint moves over committed events up to the first one still held;
            # committed events after that one wait behind it.
            done = 0
            for event in self._events:
                if event.position not in self._committed:
                    break
                self._committed.discard(event.position)
                if event.replay_id is not None:
                    self._checkpoint = event.replay_id
                done += 1
            del self._events[:done]

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[list[Change]]:
        """Pages of the held events of ``object_type`` committed at or after ``since``.

        Ordered by (``commitTimestamp``, record ID, ``(commitNumber, sequenceNumber)``,
        arrival), with the records the fallback gives for gaps and events with
        unexpanded bitmaps (of either object) and for Account deletions merged in by
        ``SystemModstamp``; those are given even when stamped a little before ``since``,
        as the events asking for them are not. An event whose commit time cannot be
        read comes first, whatever ``since``.
        """
        with self._lock:
            held = [
                event
                for event in self._events
                if event.position not in self._committed
                and (event.stamp is None or since is None or event.stamp >= since)
            ]
            self._read_upto[object_type] = self._arrived
        # A gap in either object re-reads both: records of one read as they are now, with
        # older events of the other still to apply, could meet changes they came after
        # (an account's deletion deleting a contact made after it).
        gaps = [
            event.stamp
            for event in held
            if event.known and event.stamp is not None and event.needs_records
        ]
        events = [event for event in held if event.stream == object_type]
        return self._pages(object_type, events, min(gaps, default=None), page_size)

    def _pages(
        self, stream: ObjectType, events: Sequence[_Event], gap: datetime | None, size: int
    ) -> Iterator[list[Change]]:
        refetched: list[tuple[_Key, Change]] = []
        fresh: set[str] = set()
        if self._fallback is not None and gap is not None:
            refetched = list(self._refetched(stream, gap - self._refetch_margin, size))
            # The fallback was read after every held event: where it gives a record, its
            # events are superseded, and would undo the newer values it read.
            fresh = {_normalized(key[1]) for key, _ in refetched}
        served: list[tuple[_Key, Change]] = []
        deletions: list[_Event] = []
        for event in events:
            if self._fallback is not None and event.known and event.stamp is not None:
                if event.needs_records or (
                    fresh
                    and event.record_ids
                    and {_normalized(i) for i in event.record_ids} <= fresh
                ):
                    continue
                if stream == "Account" and event.change_type == "DELETE":
                    deletions.append(event)
                    continue
            served.append((event.key, event.item))
        if deletions:
            served.extend(self._deletions(deletions, size))
        served.sort(key=itemgetter(0))
        merged = heapq.merge(refetched, served, key=itemgetter(0))
        page: list[Change] = []
        for _, change in merged:
            page.append(change)
            if len(page) == size:
                yield page
                page = []
        if page:
            yield page

    def _refetched(
        self, stream: ObjectType, start: datetime, size: int
    ) -> Iterator[tuple[_Key, Change]]:
        assert self._fallback is not None
        place = (start, "")
        order = count()
        for page in self._fallback.read_changes(stream, start, page_size=size):
            for item in page:
                # An item that cannot be placed keeps the fallback's own order: the engine
                # rejects it, and where it goes changes nothing.
                place = _stamp_and_id(item) or place
                yield (*place, 0, (), next(order)), item

    def _deletions(self, events: Sequence[_Event], size: int) -> list[tuple[_Key, Change]]:
        """Account DELETE events, each deletion replaced by the fallback's where it can."""
        assert self._fallback is not None
        out: list[tuple[_Key, Change]] = []
        decoded: list[tuple[_Event, list[Deletion]]] = []
        for event in events:
            try:
                changes = decode_change_event(event.item.payload)
            except InvalidRecordError:
                out.append((event.key, event.item))  # the engine says what is wrong
                continue
            decoded.append((event, [c for c in changes if isinstance(c, Deletion)]))
        wanted = {d.id for _, deletions in decoded for d in deletions}
        if not wanted:
            return out
        start = min(d.deleted_at for _, deletions in decoded for d in deletions)
        found: dict[str, Deletion] = {}
        for page in self._fallback.read_changes(
            "Account", start - self._refetch_margin, page_size=size
        ):
            for item in page:
                deletion = _account_deletion(item)
                if deletion is not None and deletion.id in wanted:
                    found[deletion.id] = deletion
        for event, deletions in decoded:
            for deletion in deletions:
                better = found.get(deletion.id)
                # A later deletion in the org is another one (after an undelete): its
                # stamp would move the watermark past events still to come.
                if better is not None and better.deleted_at <= deletion.deleted_at:
                    # The event's commit order stays: an undelete in its second follows it.
                    deletion = attrs.evolve(better, sequence=deletion.sequence)
                key = (deletion.deleted_at, deletion.id, 1, event.sequence or (), event.position)
                out.append((key, deletion))
        return out
