"""One test or more per rule of SPEC.md (S1-S8, R1-R8), through the public API only.

Every world here is an `InMemorySource` (a fake Salesforce org) and an `InMemoryStore`
driven by a `SyncEngine`. Times are fixed and in UTC; `T0` is the first version of
everything, later versions are minutes after it (`at(minutes)`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import attrs
import pytest

from acctsync import (
    Account,
    AcctSyncError,
    ActivityPolicy,
    AlreadyAContactError,
    Batch,
    ChangeDataValue,
    ConfigurationError,
    Contact,
    Deletion,
    ExclusiveStore,
    InvalidRecordError,
    NoAccountError,
    Origin,
    Person,
    RawRecord,
    SyncEngine,
    UnknownContactError,
    Unreadable,
)
from acctsync.testing import InMemorySource, InMemoryStore, make_id
from crashes import CrashError, crashing

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
EDIT_TIME = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def at(minutes: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes)


def acct(number: int) -> str:
    return make_id("001", number)


def cont(number: int) -> str:
    return make_id("003", number)


A1, A2, A3, A4, A5 = (acct(n) for n in range(1, 6))
C1, C2, C3, C4, C5 = (cont(n) for n in range(1, 6))


# -- Building worlds -------------------------------------------------------------------


def new(**engine_kwargs: Any) -> tuple[InMemorySource, InMemoryStore, SyncEngine]:
    src, store = InMemorySource(), InMemoryStore()
    engine_kwargs.setdefault("clock", lambda: EDIT_TIME)
    return src, store, SyncEngine(source=src, store=store, **engine_kwargs)


def put_account(src: InMemorySource, account_id: str, stamp: datetime, **fields: Any) -> None:
    src.upsert(Account(id=account_id, fields=fields, system_modstamp=stamp))


def put_contact(
    src: InMemorySource, contact_id: str, account_id: str | None, stamp: datetime, **fields: Any
) -> None:
    src.upsert(Contact(id=contact_id, account_id=account_id, fields=fields, system_modstamp=stamp))


def seeded(**engine_kwargs: Any) -> tuple[InMemorySource, InMemoryStore, SyncEngine]:
    """Account A1 (Acme, Tech, phone 111) with contacts C1 and C2, all at T0, synced."""
    src, store, engine = new(**engine_kwargs)
    put_account(src, A1, T0, Name="Acme", Industry="Tech", Phone="111")
    put_contact(src, C1, A1, T0, LastName="One")
    put_contact(src, C2, A1, T0, LastName="Two")
    report = engine.sync()
    assert report.accounts_upserted == 1
    assert report.contacts_upserted == 2
    return src, store, engine


def entries(store: InMemoryStore, origin: Origin | None = None) -> list[ChangeDataValue]:
    return [e for e in store.activities() if origin is None or e.origin is origin]


def summary(activities: Sequence[ChangeDataValue]) -> set[tuple[Any, ...]]:
    return {(e.contact_id, e.account_id, e.field, e.old_value, e.new_value) for e in activities}


def assert_no_duplicate_activities(store: InMemoryStore) -> None:
    log = list(store.activities())
    assert len({e.id for e in log}) == len(log)
    content = [
        (e.contact_id, e.account_id, e.field, e.old_value, e.new_value, e.origin, e.occurred_at)
        for e in log
    ]
    assert len(set(content)) == len(content)


def snapshot(store: InMemoryStore) -> tuple[Any, ...]:
    return (
        sorted(store.accounts(), key=lambda a: a.id),
        sorted(store.contacts(), key=lambda c: c.id),
        sorted(store.activities(), key=lambda e: e.id),
        {a.id: sorted(store.contact_ids(a.id)) for a in store.accounts()},
        store.watermark("Account"),
        store.watermark("Contact"),
    )


def source_records(src: InMemorySource, object_type: Any) -> list[Any]:
    return [r for page in src.read_changes(object_type, None, page_size=100) for r in page]


# -- Salesforce wire formats -------------------------------------------------------------


def sf_time(value: datetime) -> str:
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def epoch_ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def rest(object_type: str, record_id: str | None, stamp: datetime, **fields: Any) -> dict:
    record: dict[str, Any] = {
        "attributes": {
            "type": object_type,
            "url": f"/services/data/v60.0/sobjects/{object_type}/{record_id}",
        },
        "Id": record_id,
    }
    record.update(fields)
    record["SystemModstamp"] = sf_time(stamp)
    return record


def cdc(
    entity: str,
    change_type: str,
    ids: Sequence[str],
    stamp: datetime,
    *,
    changed: Sequence[str] = (),
    nulled: Sequence[str] = (),
    **body: Any,
) -> dict:
    header = {
        "entityName": entity,
        "recordIds": list(ids),
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/60.0;client=test",
        "transactionKey": "00051c2e-4fa4-0b5e-a1b5-35b5b3a1c0fb",
        "sequenceNumber": 1,
        "commitTimestamp": epoch_ms(stamp),
        "commitNumber": 11620186834848,
        "commitUser": "005Ak00000A1b2cIAB",
        "changedFields": list(changed),
        "nulledFields": list(nulled),
        "diffFields": [],
    }
    return {"ChangeEventHeader": header, **body}


# -- Wrappers around the fakes -----------------------------------------------------------


class ReadOnlySource:
    """A source with no write side at all."""

    def __init__(self, inner: InMemorySource) -> None:
        self._inner = inner

    def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Iterator[Any]:
        return self._inner.read_changes(object_type, since, page_size=page_size)


class RepeatingSource:
    """Delivers every page twice, as a source replaying a batch would."""

    def __init__(self, inner: InMemorySource) -> None:
        self._inner = inner

    def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Iterator[Any]:
        for page in self._inner.read_changes(object_type, since, page_size=page_size):
            yield page
            yield page


class WithoutContactDeletions:
    """A source whose contact stream omits deletions (only the account's deletion arrives)."""

    def __init__(self, inner: InMemorySource) -> None:
        self._inner = inner

    def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Iterator[Any]:
        for page in self._inner.read_changes(object_type, since, page_size=page_size):
            if object_type == "Contact":
                page = [item for item in page if not isinstance(item, Deletion)]
            yield page


# == S1 One way =============================================================================


def test_s1_syncs_and_local_edits_never_write_to_salesforce() -> None:
    src, store, engine = seeded()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    put_account(src, A1, at(60), Name="Acme Corp", Industry="Tech", Phone="111")
    put_contact(src, C3, A1, at(61), LastName="Three")
    engine.sync()
    engine.edit_account_field(contact_id=C3, field="Phone", value="999")
    src.delete(Deletion(object_type="Contact", id=C2, deleted_at=at(120)))
    engine.sync()
    engine.edit_account_field(contact_id=C1, field="Website", value="https://acme.test")

    assert src.writes() == ()
    assert src.opportunities() == ()
    # Salesforce still holds its own values, none of the local edits.
    [upstream] = source_records(src, "Account")
    assert upstream == Account(
        id=A1,
        fields={"Name": "Acme Corp", "Industry": "Tech", "Phone": "111"},
        system_modstamp=at(60),
    )
    # ... while the local store holds them.
    assert store.get_account(A1).fields["Phone"] == "999"
    assert store.get_account(A1).fields["Website"] == "https://acme.test"


def test_s1_sync_and_edits_work_against_a_source_without_write_side() -> None:
    src, store = InMemorySource(), InMemoryStore()
    engine = SyncEngine(source=ReadOnlySource(src), store=store)
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0)
    engine.sync()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    assert store.get_account(A1).fields == {"Name": "Acme", "Industry": "Retail"}
    # Only Convert Person needs a write side, and says so with the library's own error.
    with pytest.raises(ConfigurationError):
        engine.convert_person(Person(id="p-1", fields={"LastName": "Doe", "Company": "Acme"}))
    assert src.writes() == ()


# == S2 Local edits fan out ==================================================================


