"""`SalesforceSource` reading by Bulk API 2.0 query jobs, through the real client.

The loopback org serves the jobs (`FakeSalesforce`); these tests hold a read by Bulk to
what a read by REST gives: the same store, the same watermarks, and the order rule R1
needs, for fewer requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

import loopback_org
from acctsync import Account, Contact, SyncEngine
from acctsync.sources.salesforce import ConfigurationError, SalesforceSource
from acctsync.stores.sql import SqlStore
from acctsync.testing import InMemoryStore, make_id
from acctsync.testing.salesforce import FakeSalesforce
from loopback_org import CLOCK, at

FIELDS = {
    "Account": ["Name", "AnnualRevenue", "Founded__c", "IsPartner__c", "BillingAddress"],
    "Contact": ["Email", "LastName"],
}


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=CLOCK) as fake:
        yield fake


def populate(org: FakeSalesforce, accounts: int, contacts: int) -> None:
    org.put(
        *(
            Account(
                id=make_id("001", n),
                fields={
                    "Name": f'Account {n}, "the" {n % 7}',
                    "AnnualRevenue": Decimal("1250000.50") if n % 3 else None,
                    "Founded__c": date(1990, 1, 1 + n % 28),
                    "IsPartner__c": n % 2 == 0,
                    "BillingCity": f"City {n}" if n % 4 else None,
                },
                # Several records share each second, as R1 and R3 make much of.
                system_modstamp=at(n // 3),
            )
            for n in range(accounts)
        ),
        *(
            Contact(
                id=make_id("003", n),
                account_id=make_id("001", n % accounts),
                fields={"Email": f"c{n}@example.test", "LastName": f"Name {n}"},
                system_modstamp=at(n // 5),
            )
            for n in range(contacts)
        ),
    )


def engine_of(
    org: FakeSalesforce, store: object, waits: list[float] | None = None, **options: object
) -> SyncEngine:
    return loopback_org.engine_of(org, store, fields=FIELDS, waits=waits, **options)


def requests_to(org: FakeSalesforce, part: str) -> int:
    return sum(part in r.path for r in org.requests)


def rest_queries(org: FakeSalesforce) -> int:
    """REST query requests: first pages (with a ``q``) and the pages after them."""
    return sum(r.soql is not None or "/query/01g" in r.path for r in org.requests)


def held(records: Iterable[Account | Contact]) -> list[Account | Contact]:
    """``records`` without their null fields: the org's rows hold only the fields set."""
    return [
        attrs.evolve(r, fields={k: v for k, v in r.fields.items() if v is not None})
        for r in records
    ]


def assert_equals_org(store: InMemoryStore | SqlStore, org: FakeSalesforce) -> None:
    assert held(store.accounts()) == held(org.records("Account"))
    assert held(store.contacts()) == held(org.records("Contact"))


def test_r1_a_first_sync_by_bulk_equals_the_org_and_a_sync_by_rest(
    org: FakeSalesforce, tmp_path: Path
) -> None:
    populate(org, 450, 900)
    org.delete("Account", make_id("001", 7), at=at(400))
    waits: list[float] = []
    with (
        SqlStore.sqlite(tmp_path / "bulk.db") as by_bulk,
        SqlStore.sqlite(tmp_path / "rest.db") as by_rest,
    ):
        bulk_report = engine_of(org, by_bulk, waits, bulk=True).sync()
        assert requests_to(org, "/jobs/query") > 0
        assert rest_queries(org) == 0  # no REST query page
        rest_report = engine_of(org, by_rest).sync()

        assert bulk_report.ok, bulk_report
        assert rest_report.ok, rest_report
        assert_equals_org(by_bulk, org)
        assert list(by_bulk.accounts()) == list(by_rest.accounts())
        assert list(by_bulk.contacts()) == list(by_rest.contacts())
        assert by_bulk.get_account(make_id("001", 7)) is None
        assert bulk_report.watermarks == rest_report.watermarks
        for stream in bulk_report.watermarks:
            assert by_bulk.watermark(stream) == by_rest.watermark(stream)
    # Each job is polled until complete (the fake's third poll), waiting as the backoff does.
    assert waits == [0.5, 1.0, 0.5, 1.0]


