"""The simple-salesforce source against a loopback org that a real client talks to."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from acctsync import (
    Account,
    ChangeDataValue,
    ConfigurationError,
    Contact,
    Deletion,
    DescribedSource,
    Origin,
    Person,
    SourceError,
    SyncEngine,
)
from acctsync.sources.salesforce import (
    RetryPolicy,
    SalesforceError,
    SalesforceSource,
    UnreadableFieldError,
    _composite_ids,
    soql_datetime,
)
from acctsync.stores.sql import SqlStore
from acctsync.testing import InMemoryStore, check_source, make_id
from acctsync.testing.salesforce import FakeSalesforce
from realworld import describe_fields

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CLOCK = datetime(2024, 6, 1, tzinfo=UTC)
# Describes of a real org, as CumulusCI recorded them (see its README).


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=CLOCK) as fake:
        yield fake


def no_wait() -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []
    return RetryPolicy(attempts=3, initial=0.5, maximum=2.0, sleep=waits.append), waits


def source_of(org: FakeSalesforce, **options: object) -> SalesforceSource:
    options.setdefault("fields", {"Account": ["Name"], "Contact": ["Email"]})
    options.setdefault("retry", no_wait()[0])
    return SalesforceSource(org.client(parse_float=Decimal), **options)  # type: ignore[arg-type]


def sync_of(
    org: FakeSalesforce, store: object, *, page_size: int = 1000, **options: object
) -> SyncEngine:
    return SyncEngine(
        source=source_of(org, **options),
        store=store,  # type: ignore[arg-type]
        page_size=page_size,
        clock=lambda: CLOCK,
    )


def test_the_source_passes_the_conformance_checks() -> None:
    def make_source(records: Sequence[Account | Contact | Deletion]) -> SalesforceSource:
        fake = FakeSalesforce(clock=CLOCK)
        fake.start()
        opened.append(fake)
        # A deleted record was live first: put it, then delete it at its stamp.
        for record in records:
            if isinstance(record, Deletion):
                placeholder: Account | Contact
                if record.object_type == "Account":
                    placeholder = Account(id=record.id, system_modstamp=at(-60))
                else:
                    placeholder = Contact(id=record.id, system_modstamp=at(-60))
                fake.put(placeholder)
            else:
                fake.put(record)
        for record in records:
            if isinstance(record, Deletion):
                fake.delete(
                    record.object_type,
                    record.id,
                    at=record.deleted_at,
                    master_record_id=record.master_record_id,
                )
        return source_of(fake)

    opened: list[FakeSalesforce] = []
    try:
        check_source(make_source)
    finally:
        for fake in opened:
            fake.stop()


def test_a_full_sync_into_sqlite_equals_the_org(org: FakeSalesforce, tmp_path: Path) -> None:
    accounts = [
        Account(
            id=make_id("001", n),
            fields={
                "Name": f"Account {n}",
                "AnnualRevenue": Decimal("1250000.50"),
                "Founded__c": date(1990, 1, 1 + n % 28),
                "IsPartner__c": n % 2 == 0,
            },
            system_modstamp=at(n // 3),
        )
        for n in range(450)
    ]
    contacts = [
        Contact(
            id=make_id("003", n),
            account_id=make_id("001", n % 450),
            fields={"Email": f"c{n}@example.test", "LastName": f"Name {n}"},
            system_modstamp=at(n // 5),
        )
        for n in range(900)
    ]
    org.put(*accounts, *contacts)
    org.delete("Account", make_id("001", 7), at=at(400))
    fields = {
        "Account": ["Name", "AnnualRevenue", "Founded__c", "IsPartner__c"],
        "Contact": ["Email", "LastName"],
    }
    with SqlStore.sqlite(tmp_path / "org.db") as store:
        report = sync_of(org, store, fields=fields, page_size=200).sync()
        assert report.ok, report
        for kind in ("Account", "Contact"):
            held = list(store.accounts() if kind == "Account" else store.contacts())
            assert held == org.records(kind)
        assert store.get_account(make_id("001", 7)) is None
        assert store.contact_ids(make_id("001", 7)) == []
    # The client read page after page: 450 accounts in pages of 200.
    assert sum("/query/01g" in r.path for r in org.requests) >= 2


def test_fields_are_discovered_by_describe_without_compound_fields(org: FakeSalesforce) -> None:
    source = SalesforceSource(org.client(), retry=no_wait()[0])
    fields = source.field_names("Account")
    assert isinstance(source, DescribedSource)
    assert "Name" in fields
    assert "BillingCity" in fields
    assert "BillingAddress" not in fields
    assert not {"Id", "SystemModstamp", "IsDeleted", "LastModifiedDate"} & set(fields)
    soql = source.soql("Account", at(0))
    assert soql == (
        f"SELECT Id, SystemModstamp, IsDeleted, MasterRecordId, {', '.join(fields)} FROM Account"
        " WHERE SystemModstamp >= 2024-03-01T09:00:00Z ORDER BY SystemModstamp, Id"
    )


def describes(org: FakeSalesforce) -> int:
    return sum(r.path.endswith("/describe") for r in org.requests)


def queries(org: FakeSalesforce) -> list[str]:
    return [r.soql for r in org.requests if r.soql is not None]


def test_r9_configured_fields_are_read_as_describe_spells_them(org: FakeSalesforce) -> None:
    acme = Account(
        id=make_id("001", 1), fields={"Name": "Acme", "Industry": "Retail"}, system_modstamp=at(0)
    )
    org.put(acme)
    source = source_of(org, fields={"Account": ["industry", "NAME", "Industry", "id"]})
    store = InMemoryStore()

    assert source.field_names("Account") == ("Industry", "Name")
    report = SyncEngine(source=source, store=store, clock=lambda: CLOCK).sync()

    assert report.ok
    assert store.get_account(acme.id) == acme
    assert queries(org)[0].startswith(
        "SELECT Id, SystemModstamp, IsDeleted, MasterRecordId, Industry, Name FROM Account"
    )
    # Once per object while its reading is younger than describe_max_age: not for each
    # query, nor for each field_names call (here, and the engine's at the start of its
    # sync).
    assert describes(org) == 2
    eager = source_of(org, describe_max_age=timedelta(0))
    eager.field_names("Account")
    eager.field_names("Account")
    assert describes(org) == 4  # with no age allowed, at each call


@pytest.mark.parametrize(
    ("hidden", "configured", "expected"),
    [
        ((), ["Name", "Industy"], {"Industy": ("Industry",)}),
        (("Industry",), ["Name", "Industry"], {"Industry": ()}),
        (
            ("Industry",),
            ["Name", "Industry", "Phone", "Website_"],
            {"Industry": (), "Website_": ("Website",)},
        ),
    ],
    ids=["a-typo", "hidden-from-the-user", "both"],
)
def test_r9_a_configured_field_describe_does_not_list_fails_before_any_query(
    org: FakeSalesforce,
    hidden: tuple[str, ...],
    configured: list[str],
    expected: dict[str, tuple[str, ...]],
) -> None:
    org.put(Account(id=make_id("001", 1), fields={"Name": "Acme"}, system_modstamp=at(0)))
    org.hide_fields("Account", *hidden)
    store = InMemoryStore()
    engine = sync_of(org, store, fields={"Account": configured})

    with pytest.raises(UnreadableFieldError) as raised:
        engine.sync()

    error = raised.value
    assert isinstance(error, SalesforceError)
    assert not error.retryable
    assert (error.object_type, error.fields, error.close_matches) == (
        "Account",
        tuple(expected),
        expected,
    )
    for name, near in expected.items():
        assert repr(name) in str(error)
        assert all(repr(n) in str(error) for n in near)
    assert queries(org) == []
    assert store.watermark("Account") is None


def test_r9_a_field_revoked_between_syncs_is_noticed_by_the_next_source(
    org: FakeSalesforce,
) -> None:
    acme = make_id("001", 1)
    org.put(Account(id=acme, fields={"Name": "Acme", "Industry": "Retail"}, system_modstamp=at(0)))
    store = InMemoryStore()
    first = SalesforceSource(org.client(), retry=no_wait()[0], describe_max_age=timedelta(0))
    assert SyncEngine(source=first, store=store, clock=lambda: CLOCK).sync().ok
    assert "Industry" in first.field_names("Account")

    org.hide_fields("Account", "Industry")
    org.put(Account(id=acme, fields={"Name": "Acme Corp"}, system_modstamp=at(60)))
    # Asked again, at the start of a sync, a source reads describe anew; so does a new one.
    assert "Industry" not in first.field_names("Account")
    second = SalesforceSource(org.client(), retry=no_wait()[0])
    report = SyncEngine(source=second, store=store, clock=lambda: CLOCK).sync()

    assert "Industry" not in second.field_names("Account")
    assert "Industry" not in queries(org)[-2]
    assert report.ok
    account = store.get_account(acme)
    assert account is not None
    assert account.fields["Name"] == "Acme Corp"
    assert report.missing_fields == {"Account": ("Industry",)}
    # A source told to read it fails, naming it.
    with pytest.raises(UnreadableFieldError, match="'Industry'"):
        source_of(org, fields={"Account": ["Name", "Industry"]}).field_names("Account")


def test_r9_a_source_that_lives_long_describes_again_when_a_field_is_hidden(
    org: FakeSalesforce,
) -> None:
    # As a Change Data Capture fallback does: one source for many syncs.
    acme = make_id("001", 1)
    org.put(Account(id=acme, fields={"Name": "Acme", "Industry": "Retail"}, system_modstamp=at(0)))
    store = InMemoryStore()
    source = SalesforceSource(org.client(), retry=no_wait()[0])
    engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
    assert engine.sync().ok

    org.hide_fields("Account", "Industry")
    org.put(Account(id=acme, fields={"Name": "Acme Corp"}, system_modstamp=at(60)))
    # Read without a sync's field_names first, as a CDC source reads its fallback: the
    # query naming Industry fails, and the source describes again, once.
    (page,) = source.read_changes("Account", at(30), page_size=10)
    assert [item.payload["Name"] for item in page] == ["Acme Corp"]
    assert "Industry" not in queries(org)[-1]

    report = engine.sync()

    assert report.ok
    assert report.missing_fields == {"Account": ("Industry",)}
    account = store.get_account(acme)
    assert account is not None
    assert (account.fields["Name"], account.fields["Industry"]) == ("Acme Corp", "Retail")


def test_r8_a_real_orgs_describes_give_the_syncable_fields(org: FakeSalesforce) -> None:
    for object_type in ("Account", "Contact"):
        org.describe_fields(object_type, describe_fields(object_type))
    ada = make_id("003", 1)
    org.put(
        Contact(
            id=ada,
            fields={"FirstName": "Ada", "LastName": "Lovelace", "MailingCity": "London"},
            system_modstamp=at(0),
        )
    )
    source = SalesforceSource(org.client(), retry=no_wait()[0])

    # No compound (BillingAddress, Contact's Name), no base64, no audit or system field.
    assert source.field_names("Account") == (
        "Name", "Type", "RecordTypeId", "ParentId", "Primary_Contact__c",
        "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode", "BillingCountry",
        "BillingLatitude", "BillingLongitude", "BillingGeocodeAccuracy",
        "ShippingStreet", "ShippingCity", "ShippingState", "ShippingPostalCode",
        "ShippingCountry", "ShippingLatitude", "ShippingLongitude", "ShippingGeocodeAccuracy",
        "Phone", "Fax", "AccountNumber", "Website", "PhotoUrl", "Sic", "Industry",
        "AnnualRevenue", "NumberOfEmployees", "Ownership", "TickerSymbol", "Description",
        "ns__Description__c", "History__c", "Rating", "Site", "OwnerId",
        "ns__LinkedAccount__c", "IsPartner", "IsCustomerPortal", "ChannelProgramName",
        "ChannelProgramLevelName", "Jigsaw", "JigsawCompanyId", "CleanStatus",
        "AccountSource", "DunsNumber", "Tradestyle", "NaicsCode", "NaicsDesc", "YearStarted",
        "SicDesc", "DandbCompanyId", "OperatingHoursId",
    )  # fmt: skip
    assert source.field_names("Contact") == (
        "LastName", "FirstName", "Salutation",
        "OtherStreet", "OtherCity", "OtherState", "OtherPostalCode", "OtherCountry",
        "OtherLatitude", "OtherLongitude", "OtherGeocodeAccuracy",
        "MailingStreet", "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry",
        "MailingLatitude", "MailingLongitude", "MailingGeocodeAccuracy",
        "Phone", "Fax", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone",
        "ReportsToId", "Email", "Title", "Department", "AssistantName", "LeadSource",
        "Birthdate", "Description", "OwnerId", "LastCURequestDate", "LastCUUpdateDate",
        "EmailBouncedReason", "EmailBouncedDate", "IsEmailBounced", "PhotoUrl", "Jigsaw",
        "JigsawContactId", "CleanStatus", "IndividualId",
    )  # fmt: skip
    store = InMemoryStore()
    report = SyncEngine(source=source, store=store, clock=lambda: CLOCK).sync()
    assert report.ok
    contact = store.get_contact(ada)
    assert contact is not None
    assert contact.fields["MailingCity"] == "London"
    assert contact.fields.keys() == set(source.field_names("Contact"))


def test_r8_a_compound_named_in_fields_is_read_as_its_components(
    org: FakeSalesforce,
) -> None:
    acme = make_id("001", 1)
    org.put(
        Account(
            id=acme,
            fields={"Name": "Acme", "BillingCity": "Oslo", "BillingPostalCode": "0150"},
            system_modstamp=at(0),
        )
    )
    source = source_of(org, fields={"Account": ["Name", "BillingAddress"]})
    store = InMemoryStore()

    report = SyncEngine(source=source, store=store, clock=lambda: CLOCK).sync()

    assert source.field_names("Account") == (
        "Name", "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode",
        "BillingCountry",
    )  # fmt: skip
    # Its components are selected, not it: a null compound would read as a field named
    # BillingAddress, and Bulk queries refuse compounds.
    assert "Name, BillingStreet, BillingCity, BillingState," in queries(org)[0]
    assert report.ok, report.rejected
    account = store.get_account(acme)
    assert account is not None
    assert "BillingAddress" not in account.fields
    assert (account.fields["BillingCity"], account.fields["BillingPostalCode"]) == (
        "Oslo",
        "0150",
    )


def test_r3_a_save_in_the_second_of_the_last_synced_one_is_applied(
    org: FakeSalesforce, any_store: Any
) -> None:
    sf = org.client()
    sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme", "Industry": "Retail"})
    (acme,) = org.records("Account")
    ada = sf.Contact.create({"LastName": "Ng", "AccountId": acme.id})["id"]
    fields = {"Account": ["Name", "Industry"], "Contact": ["LastName"]}
    engine = sync_of(org, any_store, fields=fields)
    assert engine.sync().accounts_upserted == 1

    # Saved again in the same second: Salesforce gives it the same SystemModstamp.
    sf.Account.upsert("External_Id__c/X-1", {"Industry": "Energy"})
    (saved,) = org.records("Account")
    assert saved.system_modstamp == acme.system_modstamp
    report = engine.sync()

    assert report.accounts_upserted == 1
    stored = any_store.get_account(acme.id)
    assert stored is not None
    assert stored.fields == {"Name": "Acme", "Industry": "Energy"}
    logged = [e for e in any_store.activities() if e.field == "Industry"]
    assert [(e.contact_id, e.old_value, e.new_value, e.origin) for e in logged] == [
        (ada, "Retail", "Energy", Origin.SALESFORCE)
    ]
    assert all(isinstance(e, ChangeDataValue) for e in logged)
    again = engine.sync()
    assert (again.accounts_upserted, again.activities) == (0, ())
    assert len(list(any_store.activities())) == len(logged)


def test_r1_a_late_committed_record_is_picked_up(org: FakeSalesforce) -> None:
    org.put(Account(id=make_id("001", 1), fields={"Name": "First"}, system_modstamp=at(100)))
    store = InMemoryStore()
    engine = sync_of(org, store)
    engine.sync()
    # Stamped before the watermark, visible only now (its transaction committed late).
    late = Account(id=make_id("001", 2), fields={"Name": "Late"}, system_modstamp=at(40))
    org.put(late)
    report = engine.sync()
    assert store.get_account(late.id) == late
    assert report.accounts_upserted == 1
    assert report.already_applied == 1


def test_r1_records_sharing_a_stamp_across_pages_are_neither_lost_nor_doubled(
    org: FakeSalesforce,
) -> None:
    # 250 contacts on one stamp: Salesforce's smallest page (200) ends among them.
    contacts = [
        Contact(id=make_id("003", n), fields={"Email": f"{n}@x.test"}, system_modstamp=at(5))
        for n in range(250)
    ]
    org.put(*contacts)
    store = InMemoryStore()
    engine = SyncEngine(source=source_of(org), store=store, page_size=200, clock=lambda: CLOCK)
    report = engine.sync()
    assert report.contacts_upserted == 250
    assert all(store.get_contact(c.id) == c for c in contacts)
    again = engine.sync()
    assert again.contacts_upserted == 0
    assert again.already_applied == 250


def test_soql_datetimes_round_down_to_the_second() -> None:
    assert soql_datetime(datetime(2024, 1, 31, 12, 0, 5, 999_000, tzinfo=UTC)) == (
        "2024-01-31T12:00:05Z"
    )
    with pytest.raises(ConfigurationError):
        soql_datetime(datetime(2024, 1, 31))  # naive


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "REQUEST_LIMIT_EXCEEDED"),
        (400, "QUERY_TIMEOUT"),
        (500, None),
        (500, "UNKNOWN_EXCEPTION"),
        (503, None),
    ],
)
def test_a_retryable_failure_is_retried_with_backoff(
    org: FakeSalesforce, status: int, code: str | None
) -> None:
    org.put(Account(id=make_id("001", 1), fields={"Name": "Acme"}, system_modstamp=at(0)))
    retry, waits = no_wait()
    org.fail(status, code, "try later", times=2, path="/query")
    store = InMemoryStore()
    report = sync_of(org, store, retry=retry).sync()
    assert report.ok
    assert store.get_account(make_id("001", 1)) is not None
    assert len(waits) == 2
    assert all(0 < wait <= 2.0 for wait in waits)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (401, "INVALID_SESSION_ID", False),
        (400, "MALFORMED_QUERY", False),
        (403, "REQUEST_LIMIT_EXCEEDED", True),
    ],
)
def test_a_failure_stops_the_sync_without_advancing_the_watermark(
    org: FakeSalesforce, status: int, code: str, retryable: bool
) -> None:
    org.put(Account(id=make_id("001", 1), fields={"Name": "Acme"}, system_modstamp=at(0)))
    store = InMemoryStore()
    retry, waits = no_wait()
    org.fail(status, code, "no", times=10, path="/query")
    with pytest.raises(SalesforceError) as raised:
        sync_of(org, store, retry=retry).sync()
    assert isinstance(raised.value, SourceError)
    assert (raised.value.status, raised.value.error_code) == (status, code)
    assert raised.value.retryable is retryable
    assert len(waits) == (2 if retryable else 0)
    assert store.watermark("Account") is None
    assert list(store.activities()) == []


def wide_org(org: FakeSalesforce, fields: int) -> list[str]:
    """``org``'s Account with ``fields`` custom fields of 30-character names, and records."""
    names = [f"Customer_Attribute_{n:04d}_Value__c" for n in range(fields)]
    described = [{"name": name, "type": "string", "custom": True} for name in names]
    org.describe_fields("Account", [{"name": "Name", "type": "string"}, *described])
    org.put(
        *(
            Account(
                id=make_id("001", n),
                fields={"Name": f"Acme {n}", names[n % fields]: f"value {n}"},
                system_modstamp=at(n),
            )
            for n in range(5)
        )
    )
    return names


