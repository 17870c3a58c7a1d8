"""Properties of the engine, the lossless converter and the REST codec, for any input.

- R2: replaying changes (the same engine again, a fresh engine, everything re-read, the
  same records from another source) changes nothing and logs nothing.
- R1: syncing after every change or once at the end gives the same Salesforce values.
- S3: after a newer Salesforce version of every account, no local edit is left, and each
  entry logged on the way goes from the value the contacts saw, local edit included (S7).
- S7/S8: a sync logs exactly one entry per contact and changed field, unless the account
  has more contacts than the policy allows; then none, and the report says so.
- `make_converter()` and `encode_record`/`decode_record` give back what they were given.

Histories are played on an `InMemorySource`; the expected values are worked out here,
from the rules, not by the engine.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from operator import itemgetter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from acctsync import (
    Account,
    AccountState,
    ActivityPolicy,
    ChangeDataValue,
    Contact,
    Deletion,
    FieldValue,
    NoAccountError,
    Person,
    SyncEngine,
    UnknownContactError,
    decode_record,
    encode_record,
    make_converter,
)
from acctsync._apply import newest_stamps, order, stream_of, streams_of, with_order
from acctsync._engine import _merged
from acctsync.testing import InMemorySource, InMemoryStore, make_id
from acctsync.testing import strategies as acctsync_st
from plain_rules import same

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# SystemModstamp is kept to the second (R3): the org stamps in whole seconds.
SECOND = timedelta(seconds=1)
EDIT_TIME = datetime(2030, 1, 1, tzinfo=UTC)
ACCOUNT_IDS = [make_id("001", n) for n in range(4)]
CONTACT_IDS = [make_id("003", n) for n in range(8)]
FIELD_NAMES = ["Name", "Industry", "Rating", "Phone"]
# 1, 1.0 and Decimal("1.00") are one number; True is not 1; a date is not a datetime.
VALUES: list[FieldValue] = [
    "Acme",
    "Globex",
    "",
    1,
    1.0,
    Decimal("1.00"),
    2,
    True,
    False,
    None,
    date(2024, 1, 1),
    datetime(2024, 1, 1, tzinfo=UTC),
]

small_fields = st.dictionaries(st.sampled_from(FIELD_NAMES), st.sampled_from(VALUES), max_size=4)
steps = st.sampled_from([timedelta(0), SECOND, 2 * SECOND, timedelta(minutes=6)])
account_index = st.integers(0, len(ACCOUNT_IDS) - 1)
contact_index = st.integers(0, len(CONTACT_IDS) - 1)
changes = st.one_of(
    st.tuples(st.just("account"), steps, account_index, small_fields),
    st.tuples(st.just("contact"), steps, contact_index, st.none() | account_index, small_fields),
    st.tuples(st.just("delete account"), steps, account_index),
    st.tuples(st.just("merge accounts"), steps, account_index, account_index),
    st.tuples(st.just("delete contact"), steps, contact_index),
    st.tuples(st.just("sync"), st.sampled_from([1, 2, 3, 100])),
    st.tuples(
        st.just("edit"), contact_index, st.sampled_from(FIELD_NAMES), st.sampled_from(VALUES)
    ),
)
# An org to start from: every account, contacts spread over them (most on the first two,
# so that some accounts pass the policy's limit of 3), one sync; then anything.
openings = st.tuples(
    st.lists(small_fields, min_size=len(ACCOUNT_IDS), max_size=len(ACCOUNT_IDS)),
    st.lists(
        st.tuples(st.integers(0, 1) | st.none() | account_index, small_fields),
        min_size=len(CONTACT_IDS),
        max_size=len(CONTACT_IDS),
    ),
)


def _history(
    opening: tuple[list[dict[str, FieldValue]], list[tuple[int | None, dict[str, FieldValue]]]],
    rest: list[tuple[Any, ...]],
) -> list[tuple[Any, ...]]:
    accounts, contacts = opening
    start: list[tuple[Any, ...]] = [
        ("account", SECOND, n, fields) for n, fields in enumerate(accounts)
    ]
    start += [
        ("contact", SECOND, n, account, fields) for n, (account, fields) in enumerate(contacts)
    ]
    return [*start, ("sync", 100), *rest]


histories = st.builds(_history, openings, st.lists(changes, max_size=25))
page_sizes = st.sampled_from([1, 2, 3, 100])


def changed_fields(old: dict[str, FieldValue], new: dict[str, FieldValue]) -> set[str]:
    return {name for name in old.keys() | new.keys() if not same(old.get(name), new.get(name))}


def typed(value: Any) -> Any:
    """``value`` with the type of every field value spelled out, for exact comparison."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