def test_s2_edit_through_one_contact_is_seen_by_every_contact_of_the_account() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme", Industry="Tech")
    put_account(src, A2, T0, Name="Other", Industry="Tech")
    for contact_id in (C1, C2, C3):
        put_contact(src, contact_id, A1, T0)
    put_contact(src, C4, A2, T0)
    engine.sync()

    result = engine.edit_account_field(contact_id=C2, field="Industry", value="Retail")

    assert result.changed
    assert result.account_id == A1
    for contact_id in (C1, C2, C3):
        account_id = store.get_contact(contact_id).account_id
        assert store.get_account(account_id).fields["Industry"] == "Retail"
    assert store.get_account(A2).fields["Industry"] == "Tech"  # another account: untouched
    local = entries(store, Origin.LOCAL)
    assert len(local) == 3  # one per contact of A1, none for C4
    assert summary(local) == {(c, A1, "Industry", "Tech", "Retail") for c in (C1, C2, C3)}
    assert all(e.occurred_at == EDIT_TIME for e in local)
    assert set(result.activities) == set(local)

    # An edit through another contact starts from the value the first edit set.
    second = engine.edit_account_field(contact_id=C3, field="Industry", value="Media")
    assert second.old_value == "Retail"
    assert store.get_account(A1).fields["Industry"] == "Media"
    assert len(entries(store, Origin.LOCAL)) == 6


def test_s2_edit_to_the_value_already_seen_changes_and_logs_nothing() -> None:
    _, store, engine = seeded()
    result = engine.edit_account_field(contact_id=C1, field="Industry", value="Tech")
    assert not result.changed
    assert entries(store) == []


# == S3 Local edits are not pushed, and are overwritten ======================================


def test_s3_local_edit_kept_across_a_sync_without_a_newer_account_version() -> None:
    src, store, engine = seeded()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")

    # Other records change; A1's own version (at T0) is inside the lookback window and is
    # read again; an older copy of A1 shows up too.
    put_contact(src, C1, A1, at(1), LastName="Uno")
    put_account(src, A2, at(2), Name="Beta")
    src.add_raw("Account", rest("Account", A1, at(-1), Name="Acme", Industry="Old"))
    report = engine.sync()

    assert report.already_applied >= 1  # the lookback re-read A1's stored version
    assert report.local_edits_discarded == 0
    assert store.get_account(A1).fields == {"Name": "Acme", "Industry": "Retail", "Phone": "111"}
    report = engine.sync()
    assert store.get_account(A1).fields["Industry"] == "Retail"
    assert src.writes() == ()


def test_s3_newer_salesforce_version_discards_all_local_edits() -> None:
    src, store, engine = seeded()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    engine.edit_account_field(contact_id=C2, field="Phone", value="999")
    # Salesforce changes only Name; Industry and Phone keep their Salesforce values.
    put_account(src, A1, at(60), Name="Acme Corp", Industry="Tech", Phone="111")

    report = engine.sync()

    assert report.local_edits_discarded == 1
    assert store.get_account(A1).fields == {
        "Name": "Acme Corp",
        "Industry": "Tech",
        "Phone": "111",
    }
    engine.sync()  # and the edits do not come back
    assert store.get_account(A1).fields == {
        "Name": "Acme Corp",
        "Industry": "Tech",
        "Phone": "111",
    }


def test_s3_partial_update_of_another_field_also_discards_local_edits() -> None:
    src, store, engine = seeded()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    src.add_change_event(
        cdc(
            "Account",
            "UPDATE",
            [A1],
            at(60),
            changed=["Name", "LastModifiedDate"],
            Name="Acme Corp",
            LastModifiedDate=sf_time(at(60)),
        )
    )
    engine.sync()
    assert store.get_account(A1).fields == {
        "Name": "Acme Corp",
        "Industry": "Tech",
        "Phone": "111",
    }


# == S4 One account per contact ==============================================================


def test_s4_contact_moves_when_its_account_id_changes() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme")
    put_account(src, A2, T0, Name="Beta")
    put_contact(src, C1, A1, T0)
    put_contact(src, C2, A1, T0)
    engine.sync()

    put_contact(src, C1, A2, at(60))
    engine.sync()

    assert store.get_contact(C1).account_id == A2
    assert store.contact_ids(A1) == [C2]
    assert store.contact_ids(A2) == [C1]
    assert store.count_contacts(A1) == 1

    # Changes to each account now reach only its own contacts.
    put_account(src, A1, at(120), Name="Acme Corp")
    put_account(src, A2, at(121), Name="Beta Corp")
    engine.sync()
    assert summary(entries(store, Origin.SALESFORCE)) == {
        (C2, A1, "Name", "Acme", "Acme Corp"),
        (C1, A2, "Name", "Beta", "Beta Corp"),
    }

    # Leaving every account.
    put_contact(src, C1, None, at(180))
    engine.sync()
    assert store.get_contact(C1).account_id is None
    assert store.contact_ids(A2) == []


def test_s4_a_contact_cannot_hold_two_accounts() -> None:
    with pytest.raises(InvalidRecordError):
        Contact(id=C1, account_id=[A1, A2], system_modstamp=T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRecordError):
        Contact(id=C1, account_id=f"{A1},{A2}", system_modstamp=T0)


# == S5 No local account creation ============================================================


def test_s5_edit_for_contact_without_account_raises_no_account_error() -> None:
    src, store, engine = new()
    put_contact(src, C1, None, T0)
    engine.sync()

    with pytest.raises(NoAccountError) as caught:
        engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")

    assert isinstance(caught.value, AcctSyncError)
    assert store.accounts() == ()
    assert store.get_contact(C1).account_id is None
    assert entries(store) == []


def test_s5_edit_for_unknown_contact_raises_unknown_contact_error() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme")
    engine.sync()

    with pytest.raises(UnknownContactError) as caught:
        engine.edit_account_field(contact_id=cont(9), field="Industry", value="Retail")

    assert isinstance(caught.value, AcctSyncError)
    assert [a.id for a in store.accounts()] == [A1]
    assert store.get_contact(cont(9)) is None
    assert entries(store) == []


def test_s5_edit_for_contact_whose_account_is_not_synced_creates_no_account() -> None:
    src, store, engine = new()
    put_contact(src, C1, A1, T0)  # A1 does not exist (yet) in Salesforce
    engine.sync()

    with pytest.raises(NoAccountError):
        engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")

    assert store.get_account(A1) is None
    engine.sync()
    assert store.get_account(A1) is None
    assert store.accounts() == ()


# == S6 Convert Person =======================================================================

DOE = Person(
    id="p-1",
    fields={"FirstName": "Jane", "LastName": "Doe", "Company": "Acme", "Email": "jane@acme.test"},
)


def test_s6_convert_creates_account_contact_and_opportunity_in_salesforce_only() -> None:
    src, store, engine = new()

    conv = engine.convert_person(DOE)

    assert conv.account_id.startswith("001")
    assert conv.contact_id.startswith("003")
    assert conv.opportunity_id.startswith("006")
    assert len(src.writes()) == 1
    [opportunity] = src.opportunities()
    assert opportunity.id == conv.opportunity_id
    assert opportunity.account_id == conv.account_id
    assert opportunity.contact_id == conv.contact_id
    # Nothing local until the next sync.
    assert store.get_account(conv.account_id) is None
    assert store.get_contact(conv.contact_id) is None
    assert store.accounts() == ()
    assert store.contacts() == ()

    report = engine.sync()

    account = store.get_account(conv.account_id)
    contact = store.get_contact(conv.contact_id)
    assert account is not None
    assert account.fields["Name"] == "Acme"
    assert contact is not None
    assert contact.account_id == conv.account_id
    assert contact.fields["LastName"] == "Doe"
    assert contact.fields["Email"] == "jane@acme.test"
    assert store.contact_ids(conv.account_id) == [conv.contact_id]
    assert report.activities == ()  # first appearance
    assert len(src.writes()) == 1


def test_s6_retry_with_same_person_creates_no_duplicates() -> None:
    src, store, engine = new()
    first = engine.convert_person(DOE)
    again = engine.convert_person(DOE)

    assert again == first
    assert len(src.writes()) == 1
    assert len(src.opportunities()) == 1

    engine.sync()
    third = engine.convert_person(DOE)
    assert third == first
    assert len(src.writes()) == 1
    assert len(src.opportunities()) == 1
    assert len(store.accounts()) == 1
    assert len(store.contacts()) == 1


