"""`SyncEngine.reconcile`: what a sync cannot see, a full read finds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from acctsync import (
    Account,
    ActivityPolicy,
    ConfigurationError,
    Contact,
    Origin,
    RawRecord,
    SyncEngine,
)
from acctsync.sources.cdc import ChangeEventSource
from acctsync.sources.files import ExportFolder
from acctsync.testing import InMemorySource, InMemoryStore, make_id

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CLOCK = datetime(2024, 6, 1, tzinfo=UTC)
A1, A2 = make_id("001", 1), make_id("001", 2)
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))


def seeded() -> tuple[InMemorySource, InMemoryStore, SyncEngine]:
    source, store = InMemorySource(formula_fields={"Account": ("Tier__c",)}), InMemoryStore()
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Tier__c": "Gold"}, system_modstamp=T0))
    source.upsert(Account(id=A2, fields={"Name": "Globex"}, system_modstamp=T0))
    for contact_id, account_id in ((C1, A1), (C2, A1), (C3, A2)):
        source.upsert(Contact(id=contact_id, account_id=account_id, system_modstamp=T0))
    engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
    engine.sync()
    return source, store, engine


def test_r3_a_second_save_in_the_stored_second_is_a_newer_version_in_a_reconciliation() -> None:
    # Not a recalculation: Name is no calculated field. The save overwrites the local
    # edit (S3), as a sync that read it would.
    source, store, engine = seeded()
    engine.edit_account_field(contact_id=C1, field="Phone", value="555-LOCAL")
    source.upsert(
        Account(id=A1, fields={"Name": "Acme Inc", "Tier__c": "Gold"}, system_modstamp=T0)
    )

    report = engine.reconcile()

    account = store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme Inc", "Tier__c": "Gold"}
    assert (report.refreshed, report.local_edits_discarded, report.accounts_upserted) == (0, 1, 1)
    assert engine.sync().already_applied == 5  # and the next sync holds it as it is


def test_a_record_purged_beyond_the_recycle_bin_is_deleted_with_its_contacts() -> None:
    source, store, engine = seeded()
    source.purge("Account", A2)
    source.purge("Contact", C2)

    assert engine.sync().accounts_deleted == 0  # a sync cannot see what is gone
    report = engine.reconcile()

    assert store.get_account(A2) is None
    assert store.contact_ids(A2) == []
    assert store.get_contact(C3) is None
    assert store.get_contact(C2) is None
    assert store.contact_ids(A1) == [C1]
    assert (report.accounts_deleted, report.contacts_deleted) == (1, 2)
    assert store.get_account(A1) is not None


def test_a_formula_value_changed_under_the_same_stamp_is_refreshed_and_logged() -> None:
    source, store, engine = seeded()
    source.recalculate("Account", A1, {"Tier__c": "Platinum"})
    # Other values under the stored stamp, in a calculated field alone: a recalculation.
    report = engine.reconcile()

    account = store.get_account(A1)
    assert account is not None
    assert account.fields["Tier__c"] == "Platinum"
    assert report.refreshed == 1
    assert {(e.contact_id, e.field, e.old_value, e.new_value) for e in report.activities} == {
        (C1, "Tier__c", "Gold", "Platinum"),
        (C2, "Tier__c", "Gold", "Platinum"),
    }
    assert all(e.origin is Origin.SALESFORCE for e in report.activities)
    # The entries of the original version and of the refresh are distinct, and kept.
    logged = [e.id for e in store.activities()]
    assert len(logged) == len(set(logged)) == 2


def test_a_second_reconciliation_changes_and_logs_nothing() -> None:
    source, store, engine = seeded()
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Tier__c": "Silver"}, system_modstamp=T0))
    source.purge("Contact", C3)
    engine.reconcile()
    before = list(store.activities())

    again = engine.reconcile()

    assert (again.refreshed, again.accounts_deleted, again.contacts_deleted) == (0, 0, 0)
    assert again.activities == ()
    assert list(store.activities()) == before


def test_a_value_changing_back_and_forth_logs_each_change() -> None:
    source, store, _ = seeded()
    for tier in ("Silver", "Gold", "Silver"):
        source.upsert(Account(id=A1, fields={"Name": "Acme", "Tier__c": tier}, system_modstamp=T0))
        clock = CLOCK + timedelta(days=len(list(store.activities())))
        SyncEngine(source=source, store=store, clock=lambda c=clock: c).reconcile()  # type: ignore[misc]
    changes = [(e.contact_id, e.old_value, e.new_value) for e in store.activities()]
    assert changes == [
        (C1, "Gold", "Silver"),
        (C2, "Gold", "Silver"),
        (C1, "Silver", "Gold"),
        (C2, "Silver", "Gold"),
        (C1, "Gold", "Silver"),
        (C2, "Gold", "Silver"),
    ]


def test_s3_a_refresh_keeps_local_edits_and_their_entries_stay_distinct() -> None:
    source, store, engine = seeded()
    engine.edit_account_field(contact_id=C1, field="Name", value="Acme (local)")
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Tier__c": "Silver"}, system_modstamp=T0))

    report = engine.reconcile()

    account = store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme (local)", "Tier__c": "Silver"}
    assert report.local_edits_discarded == 0
    assert {e.field for e in report.activities} == {"Tier__c"}
    assert all(e.occurred_at == CLOCK for e in report.activities)
    # A later local edit gets an entry of its own, not one the first edit's id took.
    engine.edit_account_field(contact_id=C1, field="Name", value="Acme (again)")
    names = [e.new_value for e in store.activities() if e.field == "Name"]
    assert names == ["Acme (local)", "Acme (local)", "Acme (again)", "Acme (again)"]


def test_a_contact_moved_under_the_same_stamp_is_a_newer_version() -> None:
    # A move is a save, never a recalculation (R3).
    source, store, engine = seeded()
    source.upsert(Contact(id=C3, account_id=A1, system_modstamp=T0))
    report = engine.reconcile()
    assert store.contact_ids(A1) == [C1, C2, C3]
    assert (report.refreshed, report.contacts_upserted) == (0, 1)


def test_s8_a_refresh_of_a_large_account_is_suppressed_not_logged() -> None:
    source, store, _ = seeded()
    engine = SyncEngine(
        source=source,
        store=store,
        policy=ActivityPolicy(max_contacts_per_account=1),
        clock=lambda: CLOCK,
    )
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Tier__c": "Silver"}, system_modstamp=T0))
    report = engine.reconcile()
    assert report.activities == ()
    assert [(s.account_id, s.contact_count) for s in report.suppressed] == [(A1, 2)]


class Broken:
    """The source's records and then one it cannot decode; not a complete source."""

    def __init__(self, inner: InMemorySource) -> None:
        self.inner = inner

    def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Any:
        yield from self.inner.read_changes(object_type, since, page_size=page_size)
        if object_type == "Account":
            yield [RawRecord(object_type="Account", payload={"Name": "no Id"})]