class Org:
    """A Salesforce org that plays a history of changes, skipping what Salesforce refuses."""

    def __init__(self) -> None:
        self.source = InMemorySource()
        self.now = T0
        self.accounts: dict[str, Account | Deletion] = {}
        self.contacts: dict[str, Contact | Deletion] = {}

    def stamp(self, step: timedelta) -> datetime:
        self.now += step
        return self.now

    def next_stamp(
        self, step: timedelta, current: Account | Contact | Deletion | None
    ) -> datetime:
        stamp = self.stamp(step)
        if current is not None:
            previous = (
                current.deleted_at if isinstance(current, Deletion) else current.system_modstamp
            )
            if stamp <= previous:
                stamp = self.now = previous + SECOND
        return stamp

    def live_account(self, account_id: str) -> bool:
        return isinstance(self.accounts.get(account_id), Account)

    def upsert_account(
        self, step: timedelta, account_id: str, fields: dict[str, FieldValue]
    ) -> None:
        if isinstance(self.accounts.get(account_id), Deletion):
            return
        record = Account(
            id=account_id,
            fields=fields,
            system_modstamp=self.next_stamp(step, self.accounts.get(account_id)),
        )
        self.accounts[account_id] = record
        self.source.upsert(record)

    def upsert_contact(
        self,
        step: timedelta,
        contact_id: str,
        account_id: str | None,
        fields: dict[str, FieldValue],
    ) -> None:
        if isinstance(self.contacts.get(contact_id), Deletion):
            return
        if account_id is not None and isinstance(self.accounts.get(account_id), Deletion):
            return
        record = Contact(
            id=contact_id,
            account_id=account_id,
            fields=fields,
            system_modstamp=self.next_stamp(step, self.contacts.get(contact_id)),
        )
        self.contacts[contact_id] = record
        self.source.upsert(record)

    def delete_account(self, step: timedelta, account_id: str, master: str | None) -> None:
        current = self.accounts.get(account_id)
        if not isinstance(current, Account) or account_id == master:
            return
        if master is not None and not self.live_account(master):
            return
        deletion = Deletion(
            object_type="Account",
            id=account_id,
            deleted_at=self.next_stamp(step, current),
            master_record_id=master,
        )
        self.accounts[account_id] = deletion
        self.source.delete(deletion)
        for contact_id, contact in list(self.contacts.items()):
            if isinstance(contact, Contact) and contact.account_id == account_id:
                if master is None:
                    self.contacts[contact_id] = Deletion(
                        object_type="Contact", id=contact_id, deleted_at=deletion.deleted_at
                    )
                else:
                    self.contacts[contact_id] = Contact(
                        id=contact_id,
                        account_id=master,
                        fields=contact.fields,
                        system_modstamp=contact.system_modstamp,
                    )

    def delete_contact(self, step: timedelta, contact_id: str) -> None:
        current = self.contacts.get(contact_id)
        if not isinstance(current, Contact):
            return
        deletion = Deletion(
            object_type="Contact", id=contact_id, deleted_at=self.next_stamp(step, current)
        )
        self.contacts[contact_id] = deletion
        self.source.delete(deletion)

    def play(
        self,
        history: list[tuple[Any, ...]],
        engine: Callable[[int], SyncEngine] | None = None,
    ) -> None:
        """Apply ``history``; its syncs and local edits run on ``engine(page_size)``."""
        for kind, *args in history:
            if kind == "account":
                step, index, fields = args
                self.upsert_account(step, ACCOUNT_IDS[index], fields)
            elif kind == "contact":
                step, index, account, fields = args
                account_id = None if account is None else ACCOUNT_IDS[account]
                self.upsert_contact(step, CONTACT_IDS[index], account_id, fields)
            elif kind == "delete account":
                step, index = args
                self.delete_account(step, ACCOUNT_IDS[index], None)
            elif kind == "merge accounts":
                step, loser, winner = args
                self.delete_account(step, ACCOUNT_IDS[loser], ACCOUNT_IDS[winner])
            elif kind == "delete contact":
                step, index = args
                self.delete_contact(step, CONTACT_IDS[index])
            elif engine is None:
                continue
            elif kind == "sync":
                (page_size,) = args
                engine(page_size).sync()
            else:
                index, name, value = args
                with contextlib.suppress(NoAccountError, UnknownContactError):
                    engine(1).edit_account_field(
                        contact_id=CONTACT_IDS[index], field=name, value=value
                    )