def test_s6_retry_after_the_local_record_was_lost_creates_no_duplicates() -> None:
    src, _, engine = new()
    first = engine.convert_person(DOE)
    # A second engine over a fresh store (the first conversion's record was lost).
    other = SyncEngine(source=src, store=InMemoryStore(), clock=lambda: EDIT_TIME)
    again = other.convert_person(DOE)
    assert again == first
    assert len(src.opportunities()) == 1
    assert len(source_records(src, "Account")) == 1
    assert len(source_records(src, "Contact")) == 1


def test_s6_refuses_a_person_that_is_already_a_contact() -> None:
    src, _, engine = new()
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0, LastName="Doe")
    engine.sync()
    person = Person(id="p-2", fields={"LastName": "Doe", "Company": "Acme"}, contact_id=C1)

    with pytest.raises(AlreadyAContactError) as caught:
        engine.convert_person(person)

    assert isinstance(caught.value, AcctSyncError)
    assert src.writes() == ()
    assert src.opportunities() == ()
    assert len(source_records(src, "Account")) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"Company": "Acme"},
        {"LastName": "Doe"},
        {"LastName": "", "Company": "Acme"},
        {"LastName": "Doe", "Company": "   "},
        {"LastName": "Doe", "Company": None},
    ],
)
def test_s6_missing_last_name_or_company_raises_invalid_record_error(
    fields: dict[str, Any],
) -> None:
    src, _, engine = new()
    with pytest.raises(InvalidRecordError):
        engine.convert_person(Person(id="p-3", fields=fields))
    assert src.writes() == ()
    assert src.opportunities() == ()
    assert source_records(src, "Account") == []


# == S7 Change Data Value ====================================================================


def test_s7_one_salesforce_entry_per_contact_and_changed_field() -> None:
    src, store, engine = seeded()
    put_account(src, A1, at(60), Name="Acme Corp", Industry="Retail", Phone="111")

    report = engine.sync()

    logged = entries(store)
    assert len(logged) == 4  # 2 contacts x 2 changed fields; Phone did not change
    assert summary(logged) == {
        (contact_id, A1, field, old, new)
        for contact_id in (C1, C2)
        for field, old, new in (("Name", "Acme", "Acme Corp"), ("Industry", "Tech", "Retail"))
    }
    assert all(e.origin is Origin.SALESFORCE for e in logged)
    assert all(e.occurred_at == at(60) for e in logged)
    assert not any(e.field == "Phone" for e in logged)
    assert set(report.activities) == set(logged)
    assert_no_duplicate_activities(store)


def test_s7_new_version_with_unchanged_values_logs_nothing() -> None:
    src, store, engine = seeded()
    put_account(src, A1, at(60), Name="Acme", Industry="Tech", Phone="111")
    report = engine.sync()
    assert report.accounts_upserted == 1
    assert report.activities == ()
    assert entries(store) == []


def test_s7_first_appearance_of_account_or_contact_logs_nothing() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0)
    put_contact(src, C2, A1, T0)
    report = engine.sync()
    assert report.activities == ()

    put_contact(src, C3, A1, at(60))  # a new contact joins
    put_account(src, A2, at(60), Name="Beta")  # a new account appears
    put_contact(src, C4, A2, at(60))
    report = engine.sync()
    assert report.activities == ()
    assert entries(store) == []


# == S8 The 5,000 threshold ==================================================================


def big_account(
    contacts: int, **engine_kwargs: Any
) -> tuple[InMemorySource, InMemoryStore, SyncEngine]:
    src, store, engine = new(**engine_kwargs)
    put_account(src, A1, T0, Name="Big", Industry="Tech", Phone="111")
    for number in range(contacts):
        put_contact(src, cont(1000 + number), A1, T0)
    engine.sync()
    assert store.count_contacts(A1) == contacts
    return src, store, engine


def test_s8_threshold_counts_contacts_not_changes() -> None:
    # 2,500 contacts x 3 changed fields = 7,500 entries: over 5,000, but the threshold is
    # about contacts, so all are logged.
    src, store, engine = big_account(2500)
    put_account(src, A1, at(60), Name="Bigger", Industry="Retail", Phone="222")
    report = engine.sync()
    assert report.suppressed == ()
    assert len(entries(store)) == 7500
    assert len(report.activities) == 7500


def test_s8_exactly_5000_contacts_still_logs() -> None:
    src, store, engine = big_account(5000)
    put_account(src, A1, at(60), Name="Bigger", Industry="Tech", Phone="111")
    report = engine.sync()
    assert report.suppressed == ()
    logged = entries(store)
    assert len(logged) == 5000
    assert {e.contact_id for e in logged} == set(store.contact_ids(A1))


def test_s8_5001_contacts_change_syncs_without_entries_and_suppression_is_reported() -> None:
    src, store, engine = big_account(5001)
    put_account(src, A2, T0, Name="Small")
    put_contact(src, C1, A2, T0)
    engine.sync()
    put_account(src, A1, at(60), Name="Bigger", Industry="Retail", Phone="111")
    put_account(src, A2, at(60), Name="Smaller")

    report = engine.sync()

    assert store.get_account(A1).fields == {"Name": "Bigger", "Industry": "Retail", "Phone": "111"}
    assert not any(e.account_id == A1 for e in entries(store))
    assert summary(entries(store)) == {(C1, A2, "Name", "Small", "Smaller")}  # others still log
    [suppression] = report.suppressed
    assert suppression.account_id == A1
    assert suppression.contact_count == 5001
    assert suppression.entries_skipped == 5001 * 2  # contacts x changed fields
    assert suppression.origin is Origin.SALESFORCE


def test_s8_default_policy_is_5000() -> None:
    policy = ActivityPolicy()
    assert policy == ActivityPolicy(max_contacts_per_account=5000)
    assert policy.logs_activities(account_id=A1, contact_count=5000, origin=Origin.SALESFORCE)
    assert not policy.logs_activities(account_id=A1, contact_count=5001, origin=Origin.SALESFORCE)


def test_s8_custom_activity_policy_threshold() -> None:
    src, store, engine = new(policy=ActivityPolicy(max_contacts_per_account=2))
    put_account(src, A1, T0, Name="Three")
    put_account(src, A2, T0, Name="Two")
    for contact_id in (C1, C2, C3):
        put_contact(src, contact_id, A1, T0)
    put_contact(src, C4, A2, T0)
    put_contact(src, C5, A2, T0)
    engine.sync()
    put_account(src, A1, at(60), Name="Three!")
    put_account(src, A2, at(60), Name="Two!")

    report = engine.sync()

    assert store.get_account(A1).fields["Name"] == "Three!"
    assert {e.contact_id for e in entries(store)} == {C4, C5}
    [suppression] = report.suppressed
    assert (suppression.account_id, suppression.contact_count) == (A1, 3)
    assert suppression.entries_skipped == 3


def test_s8_custom_policy_object_is_honoured() -> None:
    class NotForA1:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int, Origin]] = []

        def logs_activities(self, *, account_id: str, contact_count: int, origin: Origin) -> bool:
            self.calls.append((account_id, contact_count, origin))
            return account_id != A1

    policy = NotForA1()
    src, store, engine = new(policy=policy)
    put_account(src, A1, T0, Name="Acme")
    put_account(src, A2, T0, Name="Beta")
    put_contact(src, C1, A1, T0)
    put_contact(src, C2, A1, T0)
    put_contact(src, C3, A2, T0)
    engine.sync()
    put_account(src, A1, at(60), Name="Acme Corp")
    put_account(src, A2, at(60), Name="Beta Corp")

    report = engine.sync()

    assert (A1, 2, Origin.SALESFORCE) in policy.calls
    assert (A2, 1, Origin.SALESFORCE) in policy.calls
    assert summary(entries(store)) == {(C3, A2, "Name", "Beta", "Beta Corp")}
    assert [(s.account_id, s.entries_skipped) for s in report.suppressed] == [(A1, 2)]
    assert store.get_account(A1).fields["Name"] == "Acme Corp"


# == R1 Incremental, and nothing missed ======================================================


def test_r1_late_commit_within_lookback_is_picked_up() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="First")
    put_account(src, A2, at(10), Name="Second")
    put_contact(src, C1, A1, at(10))
    engine.sync()
    assert store.watermark("Account") == at(10)

    # Stamped when their transactions started, visible only now that they committed.
    put_account(src, A3, at(7), Name="Late")
    put_contact(src, C2, A3, at(6))
    report = engine.sync()

    assert store.get_account(A3).fields == {"Name": "Late"}
    assert store.get_contact(C2).account_id == A3
    assert report.accounts_upserted == 1  # A3 only; A2 was re-read, not re-applied
    assert report.contacts_upserted == 1
    assert report.already_applied >= 2
    assert store.watermark("Account") == at(10)


