"""`ChangeEventSource`: Change Data Capture events through the engine, into a store.

Events are built here as CometD delivers them (``{"data": {"payload": ..., "event":
{"replayId": n}}}``) by a `Subscriber` that numbers them and keeps them for re-delivery.
Times are fixed, in UTC, seconds after `T0`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acctsync import (
    Account,
    Batch,
    Change,
    ConfigurationError,
    Contact,
    Deletion,
    InvalidRecordError,
    ObjectType,
    RawChangeEvent,
    RawRecord,
    Store,
    StoreError,
    SyncEngine,
    encode_record,
)
from acctsync.sources.cdc import ChangeEventSource
from acctsync.testing import InMemorySource, InMemoryStore, check_source, make_id

pytest.importorskip("sqlalchemy")

from acctsync.stores.sql import SqlStore

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2024, 6, 1, tzinfo=UTC)  # the engine's clock: after every event
A1, A2, A3 = (make_id("001", n) for n in (1, 2, 3))
C1, C2, C3, C4 = (make_id("003", n) for n in (1, 2, 3, 4))
ROOT = Path(__file__).parent.parent


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def millis(stamp: datetime) -> int:
    return (stamp - EPOCH) // timedelta(milliseconds=1)


def entity_of(record_id: str) -> str:
    return "Account" if record_id.startswith("001") else "Contact"


class Subscriber:
    """Hands out change events as CometD messages, numbered in delivery order."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def _send(
        self, entity: str, change: str, ids: Sequence[str], stamp: datetime, **body: Any
    ) -> dict[str, Any]:
        header: dict[str, Any] = {
            "entityName": entity,
            "changeType": change,
            "recordIds": list(ids),
            "commitTimestamp": millis(stamp),
            "transactionKey": f"tx-{len(self.sent)}",
            "sequenceNumber": 1,
        }
        if change == "UPDATE":
            header["changedFields"] = [*body, "LastModifiedDate"]
            body["LastModifiedDate"] = "2024-03-01T09:00:00.000Z"
        message = {
            "data": {
                "schema": "schema-1",
                "payload": {"ChangeEventHeader": header, **body},
                "event": {"replayId": len(self.sent) + 1},
            },
            "channel": f"/data/{entity}ChangeEvent",
        }
        self.sent.append(message)
        return message

    def create(self, record: Account | Contact, change: str = "CREATE") -> dict[str, Any]:
        body: dict[str, Any] = dict(record.fields)
        if isinstance(record, Contact):
            body["AccountId"] = record.account_id
        entity = entity_of(record.id)
        return self._send(entity, change, [record.id], record.system_modstamp, **body)

    def undelete(self, record: Account | Contact) -> dict[str, Any]:
        return self.create(record, change="UNDELETE")

    def update(self, record_id: str, stamp: datetime, **fields: Any) -> dict[str, Any]:
        return self._send(entity_of(record_id), "UPDATE", [record_id], stamp, **fields)

    def delete(self, record_id: str, stamp: datetime, **body: Any) -> dict[str, Any]:
        return self._send(entity_of(record_id), "DELETE", [record_id], stamp, **body)

    def gap(self, entity: str, change: str, ids: Sequence[str], stamp: datetime) -> dict[str, Any]:
        return self._send(entity, change, ids, stamp)


def account(account_id: str, seconds: float, **fields: Any) -> Account:
    return Account(id=account_id, fields=fields, system_modstamp=at(seconds))


def contact(contact_id: str, account_id: str | None, seconds: float, **fields: Any) -> Contact:
    return Contact(
        id=contact_id, account_id=account_id, fields=fields, system_modstamp=at(seconds)
    )


def feed_all(feed: ChangeEventSource, messages: Sequence[dict[str, Any]]) -> None:
    for message in messages:
        feed.add(message)


def engine_for(feed: ChangeEventSource, store: Store, **options: Any) -> SyncEngine:
    return SyncEngine(source=feed, store=store, clock=lambda: NOW, **options)


def sync(engine: SyncEngine, feed: ChangeEventSource) -> Any:
    report = engine.sync()
    feed.commit()
    return report


@pytest.fixture
def sql_store(tmp_path: Path) -> Iterator[SqlStore]:
    with SqlStore.sqlite(tmp_path / "x.db") as store:
        yield store


# -- The Source contract -----------------------------------------------------------------


def events_of(
    records: Sequence[Account | Contact | Deletion], fallback: InMemorySource | None = None
) -> ChangeEventSource:
    feed = ChangeEventSource(fallback=fallback)
    subscriber = Subscriber()
    for record in records:
        if isinstance(record, Deletion):
            # CDC events carry no MasterRecordId; the decoder reads one if a payload has it.
            master = {"MasterRecordId": record.master_record_id} if record.master_record_id else {}
            feed.add(subscriber.delete(record.id, record.deleted_at, **master))
        else:
            feed.add(subscriber.create(record))
    return feed


def test_conforms_to_the_source_contract() -> None:
    check_source(events_of)


def test_conforms_with_a_fallback_that_knows_none_of_the_records() -> None:
    # Account deletions are looked up in the fallback; not found there, the event stands.
    check_source(lambda records: events_of(records, fallback=InMemorySource()))