def make_engine(
    source: InMemorySource, store: InMemoryStore, *, page_size: int = 100, **options: Any
) -> SyncEngine:
    options.setdefault("policy", ActivityPolicy(max_contacts_per_account=3))
    return SyncEngine(
        source=source, store=store, page_size=page_size, clock=lambda: EDIT_TIME, **options
    )


def upstream_state(store: InMemoryStore) -> tuple[object, ...]:
    """The Salesforce values a store holds: live accounts' upstream records, live contacts."""
    accounts = store.account_states(ACCOUNT_IDS)
    return (
        {
            i: (typed(dict(s.upstream.fields)), s.system_modstamp)
            for i, s in accounts.items()
            if isinstance(s, AccountState)
        },
        {c.id: (c.account_id, typed(dict(c.fields)), c.system_modstamp) for c in store.contacts()},
    )


def snapshot(store: InMemoryStore) -> tuple[object, ...]:
    return (
        upstream_state(store),
        {a.id: typed(dict(a.fields)) for a in store.accounts()},
        {a: sorted(store.contact_ids(a)) for a in ACCOUNT_IDS},
        [entry.id for entry in store.activities()],
        store.watermark("Account"),
        store.watermark("Contact"),
    )


def copy_of(source: InMemorySource) -> InMemorySource:
    """Another source presenting the same records (accounts first, so nothing cascades)."""
    copy = InMemorySource()
    for stream in ("Account", "Contact"):
        for page in source.read_changes(stream, None, page_size=1000):
            for record in page:
                if isinstance(record, Deletion):
                    copy.delete(record)
                else:
                    assert isinstance(record, Account | Contact)
                    copy.upsert(record)
    return copy


# -- R2: replays change nothing --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(history=histories, page_size=page_sizes)
def test_r2_replaying_any_history_changes_nothing(
    history: list[tuple[Any, ...]], page_size: int
) -> None:
    org, store = Org(), InMemoryStore()
    engine = make_engine(org.source, store, page_size=page_size)
    org.play(history, lambda size: make_engine(org.source, store, page_size=size))
    engine.sync()
    before = snapshot(store)
    replays = [
        engine,
        make_engine(org.source, store, page_size=1),
        make_engine(org.source, store, page_size=page_size, lookback=timedelta(days=3650)),
        make_engine(copy_of(org.source), store, page_size=2, lookback=timedelta(days=3650)),
    ]
    for replay in replays:
        report = replay.sync()
        assert report.activities == ()
        assert report.suppressed == ()
        assert report.accounts_upserted == report.accounts_deleted == 0
        assert report.contacts_upserted == report.contacts_deleted == 0
        assert report.local_edits_discarded == report.stale == 0
        assert snapshot(store) == before
    ids = [entry.id for entry in store.activities()]
    assert len(ids) == len(set(ids))