def test_a_query_too_long_for_a_uri_is_sent_in_a_composite_body(org: FakeSalesforce) -> None:
    # 520 fields: a GET query URI of some 17 KB, past the 16,384 bytes Salesforce takes
    # (Salesforce Help, article 000386264); the Composite API carries it in its body.
    names = wide_org(org, 520)
    source = source_of(org, fields={"Account": ["Name", *names]})
    assert len(source.soql("Account", None)) > 16_384
    store = InMemoryStore()
    engine = SyncEngine(source=source, store=store, page_size=2, clock=lambda: CLOCK)

    report = engine.sync()

    assert report.ok, report
    assert [a.fields["Name"] for a in store.accounts()] == [f"Acme {n}" for n in range(5)]
    third = store.get_account(make_id("001", 3))
    assert third is not None
    assert third.fields[names[3]] == "value 3"
    assert [r.path.rsplit("/", 1)[-1] for r in org.requests].count("composite") == 1
    assert all(r.status == 200 for r in org.requests)  # the next pages by their short URL


def test_the_loopback_org_refuses_a_uri_past_salesforce_s_limit(org: FakeSalesforce) -> None:
    names = wide_org(org, 520)
    soql = source_of(org, fields={"Account": ["Name", *names]}).soql("Account", None)
    answer = org.session().get(
        f"{org.url}/services/data/v{org.api_version}/query/",
        params={"q": soql},
        headers={"Authorization": f"Bearer {org.session_id}"},
    )
    assert answer.status_code == 414


