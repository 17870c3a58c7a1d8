"""Benchmarks of the live Salesforce source, on the loopback org. Prints figures; asserts counts.

The org: a `FakeSalesforce` of 100,000 accounts and 1,000,000 contacts (ten each), with 3
to 8 fields each of mixed types (text, numbers, decimals, booleans, nulls, dates,
datetimes), stamped over three years in no relation to their IDs, as edits are, a tenth
of them in mass updates that give many records one second. The org runs in a process
of its own, so that what the syncing process holds is the sync's; each measured side
runs in a fresh process too, with a real ``simple_salesforce.Salesforce`` client of the
org's URL and session, built as `FakeSalesforce.client` builds one. Each run at the full
size gets an org of its own. (The loopback org keeps each query's and job's result as a
list of its rows, encoding only the page or set asked for.)

1. The first sync into a fresh SQLite store by ``SalesforceSource(client, bulk=True)``:
   its API requests (target: at most 30), its time, and the syncing process's peak
   resident size at a tenth, a third and the whole of the org (target: at most 300 MB,
   whatever the org's size). The same first sync by REST (``bulk=False``), for its
   requests. Each run's time is split into the time in requests (the org's work and
   the transfer, by kind of request) and the time outside them; the process's CPU
   seconds are given beside, since the machine may be shared. The sync downloads a
   job's next set while it reads one: its requests overlap its own work, and its time
   outside requests is less than its own work.
2. The limit: the same queries' Bulk results downloaded with simple-salesforce's own
   Bulk 2.0 client (``sf.bulk2.Account.query_all``), in sets of the source's size, and
   inserted into SQLite by ``executemany``, a column per CSV column, as text, a
   transaction a set: no typing, no rules. Target: the sync at most 1.5x its time. As a
   reference beside it, the same download written as the store must write it: into the
   store's tables (an org column, contacts indexed by account too), the fields as JSON,
   a transaction per 2,000 records, the engine's page. Every limit's SQLite has the
   store's pragmas. Sync and limits run in turn, ``--runs`` times each.
3. A second sync with nothing new, by the same engine: its requests per object
   (target: 1 each).
4. With ``--latency`` (seconds, 0.05 by default; 0 skips it): the first syncs by Bulk and
   by REST on a tenth of the org that answers each request that much later, as a real
   org's round trips do.

Neither side waits between a job's polls: the loopback org completes a job at its third
poll whatever the time, so waits would time the poll schedule, not the work. The
source's default policy would wait 1 + 2 s per object there, simple-salesforce's 15 s.
Putting the records into the org is timed apart, and not counted. ``--gc-threshold N``
has each measured process collect every N allocations, as the ``acctsync`` command does
(50,000) and an application may; by default they keep CPython's 700.

Run with ``python benchmarks/bench_salesforce.py [--accounts N] [--quick] [--runs R]``
(ten contacts per account; ``--quick`` is 10x smaller); ``--profile`` profiles the first
sync by Bulk instead.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import gc
import io
import itertools
import json
import multiprocessing
import pstats
import re
import resource
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import attrs
import requests
from bench_sql import peak_rss_mib, with_store_pragmas
from simple_salesforce.api import Salesforce

from acctsync import Account, Contact, FieldValue, ObjectType, SyncEngine
from acctsync.sources.salesforce import RetryPolicy, SalesforceSource
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce

P = ParamSpec("P")
T = TypeVar("T")

# A fresh interpreter, whose peak resident size is its own: a forked child's starts from
# its parent's.
SPAWN = multiprocessing.get_context("spawn")
CONTACTS_PER_ACCOUNT = 10
STREAMS: tuple[ObjectType, ...] = ("Account", "Contact")
# The source's default bulk_set_size, for the limit's sets too: both sides ask the org
# for the same sets, in as many requests.
SET_SIZE = SalesforceSource.__init__.__kwdefaults__["bulk_set_size"]
PAGE_SIZE = attrs.fields_dict(SyncEngine)["_page_size"].default  # the engine's default
ORG_PUT_BATCH = 5_000  # accounts a `put` (with their contacts): the org's lock is held that long

FIRST_STAMP = datetime(2022, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 3 * 365 * 86_400
CLOCK = datetime(2025, 6, 1, tzinfo=UTC)  # the org's and the engine's: after every stamp

ACCOUNT_DESCRIBE: list[dict[str, Any]] = [
    {"name": "Name", "type": "string", "nillable": False},
    {"name": "AnnualRevenue", "type": "currency"},
    {"name": "Founded__c", "type": "date"},
    {"name": "IsPartner__c", "type": "boolean"},
    {"name": "NumberOfEmployees", "type": "int"},
    {"name": "Rating", "type": "picklist"},
    {"name": "LastReviewed__c", "type": "datetime"},
    {"name": "Website", "type": "url"},
]
CONTACT_DESCRIBE: list[dict[str, Any]] = [
    {"name": "LastName", "type": "string", "nillable": False},
    {"name": "Email", "type": "email"},
    {"name": "Birthdate", "type": "date"},
    {"name": "LeadScore__c", "type": "double"},
    {"name": "HasOptedOutOfEmail", "type": "boolean"},
    {"name": "LastContacted__c", "type": "datetime"},
    {"name": "Title", "type": "string"},
    {"name": "Phone", "type": "phone"},
]
TITLES = ("CEO", "CTO", "VP Sales", "Engineer", "Buyer", None)


# -- The org ---------------------------------------------------------------------------------


def stamp(n: int, salt: int) -> datetime:
    """Record ``n``'s last edit: spread over three years in no order of ``n``.

    A tenth of the records were edited by mass updates, fifty records a second for ten
    seconds, a day apart: the stamps many records share, which the engine holds back
    at a page's end (rule R1).
    """
    if n % 10 == 0:
        load, rest = divmod(n // 10, 500)
        return FIRST_STAMP + timedelta(days=load % 1000, seconds=rest // 50)
    # Multiplying by a prime that does not divide the span permutes the seconds.
    return FIRST_STAMP + timedelta(seconds=(n * 48_271 + salt) % SPAN_SECONDS)


def account(n: int) -> Account:
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("Name", f"Account {n}"),
        ("AnnualRevenue", Decimal(f"{n * 9973 % 10_000_000}.{n % 100:02d}")),
        ("Founded__c", date(1950 + n % 70, 1 + n % 12, 1 + n % 28)),
        ("IsPartner__c", n % 3 == 0),
        ("NumberOfEmployees", n * 13 % 50_000),
        ("Rating", None if n % 4 == 0 else "Warm"),
        ("LastReviewed__c", FIRST_STAMP + timedelta(seconds=n * 7919 % SPAN_SECONDS)),
        ("Website", f"https://account{n}.example.test"),
    )
    return Account(
        id=make_id("001", n), fields=dict(fields[: 3 + n % 6]), system_modstamp=stamp(n, 0)
    )


def contact(m: int) -> Contact:
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("LastName", f"Name {m}"),
        ("Email", f"c{m}@example.test"),
        ("Birthdate", date(1940 + m % 60, 1 + m % 12, 1 + m % 28)),
        ("LeadScore__c", Decimal(f"{m % 100}.{m % 10}")),
        ("HasOptedOutOfEmail", m % 5 == 0),
        ("LastContacted__c", None if m % 3 else FIRST_STAMP + timedelta(seconds=m * 31)),
        ("Title", TITLES[m % len(TITLES)]),
        ("Phone", f"+1 555 {m % 10_000_000:07d}"),
    )
    return Contact(
        id=make_id("003", m),
        account_id=make_id("001", m // CONTACTS_PER_ACCOUNT),
        fields=dict(fields[: 3 + m % 6]),
        system_modstamp=stamp(m, 1_234_567),
    )


@attrs.frozen
class OrgAddress:
    """What a client in another process needs to reach the org."""

    url: str
    session_id: str
    api_version: str


def serve_org(conn: Connection, latency: float) -> None:
    """The org's process: serves until told to stop, growing the org when told to.

    Each message is a number of accounts to grow the org to (ten contacts each), answered
    with the seconds it took; None stops it. Growing keeps the records already there, so
    a smaller org is the start of a larger one.
    """
    with FakeSalesforce(clock=CLOCK, latency=latency) as org:
        org.describe_fields("Account", ACCOUNT_DESCRIBE)
        org.describe_fields("Contact", CONTACT_DESCRIBE)
        conn.send(OrgAddress(org.url, org.session_id, org.api_version))
        held = 0
        while (accounts := conn.recv()) is not None:
            started = time.perf_counter()
            for start in range(held, accounts, ORG_PUT_BATCH):
                end = min(start + ORG_PUT_BATCH, accounts)
                org.put(*map(account, range(start, end)))
                contacts = range(start * CONTACTS_PER_ACCOUNT, end * CONTACTS_PER_ACCOUNT)
                org.put(*map(contact, contacts))
            held = max(held, accounts)
            conn.send(time.perf_counter() - started)


class OrgProcess:
    """The loopback org in a spawned process (a context manager)."""

    def __init__(self, latency: float = 0.0) -> None:
        self._conn, child = SPAWN.Pipe()
        self._process = SPAWN.Process(target=serve_org, args=(child, latency), daemon=True)
        self._process.start()
        child.close()
        self.address: OrgAddress = self._conn.recv()

    def grow(self, accounts: int) -> float:
        """Seconds to grow the org to ``accounts`` accounts and their contacts."""
        self._conn.send(accounts)
        seconds: float = self._conn.recv()
        return seconds

    def __enter__(self) -> OrgProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._conn.send(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()


# -- A client of it, in the measuring process ------------------------------------------------


class LoopbackSession(requests.Session):
    """The session `FakeSalesforce.client` gives its client, timing what it waits for.

    simple-salesforce builds every URL as ``https://``: a plain-HTTP org needs them back
    as ``http://``. (`FakeSalesforce.client`'s also sends sign-ins to the org; a client of
    a session id never signs in.) A job's creation runs its whole query in the org before
    answering, so the timeout is long. ``sent`` holds each request's URL, its SOQL (None
    for none) and its seconds: the org's work and the transfer.
    """

    def __init__(self, url: str, timeout: float = 1800.0) -> None:
        super().__init__()
        self.trust_env = False  # the environment's proxies are not for 127.0.0.1
        self._https = "https" + url.removeprefix("http")
        self._timeout = timeout
        self.received = 0
        self.sent: list[tuple[str, str | None, float]] = []

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if url.startswith(self._https):
            url = "http" + url.removeprefix("https")
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        started = time.perf_counter()
        answer = super().request(method, url, *args, **kwargs)
        seconds = time.perf_counter() - started
        self.received += len(answer.content)
        params, body = kwargs.get("params") or {}, kwargs.get("json") or {}
        self.sent.append((url, params.get("q") or body.get("query"), seconds))
        return answer

    def forget(self) -> None:
        """Start counting again."""
        self.sent.clear()
        self.received = 0


def client_of(org: OrgAddress) -> tuple[Salesforce, LoopbackSession]:
    session = LoopbackSession(org.url)
    client = Salesforce(
        instance_url=org.url,
        session_id=org.session_id,
        version=org.api_version,
        session=session,
        parse_float=Decimal,
    )
    return client, session


_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)
_KINDS = (
    (re.compile(r"/sobjects/\w+/describe"), "describe"),
    (re.compile(r"/jobs/query/\w+/results"), "result set"),
    (re.compile(r"/jobs/query/\w+"), "poll"),
    (re.compile(r"/jobs/query"), "job"),
    (re.compile(r"/query(All)?/\w+-\d+"), "next page"),
    (re.compile(r"/query(All)?/"), "query"),
)


@attrs.frozen
class Requests:
    """The requests of a run by kind (``describe``, ``job``, ``poll``...) and the object
    each names (None for those that name none, as a poll), and the seconds of each kind."""

    counted: Counter[tuple[str, str | None]]
    seconds: dict[str, float]

    @classmethod
    def of(cls, session: LoopbackSession) -> Requests:
        counted: Counter[tuple[str, str | None]] = Counter()
        seconds: dict[str, float] = {}
        for url, query, took in session.sent:
            kind = next((k for pattern, k in _KINDS if pattern.search(url)), "other")
            named = _FROM.search(query or "") or re.search(r"/sobjects/(\w+)/", url)
            counted[kind, named[1] if named else None] += 1
            seconds[kind] = seconds.get(kind, 0.0) + took
        return cls(counted, seconds)

    @property
    def total(self) -> int:
        return sum(self.counted.values())

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def by_kind(self) -> str:
        merged: Counter[str] = Counter()
        for (kind, _), n in self.counted.items():
            merged[kind] += n
        return ", ".join(
            f"{kind} {n} ({self.seconds[kind]:.1f} s)" for kind, n in merged.most_common()
        )

    def per_object(self) -> str:
        objects: dict[str, list[str]] = {}
        for (kind, named), n in sorted(self.counted.items(), key=str):
            objects.setdefault(named or "no object named", []).append(f"{kind} {n}")
        return "; ".join(f"{named}: {', '.join(each)}" for named, each in objects.items())


# -- The measured sides, each in a fresh process --------------------------------------------


# The measured processes' collector threshold, where ``--gc-threshold`` gives one: as the
# ``acctsync`` command sets it (every 50,000 allocations), or as an application may.
GC_THRESHOLD: list[int] = []


def in_fresh_process(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    setup: dict[str, Any] = {}
    if GC_THRESHOLD:
        setup = {"initializer": gc.set_threshold, "initargs": tuple(GC_THRESHOLD)}
    with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN, **setup) as pool:
        return pool.submit(function, *args, **kwargs).result()


@attrs.frozen
class Figures:
    """One measured run: its time, its requests and the process's memory."""

    seconds: float
    received_mib: float
    requests: Requests
    reported: int | None  # the sync report's api_requests; None for the limit
    rss_before: float  # MiB, imports and set-up
    rss_peak: float
    cpu: float  # the process's CPU seconds (user and system) in that time
    waits: float = 0.0  # what the retry policy's backoff would have slept between polls

    @property
    def org_seconds(self) -> float:
        """The time in requests: the org's work and the transfer."""
        return self.requests.total_seconds

    @property
    def own_seconds(self) -> float:
        return self.seconds - self.org_seconds


