"""The fleet without a broker: its registry, its scheduling, its jobs run in this process.

The tests with real Celery workers are in ``test_fleet_workers.py``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("simple_salesforce")

from acctsync import Account, ConfigurationError, StoreError
from acctsync.fleet import (
    Backoff,
    CredentialsError,
    Fleet,
    Pause,
    Registry,
    Retry,
    UnknownOrgError,
    environment_credentials,
    fleet_from_environ,
    make_app,
    salesforce_login,
    salesforce_source,
    source_factory,
)
from acctsync.sources.salesforce import ApiBudgetExceededError, SalesforceError
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce
from fleet_support import credentials_of, loopback_org, loopback_source, store_matches_org

LOOPBACK = "fleet_support:loopback_source"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fleet.db'}"


@pytest.fixture
def postgres_url(postgres_schema: tuple[str, str]) -> str:
    """The test's own PostgreSQL schema, as the first of the connection's search path."""
    url, schema = postgres_schema
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    fake = loopback_org(1)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fleet(
    postgres_url: str, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fleet]:
    """A fleet on PostgreSQL with ``org`` registered as ``acme`` (credentials ``ACME``)."""
    for name, value in credentials_of("ACME", org).items():
        monkeypatch.setenv(name, value)
    made = Fleet(postgres_url, lock_timeout=0.5)
    made.registry.add("acme", credentials="ACME", source=LOOPBACK)
    try:
        yield made
    finally:
        made.close()


# -- The registry ---------------------------------------------------------------------------


def test_an_org_added_is_due_for_its_first_sync_at_once(sqlite_url: str) -> None:
    clock = Clock()
    with Registry(sqlite_url, clock=clock) as registry:
        added = registry.add("acme", credentials="ACME", options={"fields": {"Account": ["Name"]}})
        assert added == registry.get("acme")
        assert (added.source, added.credentials) == ("salesforce", "ACME")
        assert added.options == {"fields": {"Account": ["Name"]}}
        assert added.sync_every == timedelta(minutes=5)  # Marketo's interval
        assert added.sync_due == T0
        assert added.reconcile_due == T0 + timedelta(days=1)
        assert added.refresh_due == T0 + timedelta(hours=1)
        assert added.state(T0) == "due"
        assert added.lag(T0) is None


def test_a_registry_refuses_an_org_twice_and_settings_it_cannot_keep(sqlite_url: str) -> None:
    with Registry(sqlite_url) as registry:
        registry.add("acme", credentials="ACME")
        with pytest.raises(ConfigurationError, match="registered already"):
            registry.add("acme", credentials="OTHER")
        with pytest.raises(ConfigurationError, match="every"):
            registry.add("zero", credentials="Z", every=timedelta(0))
        with pytest.raises(ConfigurationError, match="JSON"):
            registry.add("bad", credentials="B", options={"when": datetime.now(UTC)})
        with pytest.raises(ConfigurationError, match="org"):
            registry.add("", credentials="B")
        with pytest.raises(UnknownOrgError):
            registry.pause("nobody")
        assert [o.org for o in registry.orgs()] == ["acme"]
        assert registry.remove("acme")
        assert not registry.remove("acme")
        assert registry.orgs() == []


def test_the_scheduler_claims_each_due_org_once_and_a_lost_claim_again(sqlite_url: str) -> None:
    clock = Clock()
    with Registry(sqlite_url, clock=clock) as registry:
        for n in range(3):
            registry.add(f"org{n}", credentials="X", every=timedelta(minutes=5))
        claims = registry.claim_due(stale_after=timedelta(hours=1))
        assert [(c.org, c.job) for c in claims] == [
            ("org0", "sync"),
            ("org1", "sync"),
            ("org2", "sync"),
        ]
        assert registry.claim_due(stale_after=timedelta(hours=1)) == []
        assert registry.get("org0").state(clock.now) == "queued"  # type: ignore[union-attr]
        clock.now += timedelta(minutes=59)
        assert registry.claim_due(stale_after=timedelta(hours=1)) == []
        clock.now += timedelta(minutes=2)  # the claim is older than an hour: its message lost
        assert len(registry.claim_due(stale_after=timedelta(hours=1))) == 3


def test_two_schedulers_at_once_claim_each_org_once(postgres_url: str) -> None:
    with Registry(postgres_url) as registry:
        for n in range(200):
            registry.add(f"org{n:03}", credentials="X")
    claimed: list[list[str]] = []
    start = threading.Barrier(4)

    def schedule() -> None:
        with Registry(postgres_url) as mine:
            start.wait()
            claimed.append([c.org for c in mine.claim_due(stale_after=timedelta(hours=1))])

    threads = [threading.Thread(target=schedule) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [org for batch in claimed for org in batch]
    assert sorted(everything) == [f"org{n:03}" for n in range(200)]  # each once


def test_the_reconciliation_and_the_refresh_come_due_less_often_and_go_first(
    sqlite_url: str,
) -> None:
    clock = Clock()
    day = timedelta(days=1)
    with Registry(sqlite_url, clock=clock) as registry:
        registry.add(
            "acme", credentials="X", reconcile_every=day, refresh_every=timedelta(hours=1)
        )
        registry.add("never", credentials="X", reconcile_every=None, refresh_every=None)
        stale = timedelta(hours=1)
        assert [c.job for c in registry.claim_due(stale_after=stale)] == ["sync", "sync"]
        started = clock.now
        for org in ("acme", "never"):
            registry.started(org, "sync", started)
            registry.succeeded(org, "sync", started=started, outcome="ok")
        assert registry.get("acme").sync_due == started + timedelta(minutes=5)  # type: ignore[union-attr]
        clock.now += day
        claims = registry.claim_due(stale_after=stale)
        assert [(c.org, c.job) for c in claims] == [("acme", "reconcile"), ("never", "sync")]
        registry.succeeded("acme", "reconcile", started=clock.now, outcome="ok")
        assert [c.job for c in registry.claim_due(stale_after=stale)] == ["refresh"]
        registry.succeeded("acme", "refresh", started=clock.now, outcome="ok")
        assert [c.job for c in registry.claim_due(stale_after=stale)] == ["sync"]
        acme = registry.get("acme")
        assert acme is not None
        assert acme.reconcile_due == clock.now + day
        assert acme.refresh_due == clock.now + timedelta(hours=1)
        assert acme.synced_at == clock.now  # a reconciliation brings the copy up to date


def test_a_paused_org_is_not_claimed_until_resumed(sqlite_url: str) -> None:
    clock = Clock()
    with Registry(sqlite_url, clock=clock) as registry:
        registry.add("acme", credentials="X")
        paused = registry.pause("acme", "the admin asked")
        assert (paused.paused, paused.paused_reason, paused.state(clock.now)) == (
            True,
            "the admin asked",
            "paused",
        )
        assert registry.claim_due(stale_after=timedelta(hours=1)) == []
        registry.failed(
            "acme", "sync", error="E", decision=Retry(at=clock.now + timedelta(days=9))
        )
        clock.now += timedelta(minutes=1)
        resumed = registry.resume("acme")
        assert (resumed.paused, resumed.paused_reason, resumed.failures) == (False, None, 0)
        assert resumed.sync_due == clock.now
        assert [c.org for c in registry.claim_due(stale_after=timedelta(hours=1))] == ["acme"]


# -- Backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "wait"), [(0, 5), (1, 10), (2, 20), (3, 40), (4, 60), (30, 60)]
)
def test_a_failing_org_waits_twice_as_long_after_each_failure_up_to_an_hour(
    failures: int, wait: int
) -> None:
    error = SalesforceError("QUERY_TIMEOUT", retryable=True, error_code="QUERY_TIMEOUT")
    decision = Backoff().after(error, every=timedelta(minutes=5), failures=failures, now=T0)
    assert decision == Retry(at=T0 + timedelta(minutes=wait))


def test_an_exhausted_api_allowance_waits_an_hour_and_does_not_pause() -> None:
    error = ApiBudgetExceededError("spent", used=15_000, allowance=15_000, share=None)
    decision = Backoff().after(error, every=timedelta(minutes=5), failures=0, now=T0)
    assert decision == Retry(at=T0 + timedelta(hours=1))


@pytest.mark.parametrize(
    "error",
    [
        SalesforceError("expired", status=401, error_code="INVALID_SESSION_ID"),
        SalesforceError("refused", status=400, error_code="invalid_grant"),
        SalesforceError("refused", status=500, error_code="INVALID_LOGIN"),
        SalesforceError("no API", status=403, error_code="API_CURRENTLY_DISABLED"),
        SalesforceError("no API", status=403, error_code="API_DISABLED_FOR_ORG"),
        CredentialsError("ACME", "no environment variable ACME_* is set"),
        ConfigurationError("fields of Account must be a list of field names"),
    ],
    ids=[
        "session",
        "oauth",
        "soap-login",
        "no-api-user",
        "no-api-org",
        "no-credentials",
        "setting",
    ],
)
def test_refused_or_missing_credentials_and_bad_settings_pause_the_org(error: Exception) -> None:
    decision = Backoff().after(error, every=timedelta(minutes=5), failures=0, now=T0)
    assert isinstance(decision, Pause)
    assert str(error) in decision.reason


def test_a_backoff_needs_positive_durations() -> None:
    with pytest.raises(ConfigurationError):
        Backoff(maximum=timedelta(0))


def test_the_fleet_times_are_timezone_aware(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        Retry(at=datetime(2026, 1, 5, 9, 0))
    naive = Registry(sqlite_url, clock=lambda: datetime(2026, 1, 5, 9, 0))
    with naive, pytest.raises(ConfigurationError, match="timezone-aware"):
        naive.add("acme", credentials="ACME")
    with Registry(sqlite_url) as registry:
        registry.add("acme", credentials="ACME")
        with pytest.raises(ConfigurationError, match="timezone-aware"):
            registry.started("acme", "sync", datetime(2026, 1, 5, 9, 0))
        # Any zone is taken, and read back in UTC.
        east = timezone(timedelta(hours=2))
        registry.started("acme", "sync", datetime(2026, 1, 5, 11, 0, tzinfo=east))
        assert registry.get("acme").started_at == T0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "settings",
    [
        {"page_size": 2.5},
        {"page_size": 0},
        {"pool_size": True},
        {"lock_timeout": float("inf")},
        {"lock_timeout": 0},
        {"claim_timeout": timedelta(0)},
        {"claim_timeout": 60},
    ],
)
def test_a_fleet_refuses_a_setting_at_once_not_in_each_org_job(settings: dict[str, Any]) -> None:
    # Refused by the engine or the store when a job made them, it would pause every org.
    with pytest.raises(ConfigurationError):
        Fleet("sqlite://", **settings)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sync:s3cret-pw@db:notaport/acctsync",
        "nosuchdialect://sync:s3cret-pw@db/acctsync",
        "sync:s3cret-pw@db",
    ],
)
def test_a_database_url_that_is_no_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Registry(url)
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        Fleet(url).registry  # noqa: B018 (the dialect is looked for when first opened)
    assert "s3cret-pw" not in str(refused.value)
    secret = "postgresql://sync:s3cret-pw@db/acctsync?password=s3cret-pw"
    assert repr(Fleet(secret)) == "<Fleet postgresql+psycopg://sync:***@db/acctsync>"


def test_a_registry_shows_its_database_without_a_password_in_the_query(
    postgres_url: str,
) -> None:
    # libpq takes a password from the query too; the test server asks for none.
    with Registry(f"{postgres_url}&password=s3cret-pw") as registry:
        assert "s3cret-pw" not in repr(registry)
        assert repr(registry).startswith("<Registry postgresql+psycopg://")


# -- Credentials and source kinds -------------------------------------------------------------


def test_credentials_come_from_the_environment_variables_the_reference_starts() -> None:
    environ = {"ACME_INSTANCE_URL": "https://acme.my.salesforce.com", "ACME_SESSION_ID": "s"}
    found = environment_credentials("ACME", {**environ, "ACMEX_SESSION_ID": "t", "ACME_X": ""})
    assert found == {"instance_url": "https://acme.my.salesforce.com", "session_id": "s"}
    with pytest.raises(CredentialsError, match="ACME_") as raised:
        environment_credentials("ACME", {})
    assert raised.value.reference == "ACME"
    with pytest.raises(CredentialsError, match="variable"):
        environment_credentials("no-such name", environ)


@pytest.mark.parametrize(
    ("credentials", "flow"),
    [
        ({"instance_url": "https://a.my.salesforce.com", "session_id": "s"}, "session"),
        ({"consumer_key": "k", "username": "u", "private_key": "PEM"}, "jwt"),
        ({"consumer_key": "k", "consumer_secret": "c", "domain": "acme.my"}, "client_credentials"),
        ({"username": "u", "password": "p"}, "password"),
    ],
)
def test_the_salesforce_kind_signs_in_by_the_flow_whose_secret_is_there(
    credentials: dict[str, str], flow: str
) -> None:
    assert salesforce_login("ACME", credentials).flow == flow


def test_credentials_of_no_flow_or_half_a_flow_are_refused_by_reference() -> None:
    with pytest.raises(CredentialsError, match=r"ACME.*none of session_id"):
        salesforce_login("ACME", {"username": "u"})
    with pytest.raises(CredentialsError, match=r"ACME.*consumer key"):
        salesforce_login("ACME", {"consumer_secret": "c", "domain": "acme.my"})


def test_a_source_kind_is_built_in_an_entry_point_or_a_path() -> None:
    assert source_factory("salesforce") is salesforce_source
    assert source_factory(LOOPBACK) is loopback_source
    with pytest.raises(ConfigurationError, match="no source kind 'nosuch'"):
        source_factory("nosuch")
    with pytest.raises(ConfigurationError, match="cannot load"):
        source_factory("fleet_support:nosuch")
    with pytest.raises(ConfigurationError, match="not callable"):
        source_factory("fleet_support:FIELDS")


def test_the_fleet_reads_its_settings_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ACCTSYNC_DB"):
        fleet_from_environ({})
    config = tmp_path / "fleet_settings_module.py"
    config.write_text("import os\nworker_concurrency = 3\nbroker_pool_limit = 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        fleet, tick, settings = fleet_from_environ(
            {
                "ACCTSYNC_DB": "sqlite:///x.db",
                "ACCTSYNC_FLEET_TICK": "2.5",
                "ACCTSYNC_FLEET_LOCK_TIMEOUT": "3",
                "ACCTSYNC_FLEET_PAGE_SIZE": "500",
                "ACCTSYNC_FLEET_CREDENTIALS": "acctsync.fleet:environment_credentials",
                "CELERY_CONFIG_MODULE": "fleet_settings_module",
            }
        )
    finally:
        sys.path.remove(str(tmp_path))
    assert (tick, fleet.lock_timeout, fleet.page_size) == (2.5, 3.0, 500)
    assert settings == {"worker_concurrency": 3, "broker_pool_limit": 2}
    with pytest.raises(ConfigurationError, match="ACCTSYNC_FLEET_TICK"):
        fleet_from_environ({"ACCTSYNC_DB": "sqlite:///x.db", "ACCTSYNC_FLEET_TICK": "soon"})


def test_the_app_acknowledges_a_job_once_done_and_beat_ticks() -> None:
    pytest.importorskip("celery")
    app = make_app(Fleet("sqlite:///x.db"), tick=7, worker_concurrency=3)
    conf = app.conf
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.worker_pool, conf.worker_concurrency) == ("threads", 3)
    assert conf.beat_schedule["acctsync.fleet.tick"]["schedule"] == 7.0
    assert {"acctsync.fleet.run", "acctsync.fleet.tick"} <= set(app.tasks)
    # The org's own failures are recorded by the job; the registry's database failing is
    # retried by Celery, the job sent again until the database is back.
    assert app.tasks["acctsync.fleet.run"].autoretry_for == (StoreError,)
    assert app.tasks["acctsync.fleet.run"].max_retries is None
    with pytest.raises(ConfigurationError):
        make_app(Fleet("sqlite:///x.db"), tick=0)


def test_each_app_runs_the_jobs_of_its_own_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("celery")
    fleets = [Fleet(f"sqlite:///{tmp_path / name}.db") for name in ("first", "second")]
    try:
        fleets[1].registry.add("acme", credentials="X")
        apps = [make_app(fleet, broker_url="memory://") for fleet in fleets]
        sent: list[tuple[str, str]] = []
        for app in apps:
            monkeypatch.setattr(app, "send_task", lambda name, args: sent.append(args))
        assert apps[0].tasks["acctsync.fleet.tick"]() == 0
        assert apps[1].tasks["acctsync.fleet.tick"]() == 1
        assert sent == [("acme", "sync")]
        assert apps[0].tasks["acctsync.fleet.run"]("acme", "sync") == "unknown"
    finally:
        for fleet in fleets:
            fleet.close()


def test_a_tick_that_cannot_send_a_job_leaves_the_unsent_orgs_claimable(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("celery")
    fleet = Fleet(sqlite_url)
    try:
        for n in range(3):
            fleet.registry.add(f"org{n}", credentials="X")
        app = make_app(fleet, broker_url="memory://")
        sent: list[tuple[str, str]] = []

        def send_task(name: str, args: tuple[str, str]) -> None:
            if len(sent) == 1:
                raise ConnectionError("the broker is gone")
            sent.append(args)

        monkeypatch.setattr(app, "send_task", send_task)
        with pytest.raises(ConnectionError):
            app.tasks["acctsync.fleet.tick"]()
        assert sent == [("org0", "sync")]
        # The sent one stays claimed; the others are claimed by the next tick.
        claims = fleet.registry.claim_due(stale_after=timedelta(hours=1))
        assert [c.org for c in claims] == ["org1", "org2"]
    finally:
        fleet.close()


# -- Jobs, run in this process ---------------------------------------------------------------


def _store(fleet: Fleet, org: str = "acme") -> SqlStore:
    return SqlStore(fleet.registry.engine, org=org)


def test_a_job_syncs_the_org_records_the_run_and_schedules_the_next(
    fleet: Fleet, org: FakeSalesforce
) -> None:
    assert [c.job for c in fleet.tick()] == ["sync"]
    assert fleet.run("acme", "sync") == "ok"
    store = _store(fleet)
    assert store_matches_org(store, org) == []
    run = store.last_run()
    assert run is not None
    assert run.outcome == "ok"
    assert run.source is not None
    assert run.source.startswith(f"{LOOPBACK} sync, worker ")
    entry = fleet.registry.get("acme")
    assert entry is not None
    assert (entry.claimed_at, entry.last_outcome, entry.failures) == (None, "ok", 0)
    assert entry.synced_at == entry.started_at == run.started_at
    assert entry.sync_due == run.started_at + entry.sync_every
    assert entry.state(run.finished_at) == "scheduled"


def test_a_job_whose_store_another_runner_holds_is_skipped_for_one_interval(
    fleet: Fleet,
) -> None:
    holder = _store(fleet)
    with holder.exclusive():
        assert fleet.run("acme", "sync") == "skipped"
    entry = fleet.registry.get("acme")
    assert entry is not None
    assert (entry.last_outcome, entry.failures, entry.paused) == ("skipped", 0, False)
    assert entry.finished_at is not None
    assert entry.sync_due >= entry.finished_at + entry.sync_every - timedelta(seconds=1)
    assert _store(fleet).runs() == []


def test_an_org_whose_session_salesforce_refuses_is_paused_with_the_reason(
    fleet: Fleet, org: FakeSalesforce
) -> None:
    org.expire_sessions()
    assert fleet.run("acme", "sync") == "failed"
    entry = fleet.registry.get("acme")
    assert entry is not None
    assert entry.paused
    assert entry.paused_reason is not None
    assert "INVALID_SESSION_ID" in entry.paused_reason
    assert entry.last_error == entry.paused_reason
    assert (entry.failures, entry.state(T0), entry.claimed_at) == (1, "paused", None)
    run = _store(fleet).last_run()
    assert run is not None
    assert run.outcome == "failed"
    assert run.error is not None
    assert "INVALID_SESSION_ID" in run.error
    assert fleet.run("acme", "sync") == "paused"  # a message still queued runs nothing


def test_an_org_without_credentials_is_paused_before_anything_is_read(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_SESSION_ID")
    monkeypatch.delenv("ACME_INSTANCE_URL")
    assert fleet.run("acme", "sync") == "failed"
    entry = fleet.registry.get("acme")
    assert entry is not None
    assert entry.paused
    assert (
        entry.paused_reason
        == "CredentialsError: credentials 'ACME': no environment variable ACME_* is set"
    )
    assert _store(fleet).runs() == []


def test_an_org_out_of_api_allowance_backs_off_and_stays_scheduled(
    fleet: Fleet, org: FakeSalesforce
) -> None:
    org.api_used = org.api_allowance
    before = datetime.now(UTC)
    assert fleet.run("acme", "sync") == "failed"
    entry = fleet.registry.get("acme")
    assert entry is not None
    assert not entry.paused
    assert (entry.failures, entry.state(datetime.now(UTC))) == (1, "backoff")
    assert entry.sync_due >= before + timedelta(hours=1)
    assert entry.last_error is not None
    assert "ApiBudgetExceededError" in entry.last_error
    org.api_used = 0
    fleet.registry.resume("acme")
    assert fleet.run("acme", "sync") == "ok"
    assert fleet.registry.get("acme").failures == 0  # type: ignore[union-attr]


def test_the_reconciliation_job_deletes_what_the_org_no_longer_holds(
    fleet: Fleet, org: FakeSalesforce
) -> None:
    assert fleet.run("acme", "sync") == "ok"
    gone = make_id("001", 10_000)
    org.purge("Account", gone)  # beyond the recycle bin: no sync reads its deletion
    assert fleet.run("acme", "sync") == "ok"
    assert _store(fleet).get_account(gone) is not None
    assert fleet.run("acme", "reconcile") == "ok"
    assert _store(fleet).get_account(gone) is None
    assert store_matches_org(_store(fleet), org) == []
    assert fleet.run("acme", "refresh") == "ok"
    assert fleet.registry.get("acme").last_job == "refresh"  # type: ignore[union-attr]


def test_a_formula_refresh_of_the_fleet_is_not_taken_for_a_sync_by_status_check(
    fleet: Fleet, postgres_url: str
) -> None:
    pytest.importorskip("click")
    from click.testing import CliRunner

    from acctsync.cli._app import app

    assert fleet.run("acme", "sync") == "ok"
    assert fleet.run("acme", "refresh") == "ok"
    refresh = _store(fleet).last_run()
    assert refresh is not None
    assert refresh.source is not None
    assert refresh.source.startswith(f"formula fields of {LOOPBACK}, worker ")
    checked = CliRunner().invoke(
        app, ["status", "--check", "--org", "acme", "--json", "--db", postgres_url]
    )
    assert checked.exit_code == 0, checked.output
    [entry] = json.loads(checked.stdout)["orgs"]
    assert entry["last_sync"]["source"].startswith(f"{LOOPBACK} sync, worker ")


def test_a_job_of_an_org_removed_meanwhile_runs_nothing(fleet: Fleet) -> None:
    fleet.registry.remove("acme")
    assert fleet.run("acme", "sync") == "unknown"
    with pytest.raises(ConfigurationError, match="job"):
        fleet.run("acme", "everything")


def test_the_built_in_salesforce_kind_signs_in_with_the_org_credentials(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("cryptography")
    with FakeSalesforce(tls=True) as org:
        org.put(
            Account(
                id=make_id("001", 1),
                fields={"Name": "Acme"},
                system_modstamp=datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1),
            )
        )
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(org.certificate))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("ACME_INSTANCE_URL", org.url)
        monkeypatch.setenv("ACME_SESSION_ID", org.session_id)
        fleet = Fleet(postgres_url)
        try:
            fleet.registry.add(
                "acme",
                credentials="ACME",
                options={"fields": {"Account": ["Name"], "Contact": ["LastName"]}, "timeout": 5},
            )
            assert fleet.run("acme", "sync") == "ok"
            assert _store(fleet).get_account(make_id("001", 1)).fields == {"Name": "Acme"}  # type: ignore[union-attr]
            fleet.registry.add("typo", credentials="ACME", options={"feilds": {}})
            assert fleet.run("typo", "sync") == "failed"
            paused = fleet.registry.get("typo")
            assert paused is not None
            assert paused.paused
            assert "no option 'feilds'" in (paused.paused_reason or "")
        finally:
            fleet.close()


def test_a_source_error_that_may_pass_backs_off(fleet: Fleet, org: FakeSalesforce) -> None:
    org.fail(503, "SERVER_UNAVAILABLE", times=10)
    assert fleet.run("acme", "sync") == "failed"
    entry = fleet.registry.get("acme")
    assert entry is not None
    assert (entry.paused, entry.failures, entry.last_outcome) == (False, 1, "failed")
    assert entry.last_error is not None
    assert "SERVER_UNAVAILABLE" in entry.last_error