def test_a_failed_next_page_keeps_the_pages_before_and_resumes(org: FakeSalesforce) -> None:
    org.put(
        *(
            Account(id=make_id("001", n), fields={"Name": str(n)}, system_modstamp=at(n))
            for n in range(700)
        )
    )
    store = InMemoryStore()
    engine = SyncEngine(
        source=source_of(org, retry=RetryPolicy(attempts=1)),
        store=store,
        page_size=200,
        clock=lambda: CLOCK,
    )
    org.fail(500, None, times=1, path="-400")  # the third page, by its locator
    with pytest.raises(SalesforceError):
        engine.sync()
    mark = store.watermark("Account")
    assert mark is not None
    assert mark < at(699)
    report = engine.sync()
    assert report.ok
    assert len(list(store.accounts())) == 700


def test_s6_convert_person_creates_three_records_once(org: FakeSalesforce) -> None:
    store = InMemoryStore()
    engine = sync_of(
        org,
        store,
        fields={"Account": ["Name"], "Contact": ["LastName"]},
        external_id_field="External_Id__c",
    )
    person = Person(id="p-1", fields={"LastName": "Doe", "Company": "Acme"})
    conversion = engine.convert_person(person)
    assert [a.id for a in org.records("Account")] == [conversion.account_id]
    assert [c.id for c in org.records("Contact")] == [conversion.contact_id]
    assert [o.id for o in org.opportunities()] == [conversion.opportunity_id]
    # A retry of the same request (a timeout after Salesforce committed) creates nothing.
    elsewhere = sync_of(org, InMemoryStore(), external_id_field="External_Id__c")
    again = elsewhere.convert_person(person)
    assert again == conversion
    assert len(org.records("Account")) == 1
    assert len(org.opportunities()) == 1
    engine.sync()
    contact = store.get_contact(conversion.contact_id)
    assert contact is not None
    assert contact.account_id == conversion.account_id


