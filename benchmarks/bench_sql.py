"""Benchmarks of the SQL store (SQLite and PostgreSQL). Prints figures; asserts only counts.

The workload: an org of 100,000 accounts and 1,000,000 contacts (3 to 8 fields each, of
mixed types), generated lazily by a synthetic source, then the same org with 1% of its
accounts changed (one field each, so each logs an entry per contact).

1. Initial load into SQLite, beside the physical limit: a plain ``sqlite3`` executemany
   of the same rows into the same tables, one transaction per page, rows built beforehand.
   Target: at most 2x the limit. Each side gets its input made beforehand: the limit its
   rows, the store the source's records (the time the source took is printed beside).
2. Incremental sync of the 1% change, against the initial load, its records also made
   beforehand. Target: at most 1/50.
3. The same two on PostgreSQL; the limits there are psycopg ``COPY`` and ``executemany``.
   The incremental sync runs after a VACUUM ANALYZE of the load, as autovacuum's would be.
4. Peak memory of the initial load into SQLite, each in a fresh process, for a tenth of
   the org and for the whole org: it must not grow with the org (target: 300 MB).

Run with ``python benchmarks/bench_sql.py [--accounts N --contacts M] [--quick]``
(``--quick`` is 10x smaller); ``--profile`` profiles the SQLite initial load instead.
The PostgreSQL URL comes from ``--postgres-url`` or ``ACCTSYNC_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import json
import os
import pstats
import resource
import secrets
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy

from acctsync import (
    Account,
    Contact,
    FieldValue,
    ObjectType,
    Source,
    SyncEngine,
    make_converter,
)
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id

POSTGRES_URL = os.environ.get(
    "ACCTSYNC_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PREFIX = "acctsync_"
ORG = "default"

# The initial org is stamped over 2023, the 1% change in mid-2024 and the clock is in
# 2025: the lookback (5 minutes before the watermark) re-reads only a few records.
FIRST_STAMP = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_MS = 365 * 86_400_000
CHANGED_AT = datetime(2024, 6, 1, tzinfo=UTC)
CLOCK = datetime(2025, 1, 1, tzinfo=UTC)
CHANGED_EVERY = 100  # 1% of the accounts
LOOKBACK = timedelta(minutes=5)  # the engine's default, named for the pre-built changes
STREAMS: tuple[ObjectType, ...] = ("Account", "Contact")
MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)

INDUSTRIES = ("Technology", "Banking", "Retail", "Energy", "Healthcare", "Media", "Travel")
TITLES = ("CEO", "CTO", "VP Sales", "Engineer", "Buyer", None)
# Values that cost something to make come from pools (a prime number of each, so that
# records differ): the benchmark times the store, not the making of Decimals and dates.
POOL = 1009
REVENUES = tuple(Decimal(f"{i * 9973 % 10_000_000}.{i % 100:02d}") for i in range(POOL))
FOUNDED = tuple(date(1950 + i % 70, 1 + i % 12, 1 + i % 28) for i in range(POOL))
BIRTHDATES = tuple(date(1940 + i % 60, 1 + i % 12, 1 + i % 28) for i in range(POOL))
SCORES = tuple(Decimal(f"{i % 100}.{i % 10}") for i in range(POOL))
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def short_id(prefix: str, n: int) -> str:
    """``make_id(prefix, n)`` in its 15-character form: the records add the suffix.

    Records check an 18-character ID's suffix as dearly as they compute a 15-character
    ID's, so this only saves the benchmark a second computation of it.
    """
    digits = ""
    while True:
        n, rest = divmod(n, 62)
        digits = BASE62[rest] + digits
        if not n:
            return f"{prefix}Ak{digits:0>10}"


def account_fields(n: int, *, renamed: bool = False) -> dict[str, FieldValue]:
    """3 to 8 fields of mixed types; ``Name`` always first, so a rename always changes one."""
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("Name", f"Account {n} (renamed)" if renamed else f"Account {n}"),
        ("AnnualRevenue", REVENUES[n % POOL]),
        ("Founded", FOUNDED[n % POOL]),
        ("IsPartner", n % 3 == 0),
        ("NumberOfEmployees", n * 13 % 50_000),
        ("Rating", None if n % 4 == 0 else "Warm"),
        ("Industry", INDUSTRIES[n % len(INDUSTRIES)]),
        ("Website", f"https://account{n}.example.test"),
    )
    return dict(fields[: 3 + n % 6])


def contact_fields(n: int) -> dict[str, FieldValue]:
    """3 to 8 fields of mixed types."""
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("LastName", f"Name {n}"),
        ("Email", f"c{n}@example.test"),
        ("Birthdate", BIRTHDATES[n % POOL]),
        ("LeadScore", SCORES[n % POOL]),
        ("HasOptedOutOfEmail", n % 5 == 0),
        ("NumberOfVisits", n % 1000),
        ("Title", TITLES[n % len(TITLES)]),
        ("Phone", f"+1 555 {n % 10_000_000:07d}"),
    )
    return dict(fields[: 3 + n % 6])


class SyntheticOrg:
    """A `Source` whose records are made from their index when read: no org in memory.

    Account ``n`` and contact ``m`` are stamped evenly over 2023, in index order; contact
    ``m`` belongs to account ``m % accounts``. With ``changed=True``, every 100th account
    (from the 50th) has a later version, stamped a second apart from ``CHANGED_AT``, with
    a new ``Name``.
    """

    def __init__(self, accounts: int, contacts: int, *, changed: bool = False) -> None:
        self.accounts = accounts
        self.contacts = contacts
        self.changed = changed
        self._steps: dict[ObjectType, int] = {
            "Account": max(1, SPAN_MS // max(1, accounts)),
            "Contact": max(1, SPAN_MS // max(1, contacts)),
        }

    @property
    def changed_accounts(self) -> range:
        """The indexes of the accounts with a later version (when ``changed``)."""
        if not self.changed:
            return range(0)
        return range(CHANGED_EVERY // 2, self.accounts, CHANGED_EVERY)

    def stamp(self, object_type: ObjectType, n: int) -> datetime:
        """The stamp of the first version of record ``n``."""
        return FIRST_STAMP + self._steps[object_type] * n * MS

    def _first_at(self, object_type: ObjectType, since: datetime | None) -> int:
        """The index of the first record of the initial org stamped at or after ``since``."""
        if since is None or since <= FIRST_STAMP:
            return 0
        step_us = self._steps[object_type] * 1000
        return -(-((since - FIRST_STAMP) // US) // step_us)

    def account(self, n: int) -> Account:
        return Account(
            id=short_id("001", n),
            fields=account_fields(n),
            system_modstamp=self.stamp("Account", n),
        )

    def contact(self, m: int) -> Contact:
        return Contact(
            id=short_id("003", m),
            account_id=short_id("001", m % self.accounts),
            fields=contact_fields(m),
            system_modstamp=self.stamp("Contact", m),
        )

    def records(self, object_type: ObjectType, since: datetime | None) -> Iterator[Any]:
        """The records stamped at or after ``since``, by (stamp, Id), made one at a time."""
        start = self._first_at(object_type, since)
        if object_type == "Contact":
            yield from map(self.contact, range(start, self.contacts))
            return
        changed = self.changed_accounts
        for n in range(start, self.accounts):
            if n not in changed:
                yield self.account(n)
        for j, n in enumerate(changed):
            stamp = CHANGED_AT + timedelta(seconds=j)
            if since is None or stamp >= since:
                yield Account(
                    id=short_id("001", n),
                    fields=account_fields(n, renamed=True),
                    system_modstamp=stamp,
                )

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Any]]:
        records = self.records(object_type, since)
        while page := list(itertools.islice(records, page_size)):
            yield page

    def merged(self) -> Iterator[Any]:
        """Every record, in the order the engine applies them (stamp, accounts first)."""
        return heapq.merge(
            self.records("Account", None),
            self.records("Contact", None),
            key=lambda r: (r.system_modstamp, isinstance(r, Contact), r.id),
        )


def check_source() -> None:
    """Hold a small synthetic org to the source contract before timing anything."""
    for n in (0, 1, 61, 62, 3843, 3844, 999_999, 62**5 + 17):
        assert SyntheticOrg(n + 1, n + 1).contact(n).id == make_id("003", n)
        assert SyntheticOrg(n + 1, n + 1).contact(n).account_id == make_id("001", n)
    for changed in (False, True):
        org = SyntheticOrg(250, 1000, changed=changed)
        for stream in STREAMS:
            pages = list(org.read_changes(stream, None, page_size=7))
            assert all(0 < len(page) <= 7 for page in pages)
            everything = [record for page in pages for record in page]
            keys = [(record.system_modstamp, record.id) for record in everything]
            assert keys == sorted(keys)
            assert len(set(keys)) == len(keys)
            assert len({record.id for record in everything}) == (
                org.accounts if stream == "Account" else org.contacts
            )
            for record in everything[::37]:
                for since in (record.system_modstamp, record.system_modstamp + US):
                    got = [
                        r for page in org.read_changes(stream, since, page_size=5) for r in page
                    ]
                    assert got == [r for r in everything if r.system_modstamp >= since], since


# -- The physical limit: the same rows, built beforehand, into the same tables ---------


class Rows:
    """The rows the store writes for the initial org, page by page, in its column order."""

    ACCOUNT_COLUMNS = (
        "org, id, deleted, system_modstamp, master_record_id, fields, local_edits, local_revision"
    )
    CONTACT_COLUMNS = "org, id, deleted, system_modstamp, master_record_id, account_id, fields"

    def __init__(self, org: SyntheticOrg, page_size: int) -> None:
        converter = make_converter()
        dump = converter.get_unstructure_hook(Mapping[str, FieldValue])
        encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        self.pages: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
        records = org.merged()
        while page := list(itertools.islice(records, page_size)):
            accounts, contacts = [], []
            for r in page:
                stamp = (r.system_modstamp - epoch) // US
                if isinstance(r, Contact):
                    row = (ORG, r.id, False, stamp, None, r.account_id, encode(dump(r.fields)))
                    contacts.append(row)
                else:
                    accounts.append(
                        (ORG, r.id, False, stamp, None, encode(dump(r.fields)), "{}", 0)
                    )
            self.pages.append((accounts, contacts))

    def __len__(self) -> int:
        return sum(len(accounts) + len(contacts) for accounts, contacts in self.pages)


STORE_PRAGMAS = ("journal_mode", "synchronous", "wal_autocheckpoint", "cache_size")


def with_store_pragmas(conn: sqlite3.Connection) -> sqlite3.Connection:
    """``conn`` with the pragmas a `SqlStore` gives its SQLite connections, read from one,
    so that a limit writes as the store does (WAL, ``synchronous=NORMAL``, checkpoints)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore.sqlite(Path(tmp) / "pragmas.db")
        try:
            with store.engine.connect() as probe:
                driver = probe.connection.driver_connection
                assert driver is not None
                pragmas = {
                    name: driver.execute(f"PRAGMA {name}").fetchone()[0] for name in STORE_PRAGMAS
                }
        finally:
            store.close()
    for name, value in pragmas.items():
        conn.execute(f"PRAGMA {name}={value}")
    return conn