def cpu_seconds() -> float:
    """The CPU this process has used, user and system: unlike the time, what the other
    processes of a shared machine leave it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_sync(
    org: OrgAddress,
    accounts: int,
    *,
    bulk: bool,
    then_again: bool = False,
    page_size: int = PAGE_SIZE,
) -> tuple[Figures, Figures | None]:
    """The first sync into a fresh SQLite store; with ``then_again``, a second by the same
    engine, nothing having changed."""
    client, session = client_of(org)
    # The polls' waits are counted, not slept (see the module's docstring).
    waits: list[float] = []
    source = SalesforceSource(client, bulk=bulk, retry=RetryPolicy(sleep=waits.append))
    with tempfile.TemporaryDirectory() as tmp, SqlStore.sqlite(Path(tmp) / "store.db") as store:
        engine = SyncEngine(source=source, store=store, page_size=page_size, clock=lambda: CLOCK)
        gc.collect()
        before = peak_rss_mib()
        cpu, started = cpu_seconds(), time.perf_counter()
        report = engine.sync()
        seconds = time.perf_counter() - started
        assert report.ok, report
        assert report.accounts_upserted == accounts, report
        assert report.contacts_upserted == accounts * CONTACTS_PER_ACCOUNT, report
        first = Figures(
            seconds=seconds,
            received_mib=session.received / 2**20,
            requests=Requests.of(session),
            reported=report.api_requests,
            rss_before=before,
            rss_peak=peak_rss_mib(),
            cpu=cpu_seconds() - cpu,
            waits=sum(waits),
        )
        if not then_again:
            return first, None
        session.forget()
        cpu, started = cpu_seconds(), time.perf_counter()
        report = engine.sync()
        seconds = time.perf_counter() - started
        assert report.ok, report
        assert report.accounts_upserted == report.contacts_upserted == 0, report
        again = Figures(
            seconds=seconds,
            received_mib=session.received / 2**20,
            requests=Requests.of(session),
            reported=report.api_requests,
            rss_before=before,
            rss_peak=peak_rss_mib(),
            cpu=cpu_seconds() - cpu,
        )
    return first, again


def bulk_limit(
    org: OrgAddress, accounts: int, *, store_shaped: bool = False, page_size: int = PAGE_SIZE
) -> Figures:
    """The same Bulk results through simple-salesforce's Bulk 2.0 client, into SQLite.

    The queries are the source's own (asked of it before the clock starts). Each set
    goes in as it arrives, one transaction each, with the store's pragmas.

    ``store_shaped`` writes them as the store must instead, as a reference: into the
    store's own tables (an org column, a second index on contacts by account), the
    fields as JSON text (untyped), a transaction per ``page_size`` records, the engine's
    page.
    """
    client, session = client_of(org)
    source = SalesforceSource(client)
    queries = {kind: source.soql(kind, None) for kind in STREAMS}
    session.forget()
    rows: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "limit.db"
        if store_shaped:
            SqlStore.sqlite(path, table_prefix=STORE_PREFIX).close()  # its tables
        db = with_store_pragmas(sqlite3.connect(path, isolation_level=None))
        gc.collect()
        before = peak_rss_mib()
        cpu, started = cpu_seconds(), time.perf_counter()
        for kind, query in queries.items():
            write = partial(store_rows, page_size=page_size) if store_shaped else set_rows
            # wait=0: no waits between polls, as the sync's (see the module's docstring).
            sets: Iterator[str] = getattr(client.bulk2, kind).query_all(
                query, max_records=SET_SIZE, wait=0
            )
            for text in sets:
                write(db, kind, text)
            table = f"{STORE_PREFIX}{kind.lower()}s" if store_shaped else kind
            rows[kind] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        seconds = time.perf_counter() - started
        db.close()
    assert rows == {"Account": accounts, "Contact": accounts * CONTACTS_PER_ACCOUNT}, rows
    return Figures(
        seconds=seconds,
        received_mib=session.received / 2**20,
        requests=Requests.of(session),
        reported=None,
        rss_before=before,
        rss_peak=peak_rss_mib(),
        cpu=cpu_seconds() - cpu,
    )


STORE_PREFIX = "acctsync_"


def set_rows(db: sqlite3.Connection, kind: str, text: str) -> None:
    """A set, a column per CSV column, as text, in one transaction."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    columns = ", ".join(f'"{name}"' for name in header)
    db.execute(f"CREATE TABLE IF NOT EXISTS {kind} ({columns}, PRIMARY KEY (Id))")
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO {kind} VALUES ({', '.join('?' * len(header))})", reader)
    db.execute("COMMIT")