def test_r1_watermark_is_inclusive_even_without_lookback() -> None:
    src, store, engine = new(lookback=timedelta(0))
    put_account(src, A1, T0, Name="First")
    engine.sync()
    put_account(src, A2, T0, Name="Same stamp, committed later")
    report = engine.sync()
    assert store.get_account(A2) is not None
    assert report.accounts_upserted == 1


def test_r1_lookback_defaults_to_five_minutes_and_is_configurable() -> None:
    for engine_kwargs, late_at, expect_seen in (
        ({}, at(5), True),  # exactly watermark - 5 minutes: inside the default window
        ({"lookback": timedelta(minutes=1)}, at(7), False),
        ({"lookback": timedelta(minutes=30)}, at(-15), True),
    ):
        src, store, engine = new(**engine_kwargs)
        put_account(src, A1, at(10), Name="Watermark")
        engine.sync()
        put_account(src, A2, late_at, Name="Late")
        engine.sync()
        assert (store.get_account(A2) is not None) is expect_seen, engine_kwargs


def test_r1_records_sharing_a_stamp_across_a_page_boundary_are_neither_lost_nor_doubled() -> None:
    src, store, engine = new(page_size=2)
    accounts = [acct(10 + n) for n in range(5)]
    contacts = [cont(10 + n) for n in range(5)]
    for account_id, contact_id in zip(accounts, contacts, strict=True):
        put_account(src, account_id, T0, Name="v1")
        put_contact(src, contact_id, account_id, T0)

    report = engine.sync()

    assert report.pages >= 6  # 3 pages of accounts, 3 of contacts
    assert report.accounts_upserted == 5
    assert report.contacts_upserted == 5
    assert sorted(a.id for a in store.accounts()) == sorted(accounts)
    assert sorted(c.id for c in store.contacts()) == sorted(contacts)

    # All five change at one shared stamp, read across three pages.
    for account_id in accounts:
        put_account(src, account_id, at(60), Name="v2")
    report = engine.sync()
    assert report.accounts_upserted == 5
    assert len(entries(store)) == 5
    assert {(e.contact_id, e.account_id) for e in entries(store)} == set(
        zip(contacts, accounts, strict=True)
    )

    # Reading the same pages again applies nothing and logs nothing.
    report = engine.sync()
    assert report.accounts_upserted == 0
    assert report.contacts_upserted == 0
    assert report.activities == ()
    assert len(entries(store)) == 5

    # One more record with the shared stamp, committed late, still arrives.
    put_account(src, A1, at(60), Name="late, same stamp")
    report = engine.sync()
    assert report.accounts_upserted == 1
    assert store.get_account(A1) is not None
    assert all(store.get_account(a).fields["Name"] == "v2" for a in accounts)
    assert len(entries(store)) == 5
    assert_no_duplicate_activities(store)


def test_r1_system_modstamp_moves_not_last_modified_date() -> None:
    src, store, engine = new()
    src.add_raw(
        "Account",
        rest("Account", A1, T0, Name="Acme", Score__c=1, LastModifiedDate=sf_time(T0)),
    )
    engine.sync()
    # A system change: SystemModstamp moves, LastModifiedDate does not.
    src.add_raw(
        "Account",
        rest("Account", A1, at(60), Name="Acme", Score__c=2, LastModifiedDate=sf_time(T0)),
    )
    report = engine.sync()
    assert report.accounts_upserted == 1
    assert store.get_account(A1).fields["Score__c"] == 2
    assert store.get_account(A1).system_modstamp == at(60)


# == R2 Exactly once =========================================================================


def r2_scenario(src: InMemorySource) -> None:
    put_account(src, A1, T0, Name="Acme", Industry="Tech")
    put_account(src, A2, T0, Name="Beta")
    put_contact(src, C1, A1, T0)
    put_contact(src, C2, A2, T0)


def r2_changes(src: InMemorySource) -> None:
    put_account(src, A1, at(60), Name="Acme Corp", Industry="Tech")
    src.delete(Deletion(object_type="Account", id=A2, deleted_at=at(61), master_record_id=A1))
    put_account(src, A3, at(62), Name="Gamma")
    put_contact(src, C3, A3, at(62))
    put_account(src, A1, at(63), Name="Acme Corp", Industry="Retail")
    put_contact(src, C1, A1, at(64), Email="c1@acme.test")
    put_contact(src, C4, A1, at(65))
    src.delete(Deletion(object_type="Account", id=A3, deleted_at=at(66)))


def test_r2_running_sync_again_changes_nothing() -> None:
    src, store, engine = new()
    r2_scenario(src)
    engine.sync()
    r2_changes(src)
    engine.sync()
    engine.edit_account_field(contact_id=C1, field="Phone", value="555")
    before = snapshot(store)
    assert len(entries(store)) > 0

    for _ in range(2):
        report = engine.sync()
        assert report.accounts_upserted == report.contacts_upserted == 0
        assert report.accounts_deleted == report.contacts_deleted == 0
        assert report.activities == ()

    assert snapshot(store) == before
    assert_no_duplicate_activities(store)


def test_r2_replaying_everything_gives_the_same_state_and_no_duplicate_activity() -> None:
    src, store, engine = new()
    r2_scenario(src)
    engine.sync()
    r2_changes(src)
    engine.sync()
    before = snapshot(store)

    # A second engine reading everything from the start again, and a source that
    # delivers every page twice.
    SyncEngine(source=src, store=store, lookback=timedelta(days=3650)).sync()
    SyncEngine(source=RepeatingSource(src), store=store, lookback=timedelta(days=3650)).sync()

    assert snapshot(store) == before
    assert_no_duplicate_activities(store)


def test_r2_pages_delivered_twice_give_the_state_of_a_clean_run() -> None:
    reference_src, reference, reference_engine = new(page_size=2)
    r2_scenario(reference_src)
    reference_engine.sync()
    r2_changes(reference_src)
    reference_engine.sync()

    src, store = InMemorySource(), InMemoryStore()
    engine = SyncEngine(source=RepeatingSource(src), store=store, page_size=2)
    r2_scenario(src)
    engine.sync()
    r2_changes(src)
    engine.sync()

    assert snapshot(store) == snapshot(reference)
    assert_no_duplicate_activities(store)


def test_r2_resuming_after_a_crash_at_any_batch_gives_the_state_of_a_clean_run() -> None:
    reference_src, reference, reference_engine = new(page_size=2)
    r2_scenario(reference_src)
    reference_engine.sync()
    r2_changes(reference_src)
    reference_engine.sync()
    expected = snapshot(reference)

    crash_points = 0
    for crash_at in itertools.count(1):
        src, store, engine = new(page_size=2)
        r2_scenario(src)
        engine.sync()
        r2_changes(src)
        with crashing(store, crash_at) as crash, contextlib.suppress(CrashError):
            SyncEngine(source=src, store=store, page_size=2).sync()
        if not crash.crashed:
            break
        crash_points += 1
        SyncEngine(source=src, store=store, page_size=2).sync()  # resume
        assert snapshot(store) == expected, f"crash at apply #{crash_at}"
        assert_no_duplicate_activities(store)
    assert crash_points >= 5


def test_r2_local_edit_after_undelete_gets_its_own_activity_entries() -> None:
    # Each local edit is a new event; its entries must not be taken for an earlier edit's.
    ticks = (EDIT_TIME + timedelta(minutes=n) for n in itertools.count())
    src, store, engine = seeded(clock=lambda: next(ticks))
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    assert len(entries(store, Origin.LOCAL)) == 2
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(60)))
    engine.sync()
    src.undelete("Account", A1, at=at(120))
    engine.sync()
    assert store.get_account(A1).fields["Industry"] == "Tech"

    result = engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")

    assert result.changed
    assert len(result.activities) == 2
    logged = entries(store, Origin.LOCAL)
    assert len(logged) == 4
    assert set(result.activities) <= set(logged)
    assert len({e.occurred_at for e in logged}) == 2


# == R3 Stale data loses =====================================================================