def sqlite_limit(rows: Rows, path: Path) -> float:
    """Seconds to executemany ``rows`` with sqlite3 into the store's tables, a page a commit."""
    SqlStore.sqlite(path, table_prefix=PREFIX).close()  # the same tables and indexes
    conn = with_store_pragmas(sqlite3.connect(path, isolation_level=None))
    insert_account = f"INSERT INTO {PREFIX}accounts ({Rows.ACCOUNT_COLUMNS}) VALUES ({'?,' * 7}?)"
    insert_contact = f"INSERT INTO {PREFIX}contacts ({Rows.CONTACT_COLUMNS}) VALUES ({'?,' * 6}?)"
    gc.collect()
    started = time.perf_counter()
    for accounts, contacts in rows.pages:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert_account, accounts)
        conn.executemany(insert_contact, contacts)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    count = conn.execute(f"SELECT count(*) FROM {PREFIX}contacts").fetchone()[0]
    conn.close()
    assert count == sum(len(contacts) for _, contacts in rows.pages)
    return elapsed


def postgres_limits(rows: Rows, url: str, schema: str) -> dict[str, float]:
    """Seconds to COPY, then to executemany, ``rows`` with psycopg, a page a transaction."""
    import psycopg

    SqlStore(url, schema=schema, table_prefix=PREFIX).close()
    dsn = sqlalchemy.make_url(url).set(drivername="postgresql")
    accounts_table, contacts_table = f"{schema}.{PREFIX}accounts", f"{schema}.{PREFIX}contacts"
    timings = {}
    # Autocommit, so that each `transaction()` is a transaction of its own, not a savepoint
    # in one that a previous statement began.
    with psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True) as conn:
        copy_account = f"COPY {accounts_table} ({Rows.ACCOUNT_COLUMNS}) FROM STDIN"
        copy_contact = f"COPY {contacts_table} ({Rows.CONTACT_COLUMNS}) FROM STDIN"
        insert_account = (
            f"INSERT INTO {accounts_table} ({Rows.ACCOUNT_COLUMNS}) VALUES ({'%s,' * 7}%s)"
        )
        insert_contact = (
            f"INSERT INTO {contacts_table} ({Rows.CONTACT_COLUMNS}) VALUES ({'%s,' * 6}%s)"
        )

        def copy(cur: psycopg.Cursor[Any], accounts: list[Any], contacts: list[Any]) -> None:
            for statement, batch in ((copy_account, accounts), (copy_contact, contacts)):
                if batch:
                    with cur.copy(statement) as copying:
                        for row in batch:
                            copying.write_row(row)

        def executemany(
            cur: psycopg.Cursor[Any], accounts: list[Any], contacts: list[Any]
        ) -> None:
            for statement, batch in ((insert_account, accounts), (insert_contact, contacts)):
                if batch:
                    cur.executemany(statement, batch)

        loads: dict[str, Callable[[psycopg.Cursor[Any], list[Any], list[Any]], None]] = {
            "COPY": copy,
            "executemany": executemany,
        }
        for name, load in loads.items():
            with conn.transaction():
                conn.execute(f"TRUNCATE {accounts_table}, {contacts_table}")
            gc.collect()
            started = time.perf_counter()
            with conn.cursor() as cur:
                for accounts, contacts in rows.pages:
                    with conn.transaction():
                        load(cur, accounts, contacts)
            timings[name] = time.perf_counter() - started
            count = conn.execute(f"SELECT count(*) FROM {contacts_table}").fetchone()
            assert count is not None
            assert count[0] == sum(len(c) for _, c in rows.pages)
    return timings