def test_s6_a_rolled_back_conversion_names_the_cause(org: FakeSalesforce) -> None:
    engine = sync_of(org, InMemoryStore(), external_id_field="External_Id__c")
    person = Person(id="p-2", fields={"LastName": "Doe", "Company": "Acme"})
    with pytest.raises(SalesforceError) as raised:
        engine.convert_person(person, opportunity_fields={"StageName": None})
    assert raised.value.error_code == "REQUIRED_FIELD_MISSING"
    assert org.records("Account") == []
    assert org.opportunities() == []


def test_bad_settings_are_refused(org: FakeSalesforce) -> None:
    with pytest.raises(ConfigurationError):
        SalesforceSource(org.client(), fields={"Lead": ["Name"]})
    with pytest.raises(ConfigurationError):
        SalesforceSource(org.client(), fields={"Account": "Name"})
    for name in ("Name, Phone", "Name FROM Account --", "Tier__c)", "Ünïcode__c"):
        with pytest.raises(ConfigurationError, match=re.escape(repr(name))):
            SalesforceSource(org.client(), fields={"Account": ["Name", name]})
    for bad in ({"attempts": 0}, {"attempts": True}, {"initial": "1"}, {"initial": 90.0}):
        with pytest.raises(ConfigurationError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        list(source_of(org).read_changes("Account", None, page_size=0))


def test_r4_an_account_merge_moves_its_contacts_whose_stamps_stay(org: FakeSalesforce) -> None:
    loser, winner = make_id("001", 1), make_id("001", 2)
    moved = make_id("003", 1)
    org.put(
        Account(id=loser, fields={"Name": "Acme"}, system_modstamp=at(0)),
        Account(id=winner, fields={"Name": "Acme Corp"}, system_modstamp=at(0)),
        Contact(id=moved, account_id=loser, system_modstamp=at(0)),
    )
    store = InMemoryStore()
    engine = sync_of(org, store)
    engine.sync()
    org.delete("Account", loser, at=at(10), master_record_id=winner)
    report = engine.sync()
    assert report.ok
    assert report.accounts_deleted == 1
    assert store.get_account(loser) is None
    assert store.contact_ids(winner) == [moved]
    assert {r.method for r in org.requests} == {"GET"}  # S1: reads only


def test_reconcile_finds_purged_records_and_refreshed_formulas(
    org: FakeSalesforce, tmp_path: Path
) -> None:
    a1, a2 = make_id("001", 1), make_id("001", 2)
    org.put(
        Account(id=a1, fields={"Name": "Acme", "Tier__c": "Gold"}, system_modstamp=at(0)),
        Account(id=a2, fields={"Name": "Globex"}, system_modstamp=at(0)),
        Contact(id=make_id("003", 1), account_id=a1, system_modstamp=at(0)),
        Contact(id=make_id("003", 2), account_id=a2, system_modstamp=at(0)),
    )
    fields = {"Account": ["Name", "Tier__c"], "Contact": ["Email"]}
    with SqlStore.sqlite(tmp_path / "org.db") as store:
        engine = sync_of(org, store, fields=fields)
        engine.sync()
        # A change an hour later: the syncs after it read back only 5 minutes before it.
        org.put(
            Account(id=make_id("001", 3), fields={"Name": "Initech"}, system_modstamp=at(3600))
        )
        engine.sync()
        org.delete("Account", a2, at=at(10))
        org.purge("Account", a2)  # emptied from the recycle bin before any sync saw it
        org.set_formula("Account", a1, Tier__c="Platinum")
        assert engine.sync().ok

        report = engine.reconcile()

        assert report.ok
        assert (report.accounts_deleted, report.refreshed) == (1, 1)
        assert store.get_account(a2) is None
        assert store.get_contact(make_id("003", 2)) is None
        assert store.get_account(a1) == org.records("Account")[0]
        assert [(e.field, e.old_value, e.new_value) for e in report.activities] == [
            ("Tier__c", "Gold", "Platinum")
        ]
        assert {r.method for r in org.requests} == {"GET"}  # S1: reads only


def test_the_documented_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (Path(__file__).parent.parent / "docs" / "source-salesforce.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "Fake" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/source-salesforce.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["1 1", "{'Name': 'Acme'}", "True"]


@pytest.mark.parametrize(
    ("failure", "retryable", "said"),
    [
        (requests.ConnectionError("reset"), True, "no full answer (reset)"),
        (requests.exceptions.ChunkedEncodingError("cut short"), True, "(cut short)"),
        (requests.JSONDecodeError("Expecting value", "<html>", 0), True, "not JSON"),
        (requests.exceptions.InvalidURL("no"), False, "the request failed (no)"),
    ],
)
def test_transport_failures_become_library_errors(
    failure: Exception, retryable: bool, said: str
) -> None:
    retry, waits = no_wait()

    def request() -> None:
        raise failure

    with pytest.raises(SalesforceError) as raised:
        retry.call("query Account", request)
    assert raised.value.retryable is retryable
    assert said in str(raised.value)
    # The message says what failed; the client's error, whose frames hold the session's
    # token, is not chained.
    assert (raised.value.__cause__, raised.value.__context__) == (None, None)
    assert len(waits) == (2 if retryable else 0)


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {"compositeResponse": "no"},
        {"compositeResponse": [None]},
        {"compositeResponse": [{"httpStatusCode": "201", "referenceId": "account"}]},
    ],
)
def test_s6_a_malformed_composite_answer_is_a_library_error(answer: object) -> None:
    with pytest.raises(SalesforceError):
        _composite_ids(answer)