def test_events_on_one_stamp_come_out_by_record_id_then_in_replay_order() -> None:
    feed = ChangeEventSource()
    subscriber = Subscriber()
    feed_all(
        feed,
        [
            subscriber.update(A2, at(1), Name="second A2"),
            subscriber.create(account(A1, 1, Name="A1")),
            subscriber.update(A2, at(1), Name="third A2"),
            subscriber.create(account(A3, 0, Name="A3")),
        ],
    )
    pages = list(feed.read_changes("Account", None, page_size=3))
    origins = [change.origin for page in pages for change in page]  # type: ignore[union-attr]
    assert [len(page) for page in pages] == [3, 1]
    assert origins == ["replay 4", "replay 2", "replay 1", "replay 3"]


# -- End to end into the SQL store -------------------------------------------------------


def test_creates_partial_updates_moves_deletes_and_undeletes(sql_store: SqlStore) -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    engine = engine_for(feed, sql_store)
    acme = account(A1, 0, Name="Acme", Industry="Tech", Phone="111")
    feed_all(
        feed,
        [
            subscriber.create(contact(C3, A2, 0, LastName="Early")),  # before its account (R5)
            subscriber.create(acme),
            subscriber.create(contact(C1, A1, 1, LastName="One")),
            subscriber.create(contact(C2, A1, 1, LastName="Two")),
            subscriber.create(account(A2, 2, Name="Beta")),
        ],
    )
    report = sync(engine, feed)
    assert (report.accounts_upserted, report.contacts_upserted) == (2, 3)
    assert report.ok
    assert sorted(sql_store.contact_ids(A2)) == [C3]
    assert list(sql_store.activities()) == []  # first appearances log nothing (S7)
    assert feed.checkpoint == 5
    assert feed.pending == 0

    feed_all(
        feed,
        [
            subscriber.update(A1, at(10), Industry="Retail"),
            subscriber.update(C2, at(11), AccountId=A2),
            subscriber.update(C1, at(12), Email="one@acme.example"),
        ],
    )
    report = sync(engine, feed)
    got = sql_store.get_account(A1)
    assert got is not None
    assert got.fields == {"Name": "Acme", "Industry": "Retail", "Phone": "111"}  # merged
    assert got.system_modstamp == at(10)
    assert sorted(sql_store.contact_ids(A1)) == [C1]
    assert sorted(sql_store.contact_ids(A2)) == sorted([C2, C3])
    moved = sql_store.get_contact(C2)
    assert moved is not None
    assert moved.fields == {"LastName": "Two"}
    assert [(e.contact_id, e.field, e.old_value, e.new_value) for e in report.activities] == [
        (C1, "Industry", "Tech", "Retail"),
        (C2, "Industry", "Tech", "Retail"),
    ]

    feed_all(feed, [subscriber.delete(A2, at(20))])
    sync(engine, feed)
    assert sql_store.get_account(A2) is None
    assert sql_store.get_contact(C2) is None  # deleted with their account (R4)
    assert sql_store.get_contact(C3) is None

    feed_all(
        feed,
        [
            subscriber.undelete(account(A2, 30, Name="Beta")),
            subscriber.undelete(contact(C3, A2, 30, LastName="Early")),
        ],
    )
    report = sync(engine, feed)
    assert (report.accounts_upserted, report.contacts_upserted) == (1, 1)
    assert sql_store.get_account(A2) == account(A2, 30, Name="Beta")
    assert list(sql_store.contact_ids(A2)) == [C3]
    assert feed.checkpoint == len(subscriber.sent)
    assert len(list(sql_store.activities())) == 2


def test_redelivered_events_log_activities_once(sql_store: SqlStore) -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    engine = engine_for(feed, sql_store)
    feed_all(
        feed,
        [
            subscriber.create(account(A1, 0, Name="Acme", Industry="Tech")),
            subscriber.create(contact(C1, A1, 0)),
            subscriber.create(contact(C2, A1, 0)),
        ],
    )
    sync(engine, feed)
    resume_from = feed.checkpoint
    feed_all(feed, [subscriber.update(A1, at(60), Industry="Retail")])
    first = sync(engine, feed)
    assert len(first.activities) == 2

    # The process restarts with an older checkpoint: the subscription replays from there.
    assert resume_from == 3
    again = ChangeEventSource(checkpoint=resume_from)
    feed_all(again, subscriber.sent[resume_from:])
    feed_all(again, [subscriber.update(A1, at(120), Name="Acme Inc")])
    report = sync(engine_for(again, sql_store), again)
    assert report.already_applied == 1  # the engine knows that version of A1
    assert [(e.field, e.new_value) for e in report.activities] == [
        ("Name", "Acme Inc"),
        ("Name", "Acme Inc"),
    ]
    log = list(sql_store.activities())
    assert len(log) == 4
    assert len({e.id for e in log}) == 4
    assert again.checkpoint == 5