# -- The store ----------------------------------------------------------------------------


class PrebuiltOrg:
    """A `Source` over an org's pages made beforehand: what the limits get, as records.

    Made for one read of each stream, from ``since`` (the start for streams not in it).
    """

    def __init__(
        self,
        org: SyntheticOrg,
        page_size: int,
        since: Mapping[ObjectType, datetime | None] | None = None,
    ) -> None:
        self.accounts, self.contacts = org.accounts, org.contacts
        self.page_size = page_size
        self.since = dict(since or {})
        self.pages = {
            stream: list(org.read_changes(stream, self.since.get(stream), page_size=page_size))
            for stream in STREAMS
        }

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Any]]:
        assert since == self.since.get(object_type), "made for another read"
        assert page_size == self.page_size
        return iter(self.pages[object_type])


def initial_load(store: SqlStore, org: PrebuiltOrg, page_size: int) -> float:
    """Seconds to sync the whole org into an empty store."""
    engine = SyncEngine(source=org, store=store, page_size=page_size, clock=lambda: CLOCK)
    gc.collect()
    started = time.perf_counter()
    report = engine.sync()
    elapsed = time.perf_counter() - started
    assert report.ok, report
    assert report.accounts_upserted == org.accounts, report
    assert report.contacts_upserted == org.contacts, report
    return elapsed


