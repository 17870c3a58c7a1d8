"""Following the loopback org live into SQLite: latency at a steady rate, and a backlog's
throughput. Prints figures; a script, not a timed test.

The org is `FakeSalesforce(pubsub=True)`, its Pub/Sub API on 127.0.0.1, served from a
process of its own, as Salesforce is remote (``--same-process`` serves it from this one,
where its grpc threads share the interpreter with the follower); the follower is
`SyncEngine.follow` with a `PubSubStream` (the real grpc client) into a fresh SQLite
`SqlStore`, and the org's REST source for the catch-up.

- Latency: events published at a steady rate by the org's process (each an account's
  save), from the save to the commit of the batch that holds it. Both processes read
  `time.perf_counter`, the system's monotonic clock. A replay id of this org starts with
  its event's number (8 bytes, big-endian), which is how a batch's position names the
  events it holds: a fact of the loopback org only, used here and nowhere else.
- Throughput: a backlog of saves made while no follower ran, then a follower resuming
  from its stored position, timed until it has applied the last.

    python benchmarks/bench_follow.py [--events N] [--rate R] [--backlog N] [--quick]
                                      [--same-process] [--only latency|throughput]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from simple_salesforce.api import Salesforce

from acctsync import Account, SyncEngine
from acctsync.sources.pubsub import PubSubStream
from acctsync.sources.salesforce import SalesforceSource
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce

# The fake's own session for a plain-HTTP org, which a client in another process needs.
from acctsync.testing.salesforce._loopback import loopback_session

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


def publish(org: FakeSalesforce, events: int, rate: float) -> list[float]:
    """Save ``events`` times at a steady ``rate``; the time each save began."""
    published = []
    start = time.perf_counter()
    for k in range(events):
        pause = start + k / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        published.append(time.perf_counter())
        save(org, k)
    return published


class Org:
    """The org's controls, on an org of this process or of a child's."""

    def __init__(self, org: FakeSalesforce | None, conn: Connection | None, about: Any) -> None:
        self._org, self._conn = org, conn
        self.url, self.session_id, self.version, self.target = about

    def ask(self, command: str, *args: Any) -> Any:
        if self._org is not None:
            return answer(self._org, command, *args)
        assert self._conn is not None
        self._conn.send((command, *args))
        return self._conn.recv()

    def client(self, **options: Any) -> Salesforce:
        return Salesforce(
            instance_url=self.url,
            session_id=self.session_id,
            version=self.version,
            session=loopback_session(self.url, 10.0, verify=True),
            **options,
        )


def about(org: FakeSalesforce) -> tuple[str, str, str, str]:
    return org.url, org.session_id, org.api_version, org.pubsub_target


def answer(org: FakeSalesforce, command: str, *args: Any) -> Any:
    if command == "last":  # the number of the org's last event
        return number(org.change_events()[-1].replay_id)
    if command == "save":  # saves first to last; the last one's replay id
        for k in range(args[0], args[1] + 1):
            save(org, k)
        return org.change_events()[-1].replay_id
    if command == "publish":
        return publish(org, *args)
    raise ValueError(command)


def serve(conn: Connection) -> None:
    """The org of a child process, answering the parent's commands until it closes."""
    with FakeSalesforce(pubsub=True, keepalive=0.05) as org:
        seeded(org)
        conn.send(about(org))
        with contextlib.suppress(EOFError):
            while True:
                command, *args = conn.recv()
                conn.send(answer(org, command, *args))


@contextlib.contextmanager
def an_org(same_process: bool) -> Iterator[Org]:
    if same_process:
        with FakeSalesforce(pubsub=True, keepalive=0.05) as org:
            seeded(org)
            yield Org(org, None, about(org))
        return
    # Spawned: a forked child would inherit this process's grpc state.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=serve, args=(theirs,), daemon=True)
    child.start()
    try:
        yield Org(None, ours, ours.recv())
    finally:
        ours.close()
        child.join(30)


def follower(org: Org, store: SqlStore) -> tuple[SyncEngine, PubSubStream]:
    source = SalesforceSource(org.client(parse_float=Decimal), fields=FIELDS)
    stream = PubSubStream(org.client(), target=org.target, insecure=True, heartbeat=0.05)
    return SyncEngine(source=source, store=store), stream


def latency(events: int, rate: float, same_process: bool) -> None:
    with (
        an_org(same_process) as org,
        tempfile.TemporaryDirectory() as folder,
        SqlStore.sqlite(Path(folder) / "follow.db") as store,
    ):
        engine, stream = follower(org, store)
        first = org.ask("last") + 1
        commits: list[tuple[float, int]] = []  # each batch's commit and its last event
        published: list[float] = []
        publisher = threading.Thread(
            target=lambda: published.extend(org.ask("publish", events, rate))
        )
        with contextlib.closing(engine.follow(stream)) as following:
            for report in following:
                if report.events is None:  # caught up: the subscription is live
                    publisher.start()
                    continue
                done = time.perf_counter()
                assert report.checkpoint is not None
                commits.append((done, number(report.checkpoint.position)))
                if commits[-1][1] == first + events - 1:
                    break
        publisher.join()
    delays: list[float] = []
    applied = first - 1
    for done, last in commits:
        delays.extend(done - published[k - first] for k in range(applied + 1, last + 1))
        applied = last
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    met = "met" if p99 <= 250 else "NOT met"
    print(
        f"latency, {events:,} events at {rate:g}/s into SQLite: p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms, max {delays[-1] * 1000:.1f} ms, {len(commits):,} batches"
        f" [target p99 <= 250 ms: {met}]"
    )


def throughput(backlog: int, same_process: bool) -> None:
    with (
        an_org(same_process) as org,
        tempfile.TemporaryDirectory() as folder,
        SqlStore.sqlite(Path(folder) / "follow.db") as store,
    ):
        engine, stream = follower(org, store)
        with contextlib.closing(engine.follow(stream)) as following:
            next(following)  # the catch-up; the next batch stores a position
            org.ask("save", 0, 0)
            next(following)
        made = time.perf_counter()
        last = org.ask("save", 1, backlog)
        print(f"  a backlog of {backlog:,} saves made in {time.perf_counter() - made:.1f} s")
        batches = 0
        started = time.perf_counter()
        with contextlib.closing(engine.follow(stream)) as following:
            for report in following:
                batches += 1
                if report.checkpoint is not None and report.checkpoint.position == last:
                    break
        took = time.perf_counter() - started
    rate = backlog / took
    met = "met" if rate >= 5_000 else "NOT met"
    print(
        f"throughput, a backlog of {backlog:,} events into SQLite: {took:.1f} s,"
        f" {rate:,.0f} events/s, {batches:,} batches [target >= 5,000/s: {met}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="a tenth of each")
    parser.add_argument(
        "--same-process", action="store_true", help="serve the org from the follower's process"
    )
    parser.add_argument("--only", choices=("latency", "throughput"), help="one of the two")
    options = parser.parse_args()
    scale = 10 if options.quick else 1
    where = "this process" if options.same_process else "a process of its own"
    print(f"the org served from {where}")
    if options.only != "throughput":
        latency(options.events // scale, options.rate, options.same_process)
    if options.only != "latency":
        throughput(options.backlog // scale, options.same_process)


if __name__ == "__main__":
    main()