def test_redelivered_events_before_the_lookback_are_skipped_and_passed(
    sql_store: SqlStore,
) -> None:
    feed, subscriber = ChangeEventSource(checkpoint=0), Subscriber()
    engine = engine_for(feed, sql_store)
    history = [
        subscriber.create(account(A1, 0, Name="Acme")),
        subscriber.update(A1, at(3600), Name="Acme Inc"),
    ]
    feed_all(feed, history)
    sync(engine, feed)
    feed_all(feed, history)  # resumed from replay id 0 again
    # The first is an hour older than the watermark less the lookback: not read.
    pages = list(feed.read_changes("Account", at(3600 - 300), page_size=10))
    assert [[change.origin for change in page] for page in pages] == [["replay 2"]]  # type: ignore[union-attr]
    report = sync(engine, feed)
    assert (report.accounts_upserted, report.already_applied) == (0, 1)
    assert (feed.checkpoint, feed.pending) == (2, 0)


# -- Gaps and overflows, through a fallback ----------------------------------------------


def org_with(*records: Account | Contact) -> InMemorySource:
    org = InMemorySource()
    for record in records:
        org.upsert(record)
    return org


def test_a_gap_event_is_read_again_from_the_fallback(sql_store: SqlStore) -> None:
    org = org_with(account(A1, 0, Name="Acme", Industry="Tech"), contact(C1, A1, 0))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    engine = engine_for(feed, sql_store)
    feed.add(subscriber.create(account(A1, 0, Name="Acme", Industry="Tech")))
    feed.add(subscriber.create(contact(C1, A1, 0)))
    sync(engine, feed)

    org.upsert(account(A1, 30, Name="Acme", Industry="Retail"))  # a change whose event was lost
    feed.add(subscriber.gap("Account", "GAP_UPDATE", [A1], at(30.5)))
    report = sync(engine, feed)
    assert report.ok
    assert report.refetch == ()
    assert sql_store.get_account(A1) == account(A1, 30, Name="Acme", Industry="Retail")
    assert [(e.contact_id, e.new_value) for e in report.activities] == [(C1, "Retail")]
    assert feed.checkpoint == 3


def test_r4_a_gap_in_contacts_rereads_accounts_too_so_a_later_event_cannot_undo_them() -> None:
    """The contacts read again are as they are now: C2, made after A1's deletion and
    undelete, must survive that deletion's event, which arrives in the next sync."""
    org = org_with(account(A1, 0, Name="Acme"), contact(C1, None, 0))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    store = InMemoryStore()
    engine = engine_for(feed, store)
    feed_all(
        feed,
        [subscriber.create(account(A1, 0, Name="Acme")), subscriber.create(contact(C1, None, 0))],
    )
    sync(engine, feed)
    org.upsert(contact(C1, None, 10, LastName="Lost"))
    org.delete(Deletion(object_type="Account", id=A1, deleted_at=at(20)))
    org.undelete("Account", A1, at=at(30))
    org.upsert(contact(C2, A1, 40))
    feed.add(subscriber.gap("Contact", "GAP_UPDATE", [C1], at(10)))
    sync(engine, feed)  # the other events are still in transit
    assert store.get_contact(C2) is not None
    for message in (
        subscriber.delete(A1, at(20)),
        subscriber.undelete(account(A1, 30, Name="Acme")),
        subscriber.create(contact(C2, A1, 40)),
    ):
        feed.add(message)
    sync(engine, feed)
    assert store.get_contact(C2) == contact(C2, A1, 40)
    assert store.get_contact(C1) == contact(C1, None, 10, LastName="Lost")


def test_a_gap_without_a_fallback_is_reported_not_dropped() -> None:
    feed, subscriber, store = ChangeEventSource(), Subscriber(), InMemoryStore()
    feed.add(subscriber.gap("Contact", "GAP_CREATE", [C1, C2], at(5)))
    report = sync(engine_for(feed, store), feed)
    assert [(r.object_type, r.ids, r.reason) for r in report.refetch] == [
        ("Contact", (C1, C2), "GAP_CREATE")
    ]
    assert not report.ok


@pytest.mark.parametrize("rest_shaped", [False, True])
def test_an_overflow_rereads_the_whole_object_from_a_little_before_it(
    sql_store: SqlStore, rest_shaped: bool
) -> None:
    contacts = [contact(make_id("003", 100 + n), A1, 40, Title="VP") for n in range(30)]
    # The org as it is when the sync reads it, the change after the overflow included.
    promoted = contact(contacts[0].id, A1, 50, Title="CEO")
    org = org_with(
        account(A1, 0, Name="Acme"),
        contact(C1, A1, -3600, LastName="Old"),  # not changed lately: not read again
        promoted,
        *contacts[1:],
    )
    feed = ChangeEventSource(fallback=RestShaped(org) if rest_shaped else org)
    subscriber = Subscriber()
    engine = engine_for(feed, sql_store, page_size=7)
    feed.add(subscriber.create(account(A1, 0, Name="Acme")))
    feed.add(subscriber.gap("Contact", "GAP_OVERFLOW", [], at(41)))
    feed.add(subscriber.update(contacts[0].id, at(50), Title="CEO"))  # after the overflow
    report = sync(engine, feed)
    assert report.ok
    # Read again after its event was delivered, the record is as new: the event is not
    # applied on top of it.
    assert report.contacts_upserted == 30
    assert sorted(sql_store.contact_ids(A1)) == sorted(c.id for c in contacts)
    boss = sql_store.get_contact(contacts[0].id)
    assert boss is not None
    assert boss.fields == {"Title": "CEO"}
    assert feed.checkpoint == 3


