"""Benchmark of the fleet: org syncs a minute with 1, 2 and 4 Celery workers. Prints figures.

The orgs are loopback orgs (`FakeSalesforce`, served from this process) that answer each
request 100 ms late, as a real org's round trips do; each holds 2 accounts with 3
contacts each and gets a change a second, so that every sync is an incremental sync
that finds something. A sync sends 4 requests (describe and query, of Account and of
Contact): at least 0.4 s of waiting on Salesforce for a few tens of milliseconds of work.

A *worker* is one ``celery -A acctsync.fleet worker`` process with the fleet's pool:
threads, each running one org's job at a time, so that a worker overlaps its syncs'
waits. The workers share this machine's processor with beat, PostgreSQL, the broker and
the orgs. The scaling series (1, 2 and 4 workers) gives each worker ``--concurrency``
threads (2 by default): few enough that 4 workers are limited by their threads and not
by a 2-core machine, so that the series shows what adding a worker (on its own machine
or core) adds. Then one worker with the fleet's default of ``--capacity-concurrency``
threads (8): what one worker process carries.

Each measurement: a fresh registry of ``--orgs`` orgs, each due again as soon as its
sync ends (an interval of 1 ms), the workers and beat (ticking every 0.2 s) started,
every worker consuming and every org's first sync done, then the syncs that end within a
window of ``--window`` seconds counted from the store's records of its runs. The orgs
(32 by default) outnumber the workers' threads, so that the queue is never empty, and no
more: each org's server is a thread of this process, and many more of them slow every
org's answers. The processor time of the workers and of this process (the orgs) is read
from /proc.

The figures: syncs a minute per setup (median and range of ``--runs`` runs, the setups
taking turns), the ratio of 4 workers to 1 in each run (goal: at least 3.5), and how
many orgs one worker keeps at a 5-minute interval: its syncs a minute times 5, and that
times 0.8 to leave a fifth for bursts and slower orgs.

Needs PostgreSQL and RabbitMQ (``--broker redis`` for Redis) as the tests do. Run with
``python benchmarks/bench_fleet.py [--runs R] [--window S] [--orgs N] [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from acctsync import Account
from acctsync.fleet import Registry
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce
from fleet_support import (
    RABBITMQ_URL,
    REDIS_URL,
    Processes,
    celery_config,
    credentials_of,
    loopback_org,
    wait_until,
)

POSTGRES_URL = os.environ.get(
    "ACCTSYNC_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
LOOPBACK = "fleet_support:loopback_source"
TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A database URL whose tables go to a schema of their own, dropped after."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        engine.dispose()


def cpu_seconds(pid: int) -> float:
    """The processor time (user and system) of process ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Changes:
    """Changes an account of each org once a second, from a thread, until stopped."""

    def __init__(self, orgs: list[FakeSalesforce]) -> None:
        self._orgs = orgs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            tick += 1
            stamp = datetime.now(UTC).replace(microsecond=0)
            for n, org in enumerate(self._orgs):
                org.put(
                    Account(
                        id=make_id("001", n * 10_000),
                        fields={"Name": f"Org {n} account 0", "Industry": f"Industry {tick}"},
                        system_modstamp=stamp,
                    )
                )

    def __enter__(self) -> Changes:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(
    orgs: list[FakeSalesforce], workers: int, *, concurrency: int, window: float, broker: str
) -> dict[str, float]:
    """Syncs a minute of ``workers`` workers over ``window`` seconds, and processor use."""
    with fresh_schema() as url, tempfile.TemporaryDirectory() as folder:
        environ = {"ACCTSYNC_DB": url, "ACCTSYNC_FLEET_TICK": "0.2"}
        names = [f"org{n:03}" for n in range(len(orgs))]
        with Registry(url) as registry:
            for name, org in zip(names, orgs, strict=True):
                environ.update(credentials_of(name.upper(), org))
                registry.add(
                    name,
                    credentials=name.upper(),
                    source=LOOPBACK,
                    every=timedelta(milliseconds=1),
                    reconcile_every=None,
                    refresh_every=None,
                )
            queue = f"acctsync.fleet.bench-{uuid.uuid4().hex[:8]}"
            settings = celery_config(broker, queue=queue)
            with Processes(Path(folder), environ, settings) as fleet:
                started = [
                    fleet.worker(f"w{n}", concurrency=concurrency, ready=False)
                    for n in range(workers)
                ]
                fleet.beat()
                # Every worker consuming before the window opens: the first ready could
                # do every org's first sync alone, and take the window for itself.
                for n in range(workers):
                    wait_until(
                        lambda n=n: "ready." in fleet.log(f"w{n}"), timeout=60, what=f"w{n}"
                    )
                wait_until(
                    lambda: all(e.synced_at is not None for e in registry.orgs()),
                    timeout=120,
                    what="every org's first sync",
                )
                cpu_before = sum(cpu_seconds(p.pid) for p in started)
                own_before = time.process_time()
                begin = datetime.now(UTC)
                time.sleep(window)
                end = datetime.now(UTC)
                cpu = sum(cpu_seconds(p.pid) for p in started) - cpu_before
                own = time.process_time() - own_before
            count = 0
            failed = 0
            for name in names:
                with SqlStore(registry.engine, org=name) as store:
                    for run in store.runs(limit=100):
                        if begin <= run.finished_at <= end:
                            count += run.outcome == "ok"
                            failed += run.outcome != "ok"
        seconds = (end - begin).total_seconds()
        return {
            "per_minute": count / seconds * 60,
            "failed": failed,
            "worker_cpu_per_sync_ms": cpu / max(count, 1) * 1000,
            "worker_cpu_share": cpu / seconds,
            "orgs_cpu_share": own / seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--orgs", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--capacity-concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--broker", choices=("rabbitmq", "redis"), default="rabbitmq")
    arguments = parser.parse_args()
    broker = RABBITMQ_URL if arguments.broker == "rabbitmq" else REDIS_URL
    counts = [int(n) for n in arguments.workers.split(",")]
    # (workers, threads each): the scaling series, then one worker at the default pool.
    setups = [(n, arguments.concurrency) for n in counts]
    setups.append((1, arguments.capacity_concurrency))
    orgs = [loopback_org(n, latency=arguments.latency) for n in range(arguments.orgs)]
    print(
        f"{arguments.orgs} loopback orgs answering {arguments.latency * 1000:.0f} ms late;"
        f" {arguments.broker}; {arguments.window:g} s windows, {arguments.runs} runs"
    )
    results: dict[tuple[int, int], list[dict[str, float]]] = {setup: [] for setup in setups}
    try:
        with Changes(orgs):
            for run in range(arguments.runs):
                for workers, threads in setups:
                    found = measure(
                        orgs, workers, concurrency=threads, window=arguments.window, broker=broker
                    )
                    results[(workers, threads)].append(found)
                    print(
                        f"  run {run + 1}, {workers} worker(s) of {threads} threads:"
                        f" {found['per_minute']:5.0f} syncs/min, {found['failed']:.0f} failed;"
                        f" workers' CPU {found['worker_cpu_per_sync_ms']:.1f} ms a sync,"
                        f" {found['worker_cpu_share']:.2f} cores; orgs'"
                        f" {found['orgs_cpu_share']:.2f} cores",
                        flush=True,
                    )
    finally:
        for org in orgs:
            org.stop()
    print("\nsyncs a minute (median, range):")
    medians = {}
    for setup, found in results.items():
        rates = [r["per_minute"] for r in found]
        medians[setup] = statistics.median(rates)
        cpu = statistics.median(r["worker_cpu_per_sync_ms"] for r in found)
        print(
            f"  {setup[0]} worker(s) of {setup[1]} threads: {medians[setup]:5.0f}"
            f" ({min(rates):.0f}-{max(rates):.0f}); {cpu:.0f} ms of CPU a sync"
        )
    one, four = (1, arguments.concurrency), (4, arguments.concurrency)
    if one in results and four in results:
        ratios = [
            b["per_minute"] / a["per_minute"]
            for a, b in zip(results[one], results[four], strict=True)
        ]
        print(
            f"4 workers / 1: {medians[four] / medians[one]:.2f}x (runs: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + "; goal >= 3.5x)"
        )
    capacity = medians[(1, arguments.capacity_concurrency)] * 5
    print(
        f"one worker of {arguments.capacity_concurrency} threads at a 5-minute interval:"
        f" {capacity:,.0f} orgs at full load, {capacity * 0.8:,.0f} with a fifth spare"
    )


if __name__ == "__main__":
    main()
