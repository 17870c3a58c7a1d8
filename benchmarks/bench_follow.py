"""Following the loopback org live into SQLite: latency at a steady rate, and a backlog's
throughput. Prints figures; a script, not a timed test.

The org is `FakeSalesforce(pubsub=True)` in this process, its Pub/Sub API on 127.0.0.1;
the follower is `SyncEngine.follow` with a `PubSubStream` (the real grpc client) into a
fresh SQLite `SqlStore`, and the org's REST source for the catch-up.

- Latency: events published at a steady rate by a thread (each an account's save), from
  the save to the commit of the batch that holds it. A replay id of this org starts with
  its event's number (8 bytes, big-endian), which is how a batch's position names the
  events it holds: a fact of the loopback org only, used here and nowhere else.
- Throughput: a backlog of saves made while no follower ran, then a follower resuming
  from its stored position, timed until it has applied the last.

    python benchmarks/bench_follow.py [--events N] [--rate R] [--backlog N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from acctsync import Account, SyncEngine
from acctsync.sources.pubsub import PubSubStream
from acctsync.sources.salesforce import SalesforceSource
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce

ACCOUNTS = 2_000
FIELDS = {"Account": ["Name"], "Contact": ["LastName"]}


def number(position: bytes) -> int:
    return int.from_bytes(position[:8], "big")


def seeded(org: FakeSalesforce) -> None:
    now = org.now
    org.put(
        *(
            Account(id=make_id("001", n), fields={"Name": f"A{n}"}, system_modstamp=now)
            for n in range(ACCOUNTS)
        )
    )


def save(org: FakeSalesforce, k: int) -> None:
    n = k % ACCOUNTS
    org.put(Account(id=make_id("001", n), fields={"Name": f"A{n} v{k}"}, system_modstamp=org.now))


def follower(org: FakeSalesforce, store: SqlStore) -> tuple[SyncEngine, PubSubStream]:
    source = SalesforceSource(org.client(parse_float=Decimal), fields=FIELDS)
    stream = PubSubStream(org.client(), target=org.pubsub_target, insecure=True, heartbeat=0.05)
    return SyncEngine(source=source, store=store), stream


def latency(events: int, rate: float) -> None:
    with (
        FakeSalesforce(pubsub=True, keepalive=0.05) as org,
        tempfile.TemporaryDirectory() as folder,
        SqlStore.sqlite(Path(folder) / "follow.db") as store,
    ):
        seeded(org)
        engine, stream = follower(org, store)
        first = number(org.change_events()[-1].replay_id) + 1
        published: dict[int, float] = {}
        delays: list[float] = []

        def publish() -> None:
            start = time.perf_counter()
            for k in range(events):
                due = start + k / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                published[first + k] = time.perf_counter()
                save(org, k)

        stop = threading.Event()
        publisher = threading.Thread(target=publish)
        applied = first - 1
        with contextlib.closing(engine.follow(stream, stop=stop)) as following:
            for report in following:
                if report.events is None:  # caught up: the subscription is live
                    publisher.start()
                    continue
                done = time.perf_counter()
                assert report.checkpoint is not None
                last = number(report.checkpoint.position)
                delays.extend(done - published[k] for k in range(applied + 1, last + 1))
                applied = last
                if applied == first + events - 1:
                    break
        publisher.join()
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    met = "met" if p99 <= 250 else "NOT met"
    print(
        f"latency, {events:,} events at {rate:g}/s into SQLite: p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms, max {delays[-1] * 1000:.1f} ms [target p99 <= 250 ms: {met}]"
    )


def throughput(backlog: int) -> None:
    with (
        FakeSalesforce(pubsub=True, keepalive=0.05) as org,
        tempfile.TemporaryDirectory() as folder,
        SqlStore.sqlite(Path(folder) / "follow.db") as store,
    ):
        seeded(org)
        engine, stream = follower(org, store)
        with contextlib.closing(engine.follow(stream)) as following:
            next(following)  # the catch-up; the next batch stores a position
            save(org, 0)
            next(following)
        made = time.perf_counter()
        for k in range(1, backlog + 1):
            save(org, k)
        last = org.change_events()[-1].replay_id
        print(f"  a backlog of {backlog:,} saves made in {time.perf_counter() - made:.1f} s")
        started = time.perf_counter()
        with contextlib.closing(engine.follow(stream)) as following:
            for report in following:
                if report.checkpoint is not None and report.checkpoint.position == last:
                    break
        took = time.perf_counter() - started
    rate = backlog / took
    met = "met" if rate >= 5_000 else "NOT met"
    print(
        f"throughput, a backlog of {backlog:,} events into SQLite: {took:.1f} s,"
        f" {rate:,.0f} events/s [target >= 5,000/s: {met}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="a tenth of each")
    options = parser.parse_args()
    scale = 10 if options.quick else 1
    latency(options.events // scale, options.rate)
    throughput(options.backlog // scale)


if __name__ == "__main__":
    main()