def test_a_gap_reread_keeps_changes_whose_events_are_still_in_transit(
    sql_store: SqlStore,
) -> None:
    # The subscriber is behind: the org has moved on past the events it has delivered.
    # Reading only A1 again would move the watermark to 3600 s, past A2's event at 600 s.
    org = org_with(
        account(A1, 3600, Name="Acme 2"),  # created at 60 s (the gap), changed since
        account(A2, 600, Name="Beta 2"),  # its event is still on its way
    )
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    engine = engine_for(feed, sql_store)
    feed.add(subscriber.create(account(A2, 0, Name="Beta")))
    sync(engine, feed)
    feed.add(subscriber.gap("Account", "GAP_CREATE", [A1], at(60)))
    sync(engine, feed)
    feed.add(subscriber.update(A2, at(600), Name="Beta 2"))
    feed.add(subscriber.update(A1, at(3600), Name="Acme 2"))
    sync(engine, feed)
    assert [sql_store.get_account(a) for a in (A1, A2)] == [
        account(A1, 3600, Name="Acme 2"),
        account(A2, 600, Name="Beta 2"),
    ]
    assert feed.pending == 0


# -- Merges ------------------------------------------------------------------------------


def merged_org() -> tuple[InMemorySource, list[dict[str, Any]], Subscriber]:
    """A1 (with C1, C2) is merged into A2 (with C3) at 100 s: the org and the events."""
    org = org_with(
        account(A1, 0, Name="Loser"),
        account(A2, 0, Name="Winner"),
        contact(C1, A1, 0),
        contact(C2, A1, 0),
        contact(C3, A2, 0),
    )
    subscriber = Subscriber()
    history = [
        subscriber.create(record)
        for record in (
            account(A1, 0, Name="Loser"),
            account(A2, 0, Name="Winner"),
            contact(C1, A1, 0),
            contact(C2, A1, 0),
            contact(C3, A2, 0),
        )
    ]
    org.delete(Deletion(object_type="Account", id=A1, deleted_at=at(100), master_record_id=A2))
    org.upsert(account(A2, 100, Name="Winner", Phone="222"))
    history.append(subscriber.delete(A1, at(100.2)))  # committed after its SystemModstamp
    history.append(subscriber.update(A2, at(100.2), Phone="222"))
    return org, history, subscriber


class RestShaped:
    """The org's records as a REST source gives them: raw JSON, deletions with IsDeleted."""

    def __init__(self, org: InMemorySource) -> None:
        self.org = org

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[list[Change]]:
        for page in self.org.read_changes(object_type, since, page_size=page_size):
            yield [
                RawRecord(object_type=object_type, payload=encode_record(record))
                for record in page
                if isinstance(record, Account | Contact | Deletion)
            ]


@pytest.mark.parametrize("rest_shaped", [False, True])
def test_a_merge_moves_the_losers_contacts_when_a_fallback_names_the_winner(
    sql_store: SqlStore, rest_shaped: bool
) -> None:
    org, history, _ = merged_org()
    feed = ChangeEventSource(fallback=RestShaped(org) if rest_shaped else org)
    feed_all(feed, history)
    report = sync(engine_for(feed, sql_store), feed)
    assert report.ok
    assert sorted(sql_store.contact_ids(A2)) == sorted([C1, C2, C3])
    assert sql_store.account_states([A1]) == {
        A1: Deletion(object_type="Account", id=A1, deleted_at=at(100), master_record_id=A2)
    }
    assert report.accounts_deleted == 1


def test_a_merge_without_a_fallback_deletes_the_losers_contacts(sql_store: SqlStore) -> None:
    _, history, _ = merged_org()
    feed = ChangeEventSource()
    feed_all(feed, history)
    sync(engine_for(feed, sql_store), feed)
    assert list(sql_store.contact_ids(A2)) == [C3]
    assert sql_store.get_contact(C1) is None


def test_a_later_deletion_in_the_org_does_not_replace_the_event(sql_store: SqlStore) -> None:
    # Deleted at 100, undeleted, deleted again at 900: the event is the first deletion.
    org = org_with(account(A1, 0, Name="Acme"))
    org.delete(Deletion(object_type="Account", id=A1, deleted_at=at(900)))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    feed_all(
        feed, [subscriber.create(account(A1, 0, Name="Acme")), subscriber.delete(A1, at(100))]
    )
    report = sync(engine_for(feed, sql_store), feed)
    assert sql_store.account_states([A1]) == {
        A1: Deletion(object_type="Account", id=A1, deleted_at=at(100))
    }
    assert report.watermarks["Account"] == at(100)


