"""The plug-in points: where a caller's Salesforce client, database and policy go.

An integrator implements `Source` (and `WritableSource` for Convert Person) over their
Salesforce client and `Store` over their database; `acctsync.testing` has in-memory
versions of both and conformance checks to run against one's own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

from attrs import field, frozen

from acctsync._activity import ChangeDataValue, Origin
from acctsync._errors import InvalidRecordError
from acctsync._records import Account, Change, Contact, ObjectType, RawChangeEvent
from acctsync._state import Batch, Conversion, ConversionRequest, StoredAccount, StoredContact

__all__ = [
    "CheckpointStore",
    "CompleteSource",
    "ContactIndex",
    "DescribedSource",
    "EventBatch",
    "EventStream",
    "ExclusiveStore",
    "FieldNameStore",
    "FormulaSource",
    "ListingStore",
    "LoggingPolicy",
    "MeteredSource",
    "Source",
    "Store",
    "WarningSource",
    "WritableSource",
]


class LoggingPolicy(Protocol):
    """Decides whether a change to an account logs one activity entry per contact."""

    def logs_activities(self, *, account_id: str, contact_count: int, origin: Origin) -> bool:
        """``contact_count`` is the account's number of contacts when the change applies."""
        ...


class Source(Protocol):
    """Where Salesforce changes come from (read side)."""

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterable[Sequence[Change]]:
        """Yield pages of the changes to ``object_type`` records stamped at or after ``since``.

        The contract:

        - ``since`` is inclusive (``SystemModstamp >= since``); None means from the start.
        - Items come ordered by ``(SystemModstamp, Id)`` across pages, each page holding at
          most ``page_size`` of them.
        - Each record appears in its latest version; a deleted record appears as a
          `Deletion` (or a raw record with ``IsDeleted``), a merged one with its
          ``master_record_id``.
        - Raw items (`RawRecord`, `RawChangeEvent`) may be malformed: the engine decodes
          and rejects them; the source passes them on as received. An item the source
          cannot even read goes in as `Unreadable`, which the engine reports.
        """
        ...


@runtime_checkable
class WritableSource(Source, Protocol):
    """A source that can also create records in Salesforce: Convert Person's write side."""

    def convert_person(self, request: ConversionRequest) -> Conversion:
        """Create the account, contact and opportunity of ``request`` in Salesforce.

        All three or none. A repeated ``request.idempotency_key`` returns the records
        created the first time and creates nothing.
        """
        ...


class Store(Protocol):
    """Where the local copy lives.

    The engine is the only writer and writes only through `apply`. IDs passed in are
    18-character IDs. An integrator's store must:

    - apply each `Batch` atomically, in the order `Batch` documents: all of it, with its
      watermark, or nothing (rule R2);
    - keep tombstones (`Deletion`) as returned entries of `account_states` and
      `contact_states`;
    - answer `count_contacts` without loading the contacts (rule S8 exists for accounts
      too big to load);
    - keep the activity log in insertion order, skipping an entry whose ``id`` it has.
    """

    def watermark(self, stream: str) -> datetime | None:
        """The stored watermark of ``stream``, or None before its first sync."""
        ...

    def account_states(self, ids: Collection[str]) -> Mapping[str, StoredAccount]:
        """The stored entries (live or tombstone) of those of ``ids`` the store has."""
        ...

    def contact_states(self, ids: Collection[str]) -> Mapping[str, StoredContact]:
        """The stored entries (live or tombstone) of those of ``ids`` the store has."""
        ...

    def count_contacts(self, account_id: str) -> int:
        """How many live contacts have ``account_id`` as their account."""
        ...

    def contact_ids(self, account_id: str) -> Sequence[str]:
        """The IDs of the live contacts that have ``account_id`` as their account."""
        ...

    def conversion(self, person_id: str) -> Conversion | None:
        """The recorded Convert Person result for ``person_id``, if any."""
        ...

    def apply(self, batch: Batch) -> None:
        """Apply ``batch`` atomically."""
        ...

    def get_account(self, account_id: str) -> Account | None:
        """The live account with its effective (locally edited) values, or None."""
        ...

    def get_contact(self, contact_id: str) -> Contact | None:
        """The live contact, or None."""
        ...

    def activities(self) -> Iterable[ChangeDataValue]:
        """The activity log, oldest entry first."""
        ...


