"""Benchmark of decoding REST JSON into SQLite. Prints figures; asserts only counts.

The workload: 100,000 Account and 1,000,000 Contact records as REST JSON, as
simple-salesforce hands them over from a ``queryAll``: parsed by ``json.loads`` a page of
2,000 at a time (so numbers are ``int`` or ``float``), each with its ``attributes``, an
18-character ``Id``, ``IsDeleted``, ``MasterRecordId``, a Contact's ``AccountId``,
``SystemModstamp`` as ``2024-01-31T12:00:00.000+0000``, and 3 to 8 fields of mixed types
(text, numbers, booleans, nulls, dates as ``2024-01-31``, datetimes). They go into an
`InMemorySource` with ``add_raw`` (not timed).

Timed on the same dicts, alternately, ``--runs`` times:

1. The sync: ``SyncEngine(source=..., store=SqlStore on a fresh SQLite file).sync()``,
   decoding, checking, spelling and the store's rows included.
2. The limit: a plain script that ``json.dumps`` each record's fields and inserts
   (id, account_id, stamp, the JSON) with ``sqlite3`` executemany into one table, a page
   of 2,000 records (in the order the engine applies them) a transaction.

Target: the sync at most 2x the limit of the same run (the machine's speed moves both).

Run with ``python benchmarks/bench_decode.py [--accounts N --contacts M] [--quick]
[--runs K]`` (``--quick`` is 10x smaller); ``--profile`` profiles one sync instead.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_sql import (
    CLOCK,
    FIRST_STAMP,
    INDUSTRIES,
    POOL,
    SPAN_MS,
    TITLES,
    profile_sync,
    with_store_pragmas,
)

from acctsync import SyncEngine
from acctsync.stores.sql import SqlStore
from acctsync.testing import InMemorySource, make_id

API = "/services/data/v59.0/sobjects"
QUERY_PAGE = 2000  # records in one queryAll response, as Salesforce pages them
# What the limit does not store as a field: the record attributes it has columns for.
NOT_FIELDS = frozenset(
    {"attributes", "Id", "IsDeleted", "MasterRecordId", "AccountId", "SystemModstamp"}
)

REVENUES = tuple(float(i * 9973 % 10_000_000) + (i % 100) / 100 for i in range(POOL))
DATES = tuple(date(1940 + i % 80, 1 + i % 12, 1 + i % 28).isoformat() for i in range(POOL))


def rest_datetime(value: datetime) -> str:
    """``value`` (in UTC) as the REST API writes a datetime: ``2024-01-31T12:00:00.000+0000``."""
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}+0000"


DATETIMES = tuple(
    rest_datetime(FIRST_STAMP + timedelta(seconds=i * 7919, milliseconds=i % 1000))
    for i in range(POOL)
)


def _stamp(step_ms: int, n: int) -> str:
    return rest_datetime(FIRST_STAMP + timedelta(milliseconds=step_ms * n))


def account(n: int, step_ms: int) -> dict[str, Any]:
    """Account ``n`` as the REST API returns it: record attributes, then its fields."""
    record_id = make_id("001", n)
    fields: tuple[tuple[str, Any], ...] = (
        ("Name", f"Account {n}"),
        ("AnnualRevenue", None if n % 7 == 0 else REVENUES[n % POOL]),
        ("LastReviewed__c", DATETIMES[n % POOL]),
        ("Founded__c", DATES[n % POOL]),
        ("IsPartner", n % 3 == 0),
        ("NumberOfEmployees", n * 13 % 50_000),
        ("Industry", INDUSTRIES[n % len(INDUSTRIES)]),
        ("Website", f"https://account{n}.example.test"),
    )
    return {
        "attributes": {"type": "Account", "url": f"{API}/Account/{record_id}"},
        "Id": record_id,
        "IsDeleted": False,
        "MasterRecordId": None,
        "SystemModstamp": _stamp(step_ms, n),
        **dict(fields[: 3 + n % 6]),
    }


def contact(m: int, step_ms: int, accounts: int) -> dict[str, Any]:
    """Contact ``m``, of account ``m % accounts``, as the REST API returns it."""
    record_id = make_id("003", m)
    fields: tuple[tuple[str, Any], ...] = (
        ("LastName", f"Name {m}"),
        ("Email", f"c{m}@example.test"),
        ("EmailBouncedDate", DATETIMES[m % POOL] if m % 3 == 0 else None),
        ("Birthdate", DATES[m % POOL]),
        ("LeadScore__c", (m % 1000) / 10),
        ("HasOptedOutOfEmail", m % 5 == 0),
        ("Title", TITLES[m % len(TITLES)]),
        ("Phone", f"+1 555 {m % 10_000_000:07d}"),
    )
    return {
        "attributes": {"type": "Contact", "url": f"{API}/Contact/{record_id}"},
        "Id": record_id,
        "IsDeleted": False,
        "MasterRecordId": None,
        "AccountId": make_id("001", m % accounts),
        "SystemModstamp": _stamp(step_ms, m),
        **dict(fields[: 3 + m % 6]),
    }


def query_all(made: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records as a client gets them: each response's JSON text parsed in one go."""
    while page := list(itertools.islice(made, QUERY_PAGE)):
        yield from json.loads(json.dumps({"records": page}))["records"]