class BrokenComplete(Broken):
    def read_all(self, object_type: Any, *, page_size: int) -> Any:
        return self.read_changes(object_type, None, page_size=page_size)


def test_a_read_that_rejected_anything_deletes_nothing() -> None:
    source, store, _ = seeded()
    source.purge("Account", A2)
    report = SyncEngine(
        source=BrokenComplete(source), store=store, clock=lambda: CLOCK
    ).reconcile()
    assert not report.ok
    assert report.accounts_deleted == 0
    assert store.get_account(A2) is not None


def test_a_store_that_cannot_list_its_records_cannot_reconcile() -> None:
    class Unlisted:
        def __init__(self, inner: InMemoryStore) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "live_ids":
                raise AttributeError(name)
            return getattr(self.inner, name)

    source, store, _ = seeded()
    engine = SyncEngine(source=source, store=Unlisted(store), clock=lambda: CLOCK)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot reconcile"):
        engine.reconcile()


def test_a_source_that_cannot_read_the_whole_org_cannot_reconcile(tmp_path: Path) -> None:
    # A stream of events or a folder of exports lacks what the org still holds: taking
    # its read for the org would delete the store.
    source, store, _ = seeded()
    for partial in (ChangeEventSource(), ExportFolder(tmp_path), Broken(source)):
        engine = SyncEngine(source=partial, store=store, clock=lambda: CLOCK)
        with pytest.raises(ConfigurationError, match="cannot reconcile"):
            engine.reconcile()
    assert len(store.accounts()) == 2


def test_a_record_the_org_holds_live_replaces_a_tombstone() -> None:
    # A CDC DELETE without its merge, or a purge that should not have been: the contacts
    # were deleted locally, and the org still holds them live, with their own stamps.
    source, store, _ = seeded()
    gone = InMemorySource()
    gone.upsert(Account(id=A2, fields={"Name": "Globex"}, system_modstamp=T0))
    SyncEngine(source=gone, store=store, clock=lambda: CLOCK).reconcile()
    assert store.get_account(A1) is None
    assert store.get_contact(C1) is None

    report = SyncEngine(source=source, store=store, clock=lambda: CLOCK).reconcile()

    assert store.get_account(A1) is not None
    assert store.contact_ids(A1) == [C1, C2]
    assert store.contact_ids(A2) == [C3]
    assert report.refreshed == 4
    assert report.activities == ()  # S7: a record's first appearance logs nothing


def test_a_read_that_asked_for_a_refetch_deletes_nothing() -> None:
    source, store, _ = seeded()
    source.purge("Account", A2)
    source.add_change_event(
        {
            "ChangeEventHeader": {
                "entityName": "Account",
                "changeType": "GAP_OVERFLOW",
                "recordIds": [],
                "commitTimestamp": 1_700_000_000_000,
            }
        }
    )
    report = SyncEngine(source=source, store=store, clock=lambda: CLOCK).reconcile()
    assert report.refetch
    assert report.accounts_deleted == 0
    assert store.get_account(A2) is not None
