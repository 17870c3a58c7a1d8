"""Applying one page of Salesforce changes to a store: the rules, record by record.

Theory of operation
-------------------
A page holds account and contact changes in one order, by ``SystemModstamp``, so that
an account change meets its contacts as they were at that moment in Salesforce.

Each record version is placed against the stored one (see `_place`): by ``SystemModstamp``
first, then by ``sequence`` where the source knows the finer order of versions in one
stamp. Salesforce keeps ``SystemModstamp`` to the second, so two saves in one second share
a stamp: a version read later with the same stamp and other values is the newer one, and
the same values are the same version (rule R3). Re-reading a version (the lookback window
does, on purpose) is a no-op, an older one is stale, and on a tie a deletion wins. Deleted
records stay as tombstones so that late copies cannot bring them back; a newer version
can (undelete, R4).

An account is its upstream record plus an overlay of local edits. A newer upstream
version replaces the record and drops the whole overlay (S3), and logs one Change Data
Value entry per contact and changed field (S7), after asking the policy with a count, so
that an account over the threshold is never loaded contact by contact (S8).

The page becomes one `Batch`, applied with the watermarks (and a stream's checkpoint, on
the last page of its events). Two things cut it short: an account deletion or merge,
whose contact operation later changes must see applied, and an account change whose
contacts changed earlier in the same page. Then the batch so far is applied at once,
without watermarks or checkpoint; re-applying it after a crash is a no-op by the version
key.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import compress, repeat
from operator import attrgetter, eq, floordiv, ne, sub
from typing import Final, cast

import attrs
from attrs import define, field

from acctsync._activity import MAX_CONTACTS, ChangeDataValue, Origin, activity_id_prefix
from acctsync._protocols import ContactIndex, LoggingPolicy, Store
from acctsync._records import (
    UNCHANGED,
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    PartialUpdate,
    Refetch,
    same_value,
)
from acctsync._report import COUNTS, Rejection, Suppression, SyncReport
from acctsync._state import (
    AccountState,
    Batch,
    Checkpoint,
    DeleteContacts,
    FieldName,
    MoveContacts,
    StoredAccount,
    StoredContact,
    Watermark,
)

__all__ = [
    "Applier",
    "Place",
    "Tally",
    "Upstream",
    "fan_out",
    "micros",
    "micros_of",
    "order",
    "stream_of",
]

Upstream = Account | Contact | Deletion | PartialUpdate
"""A decoded change, ready to apply."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Up to this many contacts of an account are read with a page; a larger account is
# counted first (rule S8 exists for accounts too big to load).
_MEMBERS_UP_TO = MAX_CONTACTS


_STREAMS: dict[type, ObjectType] = {Account: "Account", Contact: "Contact"}


def stream_of(change: Upstream) -> ObjectType:
    """The object type, and so the watermark stream, a change belongs to."""
    return _STREAMS.get(type(change)) or change.object_type  # type: ignore[union-attr]


_RANKS: dict[type, tuple[bool, bool]] = {Account: (False, False), Contact: (False, True)}
_RECORD_TYPES = frozenset({Account, Contact})


def order(change: Upstream) -> tuple[datetime, bool, bool, str]:
    """The order changes apply in: by stamp; on a stamp upserts before deletions, and
    accounts before contacts.

    Deletions last, so that a contact moved off an account in the second the account
    was deleted (one stamp, R3) leaves before the account takes its contacts with it.
    """
    rank = _RANKS.get(type(change))
    if rank is None:
        rank = (isinstance(change, Deletion), change.object_type == "Contact")  # type: ignore[union-attr]
    return (change.system_modstamp, *rank, change.id)


def with_order(
    changes: Sequence[Upstream],
) -> list[tuple[tuple[datetime, bool, bool, str], Upstream]]:
    """Each change with its `order` key; for a page of records of one type (most pages),
    made in a few passes of C rather than a call of Python a change."""
    kinds = set(map(type, changes))
    rank = _RANKS.get(kinds.pop()) if len(kinds) == 1 else None
    if rank is None:
        return [(order(change), change) for change in changes]
    deleted, contact = rank
    keys = zip(map(_STAMP, changes), repeat(deleted), repeat(contact), map(_ID, changes))
    return list(zip(keys, changes, strict=True))