def test_r3_older_version_is_ignored_and_counted_as_stale() -> None:
    src, store, engine = new()
    put_account(src, A1, at(3), Name="New")
    put_contact(src, C1, A1, at(3), LastName="New")
    engine.sync()

    # Older copies, within the lookback window so they are read.
    src.add_raw("Account", rest("Account", A1, at(1), Name="Old"))
    src.add_raw("Contact", rest("Contact", C1, at(1), AccountId=None, LastName="Old"))
    report = engine.sync()

    assert report.stale == 2
    assert report.accounts_upserted == report.contacts_upserted == 0
    assert store.get_account(A1).fields == {"Name": "New"}
    assert store.get_contact(C1).fields == {"LastName": "New"}
    assert store.get_contact(C1).account_id == A1
    assert entries(store) == []


def test_r3_older_copy_does_not_bring_a_deleted_account_back() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme")
    engine.sync()
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(2)))
    engine.sync()
    src.add_raw("Account", rest("Account", A1, at(1), Name="Acme"))
    report = engine.sync()
    assert report.stale == 1
    assert store.get_account(A1) is None


# == R4 Deletes and merges ===================================================================


def test_r4_account_delete_removes_it_with_its_contacts() -> None:
    src, store, engine = seeded()
    put_account(src, A2, T0, Name="Beta")
    put_contact(src, C3, A2, T0)
    engine.sync()

    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(60)))
    report = engine.sync()

    assert report.accounts_deleted == 1
    assert store.get_account(A1) is None
    assert store.get_contact(C1) is None
    assert store.get_contact(C2) is None
    assert store.contact_ids(A1) == []
    assert store.get_account(A2) is not None
    assert store.contact_ids(A2) == [C3]


def test_r4_contact_moved_away_before_the_account_delete_survives_it() -> None:
    src, store, engine = seeded()
    put_account(src, A2, T0, Name="Beta")
    engine.sync()
    put_contact(src, C1, A2, at(30), LastName="One")  # moved, then A1 deleted
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(60)))
    engine.sync()
    assert store.get_account(A1) is None
    assert store.get_contact(C2) is None
    assert store.get_contact(C1).account_id == A2
    assert store.contact_ids(A2) == [C1]


def test_r4_chained_merges_end_at_the_last_winner() -> None:
    src, store, engine = new()
    for account_id in (A1, A2, A3):
        put_account(src, account_id, T0, Name=account_id)
    put_contact(src, C2, A2, T0)
    put_contact(src, C3, A3, T0)
    engine.sync()
    src.delete(Deletion(object_type="Account", id=A3, deleted_at=at(60), master_record_id=A2))
    src.delete(Deletion(object_type="Account", id=A2, deleted_at=at(61), master_record_id=A1))
    engine.sync()
    assert [a.id for a in store.accounts()] == [A1]
    assert sorted(store.contact_ids(A1)) == sorted([C2, C3])


def test_r4_account_delete_removes_contacts_even_without_contact_deletions() -> None:
    src, store = InMemorySource(), InMemoryStore()
    engine = SyncEngine(source=WithoutContactDeletions(src), store=store)
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0)
    engine.sync()
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(60)))
    engine.sync()
    assert store.get_account(A1) is None
    assert store.get_contact(C1) is None


def test_r4_merge_moves_contacts_without_touching_their_stamp() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Winner")
    put_account(src, A2, T0, Name="Loser")
    put_contact(src, C1, A1, T0)
    put_contact(src, C2, A2, T0)
    put_contact(src, C3, A2, T0)
    engine.sync()

    src.delete(Deletion(object_type="Account", id=A2, deleted_at=at(60), master_record_id=A1))
    report = engine.sync()

    assert report.accounts_deleted == 1
    assert store.get_account(A2) is None
    assert store.get_account(A1) is not None
    assert sorted(store.contact_ids(A1)) == sorted([C1, C2, C3])
    assert store.contact_ids(A2) == []
    for contact_id in (C2, C3):
        contact = store.get_contact(contact_id)
        assert contact.account_id == A1
        assert contact.system_modstamp == T0

    # They really belong to the winner now.
    put_account(src, A1, at(120), Name="Winner Corp")
    engine.sync()
    assert {e.contact_id for e in entries(store)} == {C1, C2, C3}
    engine.edit_account_field(contact_id=C2, field="Industry", value="Retail")
    assert store.get_account(A1).fields["Industry"] == "Retail"


def test_r4_merge_with_contact_updates_following_or_stale_copies() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Winner")
    put_account(src, A2, T0, Name="Loser")
    put_contact(src, C2, A2, T0)
    engine.sync()

    src.delete(Deletion(object_type="Account", id=A2, deleted_at=at(60), master_record_id=A1))
    put_contact(src, C2, A1, at(61), LastName="Moved")  # an update follows the merge
    # A contact created under the loser before the merge, first read after it.
    src.add_raw("Contact", rest("Contact", C3, at(30), AccountId=A2, LastName="Late"))
    engine.sync()

    assert store.get_contact(C2).account_id == A1
    assert store.get_contact(C2).fields["LastName"] == "Moved"
    assert store.get_contact(C3).account_id == A1
    assert sorted(store.contact_ids(A1)) == sorted([C2, C3])
    assert store.get_account(A2) is None


def test_r4_contact_delete_and_merge() -> None:
    src, store, engine = seeded()
    put_contact(src, C3, A1, T0)
    engine.sync()

    src.delete(Deletion(object_type="Contact", id=C2, deleted_at=at(60), master_record_id=C1))
    src.delete(Deletion(object_type="Contact", id=C3, deleted_at=at(61)))
    report = engine.sync()

    assert report.contacts_deleted == 2
    assert store.get_contact(C2) is None
    assert store.get_contact(C3) is None
    assert store.get_contact(C1).account_id == A1
    assert store.contact_ids(A1) == [C1]
    assert store.get_account(A1) is not None


def test_r4_undelete_brings_account_back() -> None:
    src, store, engine = seeded()
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(60)))
    engine.sync()
    assert store.get_account(A1) is None

    src.undelete("Account", A1, at=at(120))
    engine.sync()

    account = store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Tech", "Phone": "111"}
    assert sorted(store.contact_ids(A1)) == sorted([C1, C2])
    assert store.get_contact(C1).account_id == A1

    put_account(src, A1, at(180), Name="Acme Again", Industry="Tech", Phone="111")
    engine.sync()
    assert {e.contact_id for e in entries(store)} == {C1, C2}


def test_r4_undelete_of_a_contact_brings_it_back() -> None:
    src, store, engine = seeded()
    src.delete(Deletion(object_type="Contact", id=C2, deleted_at=at(60)))
    engine.sync()
    assert store.get_contact(C2) is None
    src.undelete("Contact", C2, at=at(120))
    engine.sync()
    assert store.get_contact(C2).account_id == A1
    assert sorted(store.contact_ids(A1)) == sorted([C1, C2])


# == R5 Order is not guaranteed ==============================================================


def test_r5_contact_before_account_attaches_later() -> None:
    src, store, engine = new()
    put_contact(src, C1, A1, T0, LastName="Early")
    report = engine.sync()
    assert report.contacts_upserted == 1
    assert store.get_contact(C1).account_id == A1
    assert store.get_account(A1) is None

    put_account(src, A1, at(60), Name="Acme")
    report = engine.sync()

    assert store.get_account(A1).fields == {"Name": "Acme"}
    assert store.contact_ids(A1) == [C1]
    assert store.get_contact(C1).fields == {"LastName": "Early"}
    assert report.activities == ()

    # Attached for real: account changes reach it, edits through it work.
    put_account(src, A1, at(120), Name="Acme Corp")
    engine.sync()
    assert summary(entries(store)) == {(C1, A1, "Name", "Acme", "Acme Corp")}
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    assert store.get_account(A1).fields["Industry"] == "Retail"


# == R6 IDs ==================================================================================


def _bad_checksum(id18: str) -> str:
    return id18[:17] + ("B" if id18[17] == "A" else "A")