def test_r3_an_undelete_in_the_second_of_a_deletion_the_fallback_gave_restores_it(
    sql_store: SqlStore,
) -> None:
    # Deleted, then undone 600 ms later: the fallback's deletion (for its MasterRecordId)
    # keeps the event's commit number, which puts the undelete after it.
    org = org_with(account(A1, 0, Name="Acme"))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    engine = engine_for(feed, sql_store)
    feed_all(feed, [subscriber.create(account(A1, 0, Name="Acme"))])
    sync(engine, feed)
    deleted = subscriber.delete(A1, at(100))
    undeleted = subscriber.undelete(account(A1, 100.6, Name="Acme"))
    for number, message in enumerate((deleted, undeleted), start=100):
        message["data"]["payload"]["ChangeEventHeader"]["commitNumber"] = number

    org.delete(Deletion(object_type="Account", id=A1, deleted_at=at(100)))
    feed_all(feed, [deleted])
    sync(engine, feed)
    assert isinstance(sql_store.account_states([A1])[A1], Deletion)
    org.undelete("Account", A1, at=at(100.6))
    feed_all(feed, [undeleted])
    report = sync(engine, feed)

    assert (report.stale, report.accounts_upserted) == (0, 1)
    restored = sql_store.get_account(A1)
    assert restored is not None
    assert (restored.fields, restored.system_modstamp) == ({"Name": "Acme"}, at(100.6))


# -- Malformed events, replay ids and the checkpoint -------------------------------------


def test_malformed_events_are_rejected_with_their_replay_id(sql_store: SqlStore) -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    good = subscriber.create(account(A1, 0, Name="Acme"))
    bad_id = subscriber.create(account(A2, 0, Name="Beta"))
    bad_id["data"]["payload"]["ChangeEventHeader"]["recordIds"] = ["001nope"]
    no_time = subscriber.create(contact(C1, A1, 0))
    del no_time["data"]["payload"]["ChangeEventHeader"]["commitTimestamp"]
    feed_all(feed, [good, bad_id, no_time])
    feed.add({"no": "header"}, replay_id=b"\x00\x1f")
    feed.add([1, 2], replay_id="opaque")  # type: ignore[arg-type]
    report = sync(engine_for(feed, sql_store), feed)
    assert sql_store.get_account(A1) == account(A1, 0, Name="Acme")
    rejected = sorted((r.origin or "", r.object_type, r.reason) for r in report.rejected)
    assert [(origin, kind) for origin, kind, _ in rejected] == [
        ("replay 001f", "Account"),
        ("replay 2", "Account"),
        ("replay 3", "Contact"),
        ("replay opaque", "Account"),
    ]
    assert all(reason for _, _, reason in rejected)
    assert feed.pending == 0
    assert feed.checkpoint == "opaque"


def test_an_event_needs_a_replay_id() -> None:
    feed = ChangeEventSource()
    payload = Subscriber().create(account(A1, 0))["data"]["payload"]
    with pytest.raises(InvalidRecordError, match="replay id"):
        feed.add(payload)
    with pytest.raises(InvalidRecordError, match="int, str or bytes"):
        feed.add(payload, replay_id=1.5)  # type: ignore[arg-type]
    feed.add(payload, replay_id=b"\x01")
    assert feed.pending == 1
    with pytest.raises(ConfigurationError):
        ChangeEventSource(refetch_margin=timedelta(seconds=-1))
    with pytest.raises(ConfigurationError, match="checkpoint"):
        ChangeEventSource(checkpoint=[7])
    assert ChangeEventSource(checkpoint=b"\x07").checkpoint == b"\x07"


def test_from_events_holds_a_streams_events_as_they_came_and_reads_like_add() -> None:
    subscriber = Subscriber()
    messages = [
        subscriber.update(A1, at(2), Name="Acme 2"),
        subscriber.create(account(A1, 1, Name="Acme")),
        subscriber.create(contact(C1, A1, 1)),
    ]
    events = [
        RawChangeEvent(payload=m["data"]["payload"], origin=f"replay 0{n}")
        for n, m in enumerate(messages)
    ]
    held = ChangeEventSource.from_events(events)
    added = ChangeEventSource()
    for event in events:
        added.add(event.payload, replay_id=event.origin)  # type: ignore[arg-type]
    for stream in ("Account", "Contact"):
        got = [c for page in held.read_changes(stream, None, page_size=2) for c in page]
        expected = [c for page in added.read_changes(stream, None, page_size=2) for c in page]
        assert [c.payload for c in got] == [c.payload for c in expected]  # type: ignore[union-attr]
        assert all(c.origin.startswith("replay 0") for c in got)  # type: ignore[union-attr]
    # No replay ids of their own: committed, they leave the checkpoint where it was.
    held.commit()
    assert (held.pending, held.checkpoint) == (0, None)
    with pytest.raises(InvalidRecordError, match="RawChangeEvents"):
        ChangeEventSource.from_events([messages[0]])  # type: ignore[list-item]


class FailingSqlStore(SqlStore):
    """Raises instead of applying its ``fail_at``-th batch, as a full disk would."""

    fail_at: int | None = None
    applied: int = 0

    def apply(self, batch: Batch) -> None:
        self.applied += 1
        if self.applied == self.fail_at:
            raise StoreError("disk full")
        super().apply(batch)