def store_rows(db: sqlite3.Connection, kind: str, text: str, *, page_size: int) -> None:
    """A set as the store's rows, fields as untyped JSON, a transaction per page."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    system = {"Id", "SystemModstamp", "IsDeleted", "MasterRecordId", "AccountId"}
    named = [(i, name) for i, name in enumerate(header) if name not in system]
    at = {name: i for i, name in enumerate(header)}
    dumps = json.dumps
    if kind == "Account":
        insert = (
            f"INSERT INTO {STORE_PREFIX}accounts (org, id, deleted, system_modstamp, fields,"
            " local_edits, local_revision) VALUES (?, ?, 0, ?, ?, '{}', 0)"
        )

        def row(r: list[str]) -> tuple[str, ...]:
            fields = dumps({name: r[i] for i, name in named})
            return ("default", r[at["Id"]], r[at["SystemModstamp"]], fields)

    else:
        insert = (
            f"INSERT INTO {STORE_PREFIX}contacts (org, id, deleted, system_modstamp,"
            " account_id, fields) VALUES (?, ?, 0, ?, ?, ?)"
        )

        def row(r: list[str]) -> tuple[str, ...]:
            fields = dumps({name: r[i] for i, name in named})
            return ("default", r[at["Id"]], r[at["SystemModstamp"]], r[at["AccountId"]], fields)

    while page := list(itertools.islice(reader, page_size)):
        db.execute("BEGIN")
        db.executemany(insert, map(row, page))
        db.execute("COMMIT")


def profile_first_sync(org: OrgAddress) -> str:
    client, _ = client_of(org)
    source = SalesforceSource(client, bulk=True, retry=RetryPolicy(sleep=lambda _: None))
    with tempfile.TemporaryDirectory() as tmp, SqlStore.sqlite(Path(tmp) / "store.db") as store:
        engine = SyncEngine(source=source, store=store, clock=lambda: CLOCK)
        profiler = cProfile.Profile()
        profiler.enable()
        engine.sync()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return out.getvalue()


# -- Reporting -------------------------------------------------------------------------------


def describe_run(name: str, run: Figures) -> None:
    reported = "" if run.reported is None else f" (the report's api_requests: {run.reported})"
    print(
        f"  {name}: {run.seconds:.2f} s, of which {run.org_seconds:.2f} s in requests"
        f" ({run.received_mib:,.0f} MiB received) and {run.own_seconds:.2f} s its own"
        f" ({run.cpu:.2f} s of CPU);"
        f" peak RSS {run.rss_peak:,.0f} MiB ({run.rss_before:,.0f} before);"
        f" {run.requests.total} requests{reported}: {run.requests.by_kind()}"
    )


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def size_name(accounts: int) -> str:
    return f"{accounts:,} accounts + {accounts * CONTACTS_PER_ACCOUNT:,} contacts"


def measure(accounts: int, runs: int, *, rest: bool, page_size: int) -> list[float]:
    """The runs at the full size, each on an org of its own; their peak RSS, MiB."""
    peaks = []
    print(f"At {size_name(accounts)}, each run on an org of its own:")
    for run in range(1, runs + 1):
        with OrgProcess() as org:
            seconds = org.grow(accounts)
            synced, again = in_fresh_process(
                first_sync, org.address, accounts, bulk=True, then_again=True, page_size=page_size
            )
            limit = in_fresh_process(bulk_limit, org.address, accounts)
            shaped = in_fresh_process(
                bulk_limit, org.address, accounts, store_shaped=True, page_size=page_size
            )
        assert again is not None
        peaks.append(synced.rss_peak)
        print(f" run {run} (the org took {seconds:.1f} s to fill, not counted):")
        describe_run("first sync, bulk=True", synced)
        print(f"    (the default poll backoff would have slept {synced.waits:.0f} s more)")
        describe_run("limit, simple-salesforce bulk2 + sqlite3 executemany", limit)
        shaped_name = f"the same, as the store's rows in its tables, {page_size:,} a commit"
        describe_run(shaped_name, shaped)
        ratio, own_ratio = synced.seconds / limit.seconds, synced.own_seconds / limit.own_seconds
        requests_made = synced.requests.total
        print(
            f"    sync / limit: {ratio:.2f}x [target <= 1.5x: {verdict(ratio <= 1.5)}];"
            f" outside requests {own_ratio:.2f}x; CPU {synced.cpu / limit.cpu:.2f}x"
        )
        print(
            f"    sync / the store-shaped limit: {synced.seconds / shaped.seconds:.2f}x;"
            f" outside requests {synced.own_seconds / shaped.own_seconds:.2f}x;"
            f" CPU {synced.cpu / shaped.cpu:.2f}x"
        )
        print(
            f"    requests of the first sync: {requests_made}"
            f" [target <= 30: {verdict(requests_made <= 30)}]"
        )
        print(
            f"    second sync, nothing new: {again.seconds:.2f} s ({again.org_seconds:.2f} s in"
            f" requests), {again.requests.total} requests (report {again.reported}):"
            f" {again.requests.per_object()} [target 1 per object]"
        )
    if rest:
        with OrgProcess() as org:
            org.grow(accounts)
            synced, _ = in_fresh_process(
                first_sync, org.address, accounts, bulk=False, page_size=page_size
            )
        describe_run("first sync, bulk=False (REST only)", synced)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000, help="ten contacts each")
    parser.add_argument("--quick", action="store_true", help="a 10x smaller org")
    parser.add_argument("--runs", type=int, default=2, help="runs of the sync and the limit")
    parser.add_argument("--skip-rest", action="store_true", help="no first sync by REST")
    parser.add_argument("--skip-memory", action="store_true", help="no smaller orgs")
    parser.add_argument("--latency", type=float, default=0.05, help="0 skips that part")
    parser.add_argument("--profile", action="store_true", help="profile the Bulk sync only")
    parser.add_argument(
        "--page-size", type=int, default=PAGE_SIZE, help="the engine's page, a commit each"
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="collect every N allocations in each measured process (the acctsync command: 50000)",
    )
    args = parser.parse_args()
    accounts = args.accounts // 10 if args.quick else args.accounts
    if args.gc_threshold:
        GC_THRESHOLD.append(args.gc_threshold)

    print(
        f"Python {sys.version.split()[0]}, simple-salesforce {version('simple-salesforce')},"
        f" SQLite {sqlite3.sqlite_version}; org: {size_name(accounts)}, 3 to 8 fields each"
        + (f"; collecting every {args.gc_threshold:,} allocations" if args.gc_threshold else "")
    )
    if args.profile:
        with OrgProcess() as org:
            org.grow(accounts)
            print(in_fresh_process(profile_first_sync, org.address))
        return
    peaks: dict[int, float] = {}
    if not args.skip_memory:
        print("The first sync, bulk=True, at smaller sizes of one org, growing:")
        with OrgProcess() as org:
            for smaller in (accounts // 10, accounts // 3):
                org.grow(smaller)
                synced, _ = in_fresh_process(
                    first_sync, org.address, smaller, bulk=True, page_size=args.page_size
                )
                peaks[smaller] = synced.rss_peak
                describe_run(size_name(smaller), synced)
    peaks[accounts] = max(
        measure(accounts, args.runs, rest=not args.skip_rest, page_size=args.page_size)
    )
    print("Peak RSS of the first sync, bulk=True, each in a fresh process [target 300 MB, flat]:")
    for size, peak in peaks.items():
        print(f"  {size_name(size)}: {peak:,.0f} MiB [{verdict(peak * 2**20 <= 300e6)}]")
    if args.latency:
        smaller = accounts // 10
        print(f"With {args.latency * 1000:.0f} ms a request, at {size_name(smaller)}:")
        with OrgProcess(args.latency) as slow:
            slow.grow(smaller)
            for bulk in (True, False):
                synced, _ = in_fresh_process(
                    first_sync, slow.address, smaller, bulk=bulk, page_size=args.page_size
                )
                describe_run(f"first sync, bulk={bulk}", synced)


if __name__ == "__main__":
    main()