def test_r6_15_char_id_accepted_and_stored_as_18() -> None:
    src, store, engine = new()
    put_account(src, A1[:15], T0, Name="Acme")
    put_contact(src, C1[:15], A1[:15], T0)
    src.add_raw("Account", rest("Account", A2[:15], T0, Name="Beta"))
    src.add_raw("Contact", rest("Contact", C2[:15], T0, AccountId=A2[:15]))
    report = engine.sync()

    assert report.rejected == ()
    assert store.get_account(A1).id == A1
    assert len(A1) == 18
    assert store.get_contact(C1).id == C1
    assert store.get_contact(C1).account_id == A1
    assert store.contact_ids(A1) == [C1]
    assert store.get_account(A2).id == A2
    assert store.get_contact(C2).account_id == A2
    assert Account(id=A1[:15], system_modstamp=T0).id == A1
    # Either form finds the same record.
    assert store.get_account(A1[:15]) == store.get_account(A1)
    result = engine.edit_account_field(contact_id=C1[:15], field="Industry", value="Retail")
    assert result.contact_id == C1
    assert result.account_id == A1


def test_r6_15_char_ids_are_case_sensitive() -> None:
    upper, lower = make_id("001", 10)[:15], make_id("001", 36)[:15]
    assert upper != lower
    assert upper.lower() == lower.lower()
    src, store, engine = new()
    put_account(src, upper, T0, Name="Upper")
    put_account(src, lower, T0, Name="Lower")
    engine.sync()
    assert store.get_account(upper).fields["Name"] == "Upper"
    assert store.get_account(lower).fields["Name"] == "Lower"
    assert len(store.accounts()) == 2


def test_r6_bad_checksum_rejected() -> None:
    bad = _bad_checksum(A1)
    with pytest.raises(InvalidRecordError):
        Account(id=bad, system_modstamp=T0)
    with pytest.raises(InvalidRecordError):
        Contact(id=C1, account_id=_bad_checksum(A1), system_modstamp=T0)
    with pytest.raises(InvalidRecordError):
        Deletion(object_type="Account", id=bad, deleted_at=T0)

    src, store, engine = new()
    src.add_raw("Account", rest("Account", bad, T0, Name="Bad"))
    src.add_raw("Account", rest("Account", A2, T0, Name="Good"))
    report = engine.sync()
    assert [r.record_id for r in report.rejected] == [bad]
    assert store.get_account(A1) is None
    assert store.get_account(A2) is not None


def test_r6_wrong_key_prefix_rejected() -> None:
    with pytest.raises(InvalidRecordError):
        Account(id=C1, system_modstamp=T0)
    with pytest.raises(InvalidRecordError):
        Contact(id=A1, system_modstamp=T0)
    with pytest.raises(InvalidRecordError):
        Contact(id=C1, account_id=C2, system_modstamp=T0)
    with pytest.raises(InvalidRecordError):
        Account(id=make_id("006", 1), system_modstamp=T0)

    src, store, engine = new()
    src.add_raw("Account", rest("Account", C1, T0, Name="A contact's id"))
    src.add_raw("Contact", rest("Contact", C2, T0, AccountId=C3))
    report = engine.sync()
    assert len(report.rejected) == 2
    assert store.accounts() == ()
    assert store.contacts() == ()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "001",
        "001Ak00000000",  # 13
        A1[:16],
        A1[:17],
        A1 + "A",  # 19
        A1[:14] + "-",
        A1[:14] + " ",
        A1[:14] + "é",
        None,
        12345,
    ],
)
def test_r6_anything_else_is_rejected(bad: Any) -> None:
    with pytest.raises(InvalidRecordError):
        Account(id=bad, system_modstamp=T0)


# == R7 Bad input ============================================================================


def test_r7_malformed_raw_record_rejected_rest_applied() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0)
    engine.sync()

    src.add_raw("Account", rest("Account", "001XYZ", at(1), Name="Bad id"))
    missing_id = rest("Account", None, at(1), Name="No id")
    del missing_id["Id"]
    src.add_raw("Account", missing_id)
    no_stamp = rest("Account", A2, at(1), Name="No stamp")
    del no_stamp["SystemModstamp"]
    src.add_raw("Account", no_stamp)
    naive = rest("Account", A1, at(1), Name="Naive")  # an update of a stored account
    naive["SystemModstamp"] = "2024-03-01T09:01:00.000"
    src.add_raw("Account", naive)
    lead = rest("Account", A3, at(1), Name="A lead")
    lead["attributes"]["type"] = "Lead"
    src.add_raw("Account", lead)
    src.add_raw("Account", rest("Account", A4, at(2), Name="Good raw"))
    put_account(src, A5, at(2), Name="Good record")

    report = engine.sync()

    assert len(report.rejected) == 5
    assert not report.ok
    assert all(r.reason and isinstance(r.reason, str) for r in report.rejected)
    assert all(r.object_type == "Account" for r in report.rejected)
    assert {r.record_id for r in report.rejected} == {"001XYZ", None, A2, A1, A3}
    assert {r.field for r in report.rejected if r.record_id == A1} == {"SystemModstamp"}
    # The rest applied; nothing stored was lost.
    assert store.get_account(A4).fields == {"Name": "Good raw"}
    assert store.get_account(A5).fields == {"Name": "Good record"}
    assert store.get_account(A1).fields == {"Name": "Acme"}
    assert store.contact_ids(A1) == [C1]
    assert store.get_account(A2) is None
    assert store.get_account(A3) is None


def test_r7_a_rejection_names_where_the_source_read_the_record() -> None:
    class FileSource:
        def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Any:
            if object_type == "Account":
                bad = rest("Account", "001XYZ", at(1), Name="Bad id")
                good = rest("Account", A1, at(2), Name="Good")
                yield [
                    RawRecord(object_type="Account", payload=bad, origin="accounts.csv:2"),
                    RawRecord(object_type="Account", payload=good, origin="accounts.csv:3"),
                    Unreadable(object_type="Account", reason="not CSV", origin="accounts.csv:4"),
                ]

    store = InMemoryStore()
    report = SyncEngine(source=FileSource(), store=store).sync()

    assert [(r.record_id, r.origin) for r in report.rejected] == [
        ("001XYZ", "accounts.csv:2"),
        (None, "accounts.csv:4"),
    ]
    assert report.rejected[1].reason == "not CSV"
    assert store.get_account(A1).fields == {"Name": "Good"}


def test_r7_odd_payloads_are_rejected_never_crash_the_sync() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="Acme")
    engine.sync()
    odd: list[tuple[str, Any]] = [
        ("Account", ["not", "an", "object"]),
        ("Account", {"attributes": "Account", "Id": A2, "SystemModstamp": sf_time(at(1))}),
        ("Account", {"Id": 12345, "SystemModstamp": sf_time(at(1))}),
        ("Account", {"Id": A2, "SystemModstamp": 1709283660000}),
        ("Account", {"Id": A2, "SystemModstamp": "yesterday"}),
        ("Account", {"Id": A2, "SystemModstamp": sf_time(at(1)), "IsDeleted": "yes"}),
        ("Account", rest("Account", A2, at(1), BillingAddress={"City": "Paris"})),
        ("Opportunity", rest("Opportunity", make_id("006", 1), at(1), Name="Deal")),
    ]
    for object_type, payload in odd:
        src.add_raw(object_type, payload)
    src.add_change_event({"ChangeEventHeader": {}})
    src.add_change_event({"something": "else"})
    src.add_change_event(cdc("Account", "TELEPORT", [A1], at(1)))

    report = engine.sync()

    assert len(report.rejected) == len(odd) + 3
    assert all(r.reason for r in report.rejected)
    assert store.get_account(A2) is None
    assert store.get_account(A1).fields == {"Name": "Acme"}


def test_r7_errors_are_the_library_own_types_under_one_base() -> None:
    for error in (
        InvalidRecordError,
        NoAccountError,
        UnknownContactError,
        AlreadyAContactError,
        ConfigurationError,
    ):
        assert issubclass(error, AcctSyncError)
        assert not issubclass(error, KeyError)
    src, store, engine = seeded()
    calls = [
        lambda: Account(id=A1, system_modstamp=datetime(2024, 3, 1, 9, 0)),
        lambda: Account(id=A1, fields={"Id": "x"}, system_modstamp=T0),
        lambda: Account(id=A1, fields={"When": datetime(2024, 3, 1)}, system_modstamp=T0),
        lambda: Account(id=A1, fields={"Tags": ["a", "b"]}, system_modstamp=T0),
        lambda: Account(id=A1, fields={"Revenue": float("nan")}, system_modstamp=T0),
        lambda: Deletion(object_type="Lead", id=A1, deleted_at=T0),
        lambda: Deletion(object_type="Account", id=A1, deleted_at=T0, master_record_id=A1),
        lambda: store.get_account("nope"),
        lambda: engine.edit_account_field(contact_id="nope", field="Industry", value="x"),
        lambda: engine.edit_account_field(contact_id=C1, field="AccountId", value=A2),
        lambda: engine.edit_account_field(contact_id=C1, field="Industry", value=object()),
        lambda: SyncEngine(source=src, store=store, page_size=0),
        lambda: ActivityPolicy(max_contacts_per_account=-1),
    ]
    for number, call in enumerate(calls):
        try:
            call()
        except AcctSyncError:
            continue
        pytest.fail(f"call #{number} raised no AcctSyncError")
    assert store.get_account(A1).fields == {"Name": "Acme", "Industry": "Tech", "Phone": "111"}


