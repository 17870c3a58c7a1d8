"""Benchmark of ``acctsync activities`` over a long log. Prints figures; asserts only counts.

The workload: a SQLite database whose org has logged 200,000 Change Data Value entries
(3 accounts' worth of contacts, one field each), as a sync of large accounts logs them.
Each figure is a run of the command in a fresh process, as a user runs it, stdout to a
pipe that is read and thrown away: wall time and the process's peak resident size.

1. ``--format csv``, every entry. Target: at most 3 s, peak RSS at most 100 MB.
2. ``--json``, every entry. No target of its own; it streams as CSV does.
3. A table, its default page (100 entries, and how many more). Target: at most 1 s,
   peak RSS at most 100 MB.
4. A table page of one account's entries, whose count of the rest walks that account's
   log (no target: what the store's API costs today).

Beside them, in the same run, the floors the command cannot beat on this machine: the
interpreter starting with acctsync's imports (``acctsync --version``), the store reading
the whole log (`SqlStore.activities`, in a process of its own), and a plain ``sqlite3``
query writing the same CSV rows.

Run with ``python benchmarks/bench_cli.py [--entries N] [--runs R] [--quick]``
(``--quick`` is 10x smaller).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from acctsync import ChangeDataValue, Origin
from acctsync._state import Batch, Watermark
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONTACTS_PER_ACCOUNT = 5_000
CSV_SECONDS, TABLE_SECONDS, PEAK_MB = 3.0, 1.0, 100.0

# What the store reads, and a plain query of the same rows, each in a process of its own.
STORE_READ = """
import sys
from acctsync.stores.sql import SqlStore
with SqlStore.sqlite(sys.argv[1]) as store:
    print(sum(1 for _ in store.activities()))
"""
# Runs a command, its output to this process's, and writes its wall time and peak RSS.
LAUNCH = """
import os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - started
if os.waitstatus_to_exitcode(status):
    sys.exit(f"{sys.argv[1:]} exited {os.waitstatus_to_exitcode(status)}")
print(f"{seconds} {usage.ru_maxrss}", file=sys.stderr)
"""
SQLITE_CSV = """
import csv, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
rows = conn.execute(
    "SELECT occurred_at, origin, account_id, contact_id, field, old_value, new_value, id"
    " FROM acctsync_activities WHERE org = 'default' ORDER BY seq"
)
csv.writer(sys.stdout, lineterminator="\\n").writerows(rows)
"""


def fill(path: Path, entries: int) -> None:
    """A SQLite file whose org ``default`` holds ``entries`` log entries."""
    with SqlStore.sqlite(path) as store:
        for start in range(0, entries, 10_000):
            batch = []
            for n in range(start, min(entries, start + 10_000)):
                account = make_id("001", n // CONTACTS_PER_ACCOUNT)
                contact = make_id("003", n)
                batch.append(
                    ChangeDataValue(
                        id=f"salesforce:{account}:{n}:{contact}:Industry",
                        contact_id=contact,
                        account_id=account,
                        field="Industry",
                        old_value="Technology",
                        new_value=f"Retail {n}",
                        origin=Origin.SALESFORCE,
                        occurred_at=T0 + timedelta(seconds=n),
                    )
                )
            store.apply(Batch(activities=batch))
        store.apply(Batch(watermarks=[Watermark(stream="Account", system_modstamp=T0)]))


def measured(command: Sequence[str]) -> tuple[float, float, int]:
    """Run ``command``: its wall time, peak RSS in MB, and the lines it wrote.

    Through `LAUNCH`, a small process of its own: a child's peak RSS starts at its
    parent's size when forked (Linux keeps it over exec), and this process is large.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate()
    assert process.returncode == 0, (command, process.returncode, err.decode())
    seconds, peak_kb = err.decode().splitlines()[-1].split()
    return float(seconds), int(peak_kb) / 1024, out.count(b"\n")


def report(name: str, command: Sequence[str], runs: int, target: float | None) -> None:
    results = [measured(command) for _ in range(runs)]
    times = sorted(seconds for seconds, _, _ in results)
    peak = max(mb for _, mb, _ in results)
    lines = results[0][2]
    verdict = ""
    if target is not None:
        met = times[len(times) // 2] <= target and peak <= PEAK_MB
        verdict = f"  target {target:g} s, {PEAK_MB:g} MB: {'met' if met else 'NOT met'}"
    print(
        f"{name:<34} {times[0]:6.2f} s  median {statistics.median(times):6.2f} s"
        f"  max {times[-1]:6.2f} s  peak {peak:6.1f} MB  {lines:,} lines{verdict}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10x fewer entries")
    options = parser.parse_args(argv)
    entries = options.entries // 10 if options.quick else options.entries
    cli = [sys.executable, "-m", "acctsync.cli"]
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "log.db"
        started = time.perf_counter()
        fill(db, entries)
        print(
            f"{entries:,} entries logged in {time.perf_counter() - started:.1f} s; "
            f"{options.runs} runs of each, in fresh processes"
        )
        print("floors:")
        report("  interpreter and imports", [*cli, "--version"], options.runs, None)
        report("  store reads the whole log", [sys.executable, "-c", STORE_READ, str(db)],
               options.runs, None)  # fmt: skip
        report("  sqlite3 query to CSV", [sys.executable, "-c", SQLITE_CSV, str(db)],
               options.runs, None)  # fmt: skip
        print("acctsync activities:")
        report("  --format csv (every entry)", [*cli, "activities", "--db", str(db), "--format",
               "csv"], options.runs, CSV_SECONDS)  # fmt: skip
        report("  --json (every entry)", [*cli, "activities", "--db", str(db), "--json"],
               options.runs, None)  # fmt: skip
        report("  table, a page", [*cli, "activities", "--db", str(db)], options.runs,
               TABLE_SECONDS)  # fmt: skip
        account = make_id("001", 0)
        report("  table, a page of one account", [*cli, "activities", "--db", str(db),
               "--account", account], options.runs, None)  # fmt: skip


if __name__ == "__main__":
    main()