def test_s6_a_rollback_for_a_locked_row_is_retryable() -> None:
    halted = {"errorCode": "PROCESSING_HALTED", "message": "rolled back"}
    locked = {"errorCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}
    answer = {
        "compositeResponse": [
            {"httpStatusCode": 400, "referenceId": "account", "body": [halted]},
            {"httpStatusCode": 400, "referenceId": "contact", "body": [locked]},
        ]
    }
    with pytest.raises(SalesforceError) as raised:
        _composite_ids(answer)
    assert (raised.value.error_code, raised.value.retryable) == ("UNABLE_TO_LOCK_ROW", True)


def test_r9_a_field_hidden_from_a_source_that_kept_its_describe_keeps_its_values(
    org: FakeSalesforce,
) -> None:
    acme, ada = make_id("001", 1), make_id("003", 1)
    org.put(
        Account(id=acme, fields={"Name": "Acme", "Industry": "Retail"}, system_modstamp=at(0)),
        Contact(id=ada, account_id=acme, fields={"Email": "ada@acme.test"}, system_modstamp=at(0)),
    )
    store = InMemoryStore()
    # Its describe is young enough for the next sync (describe_max_age): kept.
    source = SalesforceSource(org.client(), retry=no_wait()[0])
    engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
    assert engine.sync().ok
    org.hide_fields("Account", "Industry")
    org.put(
        Account(
            id=acme, fields={"Name": "Acme Corp", "Industry": "Retail"}, system_modstamp=at(60)
        )
    )

    report = engine.sync()  # its query names Industry, fails, and is made again without

    assert report.ok, report
    assert report.missing_fields == {"Account": ("Industry",)}
    account = store.get_account(acme)
    assert account is not None
    assert (account.fields["Name"], account.fields["Industry"]) == ("Acme Corp", "Retail")
    assert [(e.field, e.new_value) for e in report.activities] == [("Name", "Acme Corp")]