class Org:
    """The org's REST records: in a source for the sync, in the engine's order for the limit."""

    def __init__(self, accounts: int, contacts: int) -> None:
        self.accounts, self.contacts = accounts, contacts
        account_step = max(1, SPAN_MS // max(1, accounts))
        contact_step = max(1, SPAN_MS // max(1, contacts))
        by_type = {
            "Account": list(query_all(account(n, account_step) for n in range(accounts))),
            "Contact": list(
                query_all(contact(m, contact_step, accounts) for m in range(contacts))
            ),
        }
        self.source = InMemorySource()
        for object_type, records in by_type.items():
            for record in records:
                self.source.add_raw(object_type, record)
        # The engine applies by stamp, an account before a contact of the same stamp.
        self.records = list(
            heapq.merge(
                by_type["Account"],
                by_type["Contact"],
                key=lambda r: (r["SystemModstamp"], "AccountId" in r, r["Id"]),
            )
        )

    def __len__(self) -> int:
        return len(self.records)


def check_org() -> None:
    """Hold a small org to what the benchmark says of it before timing anything."""
    org = Org(61, 700)
    assert len(org) == 761
    assert [r["Id"] for r in org.records if r["Id"].startswith("003")][-1] == make_id("003", 699)
    counts = {len(r.keys() - NOT_FIELDS) for r in org.records}
    assert counts == set(range(3, 9)), counts
    types = {type(v).__name__ for r in org.records for k, v in r.items() if k not in NOT_FIELDS}
    assert types == {"str", "float", "int", "bool", "NoneType"}, types


# -- The limit ------------------------------------------------------------------------------


def limit(org: Org, path: Path, page_size: int) -> float:
    """Seconds for a plain script to write the org's records into one table."""
    conn = with_store_pragmas(sqlite3.connect(path, isolation_level=None))
    conn.execute(
        "CREATE TABLE records (id TEXT PRIMARY KEY, account_id TEXT, stamp TEXT, fields TEXT)"
    )
    insert = "INSERT INTO records (id, account_id, stamp, fields) VALUES (?, ?, ?, ?)"
    dumps, skip = json.dumps, NOT_FIELDS
    records = org.records
    gc.collect()
    started = time.perf_counter()
    for start in range(0, len(records), page_size):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            insert,
            (
                (
                    r["Id"],
                    r.get("AccountId"),
                    r["SystemModstamp"],
                    dumps({k: v for k, v in r.items() if k not in skip}),
                )
                for r in records[start : start + page_size]
            ),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    count = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    conn.close()
    assert count == len(org), count
    return elapsed


# -- The sync -------------------------------------------------------------------------------


def sync(org: Org, path: Path, page_size: int) -> float:
    """Seconds to sync the org's REST records into an empty SQLite store."""
    store = SqlStore.sqlite(path)
    try:
        engine = SyncEngine(
            source=org.source, store=store, page_size=page_size, clock=lambda: CLOCK
        )
        gc.collect()
        started = time.perf_counter()
        report = engine.sync()
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    assert report.ok, report.rejected[:3]
    assert report.accounts_upserted == org.accounts, report
    assert report.contacts_upserted == org.contacts, report
    return elapsed


def profile(org: Org, page_size: int) -> None:
    profile_sync(org.source, page_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=2000, help="the engine's page size")
    parser.add_argument("--quick", action="store_true", help="a 10x smaller org")
    parser.add_argument("--runs", type=int, default=3, help="syncs and limits, alternately")
    parser.add_argument("--profile", action="store_true", help="profile one sync only")
    args = parser.parse_args()
    accounts, contacts = args.accounts, args.contacts
    if args.quick:
        accounts, contacts = accounts // 10, contacts // 10

    check_org()
    print(
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
        f" (WAL, synchronous=NORMAL, a temporary file); page size {args.page_size:,}"
    )
    started = time.perf_counter()
    org = Org(accounts, contacts)
    # The org's millions of dicts are the benchmark's, held for both sides: out of the
    # collector's sight, as a source that reads them from Salesforce holds a page at a
    # time. Otherwise each full collection in the sync (whose pages live long enough to
    # reach the oldest generation) traverses all of them; the limit keeps nothing.
    gc.collect()
    gc.freeze()
    print(
        f"org: {accounts:,} accounts + {contacts:,} contacts as REST JSON, 3 to 8 fields each,"
        f" made and added to the source in {time.perf_counter() - started:.1f} s"
    )
    if args.profile:
        profile(org, args.page_size)
        return
    ratios = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            bare = limit(org, Path(tmp) / "limit.db", args.page_size)
            synced = sync(org, Path(tmp) / "store.db", args.page_size)
        ratios.append(synced / bare)
        print(
            f"  run {run}: sync {synced:.2f} s ({len(org) / synced:,.0f} records/s),"
            f" limit {bare:.2f} s ({len(org) / bare:,.0f} records/s):"
            f" ratio {synced / bare:.2f}x [target <= 2x]"
        )
    print(f"ratio sync / limit over {len(ratios)} runs: {min(ratios):.2f}-{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