def test_a_failed_sync_keeps_the_checkpoint_and_the_next_applies_everything_once(
    tmp_path: Path,
) -> None:
    subscriber = Subscriber()
    history = [
        subscriber.create(account(A1, 0, Name="Acme", Industry="Tech")),
        subscriber.create(contact(C1, A1, 1)),
        subscriber.create(contact(C2, A1, 2)),
        subscriber.update(A1, at(10), Industry="Retail"),
        subscriber.update(C1, at(11), AccountId=None),
        subscriber.update(A1, at(12), Industry="Finance"),
    ]
    expected = InMemoryStore()
    reference = ChangeEventSource()
    feed_all(reference, history)
    sync(engine_for(reference, expected, page_size=2), reference)

    with FailingSqlStore.sqlite(tmp_path / "x.db") as store:
        feed = ChangeEventSource(checkpoint=0)
        engine = engine_for(feed, store, page_size=2)
        feed_all(feed, history)
        store.fail_at = 3
        with pytest.raises(StoreError):
            engine.sync()
        assert store.get_account(A1) is not None  # a page was applied before the failure
        assert (feed.checkpoint, feed.pending) == (0, 6)
        store.fail_at = None
        report = sync(engine, feed)
        assert (feed.checkpoint, feed.pending) == (6, 0)
        assert report.already_applied > 0
        for record_id in (A1, C1, C2):
            get = store.get_account if record_id == A1 else store.get_contact
            want = expected.get_account if record_id == A1 else expected.get_contact
            assert get(record_id) == want(record_id)
        assert list(store.activities()) == list(expected.activities())
        assert len(list(store.activities())) == 3  # Retail for C1, C2; Finance for C2


def test_events_arriving_during_a_sync_wait_for_the_next() -> None:
    subscriber = Subscriber()
    feed = ChangeEventSource()
    first = subscriber.create(account(A1, 0, Name="Acme"))
    arriving = [subscriber.create(account(A2, 5, Name="Late"))]

    class ArrivingStore(InMemoryStore):
        def apply(self, batch: Batch) -> None:
            if arriving:
                feed.add(arriving.pop())  # from the subscriber's thread, mid-sync
            super().apply(batch)

    store = ArrivingStore()
    feed.add(first)
    sync(engine_for(feed, store), feed)
    assert store.get_account(A2) is None
    assert (feed.checkpoint, feed.pending) == (1, 1)
    sync(engine_for(feed, store), feed)
    assert store.get_account(A2) is not None
    assert (feed.checkpoint, feed.pending) == (2, 0)


def test_the_checkpoint_stops_before_the_first_event_not_read() -> None:
    subscriber = Subscriber()
    feed = ChangeEventSource()
    feed_all(
        feed,
        [
            subscriber.create(account(A1, 0)),
            subscriber.create(contact(C1, A1, 0)),
            subscriber.create(account(A2, 0)),
        ],
    )
    list(feed.read_changes("Account", None, page_size=10))  # the Contact stream unread
    feed.commit()
    assert (feed.checkpoint, feed.pending) == (1, 1)
    feed.commit()  # nothing read since: nothing more let go
    assert (feed.checkpoint, feed.pending) == (1, 1)
    list(feed.read_changes("Contact", None, page_size=10))
    feed.commit()
    assert (feed.checkpoint, feed.pending) == (3, 0)
    assert repr(feed) == "<ChangeEventSource pending=0 added=3 fallback=None>"


# -- Every shape a real org sends (rules R3, R8) ----------------------------------------


def committed(
    message: dict[str, Any], commit: int | None, number: int | None = None, **header: Any
) -> dict[str, Any]:
    """``message`` with its header's commitNumber and sequenceNumber (and more) set.

    Change Data Capture Developer Guide, "Change Event Header Fields": commitNumber
    numbers the commits, sequenceNumber the changes within one.
    """
    fields = message["data"]["payload"]["ChangeEventHeader"]
    fields.pop("sequenceNumber", None)
    fields.update({"commitNumber": commit, "sequenceNumber": number, **header})
    return message


def test_r3_events_of_one_stamp_and_record_come_out_by_commit_then_sequence_number() -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    feed_all(
        feed,
        [
            committed(subscriber.update(A1, at(1), Name="c2"), 102, 1),
            committed(subscriber.update(A1, at(1), Name="c1 s2"), 101, 2),
            committed(subscriber.update(A1, at(1), Name="c1 s1"), 101, 1),
            committed(subscriber.update(A2, at(1), Name="A2"), 100, 1),
            committed(subscriber.update(A1, at(0), Name="earlier"), 999, 1),
        ],
    )
    (page,) = feed.read_changes("Account", None, page_size=10)
    assert [change.origin for change in page] == [  # type: ignore[union-attr]
        "replay 5",
        "replay 3",
        "replay 2",
        "replay 1",
        "replay 4",
    ]


def test_r3_the_last_change_of_a_commit_wins_whatever_the_arrival_on_every_store(
    any_store: Store,
) -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    feed_all(
        feed,
        [
            subscriber.create(account(A1, 0, Name="Acme", Industry="Tech")),
            subscriber.create(contact(C1, A1, 0)),
            # Two saves of one record in one millisecond, delivered the wrong way round.
            committed(subscriber.update(A1, at(5), Industry="Retail"), 7001, 2),
            committed(subscriber.update(A1, at(5), Industry="Finance"), 7001, 1),
        ],
    )
    report = sync(engine_for(feed, any_store), feed)
    assert report.ok
    acme = any_store.get_account(A1)
    assert acme is not None
    assert acme.fields["Industry"] == "Retail"


