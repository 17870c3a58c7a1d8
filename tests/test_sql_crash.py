"""Crash safety of the SQL store: a sync killed at any point resumes to the same result.

A child process (``sql_child``) syncs a deterministic org, round after round, into a
SQLite file or a PostgreSQL schema, and is killed with SIGKILL: from within, just before
or just after a chosen batch commits, or by this process at a random moment after a
chosen batch. The test reaps it, checks what the store holds at that moment, runs the
same work again to the end, and compares the store with an uninterrupted run into an
`InMemoryStore`: every entry (tombstones too), the activity log in order with no
duplicate id, and the watermarks.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

pytest.importorskip("sqlalchemy")

from acctsync import Batch, Origin
from acctsync.stores.sql import SqlStore
from sql_child import (
    Child,
    Children,
    Database,
    Reference,
    assert_same,
    assert_sound,
    run_work,
    snapshot,
)

SQLITE_POINTS = 16
POSTGRES_POINTS = 8
KILLED = -signal.SIGKILL
ORG = "crash"


@pytest.fixture(scope="module")
def reference() -> Reference:
    """The work, run once into memory without interruption."""
    return Reference()


@pytest.fixture(scope="module")
def children() -> Iterator[Children]:
    """The module's children; those left running are killed at the end."""
    started = Children()
    yield started
    started.close()


@pytest.fixture
def store(database: Database) -> Iterator[SqlStore]:
    """A store of the org, in this process."""
    opened = database.open(ORG)
    yield opened
    opened.close()


# -- The premise: the SQL store gives the reference result, and the work re-runs ---------------


def test_an_uninterrupted_run_equals_the_in_memory_reference(
    store: SqlStore, reference: Reference
) -> None:
    """SQL and memory agree batch for batch on this org, so memory can be the reference.

    The reference has activities of both origins, suppressions, deletions, a merge and
    an undelete: the crash tests below cover them all. And the premise of resuming: on a
    store that has it all, running the work again applies nothing anew.
    """
    applied: list[Batch] = []
    original = store.apply

    def counting(batch: Batch) -> None:
        original(batch)
        applied.append(batch)

    store.apply = counting  # type: ignore[method-assign]
    counts = Counter[str]()
    run_work(store, counts.update)
    assert counts == reference.counts
    assert len(applied) == reference.batches
    assert_same(snapshot(store), reference.final)
    origins = Counter(entry.origin for entry in store.activities())
    assert origins[Origin.SALESFORCE] > 300
    assert origins[Origin.LOCAL] > 0
    assert reference.counts["suppressed"] > 0
    assert reference.counts["accounts_deleted"] == 2  # a deletion and a merge
    assert reference.final.watermarks["Account"] is not None

    again = Counter[str]()
    run_work(store, again.update)
    assert +again == Counter(), again
    assert_same(snapshot(store), reference.final)


# -- Kills ------------------------------------------------------------------------------------


def kill_points() -> Iterator[object]:
    for backend, points in (("sqlite", SQLITE_POINTS), ("postgresql", POSTGRES_POINTS)):
        for point in range(points):
            yield pytest.param(backend, point, id=f"{backend}-{point:02d}")


def committed(child: Child) -> int:
    """The last batch the child said the database committed (0: none)."""
    said = [int(line.split()[1]) for line in child.lines if line.startswith("committed ")]
    return max(said, default=0)


def kill(database: Database, mode: str, at: int, rng: random.Random) -> Child:
    """Start a run and have it killed at batch ``at`` as ``mode`` says; reap it."""
    if mode == "parent":
        child = database.start("run", ORG)
        child.expect(f"applied {at}" if at else "ready")
        time.sleep(rng.uniform(0.0, 0.005))
        status = child.kill()
    else:
        options = ["--kill-at", str(at), *(["--kill-before-commit"] if mode == "before" else [])]
        child = database.start("run", ORG, *options)
        status = child.wait()
    assert status == KILLED, f"the child was not killed ({status}){child}"
    return child


@pytest.mark.parametrize(("backend", "point"), list(kill_points()))
def test_a_killed_sync_resumes_to_the_uninterrupted_result(
    request: pytest.FixtureRequest, backend: str, point: int, reference: Reference
) -> None:
    """SIGKILL at any point loses no committed batch, leaves no part of one, and resumes.

    ``before``: killed with a batch's rows written but not committed; the store is exactly
    as after the last batch committed before (PostgreSQL rolls back on the dropped session,
    SQLite drops the uncommitted WAL frames). ``after``: exactly as after the last batch of
    the commit that holds the batch. Each batch is a commit of its own on PostgreSQL; on
    SQLite a sync's batches share commits (`SqlStore.group_commits`), and the child says
    which it committed. ``parent``: killed from outside at a random moment; the store is as
    after some batch, no earlier than the child last said it committed. Every fourth point
    is killed a second time, during the run that resumes the first. The batch is drawn
    from the point's own seed, but for point 0: the last batch. The last run, in this
    process, must first take over the lock the killed child held: a lease whose process
    is gone (SQLite), or the advisory lock of a dropped session (PostgreSQL).
    """
    database: Database = request.getfixturevalue(f"{backend}_db")
    rng = random.Random(f"{backend}-{point}")
    mode = ("before", "after", "parent")[point % 3]
    last = reference.batches
    at = rng.randint(0, last - 12) if mode == "parent" else rng.randint(1, last - 1)
    if point == 0:
        at = last  # the last batch: the work's last local edit
    child = kill(database, mode, at, rng)
    # On PostgreSQL each batch commits alone: the child's commits are exactly its batches.
    last = committed(child)
    if mode == "before":
        assert last < at if backend == "sqlite" else last == at - 1, child
    elif mode == "after":
        assert last >= at if backend == "sqlite" else last == at, child

    store = database.open(ORG)
    try:
        found = snapshot(store)
        assert_sound(found, reference)
        if mode == "parent":
            assert any(found.same_as(ref) for ref in reference.after[last:]), (
                f"killed after committing batch {last}, the store is not as after any later"
            )
        else:
            expected = reference.after[last]
            assert found.same_as(expected), "\n".join(found.differences(expected))
        assert not found.same_as(reference.final)

        if point % 4 == 3 and at < last - 10:
            kill(database, rng.choice(["before", "after"]), rng.randint(1, 3), rng)
            assert_sound(snapshot(store), reference)

        run_work(store)  # within the lock timeout: the dead child's hold is no hindrance
        assert_same(snapshot(store), reference.final)
    finally:
        store.close()
