"""`SalesforceSource` reading by Bulk API 2.0 query jobs, through the real client.

The loopback org serves the jobs (`FakeSalesforce`); these tests hold a read by Bulk to
what a read by REST gives: the same store, the same watermarks, and the order rule R1
needs, for fewer requests.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loopback_org
from acctsync import (
    Account,
    Batch,
    Change,
    Contact,
    FormulaSource,
    InvalidRecordError,
    Origin,
    RawRecord,
    SyncEngine,
    Unreadable,
    WarningSource,
    decode_record,
)
from acctsync._records import same_value
from acctsync.cli._running import CountedPages
from acctsync.sources import _bulk
from acctsync.sources.files import ExportFileError, csv_pages, types_from_describe
from acctsync.sources.salesforce import (
    ApiBudgetExceededError,
    ConfigurationError,
    RetryPolicy,
    SalesforceError,
    SalesforceLogin,
    SalesforceSource,
)
from acctsync.stores.sql import SqlStore
from acctsync.testing import InMemoryStore, make_id
from acctsync.testing.salesforce import FakeSalesforce
from loopback_org import CLOCK, ExpiringStore, at

FIELDS = {
    "Account": ["Name", "AnnualRevenue", "Founded__c", "IsPartner__c", "BillingAddress"],
    "Contact": ["Email", "LastName"],
}


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=CLOCK) as fake:
        yield fake


def populate(org: FakeSalesforce, accounts: int, contacts: int, *, apart: int = 1) -> None:
    """``accounts`` and ``contacts``, several to a stamp, in Id order ``apart`` seconds
    from one stamp to the next: against Id order when ``apart`` is negative."""
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
                system_modstamp=at(apart * (n // 3)),
            )
            for n in range(accounts)
        ),
        *(
            Contact(
                id=make_id("003", n),
                account_id=make_id("001", n % accounts),
                fields={"Email": f"c{n}@example.test", "LastName": f"Name {n}"},
                system_modstamp=at(apart * (n // 5)),
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
    """``records`` without their null fields (the org's rows hold only the fields set), in
    Id order (as the org lists them; an in-memory store keeps the order it applied them)."""
    return sorted(
        (
            attrs.evolve(r, fields={k: v for k, v in r.fields.items() if v is not None})
            for r in records
        ),
        key=lambda r: r.id,
    )


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
        bulk_report = engine_of(org, by_bulk, waits, bulk_threshold=0).sync()
        assert requests_to(org, "/jobs/query") > 0
        assert rest_queries(org) == 2  # each object's first page, which counts its records
        rest_report = engine_of(org, by_rest, bulk=False).sync()

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
    assert engine_of(org, store, bulk_threshold=0).sync().ok
    jobs = requests_to(org, "/jobs/query")
    org.put(Account(id=make_id("001", 999), fields={"Name": "Late"}, system_modstamp=at(5000)))

    # Its lookback re-reads the last five minutes: 31 accounts and 30 contacts.
    assert engine_of(org, store, bulk_threshold=31).sync().ok

    assert requests_to(org, "/jobs/query") == jobs
    assert_equals_org(store, org)


@pytest.mark.parametrize("first_by_bulk", [True, False], ids=["bulk-then-rest", "rest-then-bulk"])
def test_r3_a_read_by_the_other_api_is_the_same_version_with_a_default_client(
    org: FakeSalesforce, tmp_path: Path, first_by_bulk: bool
) -> None:
    # simple-salesforce's default client reads REST's 1234.56 as a float, Bulk's CSV as
    # a Decimal: the lookback's re-read by the other API is the same version (R3), so it
    # logs nothing and keeps the local edit (S3).
    acme = make_id("001", 1)
    org.put(
        Account(
            id=acme,
            fields={"Name": "Acme", "AnnualRevenue": Decimal("1234.56")},
            system_modstamp=at(1),
        ),
        *(
            Contact(
                id=make_id("003", n),
                account_id=acme,
                fields={"LastName": f"Name {n}"},
                system_modstamp=at(2),
            )
            for n in range(3)
        ),
    )
    edited = make_id("003", 1)

    def engine(*, bulk: bool) -> SyncEngine:
        source = SalesforceSource(
            org.client(),
            fields={"Account": ["Name", "AnnualRevenue"], "Contact": ["LastName"]},
            retry=loopback_org.no_wait(None),
            **({"bulk_threshold": 0} if bulk else {"bulk": False}),  # type: ignore[arg-type]
        )
        return SyncEngine(source=source, store=store, page_size=200, clock=lambda: CLOCK)

    with SqlStore.sqlite(tmp_path / "store.db") as store:
        assert engine(bulk=first_by_bulk).sync().ok
        edit = engine(bulk=first_by_bulk).edit_account_field(
            contact_id=edited, field="Name", value="Local name"
        )
        assert edit.changed
        jobs = requests_to(org, "/jobs/query")

        report = engine(bulk=not first_by_bulk).sync()

        assert report.ok, report
        assert (requests_to(org, "/jobs/query") > jobs) is not first_by_bulk
        assert report.activities == ()
        account = store.get_account(acme)
        assert account is not None
        assert account.fields["Name"] == "Local name"
        assert same_value(account.fields["AnnualRevenue"], Decimal("1234.56"))


def renamed(
    org: FakeSalesforce, numbers: Iterable[int], at_second: int, *, apart: int = 1
) -> list[Account]:
    """The org's accounts ``numbers`` with a new name, stamped ``at_second`` (+ ``apart`` * n)."""
    held = {r.id: r for r in org.records("Account")}
    return [
        Account(
            id=make_id("001", n),
            fields={**held[make_id("001", n)].fields, "Name": f"Renamed {n}"},
            system_modstamp=at(at_second + apart * n),
        )
        for n in numbers
    ]


def test_results_are_read_set_by_set(org: FakeSalesforce) -> None:
    populate(org, 25, 10)
    store = InMemoryStore()

    report = engine_of(org, store, bulk_threshold=0, bulk_set_size=4).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    results = [r for r in org.requests if r.path.endswith("/results")]
    assert len(results) == 7 + 3  # 25 accounts and 10 contacts in sets of 4
    assert sum("locator=" in r.query for r in results) == 6 + 2


@pytest.mark.parametrize("threshold", [0, 1_000], ids=["bulk", "rest"])
def test_a_read_knows_how_many_records_its_query_matched_once_it_has_begun(
    org: FakeSalesforce, threshold: int
) -> None:
    populate(org, 25, 0)
    source = SalesforceSource(org.client(), fields=FIELDS, bulk_threshold=threshold)

    pages = source.read_changes("Account", at(4), page_size=200)
    assert isinstance(pages, CountedPages)  # as the command line's progress bar reads it
    assert pages.total is None  # nothing asked for yet
    assert not org.requests
    first = next(pages)

    assert pages.total == 13  # the first REST page's totalSize: seconds 4 to 8
    assert len(first) + sum(map(len, pages)) == 13


def test_the_next_set_is_downloaded_while_one_is_read(org: FakeSalesforce) -> None:
    populate(org, 12, 0)
    source = SalesforceSource(org.client(), fields=FIELDS, bulk_threshold=0, bulk_set_size=4)
    pages = source.read_changes("Account", None, page_size=2)

    first = next(pages)  # of the first set, read: the second is asked for at once
    deadline = time.monotonic() + 10
    while requests_to(org, "/results") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert requests_to(org, "/results") == 2  # one set ahead, no more
    rest = [item for page in pages for item in page]

    assert requests_to(org, "/results") == 3
    records = [decoded(item) for item in [*first, *rest]]
    assert [r.id for r in records] == [r.id for r in org.records("Account")]


def test_a_set_that_fails_to_download_stops_the_read_after_every_set_before(
    org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(org, 12, 0)
    source = SalesforceSource(
        org.client(),
        fields=FIELDS,
        bulk_threshold=0,
        bulk_set_size=4,
        retry=RetryPolicy(attempts=1),
    )
    real = _bulk.result_set

    def second_fails(client: Any, job_id: str, locator: str | None, size: int) -> Any:
        if locator is not None:
            raise SalesforceError("the second set is gone")
        return real(client, job_id, locator, size)

    monkeypatch.setattr(_bulk, "result_set", second_fails)
    pages = source.read_changes("Account", None, page_size=3)

    assert [len(page) for page in itertools.islice(pages, 2)] == [3, 1]  # the first set
    with pytest.raises(SalesforceError, match="the second set is gone"):
        next(pages)


def test_a_reconciliation_by_bulk_removes_purged_records(org: FakeSalesforce) -> None:
    populate(org, 20, 20)
    store = InMemoryStore()
    engine = engine_of(org, store, bulk_threshold=0)
    assert engine.sync().ok
    gone = make_id("001", 3)
    org.delete("Account", gone, at=at(100))
    org.purge("Account", gone)  # emptied from the recycle bin before any sync saw it
    jobs, queries = requests_to(org, "/jobs/query"), rest_queries(org)

    report = engine.reconcile()

    assert report.ok, report
    assert report.accounts_deleted == 1
    assert requests_to(org, "/jobs/query") > jobs
    assert rest_queries(org) == queries + 2  # only the first pages, which count
    assert_equals_org(store, org)


def test_a_failed_job_falls_back_to_rest_and_the_sync_is_complete(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    populate(org, 40, 40)
    org.fail_bulk_jobs("InternalServerError: retry later")
    store = InMemoryStore()

    with caplog.at_level(logging.WARNING, logger="acctsync.sources.salesforce"):
        report = engine_of(org, store, bulk_threshold=0).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    # Each object's first page, and Accounts again by REST; Contacts by their own job.
    assert rest_queries(org) == 3
    polled = next(r.path for r in org.requests if "/jobs/query/" in r.path)
    job_id = polled.rpartition("/")[2]
    assert any(job_id in m and "Failed" in m for m in caplog.messages), caplog.messages
    (warning,) = report.warnings
    assert job_id in warning
    assert "Failed" in warning
    assert "read by REST" in warning


def test_a_job_salesforce_refuses_falls_back_to_rest(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    populate(org, 10, 10)
    org.fail(400, "INVALIDENTITY", "Entity is not supported by the Bulk API", path="jobs/query")
    store = InMemoryStore()

    with caplog.at_level(logging.WARNING, logger="acctsync.sources.salesforce"):
        report = engine_of(org, store, bulk_threshold=0).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    assert any("INVALIDENTITY" in m for m in caplog.messages)
    (warning,) = report.warnings
    assert "INVALIDENTITY" in warning
    assert "read by REST" in warning


def test_the_report_counts_what_the_org_served_far_below_rest(org: FakeSalesforce) -> None:
    populate(org, 20_000, 20_000)
    before = org.api_used
    by_bulk = engine_of(org, InMemoryStore(), page_size=2000).sync()  # 20,000 > 10,000
    served_bulk = org.api_used - before
    before = org.api_used
    by_rest = engine_of(org, InMemoryStore(), page_size=2000, bulk=False).sync()
    served_rest = org.api_used - before

    assert (by_bulk.api_requests, by_rest.api_requests) == (served_bulk, served_rest)
    print(f"20,000 accounts and 20,000 contacts: Bulk {served_bulk} requests, REST {served_rest}")
    # Bulk: per object a describe, the first REST page that counts the records, a job,
    # three polls (the fake completes a job at its third) and one result set of up to
    # 100,000 records.
    assert served_bulk == 2 * (1 + 1 + 1 + 3 + 1)
    # REST: per object a describe and a page per 2,000 records, the most Salesforce sends.
    assert served_rest == 2 * (1 + 10)


def test_bulk_settings_are_checked(org: FakeSalesforce) -> None:
    for options in (
        {"bulk": "yes"},
        {"bulk_set_size": 0},
        {"bulk_set_size": True},
        {"bulk_threshold": -1},
        {"bulk_threshold": 1.5},
        {"bulk_job_records": 0},
        {"describe_max_age": 60},
        {"describe_max_age": timedelta(seconds=-1)},
    ):
        with pytest.raises(ConfigurationError):
            SalesforceSource(org.client(), **options)  # type: ignore[arg-type]


def decoded(item: Change) -> Change:
    """A source's item as the engine reads it: a REST payload decoded, a record as it is."""
    return decode_record(item.object_type, item.payload) if isinstance(item, RawRecord) else item


def jobs_created(org: FakeSalesforce) -> list[dict[str, object]]:
    """The bodies of the Bulk query jobs created, oldest first."""
    return [
        r.body
        for r in org.requests
        if r.method == "POST" and r.path.endswith("/jobs/query") and isinstance(r.body, dict)
    ]


def test_an_incremental_sync_with_a_large_backlog_runs_by_bulk(org: FakeSalesforce) -> None:
    populate(org, 30, 30)
    store = InMemoryStore()
    engine = engine_of(org, store, bulk_threshold=40)
    assert engine.sync().ok
    assert jobs_created(org) == []  # 30 records each: under the threshold, by REST
    # A backlog: every account renamed, each fanning out to its contact (S7).
    org.put(
        *renamed(org, range(30), 600),
        *(
            Account(id=make_id("001", n), fields={"Name": f"New {n}"}, system_modstamp=at(700))
            for n in range(30, 45)
        ),
    )

    report = engine.sync()

    assert report.ok, report
    (job,) = jobs_created(org)  # 45 changed accounts; the contacts' lookback re-reads few
    assert job["operation"] == "queryAll"
    assert "WHERE SystemModstamp >= " in str(job["query"])
    assert report.accounts_upserted == 45
    assert len(report.activities) == 30
    assert_equals_org(store, org)
    assert report.watermarks["Account"] == at(700)


def test_a_read_of_exactly_the_threshold_stays_on_rest(org: FakeSalesforce) -> None:
    populate(org, 40, 10)

    report = engine_of(org, InMemoryStore(), bulk_threshold=40).sync()

    assert report.ok
    assert jobs_created(org) == []


def window_bounds(query: str) -> tuple[str | None, str | None]:
    lower = re.search(r"SystemModstamp >= (\S+)", query)
    upper = re.search(r"SystemModstamp < (\S+)", query)
    return (lower[1] if lower else None, upper[1] if upper else None)


def test_a_large_read_is_split_into_jobs_by_stamp_windows_in_order(
    org: FakeSalesforce, tmp_path: Path
) -> None:
    populate(org, 450, 900)
    with (
        SqlStore.sqlite(tmp_path / "bulk.db") as by_bulk,
        SqlStore.sqlite(tmp_path / "rest.db") as by_rest,
    ):
        report = engine_of(org, by_bulk, bulk_threshold=0, bulk_job_records=100).sync()
        rest_report = engine_of(org, by_rest, bulk=False).sync()

        assert report.ok, report
        assert_equals_org(by_bulk, org)
        assert list(by_bulk.contacts()) == list(by_rest.contacts())
        assert report.watermarks == rest_report.watermarks

    for kind, total in (("Account", 450), ("Contact", 900)):
        queries = [
            str(j["query"]) for j in jobs_created(org) if f"FROM {kind} " in str(j["query"])
        ]
        assert len(queries) >= total // 100
        bounds = [window_bounds(q) for q in queries]
        # From the start (a first sync has no watermark) to an open end, each window
        # beginning where the one before ended: nothing missed, nothing read twice.
        assert bounds[0][0] is None
        assert bounds[-1][1] is None
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        stamps = sorted(r.system_modstamp for r in org.records(kind))
        for lower, upper in bounds:
            inside = [
                s
                for s in stamps
                if (lower is None or s >= datetime.fromisoformat(lower))
                and (upper is None or s < datetime.fromisoformat(upper))
            ]
            assert len(inside) <= 100
    assert any("SELECT COUNT() FROM" in (r.soql or "") for r in org.requests)


def test_a_second_holding_more_than_a_job_s_limit_is_one_job(org: FakeSalesforce) -> None:
    populate(org, 12, 0)  # three accounts a second
    store = InMemoryStore()

    report = engine_of(org, store, bulk_threshold=0, bulk_job_records=2).sync()

    assert report.ok, report
    assert_equals_org(store, org)
    assert len([j for j in jobs_created(org) if "FROM Account " in str(j["query"])]) == 4


class Killed(BaseException):
    """The process's end, as a signal brings it: no handler of errors stops it."""


class CrashingStore(InMemoryStore):
    """A store whose process dies after ``batches`` more batches, as a killed sync does."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: int | None = None

    def apply(self, batch: Batch) -> None:
        if self.batches is not None:
            if self.batches == 0:
                raise Killed
            self.batches -= 1
        super().apply(batch)


def test_a_sync_killed_mid_job_resumes_without_losing_or_repeating(
    org: FakeSalesforce,
) -> None:
    # Stamps run against Id order, over more than the lookback: only the jobs' ORDER BY
    # SystemModstamp, Id keeps a killed read's watermark behind every record it has not
    # applied (R1). Read in Id order, its first batches would hold the latest stamps, and
    # the resumed read, from that watermark less five minutes, would miss the rest.
    populate(org, 60, 120, apart=-30)  # accounts over 570 s, contacts over 690 s
    store = CrashingStore()
    engine = engine_of(org, store, page_size=20, bulk_threshold=0)
    store.batches = 1

    with pytest.raises(Killed):
        engine.sync()  # the first sync, killed after its first batch
    assert len(store.accounts()) + len(store.contacts()) == 20
    store.batches = None
    first = engine.sync()

    assert first.ok, first
    assert len(jobs_created(org)) == 4  # a job per object, each sync: read by Bulk
    assert_equals_org(store, org)
    assert first.accounts_upserted + first.contacts_upserted == 180 - 20
    # Every account renamed, the last Id first, ten seconds apart: over 590 s.
    org.put(*renamed(org, range(60), 1200, apart=-10))
    store.batches = 2

    with pytest.raises(Killed):
        engine.sync()
    applied = len(store.activities())
    assert 0 < applied < 120
    store.batches = None
    resumed = engine.sync()  # a new job, from the watermark the killed one saved

    assert resumed.ok, resumed
    assert_equals_org(store, org)
    assert resumed.accounts_upserted == 60 - applied // 2
    entries = store.activities()
    # Each contact's change logged once: two per account, one per account change.
    assert len(entries) == 120
    assert len({e.id for e in entries}) == 120
    assert len(resumed.activities) == 120 - applied


def test_the_budget_stops_a_read_by_bulk_and_the_next_sync_resumes(org: FakeSalesforce) -> None:
    populate(org, 100, 100)
    store = InMemoryStore()
    org.api_used, org.api_allowance = 0, 1000
    engine = engine_of(
        org, store, page_size=10, bulk_threshold=0, bulk_set_size=10, max_api_share=0.02
    )

    with pytest.raises(ApiBudgetExceededError) as stopped:
        engine.sync()

    assert stopped.value.share == 0.02
    assert requests_to(org, "/results") > 0  # it stopped between the sets of a job
    held_accounts = len(store.accounts())
    assert 0 < held_accounts < 100
    org.api_used = 0  # a day later, say
    org.api_allowance = 100_000
    assert engine.sync().ok
    assert_equals_org(store, org)


def test_the_daily_limit_spent_mid_job_ends_the_sync_untried_and_the_next_resumes(
    org: FakeSalesforce,
) -> None:
    # Per object a describe, a first REST page, a job and its three polls (12 requests),
    # then 8 of the jobs' 20 result sets: the 21st request, a result set, is refused.
    populate(org, 100, 100)
    store, waits = InMemoryStore(), []
    org.api_used, org.api_allowance = 0, 20
    engine = engine_of(org, store, waits, page_size=10, bulk_threshold=0, bulk_set_size=10)

    with pytest.raises(ApiBudgetExceededError) as stopped:
        engine.sync()

    error = stopped.value
    assert (error.status, error.error_code, error.share) == (403, "REQUEST_LIMIT_EXCEEDED", None)
    refused = [r for r in org.requests if r.status == 403]
    assert len(refused) == 1  # not retried: the daily limit lasts hours
    assert refused[0].path.endswith("/results")
    assert waits == [0.5, 1.0] * 2  # each job's polls, and no retry's backoff
    assert 0 < len(store.accounts()) + len(store.contacts()) < 200
    org.api_used, org.api_allowance = 0, 100_000  # a day later, say
    assert engine.sync().ok
    assert_equals_org(store, org)


def test_a_session_expired_while_a_job_s_results_download_is_renewed_once(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    # A job's result sets are fetched one by one, the next while the one before is applied
    # (from a thread of the read's own): a set refused for an expired session must be asked
    # again of the renewed session, not of the client the read began with.
    populate(org, 100, 0)
    org.register_app("bulk-test-key", consumer_secret="bulk-test-secret-0123456789")
    login = SalesforceLogin.client_credentials(
        consumer_key="bulk-test-key",
        consumer_secret="bulk-test-secret-0123456789",
        domain="acme.my",
    )
    source = SalesforceSource(
        login.connect(session=org.session(), parse_float=Decimal),
        fields=FIELDS,
        login=login,
        bulk_threshold=0,
        bulk_set_size=10,
        retry=RetryPolicy(attempts=1, sleep=lambda _: None),  # a renewal, no retry
    )
    store = ExpiringStore(org)
    engine = SyncEngine(source=source, store=store, page_size=10, clock=lambda: CLOCK)

    with caplog.at_level(logging.WARNING, logger="acctsync.sources.salesforce"):
        report = engine.sync()

    assert report.ok, report
    assert store.expired
    assert_equals_org(store, org)
    served = org.requests
    assert sum(r.path == "/services/oauth2/token" for r in served) == 2  # one renewal
    (refused,) = [n for n, r in enumerate(served) if r.status == 401]
    # The set refused (one of the job's later ones) is asked again, once, after one
    # new sign-in, at the same locator.
    again = served[refused : refused + 3]
    assert [(r.path.rpartition("/")[2], r.status) for r in again] == [
        ("results", 401),
        ("token", 200),
        ("results", 200),
    ]
    assert "locator=" in again[0].query
    assert again[2].query == again[0].query
    assert sum(r.path.endswith("/results") for r in served) == 10 + 1
    (warning,) = [m for m in caplog.messages if "session expired" in m]
    assert re.match(r"Bulk query job \w+ \(result set \d+\)", warning), warning
    assert "bulk-test-secret" not in caplog.text


def test_a_sync_with_nothing_new_costs_one_request_per_object(org: FakeSalesforce) -> None:
    populate(org, 20, 20)
    engine = engine_of(org, InMemoryStore())
    assert engine.sync().ok
    before = org.api_used

    report = engine.sync()

    assert report.api_requests == org.api_used - before == 2
    fresh = engine_of(org, InMemoryStore(), describe_max_age=timedelta(0))
    assert fresh.sync().ok
    assert fresh.sync().api_requests == 4  # describe again, then the query, per object


def test_formulas_are_read_alone_and_live_only(org: FakeSalesforce) -> None:
    populate(org, 30, 0)
    org.set_formula("Account", make_id("001", 1), Tier__c="Gold")
    org.delete("Account", make_id("001", 2), at=at(500))
    for threshold in (10_000, 0):
        source = SalesforceSource(
            org.client(), fields={"Account": ["Name", "Tier__c"]}, bulk_threshold=threshold
        )
        assert source.formula_fields("Account") == ("Tier__c",)

        pages = list(source.read_formulas("Account", page_size=7))

        # REST gives payloads for the engine to decode, Bulk records: the same either way.
        records = [decoded(item) for page in pages for item in page]
        assert len(records) == 29  # the deleted one left out
        assert all(isinstance(r, Account) for r in records)
        assert {name for r in records for name in r.fields} == {"Tier__c"}
        gold = [r for r in records if r.fields["Tier__c"] == "Gold"]
        assert len(gold) == 1
    (job,) = jobs_created(org)
    assert job["operation"] == "query"
    assert str(job["query"]).startswith("SELECT Id, SystemModstamp, Tier__c FROM Account")


def test_an_object_without_formulas_reads_nothing(org: FakeSalesforce) -> None:
    populate(org, 5, 5)
    source = SalesforceSource(org.client(), fields=FIELDS)
    before = org.api_used

    assert list(source.read_formulas("Contact", page_size=10)) == []
    assert org.api_used - before == 1  # the describe that says so


def tiered(org: FakeSalesforce, threshold: int) -> tuple[InMemoryStore, SyncEngine]:
    """Six accounts of ``org`` with a calculated Tier__c, synced, account 1's Name edited."""
    populate(org, 6, 12)
    for n in range(6):
        org.set_formula("Account", make_id("001", n), Tier__c="Bronze")
    store = InMemoryStore()
    fields = {"Account": ["Name", "Tier__c"], "Contact": ["Email"]}
    engine = loopback_org.engine_of(org, store, fields=fields, bulk_threshold=threshold)
    assert engine.sync().ok
    edited = engine.edit_account_field(contact_id=make_id("003", 1), field="Name", value="Mine")
    assert edited.changed
    return store, engine


@pytest.mark.parametrize("threshold", [10_000, 0], ids=["rest", "bulk"])
def test_a_formula_refresh_applies_what_changed_under_the_same_stamp(
    org: FakeSalesforce, threshold: int
) -> None:
    store, engine = tiered(org, threshold)
    org.set_formula("Account", make_id("001", 1), Tier__c="Gold")  # a roll-up moved
    org.set_formula("Account", make_id("001", 2), Tier__c="Silver")
    jobs = len(jobs_created(org))
    marks = [store.watermark(stream) for stream in ("Account", "Contact")]

    report = engine.refresh_formulas()

    assert report.ok, report
    assert (report.refreshed, report.already_applied) == (2, 4)
    assert len(jobs_created(org)) - jobs == (1 if threshold == 0 else 0)
    account = store.get_account(make_id("001", 1))
    assert account is not None
    assert account.fields["Tier__c"] == "Gold"
    assert account.fields["Name"] == "Mine"  # the local edit stays (S3)
    # Accounts 1 and 2 have contacts 1, 7 and 2, 8: an entry each (S7).
    changed = sorted((e.contact_id, e.new_value) for e in report.activities)
    assert changed == sorted(
        [(make_id("003", n), "Gold") for n in (1, 7)]
        + [(make_id("003", n), "Silver") for n in (2, 8)]
    )
    assert all(e.occurred_at == CLOCK for e in report.activities)
    assert [store.watermark(stream) for stream in ("Account", "Contact")] == marks


@pytest.mark.parametrize("threshold", [10_000, 0], ids=["rest", "bulk"])
def test_a_sync_that_rereads_a_recalculated_account_keeps_its_local_edits(
    org: FakeSalesforce, threshold: int
) -> None:
    # A roll-up moves on an account the next sync's lookback re-reads: describe says
    # Tier__c is calculated, so the other value under the same stamp is a recalculation,
    # not a second save in that second (S3: the local edit stays; S7: entries).
    store, engine = tiered(org, threshold)
    org.set_formula("Account", make_id("001", 1), Tier__c="Gold")

    report = engine.sync()

    assert report.ok, report
    assert (report.refreshed, report.local_edits_discarded) == (1, 0)
    account = store.get_account(make_id("001", 1))
    assert account is not None
    assert (account.fields["Name"], account.fields["Tier__c"]) == ("Mine", "Gold")
    changed = sorted((e.contact_id, e.field, e.new_value) for e in report.activities)
    assert changed == [(make_id("003", n), "Tier__c", "Gold") for n in (1, 7)]
    assert engine.sync().refreshed == 0  # read again, it is the version stored


@pytest.mark.parametrize("threshold", [10_000, 0], ids=["rest", "bulk"])
def test_s3_a_reconciliation_keeps_local_edits_unless_a_newer_version_came(
    org: FakeSalesforce, threshold: int
) -> None:
    # A reconciliation reads every record again, most of them the version the store holds:
    # that, and a formula recalculated under the same stamp, keep the local edits; a newer
    # save discards them (S3). Account 1: Name edited, Tier__c recalculated; account 2:
    # Name edited, then renamed in Salesforce; account 3: Name edited alone.
    store, engine = tiered(org, threshold)
    a1, a2, a3 = (make_id("001", n) for n in (1, 2, 3))
    for n in (2, 3):
        edit = engine.edit_account_field(
            contact_id=make_id("003", n), field="Name", value=f"Mine {n}"
        )
        assert edit.changed
    org.set_formula("Account", a1, Tier__c="Gold")
    org.put(*renamed(org, [2], 3600))
    jobs = len(jobs_created(org))

    report = engine.reconcile()

    assert report.ok, report
    assert len(jobs_created(org)) - jobs == (2 if threshold == 0 else 0)
    assert (report.refreshed, report.local_edits_discarded, report.accounts_upserted) == (1, 1, 2)
    assert (report.accounts_deleted, report.contacts_deleted) == (0, 0)
    in_org = {a.id: (a.fields["Name"], a.fields["Tier__c"]) for a in org.records("Account")}
    assert in_org[a2] == ("Renamed 2", "Bronze")
    held_now = {a.id: (a.fields["Name"], a.fields["Tier__c"]) for a in store.accounts()}
    assert held_now == {**in_org, a1: ("Mine", "Gold"), a3: ("Mine 3", "Bronze")}
    # S7: an entry per contact (accounts 1 and 2 have contacts 1, 7 and 2, 8) and changed
    # field, none for a local edit kept; a refresh's dated by the reconciliation, a save's
    # by its stamp.
    assert all(e.origin is Origin.SALESFORCE for e in report.activities)
    assert sorted(
        (e.contact_id, e.field, e.old_value, e.new_value, e.occurred_at) for e in report.activities
    ) == sorted(
        [(make_id("003", n), "Tier__c", "Bronze", "Gold", CLOCK) for n in (1, 7)]
        + [(make_id("003", n), "Name", "Mine 2", "Renamed 2", at(3602)) for n in (2, 8)]
    )
    logged = [e.id for e in store.activities()]
    assert len(logged) == len(set(logged))

    again = engine.reconcile()

    assert again.ok, again
    assert (again.refreshed, again.local_edits_discarded, again.activities) == (0, 0, ())
    assert {a.id: (a.fields["Name"], a.fields["Tier__c"]) for a in store.accounts()} == held_now


def test_the_source_offers_the_engine_formulas_and_warnings(org: FakeSalesforce) -> None:
    source = SalesforceSource(org.client())
    assert isinstance(source, FormulaSource)
    assert isinstance(source, WarningSource)
    assert source.take_warnings() == ()


# -- Result sets read straight into records ---------------------------------------------------

# A describe of every kind of column the reader types, with names the fake org does not have
# (which stay text), in the spelling describe gives.
SET_DESCRIBE = {
    "name": "Contact",
    "fields": [
        {"name": "Id", "type": "id"},
        {"name": "SystemModstamp", "type": "datetime"},
        {"name": "IsDeleted", "type": "boolean"},
        {"name": "MasterRecordId", "type": "reference"},
        {"name": "AccountId", "type": "reference"},
        {"name": "LastName", "type": "string"},
        {"name": "Score__c", "type": "double"},
        {"name": "Visits__c", "type": "int"},
        {"name": "Birthdate", "type": "date"},
        {"name": "Seen__c", "type": "datetime"},
        {"name": "OptOut__c", "type": "boolean"},
        {"name": "Owner__c", "type": "reference"},
        {"name": "MailingAddress", "type": "address"},
        {"name": "Spot__c", "type": "location"},
        {"name": "Spot__Latitude__s", "type": "double"},
    ],
}
CONTACT_ID, ACCOUNT_ID = make_id("003", 5), make_id("001", 9)
EMPTY = "000000000000000AAA"
TEXTS = [
    "",
    "x",
    "2024-01-31",
    "2024-02-30",
    "2024-01-31T12:00:00.000Z",
    "2024-W01-1",
    EMPTY,
    EMPTY[:15],
    "né",
    "a,b",
    'say "hi"',
    "two\nlines",
    "\u0663",
    "1e5",
    " 1 ",
]
# What each column may hold: what Bulk writes, and what the general reader refuses.
ODD: dict[str, Sequence[str]] = {
    "Id": [CONTACT_ID, CONTACT_ID[:15], CONTACT_ID.lower(), ACCOUNT_ID, "", "003", EMPTY],
    "SystemModstamp": [
        "2024-01-31T12:00:00.000Z",
        "2024-01-31T12:00:00.123+0000",
        "2024-01-31 12:00:00",
        "2024-01-31T12:00:00Z",
        "2024-13-31T12:00:00.000Z",
        "2024-01-31T12:00:00.000",
        "",
    ],
    "IsDeleted": ["false", "false", "true", "TRUE", "0", "1", "", "no"],
    "MasterRecordId": ["", CONTACT_ID, make_id("003", 6), EMPTY, "bad"],
    "AccountId": ["", ACCOUNT_ID, ACCOUNT_ID[:15], EMPTY, CONTACT_ID, "x"],
    "LastName": TEXTS,
    "Score__c": ["", "1.5", "-2", ".5", "1e3", "NaN", "Infinity", "1_0", "x"],
    "Visits__c": ["", "7", "-7", "+7", "+", "1.0", "\u0663", "9" * 30, " 7"],
    "Birthdate": ["", "2024-01-31", "2024-02-30", "2024-W01-1", "20240131"],
    "Seen__c": ["", "2024-01-31T12:00:00.000Z", "2024-01-31T12:00:00+0100"],
    "OptOut__c": ["", "true", "false", "True", "1", "0", "yes"],
    "Owner__c": ["", EMPTY, EMPTY[:15], make_id("005", 1), "2024-01-31"],
    "MailingAddress": ["", "1 Main St"],
    "Spot__c": ["", "x"],
    "Spot__Latitude__s": ["", "1.25"],
    "LastModifiedDate": ["", "2024-01-31T12:00:00.000Z", "junk"],
    "Owner.Name": TEXTS,
    "Custom__c": TEXTS,  # not described: text, as written
}
VALUES = {name: st.sampled_from(values) for name, values in ODD.items()}
PLAIN_HEADER = [
    "Id",
    "SystemModstamp",
    "IsDeleted",
    "MasterRecordId",
    "AccountId",
    "LastName",
    "Score__c",
    "Visits__c",
    "Birthdate",
    "Seen__c",
    "OptOut__c",
    "Owner__c",
]


def set_csv(header: list[str], rows: list[list[str]], tail: str = "") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    writer.writerows(rows)
    return (out.getvalue() + tail).encode()


def outcome(item: Change) -> tuple[object, ...]:
    """What the engine makes of an item: a record, or a rejection with its reason."""
    if isinstance(item, Unreadable):
        return ("unreadable", item.reason, item.record_id, item.field, item.origin)
    if isinstance(item, RawRecord):
        try:
            item = decode_record(item.object_type, item.payload)
        except InvalidRecordError as error:
            return ("rejected", error.reason, error.field, error.record_id, item.origin)
    return ("record", item)


def both_readings(
    data: bytes, page_size: int, describe: dict[str, Any] = SET_DESCRIBE, chunk: int = 250
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The set read by Bulk's column reader, ``chunk`` rows at a time, and by the general
    export reader."""
    kind = describe["name"]
    typing = _bulk.CsvTyping(kind, describe)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_bulk, "_CHUNK", chunk)
        read = list(typing.pages(_bulk.ResultSet(data, None), "job 750 set 1", page_size))
    assert all(0 < len(page) <= page_size for page in read)
    general = csv_pages(
        data, kind, types_from_describe(describe), origin="job 750 set 1", page_size=page_size
    )
    return (
        [outcome(item) for page in read for item in page],
        [outcome(item) for page in general for item in page],
    )


@st.composite
def result_sets(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A result set: mostly Bulk's own header and values, some not; a page size, and how
    many rows the column reader reads at a time."""
    header = list(PLAIN_HEADER)
    if draw(st.booleans()):
        extra = ["MailingAddress", "Spot__c", "Spot__Latitude__s", "LastModifiedDate"]
        header += draw(st.lists(st.sampled_from([*extra, "Owner.Name", "Custom__c"]), unique=True))
    kinds = list(header)  # what each column holds
    if draw(st.integers(0, 9)) == 0:  # not plain: a system field in other case, a name twice
        header[draw(st.integers(0, 4))] = draw(st.sampled_from(["ID", "systemmodstamp"]))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        # Each value mostly what Bulk writes; now and then anything its column may hold,
        # which the column reader reads, or sends to the general reader, whole page or row.
        odd = draw(st.sampled_from([0, 0, 1, 2, 10]))  # how many in ten are odd, this row
        row = [
            draw(
                VALUES[name]
                if name in ("AccountId", "MasterRecordId") or draw(st.integers(0, 9)) < odd
                else PLAIN_FLAGS
                if name == "IsDeleted"
                else st.just(plain_value(name, len(rows)))
            )
            for name in kinds
        ]
        if draw(st.integers(0, 19)) == 0:
            row = row[:-1] if draw(st.booleans()) else [*row, "extra"]
        rows.append(row)
    tail = draw(st.sampled_from(["", "", "\n", '"unterminated\n', "\n\n"]))
    data = set_csv(header, rows, tail)
    if draw(st.integers(0, 19)) == 0:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + b"\xff" + data[cut:]
    return data, draw(st.integers(1, 5)), draw(st.sampled_from([1, 2, 3, 250]))


PLAIN_FLAGS = st.sampled_from(["false", "false", "false", "true"])


def plain_value(name: str, n: int) -> str:
    """What Bulk API 2.0 writes for a live contact's ``name``."""
    values = {
        "Id": make_id("003", n),
        "SystemModstamp": f"2024-01-{1 + n % 28:02d}T12:00:00.{n:03d}Z",
        "IsDeleted": "false",
        "LastName": f"Name {n}" if n % 5 else "",
        "Score__c": f"{n}.5",
        "Visits__c": str(n),
        "Birthdate": f"1990-01-{1 + n % 28:02d}",
        "Seen__c": f"2023-05-{1 + n % 28:02d}T00:00:0{n % 10}.000Z",
        "OptOut__c": "true" if n % 2 else "false",
        "Owner__c": make_id("005", n) if n % 3 else "",
        "MailingAddress": f"{n} Main St",
        "Spot__c": "x",
        "Spot__Latitude__s": f"1.{n}",
        "Custom__c": f"custom {n}",
    }
    return values.get(name, "")


@settings(max_examples=400, deadline=None)
@given(result_sets())
def test_r8_a_result_set_reads_into_what_the_general_reader_and_decoder_make(
    drawn: tuple[bytes, int, int],
) -> None:
    """Records where the general reader's payload decodes; the same rejections, with the
    same reasons and lines, where it does not; whatever the header, values or bytes."""
    data, page_size, chunk = drawn
    try:
        general_error: Exception | None = None
        both = both_readings(data, page_size, chunk=chunk)
    except ExportFileError as error:  # a header the general reader refuses: so does Bulk's
        general_error = error
    if general_error is None:
        read, general = both
        assert read == general
    else:
        with pytest.raises(ExportFileError):
            both_readings(data, page_size, chunk=chunk)


def test_a_plain_result_set_is_read_into_records_not_payloads() -> None:
    rows = [[plain_value(name, n) for name in PLAIN_HEADER] for n in range(1, 8)]
    rows[2][PLAIN_HEADER.index("IsDeleted")] = "true"
    rows[3][PLAIN_HEADER.index("Visits__c")] = "seven"  # a row the general reader refuses
    data = set_csv(PLAIN_HEADER, rows)
    typing = _bulk.CsvTyping("Contact", SET_DESCRIBE)

    items = [item for page in typing.pages(_bulk.ResultSet(data, None), "set", 3) for item in page]

    # A page with a row its columns refuse is read row by row by the general reader: a
    # payload to decode each, or the row's rejection.
    assert [type(item).__name__ for item in items] == [
        *("Contact", "Contact", "Deletion"),
        *("Unreadable", "RawRecord", "RawRecord"),
        "Contact",
    ]
    assert items[3] == Unreadable(
        object_type="Contact",
        reason="'seven' is not an integer",
        record_id=make_id("003", 4),
        field="Visits__c",
        origin="set:5",
    )
    first = items[0]
    assert isinstance(first, Contact)
    assert first.fields == {
        "LastName": "Name 1",
        "Score__c": Decimal("1.5"),
        "Visits__c": 1,
        "Birthdate": date(1990, 1, 2),
        "Seen__c": datetime(2023, 5, 2, 0, 0, 1, tzinfo=UTC),
        "OptOut__c": True,
        "Owner__c": make_id("005", 1),
    }
    assert first.system_modstamp == datetime(2024, 1, 2, 12, 0, 0, 1000, tzinfo=UTC)
    assert both_readings(data, 3)[0] == both_readings(data, 3)[1]


def test_r8_each_value_a_column_may_hold_reads_as_the_general_reader_reads_it() -> None:
    """Every odd value of every column, alone in a page of plain rows: the column reader
    reads it as the general reader and the decoder do, or leaves its page to them."""
    header = [*PLAIN_HEADER, "MailingAddress", "Spot__c", "Spot__Latitude__s", "Custom__c"]
    plain = [[plain_value(name, n) for name in header] for n in range(1, 5)]
    for column, name in enumerate(header):
        for value in ODD[name]:
            rows = [list(row) for row in plain]
            rows[2][column] = value
            read, general = both_readings(set_csv(header, rows), 4)
            assert read == general, (name, value)