def test_the_next_sync_after_a_bulk_one_is_incremental_by_rest(org: FakeSalesforce) -> None:
    populate(org, 30, 30)
    store = InMemoryStore()
    engine = engine_of(org, store, bulk=True)
    assert engine.sync().ok
    jobs = requests_to(org, "/jobs/query")
    org.put(Account(id=make_id("001", 999), fields={"Name": "Late"}, system_modstamp=at(5000)))

    assert engine.sync().ok

    assert requests_to(org, "/jobs/query") == jobs
    assert_equals_org(store, org)


def test_results_are_read_set_by_set(org: FakeSalesforce) -> None:
    populate(org, 25, 10)
    store = InMemoryStore()

    report = engine_of(org, store, bulk=True, bulk_set_size=4).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    results = [r for r in org.requests if r.path.endswith("/results")]
    assert len(results) == 7 + 3  # 25 accounts and 10 contacts in sets of 4
    assert sum("locator=" in r.query for r in results) == 6 + 2


def test_a_reconciliation_by_bulk_removes_purged_records(org: FakeSalesforce) -> None:
    populate(org, 20, 20)
    store = InMemoryStore()
    engine = engine_of(org, store, bulk=True)
    assert engine.sync().ok
    gone = make_id("001", 3)
    org.delete("Account", gone, at=at(100))
    org.purge("Account", gone)  # emptied from the recycle bin before any sync saw it
    jobs = requests_to(org, "/jobs/query")

    report = engine.reconcile()

    assert report.ok, report
    assert report.accounts_deleted == 1
    assert requests_to(org, "/jobs/query") > jobs
    assert rest_queries(org) == 0
    assert_equals_org(store, org)


def test_a_failed_job_falls_back_to_rest_and_the_sync_is_complete(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    populate(org, 40, 40)
    org.fail_bulk_jobs("InternalServerError: retry later")
    store = InMemoryStore()

    with caplog.at_level(logging.WARNING, logger="acctsync.sources.salesforce"):
        report = engine_of(org, store, bulk=True).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    assert rest_queries(org) == 1  # Accounts by REST; Contacts by their own job
    polled = next(r.path for r in org.requests if "/jobs/query/" in r.path)
    job_id = polled.rpartition("/")[2]
    assert any(job_id in m and "Failed" in m for m in caplog.messages), caplog.messages


def test_a_job_salesforce_refuses_falls_back_to_rest(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    populate(org, 10, 10)
    org.fail(400, "INVALIDENTITY", "Entity is not supported by the Bulk API", path="jobs/query")
    store = InMemoryStore()

    with caplog.at_level(logging.WARNING, logger="acctsync.sources.salesforce"):
        report = engine_of(org, store, bulk=True).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    assert any("INVALIDENTITY" in m for m in caplog.messages)


def test_the_report_counts_what_the_org_served_far_below_rest(org: FakeSalesforce) -> None:
    populate(org, 20_000, 20_000)
    before = org.api_used
    by_bulk = engine_of(org, InMemoryStore(), page_size=2000, bulk=True).sync()
    served_bulk = org.api_used - before
    before = org.api_used
    by_rest = engine_of(org, InMemoryStore(), page_size=2000).sync()
    served_rest = org.api_used - before

    assert (by_bulk.api_requests, by_rest.api_requests) == (served_bulk, served_rest)
    print(f"20,000 accounts and 20,000 contacts: Bulk {served_bulk} requests, REST {served_rest}")
    # Bulk: per object a describe, a job, three polls (the fake completes a job at its
    # third) and one result set of up to 50,000 records.
    assert served_bulk == 2 * (1 + 1 + 3 + 1)
    # REST: per object a describe and a page per 2,000 records, the most Salesforce sends.
    assert served_rest == 2 * (1 + 10)


def test_bulk_settings_are_checked(org: FakeSalesforce) -> None:
    for options in ({"bulk": "yes"}, {"bulk_set_size": 0}, {"bulk_set_size": True}):
        with pytest.raises(ConfigurationError):
            SalesforceSource(org.client(), **options)  # type: ignore[arg-type]
