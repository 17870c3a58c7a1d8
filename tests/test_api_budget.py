"""The API budget: requests counted, the org's usage read, a sync stopped past its share.

Through a real simple-salesforce client against the loopback org, which counts the REST
requests it serves against a daily allowance and says so in ``Sforce-Limit-Info``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

import loopback_org
from acctsync import (
    Account,
    ConfigurationError,
    Contact,
    MeteredSource,
    Person,
    SyncEngine,
    SyncReport,
)
from acctsync.sources.salesforce import (
    ApiBudgetExceededError,
    SalesforceLogin,
    SalesforceSource,
)
from acctsync.stores.sql import SqlStore, SyncRun
from acctsync.testing import InMemoryStore, make_id
from acctsync.testing.salesforce import FakeSalesforce
from loopback_org import CLOCK, at

FIELDS = {"Account": ["Name"], "Contact": ["LastName"]}


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=CLOCK) as fake:
        yield fake


def put_accounts(org: FakeSalesforce, count: int, *, name: str = "", start: float = 0) -> None:
    """``count`` accounts, one contact each, one second apart from ``start``."""
    for n in range(count):
        account_id = make_id("001", n)
        org.put(
            Account(id=account_id, fields={"Name": f"{name}{n}"}, system_modstamp=at(start + n)),
            Contact(
                id=make_id("003", n),
                account_id=account_id,
                fields={"LastName": f"L{n}"},
                system_modstamp=at(n),
            ),
        )


def engine_of(
    org: FakeSalesforce, store: object, waits: list[float] | None = None, **options: object
) -> SyncEngine:
    return loopback_org.engine_of(org, store, fields=FIELDS, waits=waits, **options)


def rest_requests(org: FakeSalesforce) -> int:
    return sum(r.path.startswith("/services/data/") for r in org.requests)


def test_the_report_and_the_stored_run_count_every_request_the_org_served(
    org: FakeSalesforce,
) -> None:
    put_accounts(org, 700)
    # Two tries fail and are retried: each counts, at the org and in the report.
    org.fail(503, "SERVER_UNAVAILABLE", times=2, path="/queryAll/")
    with SqlStore.sqlite(":memory:") as store:
        report = engine_of(org, store).sync()
        run = store.record_run(
            SyncRun.from_report(report, started_at=CLOCK, finished_at=CLOCK, source="org")
        )
        assert store.last_run() == run
    # describe x2, Account: 4 pages of 200, Contact: 4 pages, and the 2 failed tries.
    assert report.api_requests == org.api_used == rest_requests(org) == 12
    assert run.api_requests == 12
    assert report.accounts_upserted == report.contacts_upserted == 700


def test_a_source_is_a_metered_source_counting_from_its_making(org: FakeSalesforce) -> None:
    source = SalesforceSource(org.client(), fields=FIELDS)
    assert isinstance(source, MeteredSource)
    assert source.requests_made == 0
    engine = SyncEngine(source=source, store=InMemoryStore(), clock=lambda: CLOCK)
    first = engine.sync()
    second = engine.sync()
    # The first sync describes both objects and queries both; the second only queries,
    # its describes still young enough (describe_max_age). Each counts its own.
    assert (first.api_requests, second.api_requests) == (4, 2)
    assert source.requests_made == org.api_used == 6


def test_a_renewed_session_counts_the_sign_in_too(org: FakeSalesforce) -> None:
    put_accounts(org, 3)
    login = SalesforceLogin.password(
        username=org.username, password=org.password, security_token=org.security_token
    )
    source = SalesforceSource(login.connect(session=org.session()), fields=FIELDS, login=login)
    org.expire_sessions()
    report = SyncEngine(source=source, store=InMemoryStore(), clock=lambda: CLOCK).sync()
    # The expired try, the repeat and three more REST requests; and the renewal's SOAP
    # login, which the source counts though the org's usage does not.
    assert org.api_used == rest_requests(org) == 5
    assert sum("/Soap/" in r.path for r in org.requests) == 2  # the first sign-in too
    assert report.api_requests == source.requests_made == 6


@pytest.mark.parametrize("share", [0, -0.5, 1.01, True, "0.5", float("nan")])
def test_max_api_share_is_a_number_above_0_and_at_most_1(
    org: FakeSalesforce, share: object
) -> None:
    with pytest.raises(ConfigurationError, match="max_api_share"):
        SalesforceSource(org.client(), max_api_share=share)  # type: ignore[arg-type]
    assert SalesforceSource(org.client(), max_api_share=1).requests_made == 0


def activity_keys(store: InMemoryStore) -> Counter[tuple[str, str, object, object]]:
    return Counter((a.contact_id, a.field, a.old_value, a.new_value) for a in store.activities())


def test_a_sync_past_its_share_stops_between_pages_and_the_next_resumes(
    org: FakeSalesforce,
) -> None:
    put_accounts(org, 1000)
    store = InMemoryStore()
    engine_of(org, store).sync()
    assert not store.activities()
    # Every account renamed: each logs one entry for its one contact (rule S7).
    put_accounts(org, 1000, name="new ", start=2000)
    org.api_used, org.api_allowance = 0, 10
    engine = engine_of(org, store, max_api_share=0.5)
    with pytest.raises(ApiBudgetExceededError) as raised:
        engine.sync()
    error = raised.value
    # describe x2, the first page of each object, two more pages: 6 > 10 x 0.5.
    assert (error.used, error.allowance, error.share) == (6, 10, 0.5)
    assert error.error_code is None
    assert not error.retryable
    assert "max_api_share=0.5" in str(error)
    assert org.api_used == 6  # nothing sent past the share
    renamed = [a for a in store.accounts() if str(a.fields["Name"]).startswith("new ")]
    mark = store.watermark("Account")
    # Whole pages only: every account up to the watermark renamed, none after it.
    assert 0 < len(renamed) < 1000
    assert mark is not None
    assert all(a.system_modstamp <= mark for a in renamed)
    assert activity_keys(store).total() == len(renamed)

    org.api_allowance = 15_000
    report = engine.sync()
    assert report.ok
    assert report.api_requests == org.api_used - 6
    assert sorted(store.accounts(), key=lambda a: a.id) == org.records("Account")
    keys = activity_keys(store)
    assert keys.total() == len(keys) == 1000  # each entry once, none repeated


def test_the_daily_limit_is_not_retried_and_ends_the_sync_the_same_way(
    org: FakeSalesforce,
) -> None:
    put_accounts(org, 500)
    org.api_used, org.api_allowance = 0, 4  # describe x2, a page of each, then spent
    store = InMemoryStore()
    waits: list[float] = []
    engine = engine_of(org, store, waits=waits)
    with pytest.raises(ApiBudgetExceededError) as raised:
        engine.sync()
    error = raised.value
    assert (error.status, error.error_code) == (403, "REQUEST_LIMIT_EXCEEDED")
    assert (error.used, error.allowance, error.share) == (4, 4, None)
    assert "daily API allowance is spent" in str(error)
    assert waits == []
    assert [r.status for r in org.requests].count(403) == 1  # tried once, not again
    assert store.watermark("Account") is not None  # the first page stays

    org.api_allowance = 100
    assert engine.sync().ok
    assert sorted(store.accounts(), key=lambda a: a.id) == org.records("Account")


def test_the_concurrent_request_limit_is_retried_with_backoff(org: FakeSalesforce) -> None:
    put_accounts(org, 3)
    org.fail(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded", times=2)
    waits: list[float] = []
    store = InMemoryStore()
    report: SyncReport = engine_of(org, store, waits=waits).sync()
    assert report.ok
    assert len(waits) == 2
    assert report.api_requests == org.api_used == 6
    assert len(list(store.accounts())) == 3


def test_no_convert_person_is_sent_past_the_share(org: FakeSalesforce) -> None:
    org.api_used, org.api_allowance = 5, 10
    source = SalesforceSource(
        org.client(), fields=FIELDS, max_api_share=0.5, external_id_field="External_Id__c"
    )
    source.field_names("Account")  # its answer says 6 of 10: past half
    engine = SyncEngine(source=source, store=InMemoryStore(), clock=lambda: CLOCK)
    with pytest.raises(ApiBudgetExceededError) as raised:
        engine.convert_person(Person(id="p-1", fields={"LastName": "Doe", "Company": "Acme"}))
    assert raised.value.used == 6
    assert org.api_used == 6
    assert not any("composite" in r.path for r in org.requests)
    assert source.requests_made == 1