def streams_of(changes: Sequence[Upstream]) -> list[ObjectType]:
    """`stream_of` each change; for records, in a pass of C."""
    streams = list(map(_STREAMS.get, map(type, changes)))
    if None in streams:
        return [stream_of(change) for change in changes]
    return cast("list[ObjectType]", streams)


def newest_stamps(changes: Sequence[Upstream]) -> dict[ObjectType, datetime]:
    """The latest ``system_modstamp`` of each stream the changes hold."""
    streams = streams_of(changes)
    return {
        stream: max(map(_STAMP, compress(changes, map(eq, streams, repeat(stream)))))
        for stream in set(streams)
    }


_STAMP: Final = attrgetter("system_modstamp")
_ID: Final = attrgetter("id")
_ACCOUNT_ID: Final = attrgetter("account_id")


def _version(change: Contact | PartialUpdate) -> tuple[str, datetime, tuple[int, ...] | None]:
    """A record version's identity: its ID, stamp and sequence."""
    return change.id, change.system_modstamp, change.sequence


class Place(enum.Enum):
    """Where a change stands against the stored version of its record."""

    NEWER = "newer"
    SAME = "same"
    STALE = "stale"


def _sequence(record: Upstream | AccountState) -> tuple[int, ...] | None:
    if isinstance(record, AccountState):
        return record.upstream.sequence
    return record.sequence


def same_second(a: datetime, b: datetime) -> bool:
    """Whether two stamps fall in one second, which is all Salesforce tells apart (R3).

    A change event's ``commitTimestamp`` has milliseconds, and is taken when the
    transaction commits, while ``SystemModstamp`` is taken when it starts: the same save
    read through REST and through Change Data Capture must meet in one second.
    """
    return a.replace(microsecond=0) == b.replace(microsecond=0)


def _place(
    change: Upstream, stored: StoredAccount | StoredContact, calculated: Collection[str]
) -> Place:
    """Whether ``change`` is newer than ``stored``, the same version, or older (R3).

    ``calculated`` (lower case) are the object's formula fields, which, as those in
    `_NOT_IN_EVENTS`, a version read from change events lacks rather than holds as null.
    """
    if not same_second(change.system_modstamp, stored.system_modstamp):
        newer = change.system_modstamp > stored.system_modstamp
        return Place.NEWER if newer else Place.STALE
    ours, theirs = _sequence(change), _sequence(stored)
    if ours is not None and theirs is not None and ours != theirs:
        return Place.NEWER if ours > theirs else Place.STALE
    deleted, was_deleted = isinstance(change, Deletion), isinstance(stored, Deletion)
    if deleted or was_deleted:
        if deleted == was_deleted:
            return Place.SAME
        return Place.NEWER if deleted else Place.STALE
    if ours is not None and ours == theirs:
        return Place.SAME
    # One second, two saves, no finer order known: other values are the later save.
    return Place.NEWER if _differs(change, stored, calculated) else Place.SAME


def micros(stamp: datetime) -> int:
    """A timestamp as microseconds since the epoch: versions in activity ids, store columns."""
    return (stamp - _EPOCH) // _MICROSECOND


def micros_of(stamps: Iterable[datetime]) -> Iterator[int]:
    """`micros` of each timestamp, in passes of C."""
    return map(floordiv, map(sub, stamps, repeat(_EPOCH)), repeat(_MICROSECOND))


# Fields a change event never carries, derived from other records (Change Data Capture
# Developer Guide, "Change Event Fields": LastActivityDate, PhotoUrl; a real event has no
# LastViewedDate or LastReferencedDate either), in lower case; nor does it carry formula
# fields (the source's ``calculated``). A version read from events lacks them.
_NOT_IN_EVENTS: Final = frozenset(
    {"lastactivitydate", "photourl", "lastvieweddate", "lastreferenceddate"}
)


def _left_out(name: str, calculated: Collection[str]) -> bool:
    """Whether a change event leaves out the field ``name``."""
    folded = name.lower()
    return folded in _NOT_IN_EVENTS or folded in calculated