@runtime_checkable
class ExclusiveStore(Protocol):
    """A store that several runners share, which one runner at a time may write.

    `SyncEngine` holds ``exclusive()`` for the whole of each `SyncEngine.sync`,
    `SyncEngine.reconcile`, `SyncEngine.refresh_formulas`, `SyncEngine.edit_account_field`
    and `SyncEngine.convert_person` call when its store has it. A store implementing it must:

    - make a second holder wait, and raise `LockTimeoutError` when the wait is too long;
    - release the hold when the holder exits the context or its process dies;
    - refuse (`LockLostError`) a write of a holder whose hold ended meanwhile;
    - let the holder enter again while it holds (re-entrant).
    """

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the store for this runner until the context exits."""
        ...


@runtime_checkable
class GroupCommitStore(Protocol):
    """A store that may commit consecutive batches together, for a database whose commit
    costs more than the rows it writes.

    `SyncEngine` holds ``group_commits()`` around the pages of each `SyncEngine.sync`,
    `SyncEngine.reconcile` and `SyncEngine.refresh_formulas` call (not of
    `SyncEngine.follow`, whose batches must show at once). Inside it, `Store.apply` may
    leave a batch's transaction open for the next batches to join. A store implementing
    it must:

    - keep each batch atomic: an `apply` that raises leaves nothing of its batch. It may
      take the batches not yet committed before it with it, watermarks included, as a
      crash would; then it must refuse every later `apply` until the context exits, so
      that no watermark is committed past a batch lost;
    - answer its own reads as of every batch applied, committed or not;
    - commit every applied batch when the context exits, by an exception too;
    - bound how long a transaction stays open, since other writers wait for it.

    A crash loses the batches not yet committed together with their watermarks, so the
    next sync reads them again (R2).
    """

    def group_commits(self) -> AbstractContextManager[None]:
        """Let the batches applied until the context exits share transactions."""
        ...


@runtime_checkable
class ListingStore(Protocol):
    """A store that lists the live records it holds: what `SyncEngine.reconcile` needs."""

    def live_ids(self, object_type: ObjectType) -> Iterable[str]:
        """The IDs of every live record of ``object_type``, in any order."""
        ...


@runtime_checkable
class CompleteSource(Source, Protocol):
    """A source that can read the whole org: what `SyncEngine.reconcile` compares with.

    A live org is one; a folder of exports or a stream of events is not, since what it
    lacks may still be in the org.
    """

    def read_all(self, object_type: ObjectType, *, page_size: int) -> Iterable[Sequence[Change]]:
        """Every record of ``object_type`` the org holds, as `Source.read_changes` gives them.

        Records in the recycle bin come as deletions; a record it does not return is
        gone from the org.
        """
        ...


@runtime_checkable
class ContactIndex(Protocol):
    """A store that answers the contacts of many accounts at once.

    A sync asks it once per page, for the accounts the page changes, instead of twice
    per account: for a store behind a network, that is most of an incremental sync.
    """

    def contact_ids_of(
        self, account_ids: Collection[str], *, up_to: int
    ) -> Mapping[str, Sequence[str]]:
        """The live contact IDs of each of ``account_ids`` that has at most ``up_to``.

        An account with none maps to an empty sequence; one with more than ``up_to`` is
        left out (the engine counts it with `Store.count_contacts`, never loading it).
        """
        ...


@runtime_checkable
class DescribedSource(Source, Protocol):
    """A source that knows the fields it reads, as Salesforce's describe spells them.

    The engine takes their spelling as the org's (rule R9), and reports in
    `SyncReport.missing_fields` the fields the store holds that the source no longer
    reads (access revoked, say).
    """

    def field_names(self, object_type: ObjectType) -> Collection[str]:
        """The fields of ``object_type`` this source reads, system fields left out."""
        ...


@runtime_checkable
class MeteredSource(Source, Protocol):
    """A source that counts the requests it sends to Salesforce.

    Each org's daily API allowance is shared by every integration, so the engine puts
    the requests a sync made in `SyncReport.api_requests`: the count after the sync less
    the count before.
    """

    @property
    def requests_made(self) -> int:
        """The requests sent to Salesforce since the source was made, each retry too."""
        ...


@runtime_checkable
class FieldNameStore(Protocol):
    """A store that keeps the org's field names, each in its one spelling (rule R9).

    It records each `Batch.field_names` entry whose name it does not hold yet in any
    case; the first spelling stays.
    """

    def field_names(self, object_type: ObjectType) -> Collection[str]:
        """Every field name Salesforce records of ``object_type`` have used in this org."""
        ...


@runtime_checkable
class FormulaSource(Source, Protocol):
    """A source that reads the calculated fields alone: what `SyncEngine.refresh_formulas` needs.

    Formula and roll-up summary fields (describe's ``calculated: true``) change without
    moving ``SystemModstamp``, so a sync never reads their new values; reading only them
    is much cheaper than the full read of `SyncEngine.reconcile`.
    """

    def formula_fields(self, object_type: ObjectType) -> Collection[str]:
        """The calculated fields of ``object_type`` this source reads (none: empty).

        The engine also takes a version read again in its second that differs in these
        alone for a recalculation, not a save: local edits stay (S3).
        """
        ...

    def read_formulas(
        self, object_type: ObjectType, *, page_size: int
    ) -> Iterable[Sequence[Change]]:
        """Pages of the org's live ``object_type`` records, each with its calculated fields only.

        Each item carries ``Id``, ``SystemModstamp`` and the calculated fields, as an
        `Account` or `Contact` whose ``fields`` hold only those, or as a `RawRecord` (a
        Contact's payload needs no ``AccountId``: the refresh never moves a contact), or
        as `Unreadable`. Pages hold at most ``page_size`` items. A source whose object has
        no calculated fields yields nothing.
        """
        ...


@runtime_checkable
class WarningSource(Source, Protocol):
    """A source that can degrade without failing, and says so (a Bulk job read by REST).

    The engine takes its warnings at the start of each run (`SyncEngine.sync`,
    `SyncEngine.reconcile`, `SyncEngine.refresh_formulas`), dropping those an earlier run
    left when it failed, and at the end, into `SyncReport.warnings`.
    """

    def take_warnings(self) -> Sequence[str]:
        """The warnings since the last call; the source forgets them."""
        ...


@runtime_checkable
class CheckpointStore(Store, Protocol):
    """A store that keeps where event streams were read up to: what `SyncEngine.follow` needs.

    It stores each `Batch.checkpoints` entry by name, in the same atomic step as the rest
    of the batch, so that a stream resumes exactly after the events whose changes the
    store holds (rule R2).
    """

    def checkpoint(self, name: str) -> bytes | None:
        """The position last stored under ``name``, exactly as given, or None."""
        ...


def _events(events: Iterable[RawChangeEvent]) -> tuple[RawChangeEvent, ...]:
    events = tuple(events)
    for event in events:
        if not isinstance(event, RawChangeEvent):
            raise InvalidRecordError(f"an event batch holds RawChangeEvents, not {event!r}")
    return events


@frozen(kw_only=True)
class EventBatch:
    """Events as a stream delivered them, and the position after them.

    ``events`` may be empty (a keepalive): then only the position moves. ``position`` is
    where to resume after the batch: its last event's replay id, or a keepalive's latest
    replay id.
    """

    events: Sequence[RawChangeEvent] = field(converter=_events)
    position: bytes = field()

    @position.validator
    def _check_position(self, _: object, position: object) -> None:
        if not isinstance(position, bytes):
            raise InvalidRecordError(
                f"an event batch's position is bytes, not {type(position).__name__}"
            )


@runtime_checkable
class EventStream(Protocol):
    """A live stream of Change Data Capture events: what `SyncEngine.follow` reads.

    Each event's payload is a CometD-shaped change event (``ChangeEventHeader`` with
    field lists as names, never Pub/Sub bitmaps) as `decode_change_event` reads it, and
    its origin ``replay <hex of its replay id>``.
    """

    @property
    def name(self) -> str:
        """The stream's name: the checkpoint's, in the store (``pubsub /data/ChangeEvents``)."""
        ...

    def events(self, after: bytes | None) -> Iterator[EventBatch]:
        """Batches as they come, until the caller stops iterating (and closes the iterator).

        ``after`` is a position a batch gave; None subscribes from now. Raises
        `ReplayUnavailableError` at the first ``next()`` when ``after`` is no longer held
        (past retention, or invalid). The stream reconnects by itself and renews its
        session; a failure it cannot get past raises `SourceError`. Events of objects
        other than Account and Contact are dropped by the stream; their positions still
        move. While no event comes, it yields empty batches (keepalives) now and then,
        so that its reader can stop.
        """
        ...