@settings(max_examples=200, deadline=None)
@given(history=histories, page_size=page_sizes)
def test_r1_syncing_often_or_once_gives_the_same_records(
    history: list[tuple[Any, ...]], page_size: int
) -> None:
    org, often, once = Org(), InMemoryStore(), InMemoryStore()
    org.play(history, lambda size: make_engine(org.source, often, page_size=size))
    make_engine(org.source, often, page_size=page_size).sync()
    make_engine(org.source, once, page_size=page_size).sync()
    assert upstream_state(often) == upstream_state(once)
    # And both hold what Salesforce holds.
    accounts, contacts = upstream_state(once)
    assert accounts == {
        i: (typed(dict(a.fields)), a.system_modstamp)
        for i, a in org.accounts.items()
        if isinstance(a, Account)
    }
    assert contacts == {
        i: (c.account_id, typed(dict(c.fields)), c.system_modstamp)
        for i, c in org.contacts.items()
        if isinstance(c, Contact)
    }


# -- S3: a newer Salesforce version leaves no local edit -------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    history=histories,
    edits=st.lists(
        st.tuples(contact_index, st.sampled_from(FIELD_NAMES), st.sampled_from(VALUES)),
        max_size=10,
    ),
    updates=st.lists(
        st.none() | small_fields, min_size=len(ACCOUNT_IDS), max_size=len(ACCOUNT_IDS)
    ),
    step=steps,
)
def test_s3_a_newer_version_of_every_account_leaves_no_local_edit(
    history: list[tuple[Any, ...]],
    edits: list[tuple[int, str, FieldValue]],
    updates: list[dict[str, FieldValue] | None],
    step: timedelta,
) -> None:
    org, store = Org(), InMemoryStore()
    engine = make_engine(org.source, store, page_size=3)
    org.play(history, lambda size: make_engine(org.source, store, page_size=size))
    engine.sync()
    org.play([("edit", *edit) for edit in edits], lambda size: engine)
    seen = {a.id: dict(a.fields) for a in store.accounts()}  # what contacts see: edits on top
    members = {a: list(store.contact_ids(a)) for a in ACCOUNT_IDS}
    for account_id, fields in zip(ACCOUNT_IDS, updates, strict=True):
        current = org.accounts.get(account_id)
        if isinstance(current, Account):
            # A newer version, with new values or (None) the same ones.
            org.upsert_account(
                step, account_id, dict(current.fields) if fields is None else fields
            )
    report = engine.sync()
    for account_id, record in org.accounts.items():
        got = store.get_account(account_id)
        if isinstance(record, Account):
            assert got is not None
            assert typed(dict(got.fields)) == typed(dict(record.fields))
        else:
            assert got is None
    # Each field whose value the contacts saw changed logs an entry, from the edited value
    # (S7); the policy allows 3 contacts.
    expected = set()
    for account_id, before in seen.items():
        after = org.accounts[account_id]
        assert isinstance(after, Account)
        if len(members[account_id]) <= 3:
            for name in changed_fields(before, dict(after.fields)):
                old, new = typed(before.get(name)), typed(after.fields.get(name))
                expected |= {(c, account_id, name, old, new) for c in members[account_id]}
    got_entries = [
        (e.contact_id, e.account_id, e.field, typed(e.old_value), typed(e.new_value))
        for e in report.activities
    ]
    assert len(got_entries) == len(expected)
    assert set(got_entries) == expected