def _same_fields(
    a: Mapping[str, FieldValue], b: Mapping[str, FieldValue], calculated: Collection[str]
) -> bool:
    """Whether two records' values are the same; a field one lacks holds nothing, but for
    one a change event leaves out (`_left_out`): a version read from events lacks it.

    So a field newly shown to the integration user, read as null, is no new save.
    """
    if a.keys() == b.keys():
        # At C speed first, as a re-read meets it for every record of the lookback window:
        # ``==`` is `same_value` but for a boolean, which it takes for 1 or 0.
        if a == b and bool not in map(type, a.values()) and bool not in map(type, b.values()):
            return True
        return all(same_value(a[name], b[name]) for name in a)
    return all(
        same_value(a.get(name), b.get(name))
        for name in a.keys() | b.keys()
        if (name in a and name in b) or not _left_out(name, calculated)
    )


def _recalculated(
    change: Upstream, stored: StoredAccount | StoredContact, calculated: Collection[str]
) -> bool:
    """Whether ``change`` differs from the live ``stored`` in ``calculated`` fields (lower
    case) alone, which Salesforce recalculates without a save."""
    if not calculated or isinstance(change, Deletion) or isinstance(stored, Deletion):
        return False
    moved_to = change.account_id if isinstance(change, Contact | PartialUpdate) else UNCHANGED
    if isinstance(stored, Contact) and moved_to not in (UNCHANGED, stored.account_id):
        return False  # a move is a save
    held, fields = _upstream_fields(stored), change.fields
    names = fields.keys() if isinstance(change, PartialUpdate) else fields.keys() | held.keys()
    return all(
        name.lower() in calculated
        or (name not in held and _left_out(name, calculated))  # unread: see `_same_fields`
        or same_value(held.get(name), fields.get(name))
        for name in names
    )


def _upstream_fields(stored: StoredAccount | StoredContact | None) -> Mapping[str, FieldValue]:
    """The Salesforce values of a stored live record; none for a tombstone."""
    if isinstance(stored, AccountState):
        return stored.upstream.fields
    return stored.fields if isinstance(stored, Contact) else {}


def _differs(
    change: Upstream, stored: StoredAccount | StoredContact, calculated: Collection[str]
) -> bool:
    """Whether ``change`` holds other values than the stored live version."""
    if isinstance(stored, Deletion) or isinstance(change, Deletion):
        return False
    moved_to = change.account_id if isinstance(change, Contact | PartialUpdate) else UNCHANGED
    if isinstance(stored, Contact) and moved_to is not UNCHANGED and moved_to != stored.account_id:
        return True
    fields = _upstream_fields(stored)
    if isinstance(change, PartialUpdate):  # only the fields it names
        return any(
            not same_value(fields.get(name), value) for name, value in change.fields.items()
        )
    return not _same_fields(change.fields, fields, calculated)


def _fills_in(
    change: Upstream, stored: StoredAccount | StoredContact, calculated: Collection[str]
) -> bool:
    """Whether ``change``, the save ``stored`` holds (`_place`), reads fields a change
    event leaves out that ``stored``, read from one, lacks: nulls too, which are then read,
    so that a later save of the field logs its entry."""
    if not isinstance(change, Account | Contact) or isinstance(stored, Deletion):
        return False
    held = _upstream_fields(stored)
    return any(name not in held and _left_out(name, calculated) for name in change.fields)


def _diff(
    before: AccountState, after: Mapping[str, FieldValue]
) -> list[tuple[str, FieldValue, FieldValue]]:
    """The fields whose value contacts see change, with old and new value."""
    old = before.upstream.fields
    if before.local_edits:
        old = {**old, **before.local_edits}
    changes = [
        (name, old.get(name), value)
        for name, value in after.items()
        if not same_value(old.get(name), value)
    ]
    changes.extend(
        (name, value, None)
        for name, value in old.items()
        if name not in after and value is not None
    )
    return changes


def fan_out(
    store: Store,
    policy: LoggingPolicy,
    account_id: str,
    changes: Sequence[tuple[str, FieldValue, FieldValue]],
    *,
    origin: Origin,
    version: str,
    occurred_at: datetime,
    suppressed: list[Suppression],
    contact_ids: Sequence[str] | None = None,
) -> list[ChangeDataValue]:
    """One entry per contact and changed field, unless the policy says otherwise (S7, S8).

    ``contact_ids`` are the account's contacts when the caller has them already.
    """
    count = store.count_contacts(account_id) if contact_ids is None else len(contact_ids)
    if count == 0:
        return []
    if not policy.logs_activities(account_id=account_id, contact_count=count, origin=origin):
        suppressed.append(
            Suppression(
                account_id=account_id,
                contact_count=count,
                entries_skipped=count * len(changes),
                origin=origin,
            )
        )
        return []
    # The hot path of a large account: the id prefix is built once, not per entry.
    prefix = activity_id_prefix(origin, account_id, version)
    return [
        ChangeDataValue(
            id=f"{prefix}{contact_id}:{name}",
            contact_id=contact_id,
            account_id=account_id,
            field=name,
            old_value=old,
            new_value=new,
            origin=origin,
            occurred_at=occurred_at,
        )
        for contact_id in (store.contact_ids(account_id) if contact_ids is None else contact_ids)
        for name, old, new in changes
    ]