# == R8 Salesforce formats ===================================================================


_Versioned = TypeVar("_Versioned", Account, Contact)


def without_sequence(record: _Versioned | None) -> _Versioned | None:
    return None if record is None else attrs.evolve(record, sequence=None)


def test_r8_rest_json_and_cdc_decode_to_same_records() -> None:
    s1, s2 = T0, at(60)
    account_values = {
        "Name": "Acme",
        "Industry": "Retail",
        "NumberOfEmployees": 250,
        "AnnualRevenue": 1250000.5,
        "IsPartner__c": True,
        "Founded__c": "1999-12-31",
        "LastReviewed__c": "2024-01-31T12:00:00.000+0000",
        "Phone": "111",
    }
    audit = {
        "CreatedDate": sf_time(s1),
        "CreatedById": "005Ak00000A1b2cIAB",
        "LastModifiedDate": sf_time(s1),
        "LastModifiedById": "005Ak00000A1b2cIAB",
    }
    rest_src, rest_store, rest_engine = new()
    rest_src.add_raw(
        "Account",
        rest(
            "Account",
            A1,
            s1,
            **account_values,
            BillingCity="Paris",
            BillingCountry="France",
            **audit,
        ),
    )
    rest_src.add_raw(
        "Contact",
        rest(
            "Contact",
            C1,
            s1,
            AccountId=A1,
            FirstName="Jane",
            LastName="Doe",
            Email="jane@acme.test",
            HasOptedOutOfEmail=False,
            Birthdate="1990-05-17",
            **audit,
        ),
    )
    cdc_src, cdc_store, cdc_engine = new()
    cdc_src.add_change_event(
        cdc(
            "Account",
            "CREATE",
            [A1],
            s1,
            **{**account_values, "LastReviewed__c": "2024-01-31T12:00:00.000Z"},
            BillingAddress={"City": "Paris", "Country": "France"},
            **audit,
        )
    )
    cdc_src.add_change_event(
        cdc(
            "Contact",
            "CREATE",
            [C1],
            s1,
            AccountId=A1,
            Name={"FirstName": "Jane", "LastName": "Doe"},
            Email="jane@acme.test",
            HasOptedOutOfEmail=False,
            Birthdate="1990-05-17",
            **audit,
        )
    )
    for engine in (rest_engine, cdc_engine):
        report = engine.sync()
        assert report.ok, report.rejected

    account = rest_store.get_account(A1)
    # The same records, but that a change event also tells its place in its second (R3).
    assert account == without_sequence(cdc_store.get_account(A1))
    assert rest_store.get_contact(C1) == without_sequence(cdc_store.get_contact(C1))
    assert account.system_modstamp == s1
    assert account.fields == {
        **account_values,
        "Founded__c": date(1999, 12, 31),
        "LastReviewed__c": datetime(2024, 1, 31, 12, 0, tzinfo=UTC),
        "BillingCity": "Paris",
        "BillingCountry": "France",
    }
    contact = rest_store.get_contact(C1)
    assert contact.account_id == A1
    assert contact.fields == {
        "FirstName": "Jane",
        "LastName": "Doe",
        "Email": "jane@acme.test",
        "HasOptedOutOfEmail": False,
        "Birthdate": date(1990, 5, 17),
    }

    # Version 2: REST sends the whole record; CDC an UPDATE carrying only what changed.
    rest_src.add_raw(
        "Account",
        rest(
            "Account",
            A1,
            s2,
            **{**account_values, "Industry": "Media", "Phone": None},
            BillingCity="Lyon",
            BillingCountry="France",
            LastModifiedDate=sf_time(s2),
        ),
    )
    cdc_src.add_change_event(
        cdc(
            "Account",
            "UPDATE",
            [A1],
            s2,
            changed=["Industry", "BillingAddress.City", "Phone", "LastModifiedDate"],
            nulled=["Phone"],
            Industry="Media",
            BillingAddress={"City": "Lyon"},
            LastModifiedDate=sf_time(s2),
        )
    )
    # A gap: changes to A2 were lost and must be fetched again.
    cdc_src.add_change_event(cdc("Account", "GAP_UPDATE", [A2], s2))
    rest_report, cdc_report = rest_engine.sync(), cdc_engine.sync()

    assert rest_store.get_account(A1) == without_sequence(cdc_store.get_account(A1))
    assert cdc_store.get_account(A1).fields == {
        **account_values,
        "Industry": "Media",
        "Phone": None,
        "Founded__c": date(1999, 12, 31),
        "LastReviewed__c": datetime(2024, 1, 31, 12, 0, tzinfo=UTC),
        "BillingCity": "Lyon",
        "BillingCountry": "France",
    }
    assert cdc_store.get_account(A1).system_modstamp == s2
    # The same changes were logged either way, and only real fields.
    assert (
        summary(entries(cdc_store))
        == summary(entries(rest_store))
        == {
            (C1, A1, "Industry", "Retail", "Media"),
            (C1, A1, "BillingCity", "Paris", "Lyon"),
            (C1, A1, "Phone", "111", None),
        }
    )
    assert rest_report.refetch == ()
    [refetch] = cdc_report.refetch
    assert refetch.object_type == "Account"
    assert refetch.ids == (A2,)
    assert "GAP" in refetch.reason
    assert cdc_report.rejected == ()


def test_r8_deletes_undeletes_and_moves_in_both_formats() -> None:
    rest_src, rest_store, rest_engine = new()
    cdc_src, cdc_store, cdc_engine = new()
    for src in (rest_src, cdc_src):
        put_account(src, A1, T0, Name="Winner")
        put_account(src, A2, T0, Name="Loser")
        put_account(src, A3, T0, Name="Gone")
        put_contact(src, C1, A1, T0, LastName="One")
        put_contact(src, C2, A2, T0, LastName="Two")
    rest_engine.sync()
    cdc_engine.sync()

    # A2 merged into A1, A3 deleted, C1 leaves its account.
    rest_src.add_raw("Account", rest("Account", A2, at(60), IsDeleted=True, MasterRecordId=A1))
    rest_src.add_raw("Account", rest("Account", A3, at(61), IsDeleted=True))
    rest_src.add_raw("Contact", rest("Contact", C1, at(62), AccountId=None, LastName="One"))
    cdc_src.add_change_event(cdc("Account", "DELETE", [A2], at(60), MasterRecordId=A1))
    cdc_src.add_change_event(cdc("Account", "DELETE", [A3], at(61)))
    cdc_src.add_change_event(
        cdc("Contact", "UPDATE", [C1], at(62), changed=["AccountId"], nulled=["AccountId"])
    )
    for engine in (rest_engine, cdc_engine):
        assert engine.sync().ok

    for store in (rest_store, cdc_store):
        assert store.get_account(A2) is None
        assert store.get_account(A3) is None
        assert store.get_contact(C2).account_id == A1
        assert store.get_contact(C1).account_id is None
        assert store.get_contact(C1).fields == {"LastName": "One"}

    # A3 comes back from the recycle bin.
    rest_src.add_raw("Account", rest("Account", A3, at(120), Name="Back"))
    cdc_src.add_change_event(cdc("Account", "UNDELETE", [A3], at(120), Name="Back"))
    rest_engine.sync()
    cdc_engine.sync()
    assert rest_store.get_account(A3) == without_sequence(cdc_store.get_account(A3))
    assert cdc_store.get_account(A3).fields == {"Name": "Back"}