def incremental(
    store: SqlStore, accounts: int, contacts: int, page_size: int
) -> tuple[float, str]:
    """Seconds to sync the 1% change, and what it did.

    As in the initial load, the source's records are made beforehand: those the engine
    will read, from each stream's watermark less the lookback.
    """
    org = SyntheticOrg(accounts, contacts, changed=True)
    since: dict[ObjectType, datetime | None] = {}
    for stream in STREAMS:
        mark = store.watermark(stream)
        since[stream] = None if mark is None else mark - LOOKBACK
    changes = PrebuiltOrg(org, page_size, since)
    engine = SyncEngine(
        source=changes,
        store=store,
        page_size=page_size,
        clock=lambda: CLOCK,
        lookback=LOOKBACK,
    )
    gc.collect()
    started = time.perf_counter()
    report = engine.sync()
    elapsed = time.perf_counter() - started
    changed = org.changed_accounts
    entries = sum(len(range(n, contacts, accounts)) for n in changed)
    assert report.ok, report
    assert report.accounts_upserted == len(changed), report
    assert report.contacts_upserted == 0, report
    assert len(report.activities) == entries, report
    did = (
        f"{len(changed):,} accounts changed, {entries:,} activities logged,"
        f" {report.already_applied} records re-read in the lookback"
    )
    return elapsed, did