# Pub/Sub API Developer Guide, "Event Deserialization Considerations": an event whose
# field lists the client handed over unexpanded, as bitmaps.
def bitmapped(message: dict[str, Any]) -> dict[str, Any]:
    message["data"]["payload"]["ChangeEventHeader"]["changedFields"] = ["0x400800", "4-0x01"]
    return message


def test_r8_an_event_with_bitmaps_and_no_fallback_is_rejected_on_every_store(
    any_store: Store,
) -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    feed.add(subscriber.create(account(A1, 0, Name="Acme")))
    feed.add(bitmapped(subscriber.update(A1, at(10), Name="Acme Inc")))
    report = sync(engine_for(feed, any_store), feed)
    assert not report.ok
    assert [(r.origin, r.record_id) for r in report.rejected] == [("replay 2", A1)]
    assert "bitmap" in report.rejected[0].reason
    assert any_store.get_account(A1) == account(A1, 0, Name="Acme")
    assert "0x400800" not in any_store.get_account(A1).fields  # type: ignore[union-attr]


def test_r8_an_event_with_bitmaps_is_read_again_from_the_fallback_on_every_store(
    any_store: Store,
) -> None:
    org = org_with(account(A1, 0, Name="Acme"), contact(C1, A1, 0))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    feed.add(subscriber.create(account(A1, 0, Name="Acme")))
    feed.add(subscriber.create(contact(C1, A1, 0)))
    sync(engine_for(feed, any_store), feed)
    org.upsert(account(A1, 10, Name="Acme Inc"))
    feed.add(bitmapped(subscriber.update(A1, at(10), Name="Acme Inc")))
    report = sync(engine_for(feed, any_store), feed)
    assert report.ok
    assert any_store.get_account(A1) == account(A1, 10, Name="Acme Inc")
    assert [(e.contact_id, e.new_value) for e in report.activities] == [(C1, "Acme Inc")]
    assert (feed.checkpoint, feed.pending) == (3, 0)


# Change Data Capture Developer Guide, "Data Differences in Event Fields": over CometD a
# long text field's update carries {"diff": ...} in place of the value.
def test_r8_a_cometd_diff_applies_the_other_fields_and_asks_for_the_record_on_every_store(
    any_store: Store,
) -> None:
    feed, subscriber = ChangeEventSource(), Subscriber()
    feed.add(subscriber.create(account(A1, 0, Name="Acme", Description="Long text")))
    feed.add(
        subscriber.update(
            A1, at(10), Name="Acme Inc", Description={"diff": "--- \n+++ 9f86d0\n@@ -1 +1 @@\n"}
        )
    )
    report = sync(engine_for(feed, any_store), feed)
    assert report.rejected == ()
    assert [(r.ids, r.reason) for r in report.refetch] == [((A1,), "diffFields: Description")]
    acme = any_store.get_account(A1)
    assert acme is not None
    assert acme.fields == {"Name": "Acme Inc", "Description": "Long text"}


def test_r8_an_overflow_naming_the_empty_id_rereads_the_object() -> None:
    org = org_with(account(A1, 40, Name="Acme"))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    feed.add(subscriber.gap("Account", "GAP_OVERFLOW", ["000000000000000AAA"], at(41)))
    (page,) = feed.read_changes("Account", None, page_size=10)
    assert page == [account(A1, 40, Name="Acme")]


def test_r8_a_pubsub_client_event_carries_its_own_replay_id() -> None:
    feed = ChangeEventSource()
    payload = Subscriber().create(account(A1, 0, Name="Acme"))["data"]["payload"]
    feed.add({"id": "9b77cea1", "schemaId": "a01Vpg", "replayId": 18098167, "payload": payload})
    (page,) = feed.read_changes("Account", None, page_size=10)
    assert [change.origin for change in page] == ["replay 18098167"]  # type: ignore[union-attr]


# -- Any split into syncs, with failures and re-deliveries, ends in the same store ------

RECORDS = [A1, A2, C1, C2, C3]


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    subscriber = Subscriber()
    seconds = 0
    for _ in range(draw(st.integers(1, 14))):
        seconds += draw(st.integers(1, 400))
        record_id = draw(st.sampled_from(RECORDS))
        change = draw(st.sampled_from(["CREATE", "UPDATE", "UPDATE", "DELETE", "UNDELETE"]))
        value = draw(st.sampled_from(["a", "b", None]))
        if change == "DELETE":
            subscriber.delete(record_id, at(seconds))
        elif record_id.startswith("001"):
            if change == "UPDATE":
                subscriber.update(record_id, at(seconds), Industry=value)
            else:
                subscriber.create(account(record_id, seconds, Industry=value), change=change)
        else:
            owner = draw(st.sampled_from([A1, A2, None]))
            if change == "UPDATE":
                subscriber.update(record_id, at(seconds), AccountId=owner, Title=value)
            else:
                subscriber.create(contact(record_id, owner, seconds, Title=value), change=change)
    return subscriber.sent


