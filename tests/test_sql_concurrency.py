"""Runners in several processes on one SQL database: the runner lock of each org.

Children (``sql_child``) run the work of a deterministic org, or hold an org's lock until
told to let go; this process waits on what they print, never on a guess of how long
something takes. Every run's result is compared with an uninterrupted run into memory
(`Reference`).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from sqlalchemy import event

from acctsync import Batch, LockTimeoutError, SyncEngine, Watermark
from acctsync.stores.sql import SqlStore
from sql_child import (
    CLOCK,
    PAGE_SIZE,
    POLICY,
    Child,
    Children,
    Database,
    Org,
    Reference,
    assert_same,
    run_work,
    snapshot,
)

KILLED = -signal.SIGKILL
TIMED_OUT = 3  # the child's exit status after a LockTimeoutError
ORG = "acme"


@pytest.fixture(scope="module")
def reference() -> Reference:
    """The work, run once into memory without interruption."""
    return Reference()


@pytest.fixture(scope="module")
def children() -> Iterator[Children]:
    """The module's children; those left running are killed at the end."""
    started = Children(spares=2)  # the tests start two at once
    yield started
    started.close()


@pytest.fixture
def opened(database: Database) -> Iterator[list[SqlStore]]:
    """Stores the test opens, closed after it."""
    stores: list[SqlStore] = []
    yield stores
    for store in stores:
        store.close()


def open_store(database: Database, opened: list[SqlStore], org: str, timeout: float) -> SqlStore:
    store = database.open(org, lock_timeout=timeout)
    opened.append(store)
    return store


def hold(database: Database, org: str) -> Child:
    """A child that holds ``org``'s lock until released."""
    child = database.start("hold", org)
    child.expect("held")
    return child


def assert_ends(child: Child, status: int) -> None:
    assert child.wait() == status, f"exit status {child.process.returncode}{child}"


def first_round_engine(store: SqlStore) -> SyncEngine:
    org = Org()
    org.advance()
    return SyncEngine(
        source=org.source, store=store, policy=POLICY, page_size=PAGE_SIZE, clock=lambda: CLOCK
    )


# -- One org, two runners ---------------------------------------------------------------------


def test_two_runners_of_one_org_at_once_apply_every_change_once(
    database: Database, opened: list[SqlStore], reference: Reference
) -> None:
    """Two processes run the same work on one org at once: both finish, nothing twice.

    The lock makes them take turns, sync by sync; whatever one applied, the other finds
    applied. So their reports add up to exactly one run's (a batch applied twice would
    count twice), and the store is the reference, its log without a duplicate.
    """
    first, second = (database.start("run", ORG, "--wait") for _ in range(2))
    for child in (first, second):
        child.expect("ready")
    for child in (first, second):
        child.release()
    assert_ends(first, 0)
    assert_ends(second, 0)
    assert first.reports() + second.reports() == +reference.counts
    assert_same(snapshot(open_store(database, opened, ORG, 5)), reference.final)


def test_a_runner_that_may_not_wait_gives_up_and_writes_nothing(
    database: Database, opened: list[SqlStore], reference: Reference
) -> None:
    """With ``lock_timeout=0``, a runner that finds the org's lock taken fails at once.

    The second child starts once the first has applied a batch of its first sync, so
    holds the lock: it exits with `LockTimeoutError` naming the org, having written
    nothing; the first finishes alone, and its reports alone are one whole run's.
    """
    first = database.start("run", ORG, "--wait")
    second = database.start("run", ORG, "--wait", "--lock-timeout", "0")
    second.expect("ready")
    first.release()
    first.expect("applied 1")
    second.release()
    assert_ends(second, TIMED_OUT)
    assert f"org {ORG!r}" in second.line("timeout ")
    assert second.reports() == Counter()
    assert_ends(first, 0)
    assert first.reports() == +reference.counts
    assert_same(snapshot(open_store(database, opened, ORG, 5)), reference.final)


def test_a_held_lock_times_out_naming_the_org_and_is_free_once_let_go(
    database: Database, opened: list[SqlStore]
) -> None:
    """A sync that waits longer than ``lock_timeout`` for a live holder gives up.

    It waits (at least the timeout, not much more), names the org and the holder, and
    writes nothing. Once the holder lets go, the same store takes the lock at once.
    """
    holder = hold(database, ORG)
    store = open_store(database, opened, ORG, 0.5)
    engine = first_round_engine(store)
    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as raised:
        engine.sync()
    waited = time.monotonic() - started
    assert 0.5 <= waited < 2.0
    assert raised.value.org == ORG
    assert f"org {ORG!r}" in str(raised.value)
    if database.schema is None:
        assert f"pid {holder.pid} " in str(raised.value)
    else:
        assert "PostgreSQL backend pid" in str(raised.value)
    assert store.watermark("Account") is None

    holder.release()
    assert_ends(holder, 0)
    started = time.monotonic()
    with store.exclusive():
        assert time.monotonic() - started < 0.5
    report = engine.sync()
    assert report.accounts_upserted == 30