@define(slots=True)
class Tally:
    """The mutable counts behind a `SyncReport`."""

    pages: int = 0
    accounts_upserted: int = 0
    accounts_deleted: int = 0
    contacts_upserted: int = 0
    contacts_deleted: int = 0
    already_applied: int = 0
    stale: int = 0
    local_edits_discarded: int = 0
    refreshed: int = 0
    api_requests: int = 0
    rejected: list[Rejection] = field(factory=list)
    suppressed: list[Suppression] = field(factory=list)
    activities: list[ChangeDataValue] = field(factory=list)
    refetch: list[Refetch] = field(factory=list)
    missing_fields: dict[str, tuple[str, ...]] = field(factory=dict)
    watermarks: dict[str, datetime] = field(factory=dict)
    warnings: list[str] = field(factory=list)

    def report(self) -> SyncReport:
        """The report of what was counted."""
        return SyncReport(
            **{name: getattr(self, name) for name in COUNTS},
            rejected=tuple(self.rejected),
            suppressed=tuple(self.suppressed),
            activities=tuple(self.activities),
            refetch=tuple(self.refetch),
            missing_fields=dict(self.missing_fields),
            watermarks=dict(self.watermarks),
            warnings=tuple(self.warnings),
        )


@define(slots=True)
class _Pending:
    """A batch being assembled, and the accounts whose contacts it changes."""

    accounts: list[StoredAccount] = field(factory=list)
    contacts: list[StoredContact] = field(factory=list)
    contact_ops: list[MoveContacts | DeleteContacts] = field(factory=list)
    activities: list[ChangeDataValue] = field(factory=list)
    dirty: set[str] = field(factory=set)

    def take(
        self,
        watermarks: Sequence[Watermark] = (),
        field_names: Sequence[FieldName] = (),
        checkpoints: Sequence[Checkpoint] = (),
    ) -> Batch:
        batch = Batch(
            accounts=self.accounts,
            contacts=self.contacts,
            contact_ops=self.contact_ops,
            activities=self.activities,
            field_names=field_names,
            watermarks=watermarks,
            checkpoints=checkpoints,
        )
        self.accounts, self.contacts, self.contact_ops, self.activities = [], [], [], []
        self.dirty = set()
        return batch

    def touched(self) -> set[str]:
        """The accounts whose contacts the batch changes."""
        named = set(self.dirty)
        for op in self.contact_ops:
            if isinstance(op, MoveContacts):
                named.update((op.from_account_id, op.to_account_id))
            else:
                named.add(op.account_id)
        return named


