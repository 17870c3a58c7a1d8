"""Benchmarks of the core on the in-memory fakes. Prints figures; asserts nothing.

1. Initial sync of 10,000 accounts and 100,000 contacts: records/s and peak memory.
2. One field change on an account with 5,000 contacts: the time of the sync that logs
   its 5,000 Change Data Value entries (the fan-out), median of several runs.

Run with ``make bench`` or ``python benchmarks/bench_core.py [--accounts N --contacts M]``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from acctsync import Account, Contact, SyncEngine
from acctsync.testing import InMemorySource, InMemoryStore, make_id

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def org(accounts: int, contacts: int) -> InMemorySource:
    """A source holding ``accounts`` accounts with ``contacts`` contacts spread evenly."""
    source = InMemorySource()
    for n in range(accounts):
        source.upsert(
            Account(
                id=make_id("001", n),
                fields={"Name": f"Account {n}", "Industry": "Tech", "Rating": "Warm"},
                system_modstamp=T0 + timedelta(milliseconds=n),
            )
        )
    for n in range(contacts):
        source.upsert(
            Contact(
                id=make_id("003", n),
                account_id=make_id("001", n % accounts),
                fields={"Email": f"c{n}@example.test", "LastName": f"Name {n}", "Title": "CEO"},
                system_modstamp=T0 + timedelta(milliseconds=n),
            )
        )
    return source


def initial_sync(accounts: int, contacts: int) -> None:
    source = org(accounts, contacts)
    engine = SyncEngine(source=source, store=InMemoryStore())
    gc.collect()
    started = time.perf_counter()
    report = engine.sync()
    elapsed = time.perf_counter() - started
    assert report.contacts_upserted == contacts
    assert report.accounts_upserted == accounts
    print(f"initial sync: {accounts:,} accounts + {contacts:,} contacts in {elapsed:.2f} s")
    print(
        f"  {contacts / elapsed:,.0f} contacts/s, {(accounts + contacts) / elapsed:,.0f} records/s"
    )

    source = org(accounts, contacts)
    engine = SyncEngine(source=source, store=InMemoryStore())
    gc.collect()
    tracemalloc.start()
    engine.sync()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  peak memory allocated during the sync: {peak / 2**20:,.0f} MiB")
    print("  (the fakes share record objects, so this is the store's indexes and one page)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak resident size of this process so far, org and store included: {rss:,.0f} MiB")


def fan_out(contacts: int, runs: int) -> None:
    source = InMemorySource()
    account_id = make_id("001", 0)
    source.upsert(
        Account(id=account_id, fields={"Name": "Big", "Industry": "Tech"}, system_modstamp=T0)
    )
    for n in range(contacts):
        # Stamped a minute apart, as contacts edited over months are: the lookback window
        # re-reads only the last few.
        stamp = T0 - timedelta(minutes=n)
        source.upsert(Contact(id=make_id("003", n), account_id=account_id, system_modstamp=stamp))
    store = InMemoryStore()
    engine = SyncEngine(source=source, store=store)
    engine.sync()
    timings = []
    for run in range(1, runs + 1):
        stamp = T0 + timedelta(hours=run)
        source.upsert(
            Account(
                id=account_id, fields={"Name": "Big", "Industry": f"I{run}"}, system_modstamp=stamp
            )
        )
        gc.collect()
        started = time.perf_counter()
        report = engine.sync()
        timings.append(time.perf_counter() - started)
        assert len(report.activities) == contacts
    print(f"one field change on an account with {contacts:,} contacts ({contacts:,} entries):")
    print(
        f"  median {statistics.median(timings) * 1000:.1f} ms,"
        f" best {min(timings) * 1000:.1f} ms over {runs} syncs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--fan-out", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    initial_sync(args.accounts, args.contacts)
    fan_out(args.fan_out, args.runs)


if __name__ == "__main__":
    main()
