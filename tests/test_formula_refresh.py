"""`SyncEngine.refresh_formulas`: calculated fields read again, applied as reconcile does;
and the warnings a source gives, in the report."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acctsync import (
    Account,
    ActivityPolicy,
    Batch,
    Change,
    Checkpoint,
    ConfigurationError,
    Contact,
    Deletion,
    FieldNameStore,
    FieldValue,
    FormulaSource,
    InvalidRecordError,
    ObjectType,
    Origin,
    RawRecord,
    SourceError,
    Store,
    SyncEngine,
    SyncReport,
    Unreadable,
    WarningSource,
)
from acctsync.sources.cdc import ChangeEventSource
from acctsync.sources.files import ExportFolder
from acctsync.testing import (
    ConformanceError,
    InMemoryEventStream,
    InMemorySource,
    InMemoryStore,
    check_source,
    make_id,
)
from acctsync.testing.strategies import field_values

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)  # past the lookback window: a sync reads T0 no more
CLOCK = datetime(2024, 6, 1, tzinfo=UTC)
CLOCK_MICROS = int((CLOCK - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
A1, A2, A3 = (make_id("001", n) for n in (1, 2, 3))
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))
FORMULAS = {"Account": ("Score__c",), "Contact": ("Rank__c",)}


def seeded(store: Store, **engine_options: Any) -> tuple[InMemorySource, SyncEngine]:
    """An org synced into ``store``, whose T0 records a sync no longer re-reads."""
    org = InMemorySource(formula_fields=FORMULAS)
    org.upsert(Account(id=A1, fields={"Name": "Acme", "Score__c": 1}, system_modstamp=T0))
    org.upsert(Account(id=A2, fields={"Name": "Globex", "Score__c": 5}, system_modstamp=T1))
    org.upsert(Contact(id=C1, account_id=A1, fields={"Rank__c": "A"}, system_modstamp=T0))
    org.upsert(Contact(id=C2, account_id=A1, fields={"Rank__c": "B"}, system_modstamp=T0))
    org.upsert(Contact(id=C3, account_id=A2, fields={"Rank__c": "C"}, system_modstamp=T1))
    engine = SyncEngine(source=org, store=store, clock=lambda: CLOCK, **engine_options)
    engine.sync()
    return org, engine


def account(store: Store, account_id: str) -> Account:
    found = store.get_account(account_id)
    assert found is not None
    return found


def watermarks(store: Store) -> dict[str, datetime | None]:
    return {stream: store.watermark(stream) for stream in ("Account", "Contact")}


# -- Refreshing ---------------------------------------------------------------------------


def test_a_recalculated_formula_only_a_refresh_sees_is_applied_and_logged(
    any_store: Store,
) -> None:
    org, engine = seeded(any_store)
    org.recalculate("Account", A1, {"Score__c": 2})

    synced = engine.sync()  # the stamp is behind the lookback window: no sync reads it
    assert (synced.refreshed, account(any_store, A1).fields["Score__c"]) == (0, 1)
    report = engine.refresh_formulas()

    assert account(any_store, A1).fields == {"Name": "Acme", "Score__c": 2}
    assert account(any_store, A1).system_modstamp == T0
    assert (report.refreshed, report.accounts_upserted, report.contacts_upserted) == (1, 1, 0)
    assert report.already_applied == 4  # the other records, read with the same values
    assert report.ok
    entries = {(e.contact_id, e.field, e.old_value, e.new_value) for e in report.activities}
    assert entries == {(C1, "Score__c", 1, 2), (C2, "Score__c", 1, 2)}
    for entry in report.activities:
        assert entry.origin is Origin.SALESFORCE
        assert entry.occurred_at == CLOCK
        assert f"~r{CLOCK_MICROS}:" in entry.id
    assert [e.id for e in any_store.activities()] == [e.id for e in report.activities]


def test_a_sync_that_rereads_a_recalculated_record_keeps_its_local_edits(
    any_store: Store,
) -> None:
    # A2 (T1) is in the next sync's lookback window: its re-read shows another Score__c
    # under the same stamp, which the source says is calculated: a recalculation, not a
    # second save in that second (S3: the edit stays).
    org, engine = seeded(any_store)
    engine.edit_account_field(contact_id=C3, field="Name", value="Local name")
    org.recalculate("Account", A2, {"Score__c": 6})

    report = engine.sync()

    assert account(any_store, A2).fields == {"Name": "Local name", "Score__c": 6}
    assert (report.refreshed, report.local_edits_discarded) == (1, 0)
    entries = [(e.contact_id, e.field, e.old_value, e.new_value) for e in report.activities]
    assert entries == [(C3, "Score__c", 5, 6)]
    assert all(f"~r{CLOCK_MICROS}:" in e.id for e in report.activities)
    assert engine.sync().refreshed == 0  # read again, it is the version stored


def test_a_calculated_field_read_for_the_first_time_logs_nothing(any_store: Store) -> None:
    # The version came from a change event, which carries no calculated field; the
    # REST read of the same save has it: not a save, and no change of Score__c (S7).
    events = InMemorySource()
    events.upsert(Account(id=A1, fields={"Name": "Acme"}, system_modstamp=T0))
    events.upsert(Contact(id=C1, account_id=A1, system_modstamp=T0))
    SyncEngine(source=events, store=any_store, clock=lambda: CLOCK).sync()
    org = InMemorySource(formula_fields=FORMULAS)
    org.upsert(Account(id=A1, fields={"Name": "Acme", "Score__c": 1}, system_modstamp=T0))
    engine = SyncEngine(source=org, store=any_store, clock=lambda: CLOCK)
    engine.edit_account_field(contact_id=C1, field="Name", value="Local name")

    report = engine.sync()

    assert account(any_store, A1).fields == {"Name": "Local name", "Score__c": 1}
    assert (report.refreshed, report.activities) == (1, ())


def test_a_newer_save_after_a_recalculation_in_one_batch_is_a_save() -> None:
    # Change events of one account in one batch: a roll-up recalculated in its stored
    # second (T0), then a save of its Name (T0 + 5 s) and another recalculation in that
    # second, a later commit. Each is placed on its own: the save overwrites the local
    # edit (S3), and every entry has an id of its own.
    org = InMemorySource(formula_fields=FORMULAS)
    org.upsert(Account(id=A1, fields={"Name": "Acme", "Score__c": 5}, system_modstamp=T0))
    org.upsert(Contact(id=C1, account_id=A1, system_modstamp=T0))
    store = InMemoryStore()
    engine = SyncEngine(source=org, store=store, clock=lambda: CLOCK)
    engine.sync()
    engine.edit_account_field(contact_id=C1, field="Phone", value="555-LOCAL")
    stream = InMemoryEventStream(idle=0)
    for stamp, commit, fields in (
        (T0, 101, {"Score__c": 6}),
        (T0 + timedelta(seconds=5), 102, {"Name": "Acme Inc"}),
        (T0 + timedelta(seconds=5), 103, {"Score__c": 7}),
    ):
        header = {
            "entityName": "Account",
            "recordIds": [A1],
            "changeType": "UPDATE",
            "changeOrigin": "",
            "transactionKey": f"t{commit}",
            "sequenceNumber": 1,
            "commitTimestamp": int(stamp.timestamp() * 1000),
            "commitNumber": commit,
            "nulledFields": [],
            "diffFields": [],
            "changedFields": list(fields),
        }
        stream.publish({"ChangeEventHeader": header, **fields})
    store.apply(Batch(checkpoints=(Checkpoint(name=stream.name, position=bytes(8)),)))

    (report,) = engine.follow(stream)

    assert account(store, A1).fields == {"Name": "Acme Inc", "Score__c": 7}
    assert (report.refreshed, report.local_edits_discarded) == (1, 1)
    ids = [e.id for e in store.activities()]
    assert len(ids) == len(set(ids)) == len(report.activities) + 1  # and the edit's own
    changes = [(e.field, e.old_value, e.new_value) for e in report.activities]
    assert changes == [
        ("Score__c", 5, 6),
        ("Name", "Acme", "Acme Inc"),
        ("Phone", "555-LOCAL", None),
        ("Score__c", 6, 7),
    ]


def test_r3_a_second_save_in_the_second_is_newer_though_a_formula_changed_too(
    any_store: Store,
) -> None:
    org, engine = seeded(any_store)
    engine.edit_account_field(contact_id=C3, field="Name", value="Local name")
    org.upsert(Account(id=A2, fields={"Name": "Globex Inc", "Score__c": 6}, system_modstamp=T1))

    report = engine.sync()

    assert account(any_store, A2).fields == {"Name": "Globex Inc", "Score__c": 6}
    assert (report.refreshed, report.local_edits_discarded) == (0, 1)


def test_a_contact_formula_is_refreshed_and_the_contact_stays_on_its_account(
    any_store: Store,
) -> None:
    org, engine = seeded(any_store)
    org.recalculate("Contact", C2, {"rank__c": "A+"})  # R9: named in any case

    report = engine.refresh_formulas()

    contact = any_store.get_contact(C2)
    assert contact is not None
    assert (contact.account_id, contact.fields) == (A1, {"Rank__c": "A+"})
    assert sorted(any_store.contact_ids(A1)) == [C1, C2]
    assert (report.refreshed, report.contacts_upserted, report.activities) == (1, 1, ())


def test_s3_a_refresh_keeps_local_edits(any_store: Store) -> None:
    org, engine = seeded(any_store)
    engine.edit_account_field(contact_id=C1, field="Name", value="Acme (local)")
    engine.edit_account_field(contact_id=C3, field="Score__c", value=99)
    org.recalculate("Account", A1, {"Score__c": 2})
    org.recalculate("Account", A2, {"Score__c": 6})

    report = engine.refresh_formulas()

    assert account(any_store, A1).fields == {"Name": "Acme (local)", "Score__c": 2}
    # The local edit of the formula field itself stays too: contacts see no change.
    assert account(any_store, A2).fields == {"Name": "Globex", "Score__c": 99}
    assert report.local_edits_discarded == 0
    assert report.refreshed == 2
    assert {(e.account_id, e.field) for e in report.activities} == {(A1, "Score__c")}
    # A newer Salesforce version still overwrites every local edit (S3).
    org.upsert(Account(id=A2, fields={"Name": "Globex", "Score__c": 6}, system_modstamp=CLOCK))
    assert engine.sync().local_edits_discarded == 1
    assert account(any_store, A2).fields == {"Name": "Globex", "Score__c": 6}


def test_s8_a_refresh_of_an_account_over_the_threshold_logs_nothing_and_says_so(
    any_store: Store,
) -> None:
    org, engine = seeded(any_store, policy=ActivityPolicy(max_contacts_per_account=1))
    org.recalculate("Account", A1, {"Score__c": 2})
    org.recalculate("Account", A2, {"Score__c": 6})

    report = engine.refresh_formulas()

    assert account(any_store, A1).fields["Score__c"] == 2
    assert [(s.account_id, s.contact_count, s.entries_skipped) for s in report.suppressed] == [
        (A1, 2, 2)
    ]
    assert [(e.account_id, e.contact_id) for e in report.activities] == [(A2, C3)]


def test_a_refresh_that_finds_nothing_changed_writes_nothing(any_store: Store) -> None:
    _, engine = seeded(any_store)
    report = engine.refresh_formulas()
    again = engine.refresh_formulas()
    assert (report.refreshed, report.already_applied) == (0, 5)
    assert (again.refreshed, again.already_applied, again.activities) == (0, 5, ())
    assert list(any_store.activities()) == []


def test_a_refresh_moves_no_watermark_and_deletes_nothing(any_store: Store) -> None:
    org, engine = seeded(any_store)
    before = watermarks(any_store)
    org.purge("Account", A2)  # gone from the org: only a reconciliation deletes it
    org.recalculate("Account", A1, {"Score__c": 2})

    report = engine.refresh_formulas()

    assert watermarks(any_store) == before
    assert dict(report.watermarks) == before
    assert (report.accounts_deleted, report.contacts_deleted) == (0, 0)
    assert account(any_store, A2).fields == {"Name": "Globex", "Score__c": 5}
    assert list(any_store.contact_ids(A2)) == [C3]


def test_records_not_held_live_in_their_second_are_left_to_the_next_sync(
    any_store: Store,
) -> None:
    org, engine = seeded(any_store)
    # Newer in the org than in the store: a save the next sync brings whole.
    org.upsert(Account(id=A1, fields={"Name": "Acme Inc", "Score__c": 2}, system_modstamp=CLOCK))
    # Not held at all yet.
    org.upsert(Account(id=A3, fields={"Name": "Initech", "Score__c": 7}, system_modstamp=CLOCK))

    report = engine.refresh_formulas()

    assert account(any_store, A1).fields == {"Name": "Acme", "Score__c": 1}
    assert any_store.get_account(A3) is None
    assert (report.refreshed, report.accounts_upserted, report.activities) == (0, 0, ())
    assert report.ok  # nothing to fetch again: the next sync reads them anyway
    engine.sync()
    assert account(any_store, A1).fields == {"Name": "Acme Inc", "Score__c": 2}
    assert account(any_store, A3).fields == {"Name": "Initech", "Score__c": 7}


class Formulas:
    """An org whose formula read gives the pages a test sets, and counts its requests."""

    def __init__(self, org: InMemorySource, pages: Mapping[str, list[list[Change]]]) -> None:
        self.org = org
        self.pages = pages
        self.requests_made = 0

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        return self.org.read_changes(object_type, since, page_size=page_size)

    def formula_fields(self, object_type: ObjectType) -> Collection[str]:
        return self.org.formula_fields(object_type)

    def read_formulas(self, object_type: ObjectType, *, page_size: int) -> Iterator[list[Change]]:
        for page in self.pages.get(object_type, []):
            self.requests_made += 1
            yield page


def test_a_tombstone_and_an_older_read_are_left_alone(any_store: Store) -> None:
    org, engine = seeded(any_store)
    org.delete(Deletion(object_type="Account", id=A2, deleted_at=T1 + timedelta(hours=1)))
    engine.sync()
    reads = Formulas(
        org,
        {
            "Account": [
                [
                    # A read older than the stored version, and one of a deleted account.
                    Account(id=A1, fields={"Score__c": 0}, system_modstamp=T0 - timedelta(1)),
                    Account(
                        id=A2, fields={"Score__c": 6}, system_modstamp=T1 + timedelta(hours=1)
                    ),
                ]
            ]
        },
    )

    report = SyncEngine(source=reads, store=any_store, clock=lambda: CLOCK).refresh_formulas()

    assert account(any_store, A1).fields["Score__c"] == 1
    assert any_store.get_account(A2) is None
    assert (report.refreshed, report.already_applied, report.stale) == (0, 0, 0)
    assert (report.accounts_upserted, report.activities) == (0, ())


def test_raw_payloads_decode_and_bad_ones_are_rejected_with_the_rest_applied(
    any_store: Store,
) -> None:
    org, _ = seeded(any_store)
    stamp = "2024-03-01T09:00:00.000+0000"  # T0, as REST writes it
    reads = Formulas(
        org,
        {
            "Account": [
                [
                    RawRecord(
                        object_type="Account",
                        payload={
                            "attributes": {"type": "Account"},
                            "Id": A1,
                            "SystemModstamp": stamp,
                            "Score__c": 3,
                        },
                    ),
                    RawRecord(object_type="Account", payload={"Score__c": 4}, origin="page 1"),
                ]
            ],
            "Contact": [
                [
                    # A formula read names no account: the contact keeps its own (S4).
                    RawRecord(
                        object_type="Contact",
                        payload={
                            "attributes": {"type": "Contact"},
                            "Id": C1,
                            "SystemModstamp": stamp,
                            "Rank__c": "A+",
                        },
                    ),
                    Unreadable(object_type="Contact", record_id=C2, reason="truncated row"),
                ]
            ],
        },
    )

    report = SyncEngine(source=reads, store=any_store, clock=lambda: CLOCK).refresh_formulas()

    assert account(any_store, A1).fields["Score__c"] == 3
    contact = any_store.get_contact(C1)
    assert contact is not None
    assert (contact.account_id, contact.fields["Rank__c"]) == (A1, "A+")
    assert sorted(any_store.contact_ids(A1)) == [C1, C2]
    assert not report.ok
    assert [(r.object_type, r.record_id, r.origin) for r in report.rejected] == [
        ("Account", None, "page 1"),
        ("Contact", C2, None),
    ]
    assert "Id" in report.rejected[0].reason
    assert report.rejected[1].reason == "truncated row"
    assert (report.refreshed, report.pages, report.api_requests) == (2, 2, 2)


def test_r9_a_formula_field_read_in_another_case_is_the_stored_field(any_store: Store) -> None:
    org, _ = seeded(any_store)
    upper = InMemorySource(formula_fields={"Account": ("SCORE__C",)})
    for record in org.read_all("Account", page_size=10):
        for item in record:
            assert isinstance(item, Account)
            upper.upsert(item)
    upper.recalculate("Account", A1, {"Score__c": 2})

    report = SyncEngine(source=upper, store=any_store, clock=lambda: CLOCK).refresh_formulas()

    assert account(any_store, A1).fields == {"Name": "Acme", "Score__c": 2}
    assert {e.field for e in report.activities} == {"Score__c"}
    assert isinstance(any_store, FieldNameStore)
    assert sorted(any_store.field_names("Account")) == ["Name", "Score__c"]


def test_a_source_that_cannot_read_formulas_alone_cannot_refresh(tmp_path: Path) -> None:
    store = InMemoryStore()
    seeded(store)
    for source in (ChangeEventSource(), ExportFolder(tmp_path)):
        assert not isinstance(source, FormulaSource)
        engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
        with pytest.raises(ConfigurationError, match="cannot refresh"):
            engine.refresh_formulas()
    # An org with no calculated fields reads nothing, and changes nothing.
    report = SyncEngine(source=InMemorySource(), store=store).refresh_formulas()
    assert (report.pages, report.refreshed, report.already_applied) == (0, 0, 0)


# -- The same as a reconciliation ---------------------------------------------------------


def _org_of(draw: st.DrawFn) -> InMemorySource:
    org = InMemorySource(formula_fields=FORMULAS)
    contact_number = 0
    for number in range(draw(st.integers(1, 4))):
        account_id = make_id("001", number)
        stamp = T0 + timedelta(seconds=draw(st.integers(0, 3)))
        fields = {"Name": f"Account {number}", "Score__c": draw(field_values())}
        org.upsert(Account(id=account_id, fields=fields, system_modstamp=stamp))
        for _ in range(draw(st.integers(0, 3))):
            org.upsert(
                Contact(
                    id=make_id("003", contact_number),
                    account_id=account_id,
                    fields={"Rank__c": draw(field_values())},
                    system_modstamp=stamp,
                )
            )
            contact_number += 1
    if draw(st.booleans()):  # a tombstone, of the account and its contacts
        org.delete(Deletion(object_type="Account", id=make_id("001", 0), deleted_at=T1))
    return org


Edit = tuple[str, str, FieldValue]  # through a contact: field, value
Recalculation = tuple[ObjectType, str, FieldValue]  # of a record's one formula field


@st.composite
def recalculated_orgs(
    draw: st.DrawFn,
) -> tuple[InMemorySource, list[Edit], list[Recalculation]]:
    """An org; local edits to make once it is synced; then new formula values of its live
    records, under their stamps."""
    org = _org_of(draw)
    live: dict[ObjectType, list[str]] = {
        kind: [
            record.id
            for page in org.read_all(kind, page_size=100)
            for record in page
            if isinstance(record, Account | Contact)
        ]
        for kind in ("Account", "Contact")
    }
    edits = [
        (contact_id, draw(st.sampled_from(["Name", "Score__c"])), draw(field_values()))
        for contact_id in live["Contact"]
        if draw(st.booleans())
    ]
    recalculations = [
        (kind, record_id, draw(field_values()))
        for kind, ids in live.items()
        for record_id in ids
        if draw(st.booleans())
    ]
    return org, edits, recalculations


def _state(store: InMemoryStore) -> tuple[object, ...]:
    """All a store holds: records with their local edits, the log, field names, watermarks."""
    return (
        dict(store.account_states(store.live_ids("Account"))),
        dict(store.contact_states(store.live_ids("Contact"))),
        store.activities(),
        {kind: sorted(store.field_names(kind)) for kind in ("Account", "Contact")},
        watermarks(store),
    )


@given(recalculated_orgs(), st.integers(1, 3))
def test_a_refresh_leaves_the_store_as_a_reconciliation_does(
    case: tuple[InMemorySource, list[Edit], list[Recalculation]], threshold: int
) -> None:
    org, edits, recalculations = case
    runs = []
    for refresh in (SyncEngine.refresh_formulas, SyncEngine.reconcile):
        store = InMemoryStore()
        engine = SyncEngine(
            source=org,
            store=store,
            policy=ActivityPolicy(max_contacts_per_account=threshold),
            clock=lambda: CLOCK,
        )
        engine.sync()
        for contact_id, field, value in edits:
            engine.edit_account_field(contact_id=contact_id, field=field, value=value)
        runs.append((store, engine, refresh))
    for kind, record_id, value in recalculations:
        org.recalculate(kind, record_id, {FORMULAS[kind][0]: value})

    (refreshed, by_refresh), (reconciled, by_reconcile) = (
        (store, refresh(engine)) for store, engine, refresh in runs
    )

    assert _state(refreshed) == _state(reconciled)
    assert by_refresh.refreshed == by_reconcile.refreshed
    assert by_refresh.activities == by_reconcile.activities
    assert by_refresh.suppressed == by_reconcile.suppressed


# -- InMemorySource as a FormulaSource ----------------------------------------------------


def test_the_fake_org_reads_formula_fields_of_live_records_in_pages() -> None:
    org = InMemorySource(formula_fields={"Account": ("Score__c", "Health__c")})
    org.upsert(Account(id=A2, fields={"Name": "B", "SCORE__C": 2}, system_modstamp=T0))
    org.upsert(Account(id=A1, fields={"Name": "A", "Score__c": 1}, system_modstamp=T0))
    org.upsert(Account(id=A3, fields={"Name": "C"}, system_modstamp=T1))
    org.delete(Deletion(object_type="Account", id=A3, deleted_at=T1))
    org.add_raw(
        "Account",
        {"Id": make_id("001", 4), "SystemModstamp": "2024-03-03T00:00:00Z", "Score__c": 4},
    )
    org.add_raw("Account", {"Name": "no Id"})

    pages = [list(page) for page in org.read_formulas("Account", page_size=2)]

    assert [len(page) for page in pages] == [2, 1]
    assert [(r.id, r.fields) for page in pages for r in page] == [  # type: ignore[union-attr]
        (A1, {"Score__c": 1, "Health__c": None}),
        (A2, {"Score__c": 2, "Health__c": None}),
        (make_id("001", 4), {"Score__c": 4, "Health__c": None}),
    ]
    assert list(org.read_formulas("Contact", page_size=2)) == []  # none calculated
    assert isinstance(org, FormulaSource)
    check_source(lambda records: _filled(InMemorySource(formula_fields=FORMULAS), records))


def _filled(org: InMemorySource, records: Sequence[Account | Contact | Deletion]) -> Any:
    for record in records:
        if isinstance(record, Deletion):
            org.delete(record)
        else:
            org.upsert(record)
    return org


def test_recalculate_changes_only_calculated_fields_of_live_records() -> None:
    org = InMemorySource(formula_fields=FORMULAS)
    org.upsert(Account(id=A1, fields={"Name": "Acme"}, system_modstamp=T0))
    org.recalculate("Account", A1, {"SCORE__C": 3})
    assert [list(p) for p in org.read_all("Account", page_size=5)] == [
        [Account(id=A1, fields={"Name": "Acme", "Score__c": 3}, system_modstamp=T0)]
    ]
    with pytest.raises(InvalidRecordError, match="not a calculated field"):
        org.recalculate("Account", A1, {"Name": "Other"})
    with pytest.raises(InvalidRecordError, match="no live record"):
        org.recalculate("Account", A2, {"Score__c": 1})
    with pytest.raises(InvalidRecordError, match="one name"):
        InMemorySource(formula_fields={"Account": "Score__c"})


class GhostFormulas(InMemorySource):
    """Reads formulas of a deleted record too: what the conformance check must catch."""

    def read_formulas(self, object_type: ObjectType, *, page_size: int) -> Any:
        yield from super().read_formulas(object_type, page_size=page_size)
        for page in self.read_all(object_type, page_size=page_size):
            deleted = [r for r in page if isinstance(r, Deletion)]
            if deleted and object_type == "Account":
                yield [Account(id=deleted[0].id, fields={}, system_modstamp=T0)]


def test_the_conformance_check_catches_a_formula_read_of_a_deleted_record() -> None:
    with pytest.raises(ConformanceError, match="live Account records only"):
        check_source(lambda records: _filled(GhostFormulas(formula_fields=FORMULAS), records))


# -- Warnings -----------------------------------------------------------------------------


class Degrading:
    """An org read a lesser way, which says so: one warning per read, kept until taken."""

    def __init__(self, org: InMemorySource, *, fail: bool = False) -> None:
        self.org = org
        self.fail = fail
        self.pending: list[str] = []

    def _warn(self, object_type: str) -> None:
        self.pending.append(f"{object_type}: the Bulk API job failed; read by REST")
        if self.fail:
            raise SourceError("the REST read failed too")

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        self._warn(object_type)
        return self.org.read_changes(object_type, since, page_size=page_size)

    def read_all(self, object_type: ObjectType, *, page_size: int) -> Iterator[Sequence[Change]]:
        self._warn(object_type)
        return self.org.read_all(object_type, page_size=page_size)

    def formula_fields(self, object_type: ObjectType) -> Collection[str]:
        return self.org.formula_fields(object_type)

    def read_formulas(
        self, object_type: ObjectType, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        self._warn(object_type)
        return self.org.read_formulas(object_type, page_size=page_size)

    def take_warnings(self) -> Sequence[str]:
        taken, self.pending = tuple(self.pending), []
        return taken


EXPECTED_WARNINGS = (
    "Account: the Bulk API job failed; read by REST",
    "Contact: the Bulk API job failed; read by REST",
)


def test_a_run_reports_the_warnings_its_source_gave_and_stays_ok() -> None:
    store = InMemoryStore()
    org, _ = seeded(store)
    source = Degrading(org)
    assert isinstance(source, WarningSource)
    engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
    for run in (engine.sync, engine.reconcile, engine.refresh_formulas):
        report = run()
        assert report.warnings == EXPECTED_WARNINGS
        assert report.ok
        assert "warnings=2>" in repr(report)
        assert source.pending == []


def test_a_failed_runs_warnings_are_not_the_next_runs() -> None:
    store = InMemoryStore()
    org, _ = seeded(store)
    source = Degrading(org, fail=True)
    engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
    with pytest.raises(SourceError):
        engine.sync()
    assert source.pending  # left by the failed run
    source.fail = False
    assert engine.sync().warnings == EXPECTED_WARNINGS


def test_a_source_without_warnings_reports_none() -> None:
    store = InMemoryStore()
    _, engine = seeded(store)
    assert engine.sync().warnings == ()
    assert SyncReport().warnings == ()
    assert attrs.evolve(SyncReport(), warnings=("w",)).ok
    assert not isinstance(InMemorySource(), WarningSource)
