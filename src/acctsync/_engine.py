"""The sync engine: the public face of the rules, with no I/O of its own.

Theory of operation
-------------------
A sync reads the account and the contact stream from the source, each from its stored
watermark minus a lookback window (rule R1), and merges them by ``SystemModstamp``, so that
changes apply in the order Salesforce made them. Every ``page_size`` changes are applied
by an `Applier` (see ``_apply``) as a `Batch` that carries the streams' new watermarks
(R2). A watermark never passes the clock: a record stamped in the future cannot make a
sync skip what comes before it.

A formula refresh reads only the calculated fields of every live record and applies
values changed under the stored stamp, as a reconciliation does, to the records the
store holds live in that second; it leaves everything else, watermarks included, to
syncs.

Following a stream of change events applies each batch the stream delivers as a sync
applies a source's pages: the batch's events are read through a `ChangeEventSource`
whose fallback is the engine's own source (for gaps, bitmaps and merges), and the
stream's position rides, as a `Checkpoint`, on the store batch of the batch's last page.
A crash before that batch leaves the old position, and the stream delivers the same
events again, which the engine recognises by version; a crash after it, the new one.
Where the stream holds no position to resume from, the engine subscribes from now and
then catches up by a sync: what changed meanwhile is either in the sync or in the
stream, and whatever is in both is recognised.

Local edits (S2) write the account's overlay of local values; Convert Person (S6) is the
one call that writes to Salesforce, through the source's write side. The clock is the
only thing the engine reads that it is not handed; it can be replaced.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import repeat
from operator import attrgetter, is_, itemgetter
from typing import Final, TypeAlias, cast

import attrs
from attrs import define, field

from acctsync._activity import ActivityPolicy, Origin
from acctsync._apply import (
    Applier,
    Tally,
    Upstream,
    fan_out,
    micros,
    newest_stamps,
    stream_of,
    with_order,
)
from acctsync._cdc import ChangeEventSource
from acctsync._errors import (
    AlreadyAContactError,
    ConfigurationError,
    InvalidRecordError,
    NoAccountError,
    ReplayUnavailableError,
    UnknownContactError,
    UnknownFieldError,
)
from acctsync._formats import _plain_records, decode_change_event, decode_record
from acctsync._ids import CONTACT_PREFIX, normalize_id
from acctsync._names import STANDARD_ACCOUNT_FIELDS, Spellings, close_matches
from acctsync._protocols import (
    CheckpointStore,
    CompleteSource,
    DescribedSource,
    EventBatch,
    EventStream,
    ExclusiveStore,
    FieldNameStore,
    FormulaSource,
    GroupCommitStore,
    ListingStore,
    LoggingPolicy,
    MeteredSource,
    Source,
    Store,
    WarningSource,
    WritableSource,
)
from acctsync._records import (
    UNCHANGED,
    Account,
    Change,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    PartialUpdate,
    Person,
    RawChangeEvent,
    RawRecord,
    Refetch,
    Unreadable,
    check_field,
    same_value,
)
from acctsync._report import EditResult, Rejection, Suppression, SyncReport
from acctsync._state import (
    AccountState,
    Batch,
    Checkpoint,
    Conversion,
    ConversionRequest,
    Watermark,
)

__all__ = ["CONVERSION_FIELD_MAP", "SyncEngine"]

STREAMS: Final[tuple[ObjectType, ...]] = ("Account", "Contact")

_Order: TypeAlias = tuple[datetime, bool, bool, str]
# How a run reads a stream, given the stream's stored watermark.
_Read: TypeAlias = Callable[[ObjectType, datetime | None], Iterable[Sequence[Change]]]
_KEY: Final = itemgetter(0)  # of a (key, change) pair: compares keys only, never changes
_CHANGE: Final = itemgetter(1)
_PAYLOAD: Final = attrgetter("payload")
_OBJECT_TYPE: Final = attrgetter("object_type")
_DICT: Final = frozenset({dict})


def _stamp(pair: tuple[_Order, Upstream]) -> datetime:
    return pair[0][0]


def _merged(
    streams: Sequence[Iterator[list[tuple[_Order, Upstream]]]],
) -> Iterator[list[tuple[_Order, Upstream]]]:
    """The streams' keyed changes in key order, as `heapq.merge` gives them, a list at a
    time.

    Each stream gives its changes in key order, a list at a time, and no two streams
    share a key: `order` tells an account from a contact, and `SyncEngine._decode` lets
    no change into a stream that is not of its object. Whatever is keyed at most the
    smallest of the streams' latest keys can come, since no stream holds anything before
    it. Those are sorted together, which for runs in order is their merge, in C (and
    stable: a stream's equal keys keep their order). Merged one by one, a million records
    took about 0.7 s of Python.
    """
    held: list[list[tuple[_Order, Upstream]]] = [[] for _ in streams]
    open_ = [True] * len(streams)
    while True:
        for at, stream in enumerate(streams):
            while open_[at] and not held[at]:
                pairs = next(stream, None)
                if pairs is None:
                    open_[at] = False
                else:
                    held[at] = pairs
        latest = [pairs[-1][0] for pairs in held if pairs]
        if not latest:
            return
        bound = min(latest)
        ready: list[tuple[_Order, Upstream]] = []
        for at, pairs in enumerate(held):
            cut = bisect.bisect_right(pairs, bound, key=_KEY)
            ready.extend(pairs[:cut])
            held[at] = pairs[cut:]
        ready.sort(key=_KEY)
        yield ready


CONVERSION_FIELD_MAP: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "Company": (("Account", "Name"),),
    "Website": (("Account", "Website"),),
    "Industry": (("Account", "Industry"),),
    "AnnualRevenue": (("Account", "AnnualRevenue"),),
    "NumberOfEmployees": (("Account", "NumberOfEmployees"),),
    "Salutation": (("Contact", "Salutation"),),
    "FirstName": (("Contact", "FirstName"),),
    "LastName": (("Contact", "LastName"),),
    "Title": (("Contact", "Title"),),
    "Email": (("Contact", "Email"),),
    "Phone": (("Contact", "Phone"), ("Account", "Phone")),
    "MobilePhone": (("Contact", "MobilePhone"),),
    "LeadSource": (("Contact", "LeadSource"), ("Opportunity", "LeadSource")),
    "Street": (("Account", "BillingStreet"), ("Contact", "MailingStreet")),
    "City": (("Account", "BillingCity"), ("Contact", "MailingCity")),
    "State": (("Account", "BillingState"), ("Contact", "MailingState")),
    "PostalCode": (("Account", "BillingPostalCode"), ("Contact", "MailingPostalCode")),
    "Country": (("Account", "BillingCountry"), ("Contact", "MailingCountry")),
}
"""Where Convert Person puts a person's fields, as Salesforce's standard lead conversion does.

Fields not named here are not sent; pass them explicitly to `SyncEngine.convert_person`.
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{attribute.name.lstrip('_')} must be an int >= 1: {value!r}")


def _lookback(instance: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ConfigurationError(f"lookback must be a timedelta >= 0: {value!r}")


@define(repr=False)
class SyncEngine:
    """Applies Salesforce changes and local edits to a store, following every rule.

    ``policy`` decides when activity entries are logged (`ActivityPolicy()` by default);
    ``page_size`` bounds how many changes are held and applied at once; ``lookback`` is how
    far before the watermark each sync reads again, for records committed late (R1);
    ``clock`` gives the current time, for local edits and to keep watermarks out of the
    future.
    """

    _source: Source = field(kw_only=True)
    _store: Store = field(kw_only=True)
    _policy: LoggingPolicy = field(factory=ActivityPolicy, kw_only=True)
    _page_size: int = field(default=2000, kw_only=True, validator=_positive)
    _lookback: timedelta = field(default=timedelta(minutes=5), kw_only=True, validator=_lookback)
    _clock: Callable[[], datetime] = field(default=_utc_now, kw_only=True)

    def __repr__(self) -> str:
        return (
            f"<SyncEngine source={type(self._source).__name__}"
            f" store={type(self._store).__name__} policy={self._policy!r}>"
        )

    # -- Salesforce to local -------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Pull every change since the stored watermarks and apply it, page by page."""
        with self._hold(pages=True):
            return self._sync()

    @contextmanager
    def _hold(self, *, pages: bool = False) -> Iterator[None]:
        """The store's hold for one runner (`ExclusiveStore`) and, around a run of many
        ``pages``, its group commits (`GroupCommitStore`), where the store has them."""
        store = self._store
        with (
            store.exclusive() if isinstance(store, ExclusiveStore) else nullcontext(),
            store.group_commits()
            if pages and isinstance(store, GroupCommitStore)
            else nullcontext(),
        ):
            yield

    def follow(
        self,
        stream: EventStream,
        *,
        stop: threading.Event | None = None,
        max_events: int = 2000,
    ) -> Iterator[SyncReport]:
        """Apply a stream's change events as they come, batch by batch, until stopped.

        Yields a report per batch of events applied; a batch without events (a keepalive)
        stores the stream's new position and yields nothing. It resumes after the
        position the store holds for ``stream.name``; with none, or one the stream no
        longer holds (`ReplayUnavailableError`), it subscribes from now and, once the
        stream delivered its first batch, catches up by a sync of the engine's own
        source, whose report it yields first. Gap and overflow events, events whose
        field lists are unexpanded bitmaps, and Account deletions (which may be merges)
        are read again from the engine's source, as `ChangeEventSource` does with its
        fallback.

        Each batch's position is stored with the batch's last changes, atomically
        (rule R2): after a crash the stream resumes with the first batch not applied
        whole, and what of it was applied is recognised, never logged twice. A batch of
        more than ``max_events`` changes is applied in several store batches.

        ``stop`` is checked before each batch: once it is set, the iteration ends, and
        a batch that arrived is left to the next follow. The stream's keepalives make
        sure it is checked while no event comes. Closing the iterator stops too. The
        store is held (`ExclusiveStore`) until the iteration ends. Raises
        `ConfigurationError` when the store is no `CheckpointStore`.
        """
        store = self._store
        if not isinstance(store, CheckpointStore):
            raise ConfigurationError(
                f"{type(store).__name__} keeps no checkpoints: it cannot follow a stream"
            )
        if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 1:
            raise ConfigurationError(f"max_events must be an int >= 1: {max_events!r}")
        return self._follow(store, stream, stop, max_events)

    def _follow(
        self,
        store: CheckpointStore,
        stream: EventStream,
        stop: threading.Event | None,
        size: int,
    ) -> Iterator[SyncReport]:
        def stopped() -> bool:
            return stop is not None and stop.is_set()

        with self._hold():
            position = store.checkpoint(stream.name)
            while not stopped():
                caught_up = position is not None
                batches = stream.events(position)
                try:
                    while not stopped():
                        try:
                            batch = next(batches)
                        except StopIteration:
                            return
                        except ReplayUnavailableError:
                            if position is None:
                                raise
                            position = None  # from now on, once caught up
                            break
                        if stopped():
                            return
                        if not caught_up:
                            # Subscribed before the sync reads: a change is in one or both.
                            yield self._sync()
                            caught_up = True
                            if stopped():
                                return
                        if batch.events:
                            report = self._apply_events(stream.name, batch, size)
                            position = batch.position
                            yield report
                        else:
                            self._keep_position(store, stream.name, batch.position)
                            position = batch.position
                finally:
                    # Ends the subscription; an iterator that is no generator has none.
                    close = getattr(batches, "close", None)
                    if close is not None:
                        close()

    @staticmethod
    def _keep_position(store: CheckpointStore, name: str, position: bytes) -> None:
        """Store a keepalive's position: no event to read, no watermark to move.

        Stored even when it did not move: each write renews a store's hold where the
        hold is a lease (SQLite's lapses after a while without a write).
        """
        store.apply(Batch(checkpoints=(Checkpoint(name=name, position=position),)))

    def _apply_events(self, name: str, batch: EventBatch, size: int) -> SyncReport:
        """Apply one batch of a stream's events, and store its position with the last page."""
        events = ChangeEventSource.from_events(
            batch.events, fallback=self._source, refetch_margin=self._lookback
        )
        checkpoint = Checkpoint(name=name, position=batch.position)

        # Every event is newer than the position stored: none is left out by a watermark.
        def read(stream: ObjectType, mark: datetime | None) -> Iterable[Sequence[Change]]:
            return events.read_changes(stream, None, page_size=size)

        with self._run() as tally:
            self._pull(tally, read, size=size, checkpoint=checkpoint)
        return attrs.evolve(tally.report(), events=len(batch.events), checkpoint=checkpoint)

    def reconcile(self) -> SyncReport:
        """Read the whole org again and make the store equal it.

        A sync reads what changed since its watermark, which misses a record deleted
        beyond the recycle bin (it is gone) and a formula value that changed (that does
        not move ``SystemModstamp``). A reconciliation reads every record, as the org
        holds it now, and:

        - applies it like a sync; a live record also replaces a tombstone, whatever
          their stamps, since the org holds it live;
        - applies values of calculated fields changed under an unchanged stamp
          (``refreshed`` in the report): local edits stay, since no newer version came
          (S3), and the entries it logs are of the reconciliation's time; other values
          under it are a second save in that second (R3), as in a sync, unless the
          source names no calculated fields (no `FormulaSource`): then they are taken for
          a refresh too;
        - deletes, as of now, the live records the store holds that the read lacked.

        A read that rejected anything, or asked for a re-fetch, deletes nothing: the
        record it could not read may be one the store holds. Needs a `CompleteSource`
        and a `ListingStore`.
        """
        source, store = self._source, self._store
        if not isinstance(source, CompleteSource):
            raise ConfigurationError(
                f"{type(source).__name__} cannot read the whole org: it cannot reconcile"
            )
        if not isinstance(store, ListingStore):
            raise ConfigurationError(
                f"{type(store).__name__} cannot list its records: it cannot reconcile"
            )
        with self._hold(pages=True):
            return self._sync(reconcile=(source, store))

    def refresh_formulas(self) -> SyncReport:
        """Read the org's formula and roll-up summary fields again and apply what changed.

        Their values change without moving ``SystemModstamp``, so a sync never reads them
        again. This reads those fields alone (`FormulaSource.read_formulas`), far less than
        `reconcile` reads, and applies a value changed under the stamp the store holds as
        a reconciliation does (``refreshed`` in the report): local edits stay (S3), and
        each changed account field logs an entry per contact (S7, S8) as of the refresh.
        The same values count as ``already_applied``. A record the store does not hold
        live in that second (not held, deleted, or another version) is left alone: the
        next sync reads it whole. Watermarks do not move and nothing is deleted. Raises
        `ConfigurationError` when the source is no `FormulaSource`.
        """
        source = self._source
        if not isinstance(source, FormulaSource):
            raise ConfigurationError(
                f"{type(source).__name__} cannot read formula fields alone: it cannot refresh them"
            )
        with self._hold(pages=True):
            return self._refresh_formulas(source)

    def _refresh_formulas(self, source: FormulaSource) -> SyncReport:
        with self._run() as tally:
            applier = Applier(
                store=self._store,
                policy=self._policy,
                tally=tally,
                refresh_at=self._clock(),
                refresh_only=True,
            )
            size = self._page_size
            for stream in STREAMS:
                spellings = self._spellings(stream, applier, tally)
                for page in source.read_formulas(stream, page_size=size):
                    tally.pages += 1
                    refreshes = [
                        _values_only(change)
                        for change in self._decode(stream, page, tally, spellings)
                        if not isinstance(change, Deletion)
                    ]
                    for start in range(0, len(refreshes), size):
                        applier.apply(refreshes[start : start + size], ())
                mark = self._store.watermark(stream)  # reported as a sync's: unmoved
                if mark is not None:
                    tally.watermarks[stream] = mark
        return tally.report()

    @contextmanager
    def _run(self) -> Iterator[Tally]:
        """The tally of one run, given the requests it sent and its source's warnings."""
        self._take_warnings()  # left by an earlier run that failed: not this one's
        tally = Tally()
        requests_before = self._requests_made()
        yield tally
        tally.api_requests = self._requests_made() - requests_before
        tally.warnings.extend(self._take_warnings())

    def _take_warnings(self) -> Sequence[str]:
        """The source's warnings since it was last asked (`WarningSource`), or none."""
        source = self._source
        return source.take_warnings() if isinstance(source, WarningSource) else ()

    def _sync(self, *, reconcile: tuple[CompleteSource, ListingStore] | None = None) -> SyncReport:
        size = self._page_size
        read: _Read
        if reconcile is None:
            source = self._source

            def read(stream: ObjectType, mark: datetime | None) -> Iterable[Sequence[Change]]:
                return source.read_changes(stream, self._since(mark), page_size=size)

        else:
            complete = reconcile[0]

            def read(stream: ObjectType, mark: datetime | None) -> Iterable[Sequence[Change]]:
                return complete.read_all(stream, page_size=size)

        with self._run() as tally:
            self._pull(tally, read, size=size, listing=reconcile[1] if reconcile else None)
        return tally.report()

    def _pull(
        self,
        tally: Tally,
        read: _Read,
        *,
        size: int,
        listing: ListingStore | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """Read each stream (``read`` from its stored watermark) and apply it, in pages of
        ``size``, counting in ``tally``.

        ``listing`` makes it a reconciliation: a full read, and a purge after it.
        ``checkpoint`` rides on the store batch of the last page, and only on it.
        """
        ceiling = self._clock()
        applier = Applier(
            store=self._store,
            policy=self._policy,
            tally=tally,
            refresh_at=ceiling,
            reconciling=listing is not None,
        )
        committed = {stream: self._store.watermark(stream) for stream in STREAMS}
        seen = dict(committed)
        reads = {stream: read(stream, committed[stream]) for stream in STREAMS}
        merged = _merged(
            [
                self._read(
                    stream,
                    reads[stream],
                    tally,
                    partial(self._spellings, stream, applier),
                    applier.read_from_event,
                )
                for stream in STREAMS
            ]
        )
        read_ids: dict[ObjectType, set[str]] = {stream: set() for stream in STREAMS}
        page: list[Upstream] = []
        for chunk in merged:
            changes = list(map(_CHANGE, chunk))
            if listing:
                for change in changes:
                    read_ids[stream_of(change)].add(change.id)
            taken = 0
            while taken < len(changes):
                # A full page is applied once another change shows that it is not the
                # last: the last, full or not, or empty, carries the checkpoint.
                if len(page) == size:
                    self._apply(applier, page, seen, committed, ceiling)
                    page = []
                room = size - len(page)
                page.extend(changes[taken : taken + room])
                taken += room
        checkpoints = () if checkpoint is None else (checkpoint,)
        self._apply(applier, page, seen, committed, ceiling, checkpoints)
        if listing and not tally.rejected and not tally.refetch:
            self._purge(listing, applier, read_ids, ceiling)
        tally.watermarks.update(
            (stream, mark) for stream, mark in committed.items() if mark is not None
        )

    def _requests_made(self) -> int:
        """The source's count of requests to Salesforce (`MeteredSource`), or 0."""
        source = self._source
        return source.requests_made if isinstance(source, MeteredSource) else 0

    def _spellings(self, stream: ObjectType, applier: Applier, tally: Tally) -> Spellings:
        """The org's field names of ``stream`` (R9), as the store and the source know them.

        Names the store holds that a describing source no longer reads (the integration
        user lost access to them, say) go in the report, and their values stay as last
        read.
        """
        store, source = self._store, self._source
        known = store.field_names(stream) if isinstance(store, FieldNameStore) else ()
        spellings = Spellings(stream, known, applier.new_field_names)
        if isinstance(source, DescribedSource):
            described = source.field_names(stream)
            missing = spellings.missing_from(described)
            if missing:
                tally.missing_fields[stream] = missing
                applier.unread[stream] = frozenset(missing)
            spellings.learn(described)
        if isinstance(source, FormulaSource):
            # A version read again in its second that differs in these alone was
            # recalculated, not saved: its local edits stay (S3).
            names = source.formula_fields(stream)
            applier.calculated[stream] = frozenset(name.lower() for name in names)
        return spellings

    def _purge(
        self,
        store: ListingStore,
        applier: Applier,
        read_ids: Mapping[ObjectType, set[str]],
        at: datetime,
    ) -> None:
        """Delete, as of ``at``, the live records the store holds that a full read lacked."""
        # Contacts first, each counted in the report; an account deleted after them has
        # none of the org's purged contacts left to delete with it.
        for stream in reversed(STREAMS):
            gone = [
                Deletion(object_type=stream, id=record_id, deleted_at=at)
                for record_id in store.live_ids(stream)
                if record_id not in read_ids[stream]
            ]
            for start in range(0, len(gone), self._page_size):
                applier.apply(gone[start : start + self._page_size], ())

    def _since(self, mark: datetime | None) -> datetime | None:
        """Where a sync reads from: the watermark less the lookback (R1)."""
        if mark is None:
            return None
        try:
            return mark - self._lookback
        except OverflowError:  # a lookback reaching before year 1: read everything
            return None

    def _apply(
        self,
        applier: Applier,
        page: Sequence[Upstream],
        seen: dict[ObjectType, datetime | None],
        committed: dict[ObjectType, datetime | None],
        ceiling: datetime,
        checkpoints: Sequence[Checkpoint] = (),
    ) -> None:
        for stream, newest in newest_stamps(page).items():
            mark = seen[stream]
            if mark is None or newest > mark:
                seen[stream] = newest
        watermarks = []
        for stream, mark in seen.items():
            if mark is not None and min(mark, ceiling) != committed[stream]:
                committed[stream] = min(mark, ceiling)
                watermarks.append(Watermark(stream=stream, system_modstamp=min(mark, ceiling)))
        applier.apply(page, watermarks, checkpoints)

    def _read(
        self,
        stream: ObjectType,
        pages: Iterable[Sequence[Change]],
        tally: Tally,
        spell: Callable[[Tally], Spellings],
        from_event: Callable[[Upstream], None],
    ) -> Iterator[list[tuple[_Order, Upstream]]]:
        """The stream's changes in `order`, each with its key (computed once, merged on),
        in lists of at least one (`_merged` merges the streams' lists).

        The field names are learnt (``spell``) once the source answered the first query:
        a source that found a field no longer readable then, and read without it, says
        so in its names, and the field's stored values stay (R9).
        """
        held: list[tuple[_Order, Upstream]] = []
        spellings: Spellings | None = None
        for page in pages:
            if spellings is None:
                spellings = spell(tally)
            tally.pages += 1
            decoded = self._decode(stream, page, tally, spellings, from_event)
            keyed = sorted([*held, *with_order(decoded)], key=_KEY)
            if not keyed:
                continue
            # The source orders by (stamp, Id), `order` puts deletions last on a stamp: the
            # page's last stamp is held back until a later page shows that none follow.
            cut = bisect.bisect_left(keyed, keyed[-1][0][0], key=_stamp)
            if cut:
                yield keyed[:cut]
            held = keyed[cut:]
        if spellings is None:  # nothing read: the names still say what is missing
            spell(tally)
        if held:
            yield held

    def _decode(
        self,
        stream: ObjectType,
        page: Sequence[Change],
        tally: Tally,
        spellings: Spellings,
        from_event: Callable[[Upstream], None] | None = None,
    ) -> list[Upstream]:
        """The page's changes, decoded; ``from_event`` is told of each read from an event.

        An event carries every field of its record, a created one's all: those the
        engine's source does not read are left out (`DescribedSource`), as a sync of the
        source leaves them, so that the store never holds a value no sync would keep.
        """
        changes: list[Upstream] = []
        native = Account if stream == "Account" else Contact
        readable: frozenset[str] | None = None
        if isinstance(self._source, DescribedSource) and any(
            type(item) is RawChangeEvent for item in page
        ):
            readable = frozenset(name.lower() for name in self._source.field_names(stream))
        names: set[str] = set()
        plains = _plain_page(stream, page, names)
        # `is_`, not `in`: a record's == is a call of Python.
        every_plain = not any(map(is_, plains, repeat(None)))
        if every_plain and spellings.spells(names):
            return cast("list[Upstream]", plains)  # a page of plain records, nothing to spell
        for item, plain in zip(page, plains, strict=True):
            # The common cases, checked first: a page is large.
            if plain is not None:
                try:
                    changes.append(spellings.spelled(plain))
                except InvalidRecordError as error:
                    tally.rejected.append(_rejection(stream, item, error))
                continue
            if type(item) is native:
                try:
                    changes.append(spellings.spelled(item))
                except InvalidRecordError as error:
                    tally.rejected.append(_rejection(stream, item, error))
                continue
            decoded: Sequence[object]
            if isinstance(item, Unreadable):
                tally.rejected.append(
                    Rejection(
                        object_type=item.object_type,
                        record_id=item.record_id,
                        reason=item.reason,
                        field=item.field,
                        origin=item.origin,
                    )
                )
                continue
            if isinstance(item, RawRecord | RawChangeEvent):
                try:
                    if isinstance(item, RawRecord):
                        decoded = [decode_record(item.object_type, item.payload)]
                    else:
                        decoded = decode_change_event(item.payload)
                except InvalidRecordError as error:
                    tally.rejected.append(_rejection(stream, item, error))
                    continue
            else:
                decoded = [item]
            for change in decoded:
                if isinstance(change, Refetch):
                    tally.refetch.append(change)
                elif not isinstance(change, Account | Contact | Deletion | PartialUpdate):
                    tally.rejected.append(
                        Rejection(
                            object_type=stream,
                            record_id=None,
                            reason=f"a source yielded {type(change).__name__}, not a change",
                        )
                    )
                elif stream_of(change) != stream:
                    tally.rejected.append(
                        Rejection(
                            object_type=stream_of(change),
                            record_id=change.id,
                            reason=f"a {stream_of(change)} record in the {stream} stream",
                        )
                    )
                elif isinstance(change, Deletion):
                    changes.append(change)
                else:
                    if readable is not None and isinstance(item, RawChangeEvent):
                        change = _readable_only(change, readable)
                    try:
                        changes.append(spellings.spelled(change))
                    except InvalidRecordError as error:
                        tally.rejected.append(_rejection(stream, item, error))
                        continue
                    if from_event is not None and isinstance(item, RawChangeEvent):
                        from_event(change)
        return changes

    # -- Local edits --------------------------------------------------------------------

    def edit_account_field(
        self, *, contact_id: str, field: str, value: FieldValue, allow_new_field: bool = False
    ) -> EditResult:
        """Set an account field locally through one of the account's contacts (S2, S3).

        Every contact of the account sees the new value; Salesforce does not (S1), and the
        next newer Salesforce version of the account overwrites it. ``field`` is matched
        in any case and takes the org's spelling (R9). Raises `UnknownContactError` for a
        contact the store does not hold, `NoAccountError` for a contact without a synced
        account (no account is created locally, S5), `UnknownFieldError` for a field the
        org's accounts do not have, unless ``allow_new_field``, and `InvalidRecordError`
        for a name or value Salesforce could not hold (R10).
        """
        contact_id = normalize_id(contact_id, prefix=CONTACT_PREFIX)
        check_field(field, value, record_id=contact_id)
        with self._hold():
            return self._edit_account_field(contact_id, field, value, allow_new_field)

    def _edit_account_field(
        self, contact_id: str, field: str, value: FieldValue, allow_new_field: bool
    ) -> EditResult:
        contact = self._store.contact_states([contact_id]).get(contact_id)
        if not isinstance(contact, Contact):
            raise UnknownContactError(contact_id)
        account_id = contact.account_id
        state = (
            None
            if account_id is None
            else self._store.account_states([account_id]).get(account_id)
        )
        if account_id is None or not isinstance(state, AccountState):
            raise NoAccountError(contact_id, account_id)
        field = self._account_field(field, state, allow_new_field)
        old = state.value(field)
        if same_value(old, value):
            return EditResult(
                contact_id=contact_id,
                account_id=account_id,
                field=field,
                old_value=old,
                new_value=value,
                changed=False,
                contact_count=self._store.count_contacts(account_id),
            )
        revision = state.local_revision + 1
        new_state = AccountState(
            upstream=state.upstream,
            local_edits={**state.local_edits, field: value},
            local_revision=revision,
        )
        suppressed: list[Suppression] = []
        entries = fan_out(
            self._store,
            self._policy,
            account_id,
            [(field, old, value)],
            origin=Origin.LOCAL,
            version=f"{micros(state.system_modstamp)}r{revision}",
            occurred_at=self._clock(),
            suppressed=suppressed,
        )
        self._store.apply(Batch(accounts=[new_state], activities=entries))
        return EditResult(
            contact_id=contact_id,
            account_id=account_id,
            field=field,
            old_value=old,
            new_value=value,
            changed=True,
            contact_count=self._store.count_contacts(account_id),
            activities=tuple(entries),
            suppressed=suppressed[0] if suppressed else None,
        )

    def _account_field(self, field: str, state: AccountState, allow_new_field: bool) -> str:
        """``field`` in the org's spelling; a name the org has not got is refused (R9).

        The org has the names its records used (the store keeps them, if it keeps any) and
        the standard Account fields.
        """
        store = self._store
        kept = store.field_names("Account") if isinstance(store, FieldNameStore) else ()
        names: dict[str, str] = {}
        for name in (*kept, *state.upstream.fields, *state.local_edits, *STANDARD_ACCOUNT_FIELDS):
            names.setdefault(name.lower(), name)
        spelling = names.get(field.lower())
        if spelling is not None:
            return spelling
        if allow_new_field:
            return field
        raise UnknownFieldError("Account", field, close_matches(field, names.values()))

    # -- Convert Person -----------------------------------------------------------------

    def convert_person(
        self,
        person: Person,
        *,
        account_fields: Mapping[str, FieldValue] | None = None,
        contact_fields: Mapping[str, FieldValue] | None = None,
        opportunity_fields: Mapping[str, FieldValue] | None = None,
    ) -> Conversion:
        """Create a Contact, Account and Opportunity for ``person`` in Salesforce (S6).

        The records reach the local store with the next sync, like any Salesforce change;
        nothing is written locally but the record of the conversion. Converting the same
        person again returns the first conversion and creates nothing. Raises
        `AlreadyAContactError` for a person that is already a contact, and
        `InvalidRecordError` when the person lacks ``LastName`` or ``Company``.

        Person fields map as `CONVERSION_FIELD_MAP` says; the ``*_fields`` arguments add
        to or override what each record gets.
        """
        with self._hold():
            return self._convert_person(
                person,
                account_fields=account_fields,
                contact_fields=contact_fields,
                opportunity_fields=opportunity_fields,
            )

    def _convert_person(
        self,
        person: Person,
        *,
        account_fields: Mapping[str, FieldValue] | None,
        contact_fields: Mapping[str, FieldValue] | None,
        opportunity_fields: Mapping[str, FieldValue] | None,
    ) -> Conversion:
        done = self._store.conversion(person.id)
        if done is not None:
            return done
        existing = person.contact_id or _contact_id_or_none(person.id)
        if existing is not None:
            raise AlreadyAContactError(person.id, existing)
        if not isinstance(self._source, WritableSource):
            raise ConfigurationError(
                f"{type(self._source).__name__} has no write side: it cannot convert a person"
            )
        for required in ("LastName", "Company"):
            value = person.fields.get(required)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRecordError(
                    "Convert Person needs a non-empty value", record_id=person.id, field=required
                )
        mapped: dict[str, dict[str, FieldValue]] = {
            "Account": {},
            "Contact": {},
            "Opportunity": {},
        }
        for name, value in person.fields.items():
            for object_type, target in CONVERSION_FIELD_MAP.get(name, ()):
                mapped[object_type][target] = value
        company = person.fields["Company"]
        opportunity: dict[str, FieldValue] = {
            "Name": company,
            "StageName": "Prospecting",
            "CloseDate": self._clock().date(),
            **mapped["Opportunity"],
        }
        request = ConversionRequest(
            person_id=person.id,
            idempotency_key=f"acctsync-convert-person:{person.id}",
            account_fields={**mapped["Account"], **(account_fields or {})},
            contact_fields={**mapped["Contact"], **(contact_fields or {})},
            opportunity_fields={**opportunity, **(opportunity_fields or {})},
        )
        for fields in (request.account_fields, request.contact_fields, request.opportunity_fields):
            for name, value in fields.items():
                check_field(name, value, record_id=person.id)
        conversion = self._source.convert_person(request)
        self._store.apply(Batch(conversions=[conversion]))
        return conversion


def _contact_id_or_none(value: str) -> str | None:
    try:
        return normalize_id(value, prefix=CONTACT_PREFIX)
    except InvalidRecordError:
        return None


def _readable_only(
    change: Account | Contact | PartialUpdate, readable: frozenset[str]
) -> Account | Contact | PartialUpdate:
    """``change`` with only the fields named in ``readable`` (lower case)."""
    fields = change.fields
    kept = {name: value for name, value in fields.items() if name.lower() in readable}
    return change if len(kept) == len(fields) else attrs.evolve(change, fields=kept)


def _values_only(change: Account | Contact | PartialUpdate) -> PartialUpdate:
    """A formula read's record as an update of the fields it holds, and of nothing else.

    Its contact names no account: that is not "no account", since only those fields
    were read.
    """
    return PartialUpdate(
        object_type=stream_of(change),
        id=change.id,
        fields=change.fields,
        account_id=UNCHANGED,
        system_modstamp=change.system_modstamp,
        sequence=change.sequence,
    )


def _plain_page(
    stream: ObjectType, page: Sequence[Change], names: set[str]
) -> list[Account | Contact | None]:
    """For each of the page's items, the record it decodes to where it is a plain REST
    record of the stream (as `decode_record` decodes it), else None: read a page at a
    time, by `_plain_records`, which puts the records' field names in ``names``."""
    kinds = set(map(type, page))
    if RawRecord not in kinds:
        return [None] * len(page)
    at: Sequence[int]
    if len(kinds) == 1:  # nothing but REST records: most pages of a REST read
        at, raws = range(len(page)), cast("Sequence[RawRecord]", page)
    else:
        at = [i for i, item in enumerate(page) if type(item) is RawRecord]
        raws = [cast("RawRecord", page[i]) for i in at]
    payloads = list(map(_PAYLOAD, raws))
    if set(map(type, payloads)) != _DICT or [*map(_OBJECT_TYPE, raws)].count(stream) != len(raws):
        kept = [
            j
            for j, raw in enumerate(raws)
            if type(raw.payload) is dict and raw.object_type == stream
        ]
        at, payloads = [at[j] for j in kept], [payloads[j] for j in kept]
    read = _plain_records(stream, payloads, names)
    if len(read) == len(page):
        return read
    out: list[Account | Contact | None] = [None] * len(page)
    for i, record in zip(at, read, strict=True):
        out[i] = record
    return out


def _rejection(stream: str, item: Change, error: InvalidRecordError) -> Rejection:
    record_id = error.record_id
    if record_id is None and isinstance(item, RawRecord):
        raw_id = item.payload.get("Id") if isinstance(item.payload, Mapping) else None
        record_id = raw_id if isinstance(raw_id, str) else None
    object_type = item.object_type if isinstance(item, RawRecord) else stream
    return Rejection(
        object_type=object_type,
        record_id=record_id,
        reason=error.reason,
        field=error.field,
        origin=item.origin if isinstance(item, RawRecord | RawChangeEvent | Unreadable) else None,
    )