# -- S7/S8: what the policy allows, exactly --------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    accounts=st.lists(
        st.tuples(st.integers(0, 6), small_fields, small_fields), min_size=1, max_size=4
    ),
    limit=st.integers(0, 5),
    page_size=page_sizes,
)
def test_s7_s8_activity_count_is_what_the_policy_allows(
    accounts: list[tuple[int, dict[str, FieldValue], dict[str, FieldValue]]],
    limit: int,
    page_size: int,
) -> None:
    source, store = InMemorySource(), InMemoryStore()
    engine = make_engine(
        source, store, page_size=page_size, policy=ActivityPolicy(max_contacts_per_account=limit)
    )
    members: dict[str, list[str]] = {}
    for n, (size, before, _) in enumerate(accounts):
        account_id = ACCOUNT_IDS[n]
        source.upsert(Account(id=account_id, fields=before, system_modstamp=T0))
        members[account_id] = [make_id("003", 100 * n + i) for i in range(size)]
        for contact_id in members[account_id]:
            source.upsert(Contact(id=contact_id, account_id=account_id, system_modstamp=T0))
    first = engine.sync()
    assert first.activities == ()  # first appearances log nothing (S7)

    for n, (_, _, after) in enumerate(accounts):
        source.upsert(Account(id=ACCOUNT_IDS[n], fields=after, system_modstamp=T0 + SECOND))
    report = engine.sync()

    expected: set[tuple[str, str, str, object, object]] = set()
    suppressed = set()
    for n, (size, before, after) in enumerate(accounts):
        account_id, changed = ACCOUNT_IDS[n], changed_fields(before, after)
        if not changed or not size:
            continue
        if size > limit:
            suppressed.add((account_id, size, size * len(changed)))
            continue
        for contact_id in members[account_id]:
            for name in changed:
                old, new = typed(before.get(name)), typed(after.get(name))
                expected.add((contact_id, account_id, name, old, new))
    got = [
        (e.contact_id, e.account_id, e.field, typed(e.old_value), typed(e.new_value))
        for e in report.activities
    ]
    assert len(got) == len(expected)
    assert set(got) == expected
    assert {(s.account_id, s.contact_count, s.entries_skipped) for s in report.suppressed} == (
        suppressed
    )
    assert len(list(store.activities())) == len(expected)

    # A local edit logs one entry per contact of the account under the same policy (S2).
    for n, (size, _, _) in enumerate(accounts):
        if not size:
            continue
        result = engine.edit_account_field(
            contact_id=members[ACCOUNT_IDS[n]][0], field="Description", value=f"edit {n}"
        )
        assert len(result.activities) == (size if size <= limit else 0)
        assert (result.suppressed is not None) == (size > limit)
        # The same value again is no change, and logs nothing (S2).
        again = engine.edit_account_field(
            contact_id=members[ACCOUNT_IDS[n]][-1], field="Description", value=f"edit {n}"
        )
        assert not again.changed
        assert again.activities == ()
    total = len(expected) + sum(size for size, _, _ in accounts if 0 < size <= limit)
    ids = [entry.id for entry in store.activities()]
    assert len(ids) == len(set(ids)) == total


# -- Round trips ----------------------------------------------------------------------------

_DATE_SHAPED = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME_SHAPED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{4})")
records_of_every_kind = st.one_of(
    acctsync_st.accounts(),
    acctsync_st.contacts(),
    acctsync_st.deletions(),
    acctsync_st.persons(),
    acctsync_st.change_data_values(),
    acctsync_st.account_states(),
)


def field_values_of(record: object) -> Iterator[FieldValue]:
    """Every field value a record holds, for a type-exact comparison."""
    if isinstance(record, Account | Contact | Person):
        yield from record.fields.values()
    elif isinstance(record, AccountState):
        yield from record.upstream.fields.values()
        yield from record.local_edits.values()
    elif isinstance(record, ChangeDataValue):
        yield record.old_value
        yield record.new_value


@settings(max_examples=300, deadline=None)
@given(record=records_of_every_kind)
def test_converter_round_trip_through_json(record: object) -> None:
    converter = make_converter()
    raw = converter.unstructure(record)
    back = converter.structure(json.loads(json.dumps(raw)), type(record))
    assert back == record
    assert [type(v) for v in field_values_of(back)] == [type(v) for v in field_values_of(record)]


def _rest_safe_strings() -> st.SearchStrategy[str]:
    # A text value shaped like a Salesforce date or datetime decodes to one (documented).
    return st.text(max_size=30).filter(
        lambda s: not _DATE_SHAPED.fullmatch(s) and not _DATETIME_SHAPED.fullmatch(s)
    )


_rest_values = acctsync_st.field_values(strings=_rest_safe_strings()).filter(
    lambda value: not isinstance(value, Decimal)
)
_rest_fields = acctsync_st.field_maps(values=_rest_values)