def report_store(
    name: str,
    initial: float,
    limits: Mapping[str, float],
    source: float,
    step: tuple[float, str],
    records: int,
) -> None:
    print(
        f"  store initial load of pre-built records: {initial:.2f} s"
        f" ({records / initial:,.0f} records/s)"
    )
    for limit_name, limit in limits.items():
        print(
            f"  {name} limit, {limit_name} of pre-built rows: {limit:.2f} s"
            f" ({records / limit:,.0f} rows/s)"
        )
        print(
            f"    ratio store / limit: {initial / limit:.2f}x [target <= 2x];"
            f" {(initial + source) / limit:.2f}x counting the source's {source:.2f} s"
        )
    print(f"  incremental sync of the 1% change: {step[0]:.3f} s ({step[1]})")
    print(f"    ratio incremental / initial load: 1/{initial / step[0]:,.0f} [target <= 1/50]")


def bench_sqlite(org: PrebuiltOrg, rows: Rows, source: float, page_size: int) -> None:
    print(f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL, a temporary file):")
    with tempfile.TemporaryDirectory() as tmp:
        limit = sqlite_limit(rows, Path(tmp) / "limit.db")
        store = SqlStore.sqlite(Path(tmp) / "store.db")
        try:
            initial = initial_load(store, org, page_size)
            step = incremental(store, org.accounts, org.contacts, page_size)
        finally:
            store.close()
        size = (Path(tmp) / "store.db").stat().st_size / 2**20
    report_store("SQLite", initial, {"executemany": limit}, source, step, len(rows))
    print(f"  database file after both syncs: {size:,.0f} MiB")


def settle(admin: sqlalchemy.Engine, schema: str) -> None:
    """VACUUM ANALYZE the store's tables, as autovacuum does within a minute of a load.

    Untimed, so that it does not run during the timed incremental sync. Until a vacuum
    marks the loaded pages all-visible, reads of the new rows visit the table beside the
    index (the incremental sync took 0.23 s instead of 0.16 s).
    """
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("accounts", "contacts", "activities"):
            conn.exec_driver_sql(f"VACUUM ANALYZE {schema}.{PREFIX}{table}")


def bench_postgres(org: PrebuiltOrg, rows: Rows, source: float, page_size: int, url: str) -> None:
    admin = sqlalchemy.create_engine(url)
    try:
        with admin.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
    except sqlalchemy.exc.OperationalError as error:
        print(f"PostgreSQL: skipped, not reachable ({type(error.orig).__name__})")
        return
    tag = secrets.token_hex(4)
    store_schema, limit_schema = f"bench_sql_{tag}", f"bench_sql_{tag}_limit"
    print(f"PostgreSQL {version} (schemas {store_schema} and {limit_schema}, dropped after):")
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {store_schema}")
        conn.exec_driver_sql(f"CREATE SCHEMA {limit_schema}")
    try:
        limits = postgres_limits(rows, url, limit_schema)
        with admin.begin() as conn:  # the limit's rows out of the way of the store's
            conn.exec_driver_sql(f"DROP SCHEMA {limit_schema} CASCADE")
        store = SqlStore(url, schema=store_schema)
        try:
            initial = initial_load(store, org, page_size)
            settle(admin, store_schema)
            step = incremental(store, org.accounts, org.contacts, page_size)
        finally:
            store.close()
    finally:
        with admin.begin() as conn:
            for schema in (store_schema, limit_schema):
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()
    report_store("PostgreSQL", initial, limits, source, step, len(rows))


