"""What a real org sends, through the public API on every store (rules R3, R9, R10).

Each test runs on the in-memory store, SQLite and PostgreSQL (the ``any_store`` fixture):
the engine decides, so every store must end the same. Payloads are in the shape the REST
API Developer Guide publishes for query results ("Query", "Response Bodies") and the Change
Data Capture Developer Guide for change events ("Change Event Message Structure").
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acctsync import (
    Account,
    AcctSyncError,
    Batch,
    Change,
    ChangeDataValue,
    Contact,
    Conversion,
    Deletion,
    DescribedSource,
    FieldNameStore,
    InvalidRecordError,
    ObjectType,
    Origin,
    Store,
    StoredAccount,
    StoredContact,
    SyncEngine,
    UnknownFieldError,
)
from acctsync.testing import InMemorySource, InMemoryStore, make_id

T0 = datetime(2026, 6, 9, 16, 12, 25, tzinfo=UTC)  # SystemModstamp: whole seconds
A1, A2 = make_id("001", 1), make_id("001", 2)
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))


def rest(object_type: str, record_id: str, stamp: datetime, **fields: Any) -> dict[str, Any]:
    """A record as a REST query returns it (REST API Developer Guide, "Query")."""
    return {
        "attributes": {"type": object_type},
        "Id": record_id,
        **fields,
        "SystemModstamp": f"{stamp:%Y-%m-%dT%H:%M:%S}.000+0000",
    }


def seeded(store: Store) -> tuple[InMemorySource, SyncEngine]:
    """A1 (Acme, Tech) with contacts C1 and C2, all saved at T0, synced."""
    source = InMemorySource()
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0))
    for contact_id in (C1, C2):
        source.upsert(Contact(id=contact_id, account_id=A1, system_modstamp=T0))
    engine = SyncEngine(source=source, store=store, clock=lambda: T0 + timedelta(minutes=1))
    assert engine.sync().ok
    return source, engine


def changes(store: Store) -> set[tuple[str, str, object, object]]:
    return {(e.contact_id, e.field, e.old_value, e.new_value) for e in store.activities()}


# -- R3: two saves in one second --------------------------------------------------------


def test_r3_a_second_save_in_the_same_second_applies_like_a_newer_version(
    any_store: Store,
) -> None:
    source, engine = seeded(any_store)
    engine.edit_account_field(contact_id=C1, field="Phone", value="555")
    source.upsert(
        Account(id=A1, fields={"Name": "Acme", "Industry": "Energy"}, system_modstamp=T0)
    )

    report = engine.sync()

    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Energy"}  # the local edit is gone (S3)
    assert report.local_edits_discarded == 1
    salesforce = {
        (e.contact_id, e.field, e.old_value, e.new_value)
        for e in report.activities
        if e.origin is Origin.SALESFORCE
    }
    assert salesforce == {
        (C1, "Industry", "Tech", "Energy"),
        (C2, "Industry", "Tech", "Energy"),
        (C1, "Phone", "555", None),
        (C2, "Phone", "555", None),
    }
    # Read again, the same stamp with the same values is the same version: a no-op.
    again = engine.sync()
    assert (again.accounts_upserted, again.activities) == (0, ())
    ids = [e.id for e in any_store.activities()]
    assert len(ids) == len(set(ids)) == 6


def test_r3_the_same_stamp_with_the_same_values_keeps_local_edits(any_store: Store) -> None:
    source, engine = seeded(any_store)
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0))

    report = engine.sync()

    assert report.already_applied >= 1
    assert report.local_edits_discarded == 0
    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields["Industry"] == "Retail"


def test_r3_local_edits_on_a_same_second_version_log_entries_of_their_own(
    any_store: Store,
) -> None:
    source, engine = seeded(any_store)
    first = engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Industry": "Tech2"}, system_modstamp=T0))
    engine.sync()
    second = engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")

    assert second.changed
    assert {e.id for e in first.activities}.isdisjoint(e.id for e in second.activities)
    logged = [e.id for e in any_store.activities()]
    assert len(logged) == len(set(logged)) == 6


@pytest.mark.parametrize("page_size", [1, 2, 1000])
def test_r3_no_save_is_lost_whatever_the_page_size(any_store: Store, page_size: int) -> None:
    source = InMemorySource()
    engine = SyncEngine(source=source, store=any_store, page_size=page_size)
    for n in range(1, 6):
        source.upsert(Account(id=make_id("001", n), fields={"Name": "v1"}, system_modstamp=T0))
    engine.sync()
    for n in range(1, 6):
        source.upsert(Account(id=make_id("001", n), fields={"Name": "v2"}, system_modstamp=T0))

    report = engine.sync()

    assert report.accounts_upserted == 5
    for n in range(1, 6):
        account = any_store.get_account(make_id("001", n))
        assert account is not None
        assert account.fields == {"Name": "v2"}


def change_event(commit_number: int, industry: str) -> dict[str, Any]:
    """An UPDATE over CometD (Change Data Capture Developer Guide, "Change Event Message
    Structure"): two commits in one millisecond, told apart by their commitNumber."""
    return {
        "ChangeEventHeader": {
            "entityName": "Account",
            "recordIds": [A1],
            "changeType": "UPDATE",
            "changeOrigin": "com/salesforce/api/soap/60.0;client=test",
            "transactionKey": f"0002343d-9d90-e395-ed20-cf416ba652a{commit_number}",
            "sequenceNumber": 1,
            "commitTimestamp": int((T0 + timedelta(seconds=1)).timestamp() * 1000),
            "commitNumber": commit_number,
            "commitUser": "005xx000001Svq3AAC",
            "changedFields": ["Industry"],
        },
        "Industry": industry,
    }


def test_r3_a_finer_order_breaks_ties_whatever_the_arrival(any_store: Store) -> None:
    source, engine = seeded(any_store)
    # The later commit arrives first; every sync reads both again.
    source.add_change_event(change_event(10_000_000_002, "Later"))
    source.add_change_event(change_event(10_000_000_001, "Earlier"))

    first = engine.sync()
    again = engine.sync()

    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields["Industry"] == "Later"
    assert first.stale == 1  # the earlier commit, read after the later one
    assert again.accounts_upserted == 0
    assert changes(any_store) == {
        (C1, "Industry", "Tech", "Later"),
        (C2, "Industry", "Tech", "Later"),
    }


def test_r3_a_contact_moved_off_an_account_in_the_second_it_was_deleted_stays(
    any_store: Store,
) -> None:
    source, engine = seeded(any_store)
    # All in the second the sync read them in: C1 moved off A1, then A1 deleted.
    source.upsert(Contact(id=C1, account_id=None, system_modstamp=T0))
    source.delete(Deletion(object_type="Account", id=A1, deleted_at=T0))

    engine.sync()

    contact = any_store.get_contact(C1)
    assert contact is not None
    assert contact.account_id is None
    assert any_store.get_contact(C2) is None  # deleted with its account (R4)


# -- R9: one field, whatever its case ---------------------------------------------------


def test_r9_each_field_keeps_the_org_s_first_spelling(any_store: Store) -> None:
    source, engine = seeded(any_store)
    source.add_raw("Account", rest("Account", A2, T0, NAME="Globex", INDUSTRY="Energy"))

    assert engine.sync().ok

    account = any_store.get_account(A2)
    assert account is not None
    assert account.fields == {"Name": "Globex", "Industry": "Energy"}
    assert isinstance(any_store, FieldNameStore)
    assert sorted(any_store.field_names("Account")) == ["Industry", "Name"]


def test_r9_upper_case_headers_update_the_same_fields_and_log_no_false_entries(
    any_store: Store,
) -> None:
    source, engine = seeded(any_store)
    later = T0 + timedelta(minutes=1)
    # As an older Data Loader writes them: ID, NAME, SYSTEMMODSTAMP.
    source.add_raw(
        "Account",
        {
            "ID": A1,
            "NAME": "Acme",
            "INDUSTRY": "Retail",
            "SYSTEMMODSTAMP": "2026-06-09T16:13:25.000Z",
        },
    )

    report = engine.sync()

    assert report.ok, report.rejected
    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Retail"}
    assert account.system_modstamp == later
    assert changes(any_store) == {
        (C1, "Industry", "Tech", "Retail"),
        (C2, "Industry", "Tech", "Retail"),
    }


def test_r9_a_local_edit_names_a_field_in_any_case(any_store: Store) -> None:
    _, engine = seeded(any_store)

    result = engine.edit_account_field(contact_id=C1, field="INDUSTRY", value="Retail")

    assert result.field == "Industry"
    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Retail"}


def test_r9_a_local_edit_of_a_field_the_org_has_not_got_is_refused(any_store: Store) -> None:
    _, engine = seeded(any_store)

    with pytest.raises(UnknownFieldError) as refused:
        engine.edit_account_field(contact_id=C1, field="Indsutry", value="Retail")

    assert refused.value.close_matches[0] == "Industry"
    assert "did you mean 'Industry'" in str(refused.value)
    assert list(any_store.activities()) == []
    # A standard Account field the records have not named yet is the org's all the same.
    assert engine.edit_account_field(contact_id=C1, field="website", value="a.test").changed
    # A field of one's own is an explicit choice.
    added = engine.edit_account_field(
        contact_id=C1, field="Score__c", value=3, allow_new_field=True
    )
    assert added.field == "Score__c"
    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {
        "Name": "Acme",
        "Industry": "Tech",
        "Website": "a.test",
        "Score__c": 3,
    }


def test_r9_reserved_names_are_recognised_in_any_case(any_store: Store) -> None:
    source, engine = seeded(any_store)
    for name in ("ID", "systemmodstamp", "ACCOUNTID", "isdeleted", "MasterRecordID"):
        with pytest.raises(InvalidRecordError, match="record attribute"):
            Account(id=A2, fields={name: "x"}, system_modstamp=T0)
        with pytest.raises(InvalidRecordError, match="record attribute"):
            engine.edit_account_field(contact_id=C1, field=name, value="x")
    source.add_raw(
        "Contact", {"id": C3, "accountid": A1, "SystemModStamp": "2026-06-09T16:12:25Z"}
    )

    assert engine.sync().ok
    contact = any_store.get_contact(C3)
    assert contact is not None
    assert (contact.account_id, dict(contact.fields)) == (A1, {})


def test_r9_a_record_naming_one_field_twice_is_rejected(any_store: Store) -> None:
    source, engine = seeded(any_store)
    source.add_raw("Account", rest("Account", A2, T0, Industry="Tech", INDUSTRY="Retail"))

    report = engine.sync()

    assert [(r.record_id, r.field) for r in report.rejected] == [(A2, "INDUSTRY")]
    assert any_store.get_account(A2) is None


class DescribedOrg(InMemorySource):
    """An org whose describe lists ``fields``, as `SalesforceSource` reads it."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__()
        self.described = fields

    def field_names(self, object_type: ObjectType) -> Collection[str]:
        return self.described[object_type]

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterable[Sequence[Change]]:
        # What the integration user cannot see is absent from query results too.
        visible = {name.lower() for name in self.described[object_type]}
        for page in super().read_changes(object_type, since, page_size=page_size):
            yield [
                Account(
                    id=item.id,
                    fields={k: v for k, v in item.fields.items() if k.lower() in visible},
                    system_modstamp=item.system_modstamp,
                )
                if isinstance(item, Account)
                else item
                for item in page
            ]


def test_r9_describe_spells_the_org_s_fields(any_store: Store) -> None:
    source = DescribedOrg({"Account": ["Name", "Industry"], "Contact": ["LastName"]})
    assert isinstance(source, DescribedSource)
    source.add_raw("Account", rest("Account", A1, T0, NAME="Acme", industry="Tech"))
    engine = SyncEngine(source=source, store=any_store)

    assert engine.sync().ok

    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Tech"}


def test_r9_a_field_the_source_stops_reading_is_reported_and_kept(any_store: Store) -> None:
    source = DescribedOrg({"Account": ["Name", "Industry"], "Contact": []})
    source.upsert(Account(id=A1, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0))
    source.upsert(Contact(id=C1, account_id=A1, system_modstamp=T0))
    engine = SyncEngine(source=source, store=any_store, clock=lambda: T0 + timedelta(minutes=1))
    assert engine.sync().missing_fields == {}
    source.described["Account"] = ["Name"]  # the integration user lost access to Industry
    source.upsert(
        Account(
            id=A1,
            fields={"Name": "Acme 2", "Industry": "x"},
            system_modstamp=T0 + timedelta(seconds=5),
        )
    )

    report = engine.sync()

    assert report.missing_fields == {"Account": ("Industry",)}
    account = any_store.get_account(A1)
    assert account is not None
    # Not read is not changed: the last value read stays, and no entry says it went.
    assert account.fields == {"Name": "Acme 2", "Industry": "Tech"}
    assert changes(any_store) == {(C1, "Name", "Acme", "Acme 2")}


# -- R10: only what Salesforce could send -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Na\x00me", "API name"),
        ("N" * 256, "at most 255"),
        ("Annual Revenue", "API name"),
        ("Zürich__c", "API name"),
        ("1stField", "API name"),
    ],
)
def test_r10_a_name_salesforce_could_never_send_rejects_the_record(
    any_store: Store, name: str, reason: str
) -> None:
    source, engine = seeded(any_store)
    source.add_raw("Account", rest("Account", A2, T0, **{name: "x", "Name": "Globex"}))
    source.upsert(Contact(id=C3, account_id=A2, system_modstamp=T0 + timedelta(seconds=1)))

    report = engine.sync()

    assert [(r.record_id, r.object_type) for r in report.rejected] == [(A2, "Account")]
    assert reason in report.rejected[0].reason
    assert any_store.get_account(A2) is None
    assert any_store.get_contact(C3) is not None  # the rest applies (R7), attached later
    assert engine.sync().rejected == report.rejected  # read again, refused again, no crash


def test_r10_text_that_is_not_unicode_rejects_the_record_and_the_org_moves_on(
    any_store: Store,
) -> None:
    source, engine = seeded(any_store)
    # JSON may escape half a surrogate pair ("\ud83d"); Python's parser lets it through.
    text = json.dumps(rest("Account", A2, T0 + timedelta(seconds=1), Name="Acme \ud83d"))
    assert "\\ud83d" in text
    payload = json.loads(text)
    source.add_raw("Account", payload)
    source.upsert(
        Account(
            id=A1,
            fields={"Name": "Acme 2", "Industry": "Tech"},
            system_modstamp=T0 + timedelta(seconds=9),
        )
    )

    report = engine.sync()

    assert [(r.record_id, r.field) for r in report.rejected] == [(A2, "Name")]
    assert "surrogate" in report.rejected[0].reason
    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields["Name"] == "Acme 2"
    assert report.watermarks["Account"] == T0 + timedelta(seconds=9)


@pytest.mark.parametrize(
    ("field", "value"),
    [("Name", "half a pair \ud83d"), ("Bad Name", "x"), ("Na\x00me", "x"), ("N" * 300, "x")],
)
def test_r10_a_local_edit_salesforce_could_not_hold_is_refused_up_front(
    any_store: Store, field: str, value: str
) -> None:
    _, engine = seeded(any_store)

    with pytest.raises(AcctSyncError):
        engine.edit_account_field(contact_id=C1, field=field, value=value)

    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Tech"}
    assert list(any_store.activities()) == []


class PlainStore:
    """A caller's own store that keeps no spellings: the `Store` protocol only."""

    def __init__(self) -> None:
        self._inner = InMemoryStore()

    def watermark(self, stream: str) -> datetime | None:
        return self._inner.watermark(stream)

    def account_states(self, ids: Collection[str]) -> Mapping[str, StoredAccount]:
        return self._inner.account_states(ids)

    def contact_states(self, ids: Collection[str]) -> Mapping[str, StoredContact]:
        return self._inner.contact_states(ids)

    def count_contacts(self, account_id: str) -> int:
        return self._inner.count_contacts(account_id)

    def contact_ids(self, account_id: str) -> Sequence[str]:
        return self._inner.contact_ids(account_id)

    def conversion(self, person_id: str) -> Conversion | None:
        return self._inner.conversion(person_id)

    def apply(self, batch: Batch) -> None:
        self._inner.apply(batch)

    def get_account(self, account_id: str) -> Account | None:
        return self._inner.get_account(account_id)

    def get_contact(self, contact_id: str) -> Contact | None:
        return self._inner.get_contact(contact_id)

    def activities(self) -> Iterable[ChangeDataValue]:
        return self._inner.activities()


def test_r9_a_store_that_keeps_no_spellings_still_holds_one_field_per_name() -> None:
    store = PlainStore()
    assert not isinstance(store, FieldNameStore)
    source, engine = seeded(store)
    later = T0 + timedelta(minutes=1)
    source.add_raw("Account", rest("Account", A1, later, NAME="Acme", INDUSTRY="Retail"))

    engine.sync()

    account = store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Retail"}
    assert changes(store) == {
        (C1, "Industry", "Tech", "Retail"),
        (C2, "Industry", "Tech", "Retail"),
    }


def test_r3_a_field_newly_shown_as_null_is_no_new_save(any_store: Store) -> None:
    source, engine = seeded(any_store)
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    # The admin showed Tier__c to the integration user: the same version, one more field.
    source.upsert(
        Account(
            id=A1, fields={"Name": "Acme", "Industry": "Tech", "Tier__c": None}, system_modstamp=T0
        )
    )

    report = engine.sync()

    assert report.local_edits_discarded == 0
    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields["Industry"] == "Retail"


def test_r9_a_describe_listing_system_fields_spells_only_the_others(any_store: Store) -> None:
    described = ["Id", "IsDeleted", "SystemModstamp", "LastModifiedDate", "Name", "Industry"]
    source = DescribedOrg({"Account": described, "Contact": ["Id", "AccountId"]})
    source.add_raw("Account", rest("Account", A1, T0, NAME="Acme", industry="Tech"))

    assert SyncEngine(source=source, store=any_store).sync().ok

    account = any_store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme", "Industry": "Tech"}
    assert isinstance(any_store, FieldNameStore)
    assert sorted(any_store.field_names("Account")) == ["Industry", "Name"]


def test_r10_a_name_with_a_lone_surrogate_is_reported_in_plain_text(any_store: Store) -> None:
    source, engine = seeded(any_store)
    source.add_raw("Account", rest("Account", A2, T0, **{"Ind\ud83dustry": "Tech"}))

    report = engine.sync()

    (rejection,) = report.rejected
    assert rejection.field is not None
    assert rejection.field.isascii()
    assert "\\ud83d" in rejection.field
    json.dumps(rejection.field, ensure_ascii=False).encode()  # any report can hold it


def test_r10_text_of_a_str_subclass_is_checked_too() -> None:
    class Text(str):
        pass

    with pytest.raises(InvalidRecordError, match="surrogate"):
        Account(id=A1, fields={"Name": Text("Acme \ud83d")}, system_modstamp=T0)