@settings(max_examples=300, deadline=None)
@given(
    record=st.one_of(
        acctsync_st.accounts(fields=_rest_fields), acctsync_st.contacts(fields=_rest_fields)
    )
)
def test_rest_json_round_trip(record: Account | Contact) -> None:
    payload = json.loads(json.dumps(encode_record(record)))
    back = decode_record("Account" if isinstance(record, Account) else "Contact", payload)
    assert back == record
    assert isinstance(back, Account | Contact)
    assert typed(dict(back.fields)) == typed(dict(record.fields))


@given(record=st.one_of(acctsync_st.accounts(), acctsync_st.contacts(), acctsync_st.deletions()))
def test_strategies_draw_valid_records(record: Account | Contact | Deletion) -> None:
    assert len(record.id) == 18
    stamp = record.deleted_at if isinstance(record, Deletion) else record.system_modstamp
    assert stamp.tzinfo is UTC
    assert stamp.microsecond % 1000 == 0


class _Unordered:
    """A change as the merge sees it: it has no order, so only keys may be compared."""


@st.composite
def keyed_streams(draw: st.DrawFn) -> list[list[list[tuple[Any, Any]]]]:
    """Streams of (key, value) pairs in key order, each cut into non-empty lists; keys
    repeat within a stream, never across streams, as the engine's do."""
    streams = []
    for stream in range(draw(st.integers(1, 3))):
        keys = sorted(draw(st.lists(st.integers(0, 8), max_size=30)))
        pairs = [((key, stream), _Unordered()) for key in keys]
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(pairs) - 1)))))
        bounds = [0, *(c for c in cuts if c < len(pairs)), len(pairs)]
        parts = [pairs[a:b] for a, b in pairwise(bounds) if a < b]
        for at in sorted(draw(st.lists(st.integers(0, len(parts)), max_size=2)), reverse=True):
            parts.insert(at, [])  # a list with nothing in it ends nothing
        streams.append(parts)
    return streams


@settings(max_examples=300, deadline=None)
@given(streams=keyed_streams())
def test_the_engine_merges_streams_list_by_list_as_heapq_merge_does(
    streams: list[list[list[tuple[Any, Any]]]],
) -> None:
    pulled: list[list[list[tuple[Any, Any]]]] = [[] for _ in streams]

    def read(at: int) -> Iterator[list[tuple[Any, Any]]]:
        for part in streams[at]:
            pulled[at].append(part)
            yield part

    stream_of = {id(value): at for at, s in enumerate(streams) for part in s for _, value in part}
    given: list[int] = [0] * len(streams)
    lists = []
    for part in _merged([read(at) for at in range(len(streams))]):
        assert part
        lists.append(part)
        for _, value in part:
            given[stream_of[id(value)]] += 1
        # Lazy as heapq.merge: a stream's next list is read once its last is given.
        for at, lists_read in enumerate(pulled):
            assert sum(map(len, lists_read[:-1])) <= given[at]
    expected = heapq.merge(*([p for part in s for p in part] for s in streams), key=itemgetter(0))
    assert [pair for part in lists for pair in part] == list(expected)


@settings(max_examples=200, deadline=None)
@given(
    changes=st.one_of(
        st.lists(acctsync_st.accounts(), max_size=5),
        st.lists(acctsync_st.contacts(), max_size=5),
        st.lists(
            st.one_of(
                acctsync_st.accounts(),
                acctsync_st.contacts(),
                acctsync_st.deletions(),
            ),
            max_size=5,
        ),
    )
)
def test_a_pages_keys_and_streams_made_at_once_are_those_made_one_by_one(
    changes: list[Account | Contact | Deletion],
) -> None:
    # A page of one record type is keyed and split by streams in passes of C.
    assert with_order(changes) == [(order(change), change) for change in changes]
    assert streams_of(changes) == [stream_of(change) for change in changes]
    newest: dict[str, datetime] = {}  # as the engine's loop over a page found them
    for change in changes:
        stream = stream_of(change)
        if stream not in newest or change.system_modstamp > newest[stream]:
            newest[stream] = change.system_modstamp
    assert newest_stamps(changes) == newest