@define
class Applier:
    """Applies pages of changes to ``store``, counting in ``tally``.

    A version read again in its second that differs from the stored one in calculated
    fields alone is a *refresh*, not a newer save (R3): Salesforce recalculates formula
    and roll-up summary fields without moving ``SystemModstamp`` (``calculated``: per
    object, the lower-case names the source tells). A refresh keeps local edits (S3); its
    changes log entries as any Salesforce change (S7), stamped ``refresh_at``. A field a
    change event leaves out (calculated, or in `_NOT_IN_EVENTS`) that the stored version
    lacks is not null but unread: a query's version of the same save that has it is a
    refresh too, and no apply logs an entry for it.

    ``reconciling`` is a reconciliation's, whose full read of a complete source is the
    org as it is: a live record replaces a tombstone whatever their stamps, and where the
    source tells no calculated fields, any other values in the stored second are taken
    for a refresh. ``refresh_only`` is a formula refresh's: it applies those refreshes of
    live records and nothing else, since its read holds a few fields of each record, not
    a version of it.
    """

    store: Store
    policy: LoggingPolicy
    tally: Tally
    refresh_at: datetime
    reconciling: bool = False
    refresh_only: bool = False
    calculated: dict[str, frozenset[str]] = field(factory=dict)
    # Field names the sync met first (R9): the store keeps them with the next batch.
    new_field_names: list[FieldName] = field(init=False, factory=list)
    # Per object, the fields the store holds that the source no longer reads (R9).
    unread: dict[str, frozenset[str]] = field(init=False, factory=dict)
    # The contact versions read from change events (see read_from_event).
    _from_events: set[tuple[str, datetime, tuple[int, ...] | None]] = field(
        init=False, factory=set
    )
    _placed: dict[int, tuple[StoredAccount | StoredContact, Place]] = field(
        init=False, factory=dict
    )
    # The changes of this page applied as refreshes, by id(): a later change of the same
    # record in the page is a version of its own (see _is_new).
    _refreshing: set[int] = field(init=False, factory=set)
    _accounts: dict[str, StoredAccount] = field(init=False, factory=dict)
    _contacts: dict[str, StoredContact] = field(init=False, factory=dict)
    _asked: set[str] = field(init=False, factory=set)
    _pending: _Pending = field(init=False, factory=_Pending)
    # The contacts of accounts this page may fan out to, as the store held them when the
    # page began: good until the page writes contacts of theirs (see _commit).
    _members: Mapping[str, Sequence[str]] = field(init=False, factory=dict)

    def apply(
        self,
        changes: Sequence[Upstream],
        watermarks: Sequence[Watermark],
        checkpoints: Sequence[Checkpoint] = (),
    ) -> None:
        """Apply ``changes`` (in `order`), then store ``watermarks`` and ``checkpoints``.

        Those go with the last store batch the changes make, which is written even when
        it holds nothing else: a stream's position moves with no change too.
        """
        streams = streams_of(changes)
        ids = list(map(_ID, changes))
        account_ids = set(compress(ids, map(eq, streams, repeat("Account"))))
        contact_ids = set(compress(ids, map(ne, streams, repeat("Account"))))
        # The accounts event contacts name too, in the same query: each may have been
        # merged since (see _contact_change).
        asked = account_ids
        if self._from_events:
            asked = account_ids | {
                change.account_id
                for change in changes
                if isinstance(change, Contact | PartialUpdate)
                and isinstance(change.account_id, str)
                and _version(change) in self._from_events
            }
        self._accounts = dict(self.store.account_states(asked)) if asked else {}
        self._asked = asked
        self._contacts = dict(self.store.contact_states(contact_ids)) if contact_ids else {}
        self._placed = {}
        self._refreshing = set()
        if self._all_new(changes, len(account_ids) + len(contact_ids)):
            self._add(changes, streams)
        else:
            changes = [self._as_stored(change) for change in changes]
            self._members = self._members_of(changes, streams)
            for change, stream in zip(changes, streams, strict=True):
                if stream == "Account":
                    self._account_change(change, contact_ids)
                else:
                    self._contact_change(change)
        self._commit(watermarks, checkpoints)

    def _all_new(self, changes: Sequence[Upstream], distinct: int) -> bool:
        """Whether the page only adds records: live versions, one of each record, none of
        which the store holds (an initial load's pages)."""
        return (
            not self._accounts
            and not self._contacts
            and not self.refresh_only
            and distinct == len(changes)
            and set(map(type, changes)) <= _RECORD_TYPES
        )

    def _add(self, changes: Sequence[Upstream], streams: Sequence[ObjectType]) -> None:
        """`apply`'s loop for a page `_all_new` holds, to the same end: each version is new,
        no account is held to fan out from, and no merge is held that a contact read from
        an event would have to follow."""
        # A page of a million-record load, records only: sorted by the streams `apply`
        # found, and filed, in passes of C.
        accounts = cast(
            "Iterator[Account]", compress(changes, map(eq, streams, repeat("Account")))
        )
        contacts = cast(
            "list[Contact]", list(compress(changes, map(ne, streams, repeat("Account"))))
        )
        states = [AccountState(upstream=account) for account in accounts]
        self._accounts.update(zip(map(_ID, states), states, strict=True))
        self._contacts.update(zip(map(_ID, contacts), contacts, strict=True))
        pending = self._pending
        pending.accounts.extend(states)
        pending.contacts.extend(contacts)
        pending.dirty.update(filter(None, map(_ACCOUNT_ID, contacts)))  # IDs, or None
        self._members = {}
        self.tally.accounts_upserted += len(states)
        self.tally.contacts_upserted += len(contacts)

    def _as_stored(self, change: Upstream) -> Upstream:
        """``change`` with its field names as the stored record spells them, and with the
        stored values of the fields its source no longer reads.

        The first is for a store that keeps no spellings (no `FieldNameStore`, or one that
        began keeping them after its records): still one field per name (R9). The second
        because a field the integration user lost access to did not change in
        Salesforce: it must neither vanish nor log a change to nothing.
        """
        if isinstance(change, Deletion):
            return change
        stream = stream_of(change)
        stored = (self._accounts if stream == "Account" else self._contacts).get(change.id)
        held = _upstream_fields(stored)
        if not held:
            return change
        fields = change.fields
        if not fields.keys() <= held.keys():
            # Salesforce's names only: a local edit's spelling is not the org's, and the
            # edit goes with this version anyway (S3).
            spelled = {name.lower(): name for name in held}
            renamed = {spelled.get(name.lower(), name): value for name, value in fields.items()}
            if len(renamed) == len(fields) and renamed.keys() != fields.keys():
                fields = renamed
        unread = self.unread.get(stream) if isinstance(change, Account | Contact) else None
        if unread:
            kept = {name: held[name] for name in unread if name in held and name not in fields}
            if kept:
                fields = {**kept, **fields}
        return change if fields is change.fields else attrs.evolve(change, fields=fields)

    def _formulas(self, stream: ObjectType) -> Collection[str]:
        """The lower-case names of ``stream``'s calculated fields, as the source tells them."""
        return self.calculated.get(stream, ())

    def _where(self, change: Upstream, stored: StoredAccount | StoredContact) -> Place:
        """`_place`, once per change and stored version: a page asks twice or more."""
        placed = self._placed.get(id(change))
        if placed is not None and placed[0] is stored:
            return placed[1]
        place = _place(change, stored, self._formulas(stream_of(change)))
        self._placed[id(change)] = (stored, place)
        return place

    def _is_new(self, change: Upstream, stored: StoredAccount | StoredContact | None) -> bool:
        if self.refresh_only:
            return self._refreshes_live(change, stored)
        if stored is None:
            return True
        place = self._where(change, stored)
        if self._refreshes(change, stored, place):
            self.tally.refreshed += 1
            self._refreshing.add(id(change))
            return True
        if place is Place.NEWER:
            return True
        if place is Place.SAME:
            self.tally.already_applied += 1
        else:
            self.tally.stale += 1
        return False

    def _refreshes_live(
        self, change: Upstream, stored: StoredAccount | StoredContact | None
    ) -> bool:
        """Whether a formula refresh applies ``change``: to a live record of its second only.

        Anything else (a record not held, deleted, or held in another second) is the next
        sync's, which reads it whole.
        """
        if stored is None or isinstance(stored, Deletion):
            return False
        place = self._where(change, stored)
        if self._refreshes(change, stored, place):
            self.tally.refreshed += 1
            self._refreshing.add(id(change))
            return True
        if place is Place.SAME:
            self.tally.already_applied += 1
        return False

    def _refreshes(
        self, change: Upstream, stored: StoredAccount | StoredContact, place: Place
    ) -> bool:
        """Whether ``change`` refreshes ``stored`` rather than replaces or repeats it (see
        the class): other values in its second, where no order tells a later save; or, in
        a reconciliation, a live record where a tombstone is."""
        if isinstance(stored, Deletion):
            return (
                self.reconciling
                and isinstance(change, Account | Contact)
                and place is not Place.NEWER
            )
        if place is Place.SAME and _fills_in(change, stored, self._formulas(stream_of(change))):
            return True
        if (
            place is not Place.NEWER  # in its second, NEWER says other values (`_place`)
            or isinstance(change, Deletion)
            or not same_second(change.system_modstamp, stored.system_modstamp)
            or None not in (_sequence(change), _sequence(stored))  # ordered: a save
        ):
            return False
        if self.refresh_only:
            return True
        calculated = self.calculated.get(stream_of(change))
        if calculated is None and self.reconciling:
            return True  # see docs/decisions.md, "Reconciliation"
        return _recalculated(change, stored, calculated or frozenset())

    def _members_of(
        self, changes: Sequence[Upstream], streams: Sequence[ObjectType]
    ) -> Mapping[str, Sequence[str]]:
        # Only accounts the store holds fan out: none in an initial load, so no query.
        if not self._accounts or not isinstance(self.store, ContactIndex):
            return {}
        updated = {
            change.id
            for change, stream in zip(changes, streams, strict=True)
            if stream == "Account"
            and isinstance(change, Account | PartialUpdate)
            and self._updates(change, self._accounts.get(change.id))
        }
        return self.store.contact_ids_of(updated, up_to=_MEMBERS_UP_TO) if updated else {}

    def _updates(self, change: Account | PartialUpdate, stored: StoredAccount | None) -> bool:
        """Whether ``change`` may change a held account: a version read again does not."""
        if not isinstance(stored, AccountState):
            return False
        place = self._where(change, stored)
        if self.refresh_only:
            return self._refreshes(change, stored, place)
        return place is Place.NEWER or self._refreshes(change, stored, place)

    def _commit(
        self, watermarks: Sequence[Watermark] = (), checkpoints: Sequence[Checkpoint] = ()
    ) -> None:
        touched = self._pending.touched()
        names = list(self.new_field_names)
        self.new_field_names.clear()
        batch = self._pending.take(watermarks, names, checkpoints)
        # A page that only re-read known versions changes nothing: no need for a write.
        if batch:
            self.store.apply(batch)
            # The contacts read with the page stay good for the accounts it left alone.
            self._members = {k: v for k, v in self._members.items() if k not in touched}

    def _account_change(self, change: Upstream, contact_ids: Collection[str]) -> None:
        stored = self._accounts.get(change.id)
        if not self._is_new(change, stored):
            return
        if isinstance(change, Deletion):
            self._delete_account(change, contact_ids)
        elif isinstance(change, Account | PartialUpdate):
            self._account(change, stored)

    def _delete_account(self, deletion: Deletion, contact_ids: Collection[str]) -> None:
        self._accounts[deletion.id] = deletion
        self._pending.accounts.append(deletion)
        self.tally.accounts_deleted += 1
        if deletion.master_record_id is None:
            self._pending.contact_ops.append(DeleteContacts(account_id=deletion.id))
        else:
            winner = self._winner(deletion.master_record_id, deletion.deleted_at)
            self._pending.contact_ops.append(
                MoveContacts(from_account_id=deletion.id, to_account_id=winner)
            )
        self._commit()
        # The operation moved or deleted contacts this page may hold: read them again.
        self._contacts = dict(self.store.contact_states(contact_ids)) if contact_ids else {}

    def _account(self, change: Account | PartialUpdate, stored: StoredAccount | None) -> None:
        if isinstance(change, PartialUpdate):
            if not isinstance(stored, AccountState):
                # Only some fields of an account we do not hold: the rest must be read again.
                self._refetch("Account", change.id)
                return
            upstream = Account(
                id=change.id,
                fields={**stored.upstream.fields, **change.fields},
                system_modstamp=change.system_modstamp,
                sequence=change.sequence,
            )
        else:
            upstream = change
        state = AccountState(upstream=upstream)
        if isinstance(stored, AccountState):
            version, occurred_at = str(micros(upstream.system_modstamp)), upstream.system_modstamp
            in_its_second = same_second(stored.system_modstamp, upstream.system_modstamp)
            refresh = id(change) in self._refreshing
            if refresh:
                # A refresh, not a newer version: local edits stay (S3), and its entries
                # are of the run that saw it, apart from the version's.
                state = attrs.evolve(stored, upstream=upstream)
                version += f"~r{micros(self.refresh_at)}"
                occurred_at = self.refresh_at
            else:
                if in_its_second:
                    # A later save in the same second (R3): the stamp's revision count goes
                    # on, so its entries, and those of local edits made on it, have ids of
                    # their own.
                    revision = stored.local_revision + 1
                    version += f"u{revision}"
                    state = AccountState(upstream=upstream, local_revision=revision)
                if stored.local_edits:
                    self.tally.local_edits_discarded += 1
            # A field read for the first time that change events leave out changed
            # nothing (S7): the version held was read from one.
            held, calculated = stored.upstream.fields, self._formulas("Account")
            changed = [
                c
                for c in _diff(stored, state.effective().fields)
                if c[0] in held or c[0] in stored.local_edits or not _left_out(c[0], calculated)
            ]
            if changed:
                if upstream.id in self._pending.dirty:
                    self._commit()
                entries = fan_out(
                    self.store,
                    self.policy,
                    upstream.id,
                    changed,
                    origin=Origin.SALESFORCE,
                    version=version,
                    occurred_at=occurred_at,
                    suppressed=self.tally.suppressed,
                    contact_ids=self._members.get(upstream.id),
                )
                self._pending.activities.extend(entries)
                self.tally.activities.extend(entries)
        self._accounts[upstream.id] = state
        self._pending.accounts.append(state)
        self.tally.accounts_upserted += 1

    def _contact_change(self, change: Upstream) -> None:
        stored = self._contacts.get(change.id)
        if not self._is_new(change, stored) or isinstance(change, Account):
            return
        new: StoredContact
        if isinstance(change, Deletion):
            new = change
            self.tally.contacts_deleted += 1
        else:
            if isinstance(change, Contact):
                contact = change
            elif isinstance(stored, Contact):
                account_id = (
                    stored.account_id if change.account_id is UNCHANGED else change.account_id
                )
                contact = Contact(
                    id=change.id,
                    account_id=account_id,
                    fields={**stored.fields, **change.fields},
                    system_modstamp=change.system_modstamp,
                    sequence=change.sequence,
                )
            else:
                self._refetch("Contact", change.id)
                return
            # A source shows a contact as it is now, merges included: the account it names
            # is its account, even where the store still holds a merge tombstone for it
            # (a stale one: the account was undeleted since, in a version yet to come).
            # A change event shows it as it was at its stamp: a merge after that moved it.
            named = change.account_id if isinstance(change, PartialUpdate) else contact.account_id
            from_event = self._from_events and _version(change) in self._from_events
            if isinstance(named, str) and from_event:
                moved_to = self._merged_since(named, change.system_modstamp)
                if moved_to != named:
                    contact = attrs.evolve(contact, account_id=moved_to)
            new = contact
            self.tally.contacts_upserted += 1
        for side in (stored, new):
            if isinstance(side, Contact) and side.account_id is not None:
                self._pending.dirty.add(side.account_id)
        self._contacts[change.id] = new
        self._pending.contacts.append(new)

    def _refetch(self, object_type: ObjectType, record_id: str) -> None:
        self.tally.refetch.append(
            Refetch(
                object_type=object_type,
                ids=(record_id,),
                reason="an update to a record that is not held, or is deleted",
            )
        )

    def read_from_event(self, change: Upstream) -> None:
        """Note that ``change`` was read from a change event, not from the record itself.

        An event shows a record as it was at its stamp, where a source shows it as it is
        now: a contact named an account that a later merge took it from (rule R4).
        """
        if isinstance(change, Contact | PartialUpdate):
            self._from_events.add(_version(change))

    def _merged_since(self, account_id: str, stamp: datetime) -> str:
        """Where a merge after ``stamp`` moved a contact of ``account_id``: none did, if
        the store holds no such merge."""
        stored = self._accounts.get(account_id)
        if (
            isinstance(stored, Deletion)
            and stored.master_record_id is not None
            and stored.deleted_at > stamp
        ):
            return self._winner(stored.master_record_id, stored.deleted_at)
        return account_id

    def _winner(self, account_id: str, merged_at: datetime) -> str:
        """Where a merge into ``account_id`` at ``merged_at`` puts the loser's contacts (R4).

        They follow the winner's own merge, and so on, if it came later. A tombstone older
        than the merge cannot have moved them: Salesforce merges into live accounts only,
        so the winner was undeleted since, in a version yet to arrive. Merges that loop
        (only conflicting data can make them) end at the first account named again.
        """
        seen = {account_id}
        while True:
            stored = self._accounts.get(account_id)
            if stored is None and account_id not in self._asked:
                self._asked.add(account_id)
                self._accounts.update(self.store.account_states([account_id]))
                stored = self._accounts.get(account_id)
            if not isinstance(stored, Deletion) or stored.master_record_id is None:
                return account_id
            if merged_at > stored.deleted_at or stored.master_record_id in seen:
                return account_id
            account_id, merged_at = stored.master_record_id, stored.deleted_at
            seen.add(account_id)