def state(store: InMemoryStore) -> tuple[object, ...]:
    return (
        store.account_states([A1, A2]),
        store.contact_states([C1, C2, C3]),
        [entry.id for entry in store.activities()],
    )


@settings(max_examples=60)
@given(
    history=histories(),
    cuts=st.lists(st.integers(0, 14), max_size=4),
    failures=st.lists(st.booleans(), min_size=5, max_size=5),
    replays=st.lists(st.integers(0, 14), max_size=2),
    page_size=st.integers(1, 4),
)
def test_any_split_failures_and_redelivery_give_the_same_store(
    history: list[dict[str, Any]],
    cuts: list[int],
    failures: list[bool],
    replays: list[int],
    page_size: int,
) -> None:
    expected = InMemoryStore()
    whole = ChangeEventSource()
    feed_all(whole, history)
    sync(engine_for(whole, expected), whole)

    failing = list(failures)

    class FlakyStore(InMemoryStore):
        def apply(self, batch: Batch) -> None:
            if failing and failing.pop():
                raise StoreError("connection reset")
            super().apply(batch)

    store = FlakyStore()
    feed = ChangeEventSource()
    engine = engine_for(feed, store, page_size=page_size)
    delivered = 0
    for cut in [*sorted(cuts), len(history)]:
        # A resume from an older replay id delivers the events after it again.
        start = min(delivered, replays.pop()) if replays else delivered
        delivered = max(delivered, min(cut, len(history)))
        feed_all(feed, history[start:delivered])
        with contextlib.suppress(StoreError):
            sync(engine, feed)
    while feed.pending:
        with contextlib.suppress(StoreError):
            sync(engine, feed)
    assert state(store) == state(expected)
    assert feed.checkpoint == len(history)


# -- The documentation -------------------------------------------------------------------


def test_the_documented_example_runs() -> None:
    text = (ROOT / "docs" / "source-cdc.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "source-cdc.md", "exec"), namespace)
    store = namespace["store"]
    assert store.get_account(namespace["ACME"]).fields == {"Name": "Acme", "Industry": "Retail"}  # type: ignore[attr-defined]
    assert namespace["cdc"].checkpoint == 3  # type: ignore[attr-defined]


def test_r3_a_gap_reread_is_not_undone_by_an_older_event_of_its_second(any_store: Store) -> None:
    # Two saves in one second: the first's event arrives, the second's is lost (a gap). The
    # org, read after both, holds the second save, stamped to the second.
    org = org_with(account(A1, 0, Name="Acme", Industry="B"))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    engine = engine_for(feed, any_store)
    feed.add(subscriber.update(A1, at(0.3), Industry="A"))
    feed.add(subscriber.gap("Account", "GAP_UPDATE", [A1], at(0.8)))

    report = sync(engine, feed)

    assert report.ok
    account_now = any_store.get_account(A1)
    assert account_now is not None
    assert account_now.fields["Industry"] == "B"


def test_r8_a_diffed_text_field_is_read_from_the_fallback_on_every_store(
    any_store: Store,
) -> None:
    # Change Data Capture Developer Guide, "Change Event Fields": a long text field's change
    # may come as a diff (over CometD, {"diff": ...}); only the record has its value.
    org = org_with(account(A1, 0, Name="Acme 2", Description="new text"))
    feed, subscriber = ChangeEventSource(fallback=org), Subscriber()
    engine = engine_for(feed, any_store)
    feed.add(subscriber.create(account(A1, -60, Name="Acme", Description="old text")))
    sync(engine, feed)
    feed.add(subscriber.update(A1, at(0.4), Name="Acme 2", Description={"diff": "@@ -1 +1 @@"}))

    report = sync(engine, feed)

    assert report.ok
    assert report.refetch == ()
    account_now = any_store.get_account(A1)
    assert account_now is not None
    assert account_now.fields == {"Name": "Acme 2", "Description": "new text"}


def test_r3_a_rest_read_after_events_of_its_second_applies_other_values(
    any_store: Store,
) -> None:
    # An event's commitTimestamp has milliseconds; the REST read of the same second has
    # none and is taken when the save began: both are of one second (R3).
    feed, subscriber = ChangeEventSource(), Subscriber()
    feed.add(subscriber.create(account(A1, 0.4, Name="Acme", Industry="A")))
    sync(engine_for(feed, any_store), feed)
    org = org_with(account(A1, 0, Name="Acme", Industry="B"))  # a later save, same second

    report = SyncEngine(source=org, store=any_store, clock=lambda: NOW).sync()

    assert (report.accounts_upserted, report.stale) == (1, 0)
    account_now = any_store.get_account(A1)
    assert account_now is not None
    assert account_now.fields["Industry"] == "B"


def test_an_event_naming_an_odd_entity_is_held_for_the_engine_to_reject() -> None:
    feed = ChangeEventSource()
    for entity in (["Account"], {"name": "Account"}, 7):
        feed.add({"ChangeEventHeader": {"entityName": entity}}, replay_id=1)
    assert feed.pending == 3