# -- Orderings found in review ---------------------------------------------------------


def test_s7_entries_go_to_the_contacts_the_account_had_when_it_changed() -> None:
    src, _store, engine = seeded()  # A1 with C1, C2
    put_account(src, A2, T0, Name="Other")
    put_contact(src, C3, A2, T0)
    engine.sync()
    # At +10 min C1 moves to A2, C2 is deleted and C3 joins A1; at +20 min A1 changes.
    put_contact(src, C1, A2, at(10))
    src.delete(Deletion(object_type="Contact", id=C2, deleted_at=at(10)))
    put_contact(src, C3, A1, at(10))
    put_account(src, A1, at(20), Name="Acme 2", Industry="Tech", Phone="111")
    report = engine.sync()
    assert summary(report.activities) == {(C3, A1, "Name", "Acme", "Acme 2")}


def test_s7_a_contact_joining_after_the_change_gets_no_entry() -> None:
    src, store, engine = seeded()
    put_account(src, A1, at(10), Name="Acme 2", Industry="Tech", Phone="111")
    put_contact(src, C3, A1, at(20))
    report = engine.sync()
    assert {e.contact_id for e in report.activities} == {C1, C2}
    assert sorted(store.contact_ids(A1)) == sorted([C1, C2, C3])


def test_r4_conflicting_merges_do_not_stop_the_sync() -> None:
    src, store, engine = new()
    for account_id in (A1, A2, A3):
        put_account(src, account_id, T0)
    put_contact(src, C1, A2, T0)
    engine.sync()
    src.delete(Deletion(object_type="Account", id=A2, deleted_at=at(1), master_record_id=A1))
    engine.sync()
    src.undelete("Account", A2, at=at(2))
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(2), master_record_id=A2))
    put_account(src, A3, at(3), Name="still synced")
    engine.sync()
    account = store.get_account(A3)
    assert account is not None
    assert account.fields == {"Name": "still synced"}
    assert store.get_account(A1) is None
    assert store.get_account(A2) is not None
    contact = store.get_contact(C1)
    assert contact is not None
    assert contact.account_id == A2


def test_r1_a_record_stamped_in_the_future_does_not_hide_later_changes() -> None:
    src, store, engine = new()  # the clock says EDIT_TIME
    src.add_raw("Account", rest("Account", A2, datetime(2994, 1, 1, tzinfo=UTC), Name="Future"))
    report = engine.sync()
    assert report.watermarks["Account"] == EDIT_TIME
    put_account(src, A1, EDIT_TIME - timedelta(minutes=1), Name="Now")
    engine.sync()
    assert store.get_account(A1) is not None


def test_r7_a_source_yielding_something_else_than_a_change_is_reported() -> None:
    class Odd(InMemorySource):
        def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Iterator[Any]:
            yield [
                None,
                {"Id": A1},
                *itertools.chain(*super().read_changes(object_type, since, page_size=page_size)),
            ]

    src = Odd()
    store = InMemoryStore()
    put_account(src, A1, T0, Name="Acme")
    report = SyncEngine(source=src, store=store).sync()
    assert len(report.rejected) == 4
    assert all("not a change" in r.reason for r in report.rejected)
    assert store.get_account(A1) is not None


def test_r8_wrapped_change_event_messages_are_read_in_their_stream_at_their_commit_time() -> None:
    src, store, engine = seeded()
    event = cdc("Contact", "UPDATE", [C1], at(10), changed=["AccountId"], AccountId=None)
    src.add_change_event({"data": {"schema": "x", "payload": event, "event": {"replayId": 7}}})
    report = engine.sync()
    assert report.rejected == ()
    contact = store.get_contact(C1)
    assert contact is not None
    assert contact.account_id is None
    assert contact.system_modstamp == at(10)


def test_r4_a_contact_written_after_its_merged_account_was_undeleted_stays_with_it() -> None:
    src, store, engine = new()
    put_account(src, A1, T0, Name="A")
    put_account(src, A2, T0, Name="B")
    engine.sync()
    src.delete(Deletion(object_type="Account", id=A1, deleted_at=at(10), master_record_id=A2))
    engine.sync()
    src.undelete("Account", A1, at=at(20))
    put_contact(src, C1, A1, at(30))
    put_account(src, A1, at(40), Name="A again")
    engine.sync()
    contact = store.get_contact(C1)
    assert contact is not None
    assert contact.account_id == A1
    src.delete(Deletion(object_type="Account", id=A2, deleted_at=at(50)))
    engine.sync()
    assert store.get_contact(C1) is not None
    assert store.contact_ids(A1) == [C1]


class HeldStore(InMemoryStore):
    """An `ExclusiveStore` that records whether each write happened while held."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.unheld_writes = 0
        self.holds = 0

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self.holds += 1
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def apply(self, batch: Batch) -> None:
        if not self.depth:
            self.unheld_writes += 1
        super().apply(batch)


def test_r2_a_shared_store_is_held_for_every_sync_edit_and_conversion() -> None:
    src, store = InMemorySource(), HeldStore()
    engine = SyncEngine(source=src, store=store, clock=lambda: EDIT_TIME)
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0)
    engine.sync()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    engine.convert_person(Person(id="lead-1", fields={"LastName": "Doe", "Company": "Init"}))
    assert isinstance(store, ExclusiveStore)
    assert store.holds == 3
    assert store.unheld_writes == 0
    assert store.depth == 0


def test_s7_a_store_without_a_contact_index_logs_the_same_entries() -> None:
    class PlainStore:
        """Only the `Store` protocol: no `contact_ids_of`."""

        def __init__(self) -> None:
            self.inner = InMemoryStore()

        def __getattr__(self, name: str) -> Any:
            if name == "contact_ids_of":
                raise AttributeError(name)
            return getattr(self.inner, name)

    logs = []
    for store in (InMemoryStore(), PlainStore()):
        src = InMemorySource()
        put_account(src, A1, T0, Name="Acme")
        put_account(src, A2, T0, Name="Globex")
        for contact_id, account_id in ((C1, A1), (C2, A1), (C4, A2)):
            put_contact(src, contact_id, account_id, T0)
        engine = SyncEngine(source=src, store=store, clock=lambda: EDIT_TIME)  # type: ignore[arg-type]
        engine.sync()
        # One page: A2 changes before C5 joins it, A1 after C3 joins it.
        put_account(src, A2, at(1), Name="Globex Inc")
        put_contact(src, C3, A1, at(2))
        put_contact(src, C5, A2, at(2))
        put_account(src, A1, at(3), Name="Acme Inc")
        engine.sync()
        logs.append([(e.contact_id, e.new_value) for e in store.activities()])
    assert (
        logs[0]
        == logs[1]
        == [
            (C4, "Globex Inc"),
            (C1, "Acme Inc"),
            (C2, "Acme Inc"),
            (C3, "Acme Inc"),
        ]
    )


def test_s7_versions_read_again_ask_the_store_for_no_contacts() -> None:
    class CountingStore(InMemoryStore):
        asked: list[set[str]]

        def contact_ids_of(self, account_ids: Any, *, up_to: int) -> Any:
            self.asked.append(set(account_ids))
            return super().contact_ids_of(account_ids, up_to=up_to)

    store = CountingStore()
    store.asked = []
    src = InMemorySource()
    put_account(src, A1, T0, Name="Acme")
    put_contact(src, C1, A1, T0)
    engine = SyncEngine(source=src, store=store, clock=lambda: EDIT_TIME)
    engine.sync()
    engine.sync()  # the lookback reads Acme again: nothing to fan out
    assert store.asked == []
    put_account(src, A1, at(1), Name="Acme Inc")
    engine.sync()
    assert store.asked == [{A1}]


def test_s8_a_threshold_above_5000_logs_an_account_of_5001_contacts() -> None:
    src, store = InMemorySource(), InMemoryStore()
    put_account(src, A1, T0, Name="Acme")
    for n in range(5001):
        put_contact(src, make_id("003", 1000 + n), A1, T0)
    policy = ActivityPolicy(max_contacts_per_account=10_000)
    engine = SyncEngine(source=src, store=store, policy=policy, clock=lambda: EDIT_TIME)
    engine.sync()
    put_account(src, A1, at(1), Name="Acme Inc")
    report = engine.sync()
    assert report.suppressed == ()
    assert len(report.activities) == 5001