# -- Memory, each size in a fresh process --------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident size since it started (since its exec on Linux)."""
    # ru_maxrss survives exec on Linux: a child would report its parent's peak.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def memory_child(mode: str, accounts: int, contacts: int, page_size: int) -> None:
    """Load the org into a fresh SQLite file and print the memory figures as JSON."""
    org = SyntheticOrg(accounts, contacts)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore.sqlite(Path(tmp) / "store.db")
        engine = SyncEngine(source=org, store=store, page_size=page_size, clock=lambda: CLOCK)
        gc.collect()
        before = peak_rss_mib()
        if mode == "tracemalloc":
            tracemalloc.start()
        engine.sync()
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if mode == "tracemalloc" else None
        store.close()
    print(json.dumps({"rss_before": before, "rss_after": peak_rss_mib(), "peak": peak}))


def measure_memory(accounts: int, contacts: int, page_size: int) -> None:
    print("Peak memory of the initial load into SQLite, each in a fresh process [target 300 MB]:")
    for scale in (10, 1):
        a, c = accounts // scale, contacts // scale
        figures = {}
        for mode in ("rss", "tracemalloc"):
            command = [sys.executable, __file__, "--memory-child", mode]
            command += ["--accounts", str(a), "--contacts", str(c), "--page-size", str(page_size)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            figures[mode] = json.loads(done.stdout.splitlines()[-1])
        rss = figures["rss"]
        print(
            f"  {a:,} accounts + {c:,} contacts: tracemalloc peak"
            f" {figures['tracemalloc']['peak']:,.1f} MiB; max RSS {rss['rss_after']:,.0f} MiB"
            f" ({rss['rss_before']:,.0f} MiB before the sync, imports and engine)"
        )


# -- Profile --------------------------------------------------------------------------------


def profile(accounts: int, contacts: int, page_size: int) -> None:
    profile_sync(SyntheticOrg(accounts, contacts), page_size)


def profile_sync(source: Source, page_size: int) -> None:
    """Profile one initial sync of ``source`` into a fresh SQLite store; print the top."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore.sqlite(Path(tmp) / "store.db")
        engine = SyncEngine(source=source, store=store, page_size=page_size, clock=lambda: CLOCK)
        profiler = cProfile.Profile()
        profiler.enable()
        engine.sync()
        profiler.disable()
        store.close()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=2000, help="the engine's page size")
    parser.add_argument("--quick", action="store_true", help="a 10x smaller org")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--profile", action="store_true", help="profile the SQLite load only")
    parser.add_argument("--memory-child", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    accounts, contacts = args.accounts, args.contacts
    if args.quick:
        accounts, contacts = accounts // 10, contacts // 10
    if args.memory_child:
        memory_child(args.memory_child, accounts, contacts, args.page_size)
        return
    if args.profile:
        profile(accounts, contacts, args.page_size)
        return

    import psycopg

    check_source()
    print(
        f"Python {sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__},"
        f" psycopg {psycopg.__version__}; page size {args.page_size:,}"
    )
    print(f"org: {accounts:,} accounts + {contacts:,} contacts, 3 to 8 fields each")
    if not args.skip_memory:  # first, while this process is small
        measure_memory(accounts, contacts, args.page_size)
    org = SyntheticOrg(accounts, contacts)
    gc.collect()
    started = time.perf_counter()
    records = PrebuiltOrg(org, args.page_size)
    source = time.perf_counter() - started
    print(f"the synthetic source made the org's records for the stores in {source:.2f} s")
    started = time.perf_counter()
    rows = Rows(org, args.page_size)
    print(f"pre-built {len(rows):,} rows for the limits in {time.perf_counter() - started:.1f} s")
    bench_sqlite(records, rows, source, args.page_size)
    if not args.skip_postgres:
        bench_postgres(records, rows, source, args.page_size, args.postgres_url)


if __name__ == "__main__":
    main()