def test_a_killed_holder_does_not_block_the_next_runner(
    database: Database, opened: list[SqlStore]
) -> None:
    """A holder killed with SIGKILL (and reaped) leaves the lock to the next runner.

    SQLite: the lease names a process that is gone, so it is over long before it
    expires (600 s). PostgreSQL: the killed session's advisory lock ends with it. The
    next runner takes the lock and writes under it.
    """
    holder = hold(database, ORG)
    with pytest.raises(LockTimeoutError), open_store(database, opened, ORG, 0).exclusive():
        pass
    assert holder.kill() == KILLED
    store = open_store(database, opened, ORG, 5)
    mark = Watermark(stream="Account", system_modstamp=datetime(2024, 5, 1, tzinfo=UTC))
    started = time.monotonic()
    with store.exclusive():
        assert time.monotonic() - started < 2.0
        store.apply(Batch(watermarks=[mark]))
    assert store.watermark("Account") == mark.system_modstamp


# -- Two orgs ---------------------------------------------------------------------------------


def test_another_org_syncs_while_one_org_is_held(
    database: Database, opened: list[SqlStore], reference: Reference
) -> None:
    """While a child holds org "a", this process syncs org "b" whole, never waiting.

    Org "b" runs with ``lock_timeout=0``: any wait for a lock would fail it. Org "a" is
    still held at the end, and holds nothing of "b".
    """
    holder = hold(database, "a")
    store = open_store(database, opened, "b", 0)
    counts = Counter[str]()
    run_work(store, counts.update)
    assert counts == reference.counts
    assert_same(snapshot(store), reference.final)
    with pytest.raises(LockTimeoutError), open_store(database, opened, "a", 0).exclusive():
        pass
    other = snapshot(open_store(database, opened, "a", 0))
    assert (other.accounts, other.contacts, other.log) == ({}, {}, ())
    holder.release()
    assert_ends(holder, 0)


def test_two_orgs_sync_at_the_same_time_in_one_database(
    database: Database, opened: list[SqlStore], reference: Reference
) -> None:
    """Two processes sync two orgs into one database at once, neither waiting for a lock.

    Both run with ``lock_timeout=0``; on SQLite their writes still take turns on the
    file. Each org ends as the reference, as if alone.
    """
    runs = {org: database.start("run", org, "--wait", "--lock-timeout", "0") for org in "ab"}
    for child in runs.values():
        child.expect("ready")
    for child in runs.values():
        child.release()
    for org, child in runs.items():
        assert_ends(child, 0)
        assert child.reports() == +reference.counts
        assert_same(snapshot(open_store(database, opened, org, 0)), reference.final)


# -- SQLite: taking the lease -----------------------------------------------------------------


def test_taking_a_sqlite_lease_survives_another_writer(tmp_path: Path) -> None:
    """Another connection writing to the file while a runner takes its lease is no failure.

    The runner reads the lease row, then writes its own. If it read in a deferred
    transaction, a commit by anyone else in between makes SQLite refuse the write at
    once (SQLITE_BUSY_SNAPSHOT; no busy timeout helps), and the runner would fail with
    `StoreError` instead of getting the lock. Here another connection commits a write
    just before the runner's first write to the lease table.
    """
    path = tmp_path / "acctsync.db"
    store = SqlStore.sqlite(path, org=ORG, lock_timeout=5)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("CREATE TABLE app_log (n INTEGER)")
    writes: list[str] = []

    def write_meanwhile(conn: object, cursor: object, statement: str, *args: object) -> None:
        lease = "acctsync_locks" in statement and statement.startswith(("DELETE", "INSERT"))
        if lease and not writes:
            try:
                other.execute("INSERT INTO app_log VALUES (1)")
                writes.append("committed")
            except sqlite3.OperationalError:  # the runner has the write lock already
                writes.append("locked out")

    event.listen(store.engine, "before_cursor_execute", write_meanwhile)
    try:
        with store.exclusive():
            store.apply(Batch(watermarks=[Watermark(stream="Account", system_modstamp=CLOCK)]))
        assert writes
        assert store.watermark("Account") == CLOCK
    finally:
        other.close()
        store.close()
