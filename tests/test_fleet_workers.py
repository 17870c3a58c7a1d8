"""The fleet with real Celery workers and beat, against RabbitMQ, Redis and PostgreSQL.

Each test starts ``celery worker`` and ``celery beat`` processes (threads pools) on a
queue of its own, with loopback orgs served from this process. Intervals are seconds.
The tests skip when a broker or PostgreSQL is absent, unless CI requires them
(``ACCTSYNC_REQUIRE_RABBITMQ``, ``..._REDIS``, ``..._POSTGRES``).
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("simple_salesforce")

from acctsync import Account, Contact
from acctsync.fleet import Fleet, Registry
from acctsync.stores.sql import SqlStore, SyncRun
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce
from fleet_support import (
    JOURNAL,
    Processes,
    broker_or_skip,
    celery_config,
    credentials_of,
    dump,
    journal_intervals,
    loopback_org,
    overlaps,
    store_matches_org,
    wait_until,
)

LOOPBACK = "fleet_support:loopback_source"


@pytest.fixture
def postgres_url(postgres_schema: tuple[str, str]) -> str:
    url, schema = postgres_schema
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def orgs() -> Iterator[list[FakeSalesforce]]:
    """Loopback orgs a test makes (``orgs.append``), stopped after it."""
    made: list[FakeSalesforce] = []
    try:
        yield made
    finally:
        for org in made:
            org.stop()


def _queue() -> str:
    return f"acctsync.fleet.test-{uuid.uuid4().hex[:12]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _runs(url: str, org: str) -> list[SyncRun]:
    with SqlStore(url, org=org) as store:
        return list(reversed(store.runs(limit=100)))


def test_fifty_orgs_on_three_workers_each_synced_every_interval_once_at_a_time(
    tmp_path: Path, postgres_url: str, orgs: list[FakeSalesforce]
) -> None:
    broker = broker_or_skip("rabbitmq")
    every = 3.0
    journal = tmp_path / "journal"
    journal.mkdir()
    environ = {"ACCTSYNC_DB": postgres_url, "ACCTSYNC_FLEET_TICK": "0.5", JOURNAL: str(journal)}
    names = [f"org{n:02}" for n in range(50)]
    with Registry(postgres_url) as registry:
        for n, name in enumerate(names):
            orgs.append(loopback_org(n))
            environ.update(credentials_of(name.upper(), orgs[n]))
            registry.add(
                name,
                credentials=name.upper(),
                source=LOOPBACK,
                every=timedelta(seconds=every),
                reconcile_every=None,
                refresh_every=None,
            )

        def synced_since(moment: datetime) -> bool:
            return all(e.synced_at is not None and e.synced_at >= moment for e in registry.orgs())

        first_after: dict[str, datetime] = {}

        def states() -> str:
            return dump(
                [
                    (
                        e.org,
                        e.state(_now()),
                        e.synced_at,
                        e.claimed_at,
                        e.last_outcome,
                        e.last_error,
                    )
                    for e in registry.orgs()
                    if e.synced_at is None or e.last_error
                ]
            )

        def synced_twice_since(moment: datetime) -> bool:
            twice = 0
            for entry in registry.orgs():
                if entry.synced_at is not None and entry.synced_at >= moment:
                    first = first_after.setdefault(entry.org, entry.synced_at)
                    twice += entry.synced_at > first
            return twice == len(names)

        with Processes(tmp_path, environ, celery_config(broker, queue=_queue())) as fleet:
            started = _now()
            for worker in ("w1", "w2", "w3"):
                fleet.worker(worker, ready=False)
            fleet.beat()
            for worker in ("w1", "w2", "w3"):
                wait_until(lambda w=worker: "ready." in fleet.log(w), timeout=30, what=worker)
            wait_until(
                lambda: synced_since(started),
                timeout=40,
                what="every org's first sync",
                detail=lambda: f"{states()}\n{fleet.tails()}",
            )
            # Changes in each org while the fleet runs: an account's field (a Change Data
            # Value entry per contact), a new contact, a deleted one.
            stamp = _now().replace(microsecond=0)
            for n, org in enumerate(orgs):
                first, second = make_id("001", n * 10_000), make_id("001", n * 10_000 + 1)
                org.put(
                    Account(
                        id=first,
                        fields={"Name": f"Org {n} account 0", "Industry": "Retail"},
                        system_modstamp=stamp,
                    ),
                    Contact(
                        id=make_id("003", (n * 10_000 + 1) * 100 + 50),
                        account_id=second,
                        fields={"LastName": "New", "Email": "new@org.test"},
                        system_modstamp=stamp,
                    ),
                )
                org.delete("Contact", make_id("003", (n * 10_000 + 1) * 100), at=stamp)
            changed = _now()
            # Two syncs of each org after the changes: the first reads them, the second
            # reads them again (the lookback window) and must change nothing.
            wait_until(
                lambda: synced_twice_since(changed),
                timeout=60,
                what="two syncs of every org after the changes",
                detail=lambda: f"{states()}\n{fleet.tails()}",
            )

        workers: set[str] = set()
        for n, (name, org) in enumerate(zip(names, orgs, strict=True)):
            with SqlStore(registry.engine, org=name) as store:
                assert store_matches_org(store, org) == [], name
                entries = list(store.activities())
                assert len({entry.id for entry in entries}) == len(entries), name
                assert sorted(
                    (e.contact_id, e.field, e.old_value, e.new_value) for e in entries
                ) == [
                    (make_id("003", n * 10_000 * 100 + c), "Industry", "Tech", "Retail")
                    for c in range(3)
                ], name
                runs = list(reversed(store.runs(limit=100)))
            assert len(runs) >= 3, name
            assert {run.outcome for run in runs} == {"ok"}, dump(runs)
            # Recorded under the store's lock: one run of an org at a time...
            assert overlaps([(run.started_at, run.finished_at) for run in runs]) == [], name
            # ...and each interval apart, as the scheduler enqueued each due org once.
            starts = [run.started_at for run in runs]
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
            assert min(gaps) >= every - 0.05, (name, gaps)
            workers.update(run.source.rpartition(" pid ")[2] for run in runs)  # type: ignore[union-attr]
        # Apart from the lock, the sources' own journal: no org read by two jobs at once.
        intervals = journal_intervals(journal)
        assert sorted(intervals) == names
        for name, read in intervals.items():
            assert overlaps(read) == [], (name, read)
        assert len(workers) == 3  # every worker took its share


@pytest.mark.parametrize("kind", ["rabbitmq", "redis"])
def test_a_worker_killed_in_the_middle_of_a_sync_leaves_the_org_to_another(
    tmp_path: Path,
    postgres_url: str,
    orgs: list[FakeSalesforce],
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = broker_or_skip(kind)
    org = loopback_org(7, accounts=1000, contacts=0)
    orgs.append(org)
    # The first 100 accounts have a contact each: their change logs an entry apiece.
    org.put(
        *(
            Contact(
                id=make_id("003", 7_000_000 + a),
                account_id=make_id("001", 70_000 + a),
                fields={"LastName": f"Person {a}", "Email": f"p{a}@org7.test"},
                system_modstamp=_now().replace(microsecond=0) - timedelta(minutes=2),
            )
            for a in range(100)
        )
    )
    journal = tmp_path / "journal"
    journal.mkdir()
    environ = {
        **credentials_of("ACME", org),
        "ACCTSYNC_DB": postgres_url,
        "ACCTSYNC_FLEET_PAGE_SIZE": "200",
        JOURNAL: str(journal),
    }
    for name, value in credentials_of("ACME", org).items():
        monkeypatch.setenv(name, value)
    here = Fleet(postgres_url, page_size=200)
    try:
        for name in ("acme", "reference"):
            here.registry.add(name, credentials="ACME", source=LOOPBACK)
            assert here.run(name, "sync") == "ok"  # both hold the org as it was
        # Twenty changes a second, so that the engine applies (and commits) them page by
        # page: it holds back a page's last second until it knows that no more follow.
        start = _now().replace(microsecond=0) - timedelta(seconds=55)
        org.put(
            *(
                Account(
                    id=make_id("001", 70_000 + a),
                    fields={"Name": f"Org 7 account {a}", "Industry": "Retail"},
                    system_modstamp=start + timedelta(seconds=a // 20),
                )
                for a in range(1000)
            )
        )
        # A sync of 1,000 changes now takes seconds: the test has two of them to kill the
        # worker in the middle, once it applied a page.
        org.latency = 0.5
        settings = celery_config(broker, queue=_queue(), redis_visibility=5.0)
        with Processes(tmp_path, environ, settings) as fleet:
            fleet.worker("doomed", concurrency=1)
            from acctsync.fleet import RUN, make_app

            # As the scheduler would: the org due, claimed, and its job sent.
            here.registry.resume("acme")
            claims = here.registry.claim_due(stale_after=timedelta(hours=1))
            assert [(c.org, c.job) for c in claims] == [("acme", "sync")]
            # On a connection of its own, closed with the block: Celery's close leaves open
            # the pooled one send_task would take, kombu's pool kept for the whole process
            # (celery/celery#4465).
            with make_app(here, **settings) as app, app.connection_for_write() as connection:
                app.send_task(RUN, ("acme", "sync"), connection=connection)
            with SqlStore(postgres_url, org="acme") as store:
                before = store.watermark("Account")
                # Killed once it applied a page of the changes, and before it finished.
                wait_until(
                    lambda: (store.watermark("Account") or before) > before,  # type: ignore[operator]
                    timeout=30,
                    what="the doomed worker to apply a page",
                )
                fleet.kill("doomed")
                killed = _now()
                # The heir's sync quick, well within Redis's visibility timeout: a longer
                # one would have its message given out again, and the org synced twice.
                org.latency = 0.0
                assert here.registry.get("acme").last_outcome == "ok"  # type: ignore[union-attr]
                assert len(store.runs()) == 1  # the killed run recorded nothing
                fleet.worker("heir", concurrency=1)
                wait_until(
                    lambda: (here.registry.get("acme").finished_at or killed) > killed,  # type: ignore[union-attr]
                    timeout=40,
                    what="another worker to sync the org",
                )
        entry = here.registry.get("acme")
        assert entry is not None
        assert (entry.last_outcome, entry.claimed_at, entry.failures) == ("ok", None, 0)
        assert here.run("reference", "sync") == "ok"  # uninterrupted
        with (
            SqlStore(postgres_url, org="acme") as recovered,
            SqlStore(postgres_url, org="reference") as reference,
        ):
            assert store_matches_org(recovered, org) == []
            assert list(recovered.accounts()) == list(reference.accounts())
            assert list(recovered.contacts()) == list(reference.contacts())
            entries = list(recovered.activities())
            assert len(entries) == 100  # once each: none lost with the killed worker
            assert entries == list(reference.activities())
            runs = recovered.runs()
            assert [run.outcome for run in runs] == ["ok", "ok"]
        read = journal_intervals(journal)["acme"]
        assert len({pid for _, _, pid in read}) == 2  # the doomed worker and its heir
        assert overlaps(read) == []
    finally:
        here.close()


def test_an_org_whose_credentials_fail_is_paused_while_the_others_keep_their_interval(
    tmp_path: Path, postgres_url: str, orgs: list[FakeSalesforce]
) -> None:
    broker = broker_or_skip("redis")
    every = 2.0
    environ = {"ACCTSYNC_DB": postgres_url, "ACCTSYNC_FLEET_TICK": "0.25"}
    good = [f"good{n}" for n in range(4)]

    def jobs_of(org: str) -> Counter[str]:
        """The org's runs by job, told by their labels (a refresh's as the CLI's)."""
        labels = {f"{LOOPBACK} sync": "sync", f"{LOOPBACK} reconcile": "reconcile"}
        labels[f"formula fields of {LOOPBACK}"] = "refresh"
        return Counter(
            labels.get(str(run.source).split(",")[0], str(run.source))
            for run in _runs(postgres_url, org)
        )

    with Registry(postgres_url) as registry:
        for n, name in enumerate([*good, "expired", "spent", "nocreds"]):
            orgs.append(loopback_org(n))
            if name != "nocreds":
                environ.update(credentials_of(name.upper(), orgs[n]))
            registry.add(
                name,
                credentials=name.upper(),
                source=LOOPBACK,
                every=timedelta(seconds=every),
                reconcile_every=None,
                refresh_every=None,
            )
        # One more good org, which also reconciles and refreshes its formulas, less often.
        orgs.append(loopback_org(7))
        environ.update(credentials_of("THOROUGH", orgs[7]))
        registry.add(
            "thorough",
            credentials="THOROUGH",
            source=LOOPBACK,
            every=timedelta(seconds=every),
            reconcile_every=timedelta(seconds=3 * every),
            refresh_every=timedelta(seconds=2 * every),
        )
        orgs[4].expire_sessions()  # Salesforce refuses the session: INVALID_SESSION_ID
        orgs[5].api_used = orgs[5].api_allowance  # the org's daily allowance is spent
        with Processes(tmp_path, environ, celery_config(broker, queue=_queue())) as fleet:
            fleet.worker("w1")
            started = _now()
            fleet.beat()
            wait_until(
                lambda: (
                    all(len(_runs(postgres_url, name)) >= 4 for name in good)
                    and jobs_of("thorough")["reconcile"] >= 1
                ),
                timeout=40,
                what="four syncs of each good org, and a reconciliation",
            )
        entries = {entry.org: entry for entry in registry.orgs()}
    expired, spent, nocreds = entries["expired"], entries["spent"], entries["nocreds"]
    assert expired.paused
    assert "INVALID_SESSION_ID" in (expired.paused_reason or "")
    assert nocreds.paused
    assert nocreds.paused_reason == (
        "CredentialsError: credentials 'NOCREDS': no environment variable NOCREDS_* is set"
    )
    for paused in (expired, nocreds):
        assert paused.failures == 1  # tried once, then left alone
    assert not spent.paused  # an API limit backs off: no person needs to act
    assert spent.failures == 1
    assert spent.state(_now()) == "backoff"
    assert spent.sync_due >= started + timedelta(hours=1)
    assert "ApiBudgetExceededError" in (spent.last_error or "")
    for name in good:
        runs = _runs(postgres_url, name)
        assert {run.outcome for run in runs} == {"ok"}
        starts = [run.started_at for run in runs]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        # Each good org synced every interval, whatever the bad ones did.
        assert all(every - 0.05 <= gap <= every + 1.0 for gap in gaps), (name, gaps)
        assert not entries[name].paused
        assert entries[name].failures == 0
        assert entries[name].last_error is None
    jobs = jobs_of("thorough")
    assert set(jobs) == {"sync", "refresh", "reconcile"}
    assert jobs["sync"] > jobs["refresh"] >= jobs["reconcile"]
    with SqlStore(postgres_url, org="thorough") as store:
        assert store_matches_org(store, orgs[7]) == []
