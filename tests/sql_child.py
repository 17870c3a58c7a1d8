"""A deterministic org, the work that syncs it, and a child process that runs that work.

The SQL crash and concurrency tests (``test_sql_crash``, ``test_sql_concurrency``) use it
from both sides:

- in the test process: `Org`, `run_work`, `snapshot` and `Reference`, the result of an
  uninterrupted run; `Database` and `Child`, to start, watch, kill and reap children;
- as a child process, ``python tests/sql_child.py MODE --db URL --org ORG ...`` (or with
  no arguments, reading them from stdin once warm; see `Children`).

The org changes in rounds. Round ``r`` is a pure function of ``r`` (one seeded random
generator, consumed in the same order every time), and its records are stamped on day
``r``, after everything before it. `run_work` syncs round 0, 1, ... in turn and then
makes a few local edits that are no-ops when already made. So the work can be run again
from the start on a store that a killed run left behind: the rounds the store already
holds re-read nothing new, and the rest applies as if nothing had happened.

The child says what it does on stdout, one line per event:

``ready``
    the store is open (its tables exist);
``applied N``
    the store applied the N-th batch this process applied (`SqlStore.apply` returned);
``committed N``
    the database committed every batch through the N-th: at once on PostgreSQL, when
    its group commits on SQLite (`SqlStore.group_commits`);
``report {json}``
    one sync or local edit finished, with its counts;
``held``
    (``hold`` mode) this process holds the org's runner lock;
``done`` or ``timeout MESSAGE``
    the work finished, or the lock could not be had in time (exit status 3).

A run can be told to die (SIGKILL, from within) at its N-th batch, either just before
the transaction holding the batch commits (``--kill-before-commit``) or just after (see
``ProbedStore``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

from acctsync import (
    Account,
    AccountState,
    ActivityPolicy,
    Batch,
    ChangeDataValue,
    Contact,
    Deletion,
    EditResult,
    FieldValue,
    LockTimeoutError,
    ObjectType,
    Store,
    SyncEngine,
    SyncReport,
)
from acctsync.testing import InMemorySource, InMemoryStore, make_id

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore

ROUNDS: Final = 5
PAGE_SIZE: Final = 7
CLOCK: Final = datetime(2035, 1, 1, tzinfo=UTC)
"""The engine's fixed clock: later than every stamp, so no watermark is held at the clock."""
POLICY: Final = ActivityPolicy(max_contacts_per_account=25)
"""The big account (30 contacts) logs no entries; every other one does."""
STREAMS: Final[tuple[ObjectType, ...]] = ("Account", "Contact")
CHILD: Final = Path(__file__)

_DAY0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
_BIG = make_id("001", 0)
_INDUSTRIES = ("Banking", "Energy", "Media", "Retail", "Software", "Transport")
_TITLES = ("CEO", "CFO", "CTO", "Buyer", "Engineer", "Analyst")


# -- The org --------------------------------------------------------------------------------


class Org:
    """An `InMemorySource` that `advance` takes from one round to the next.

    Round 0 creates 30 accounts (one of them with 30 contacts, over `POLICY`'s limit) and
    300 contacts. Each later round updates accounts that have contacts (so the sync logs
    activity entries), moves and edits contacts and creates new records; round 2 also
    deletes an account and a contact, round 3 merges an account into another, round 4
    brings the deleted account back (with its contacts). Stamps come three to a second,
    so ties occur, also across page boundaries.
    """

    def __init__(self) -> None:
        self.source = InMemorySource()
        self.round = -1
        self._rng = random.Random("acctsync-sql-child")
        self._tick = 0
        self._next_account = 100
        self._next_contact = 1000
        self._deleted: str | None = None

    def advance(self) -> None:
        """Make the next round's changes."""
        self.round += 1
        self._tick = 0
        if self.round == 0:
            self._create()
        else:
            self._change()

    def records(self, *streams: ObjectType) -> list[Account | Contact | Deletion]:
        """Every record the org has had (of ``streams``, or all), deletions included."""
        found: list[Account | Contact | Deletion] = []
        for stream in streams or STREAMS:
            for page in self.source.read_changes(stream, None, page_size=1_000_000):
                for record in page:
                    assert isinstance(record, Account | Contact | Deletion)
                    found.append(record)
        return found

    def _stamp(self) -> datetime:
        self._tick += 1
        return _DAY0 + timedelta(days=self.round, seconds=self._tick // 3)

    def _account_fields(self, number: int) -> dict[str, FieldValue]:
        rng = self._rng
        return {
            "Name": f"Account {number}",
            "Industry": rng.choice(_INDUSTRIES),
            "AnnualRevenue": Decimal(f"{rng.randrange(10**7)}.50"),
            "NumberOfEmployees": rng.randrange(1, 5000),
            "Founded": date(1950 + rng.randrange(70), 1 + rng.randrange(12), 1),
        }

    def _contact_fields(self, number: int) -> dict[str, FieldValue]:
        return {
            "LastName": f"Person {number}",
            "Email": f"person{number}@example.com",
            "Title": self._rng.choice(_TITLES),
        }

    def _create(self) -> None:
        accounts = [make_id("001", n) for n in range(30)]
        for n, account_id in enumerate(accounts):
            self.source.upsert(
                Account(
                    id=account_id, fields=self._account_fields(n), system_modstamp=self._stamp()
                )
            )
        for n in range(300):
            member: str | None
            if n < 30:
                member = _BIG
            elif n % 37 == 0:
                member = None
            else:
                member = self._rng.choice(accounts[1:])
            self.source.upsert(
                Contact(
                    id=make_id("003", n),
                    account_id=member,
                    fields=self._contact_fields(n),
                    system_modstamp=self._stamp(),
                )
            )

    def _change(self) -> None:
        rng = self._rng
        records = self.records()
        accounts = sorted(r.id for r in records if isinstance(r, Account))
        contacts = sorted((r for r in records if isinstance(r, Contact)), key=lambda c: c.id)
        members = Counter(c.account_id for c in contacts)
        with_contacts = [a for a in accounts if a != _BIG and members[a] >= 2]
        # What this round deletes or merges away; no other change of the round touches it.
        doomed: list[str] = []
        actions: list[Callable[[], None]] = []
        if self.round == 2:
            self._deleted = rng.choice(with_contacts)
            doomed.append(self._deleted)
            actions.append(partial(self._delete, self._deleted, None))
        if self.round == 3:
            loser, winner = rng.sample(with_contacts, 2)
            doomed.append(loser)
            actions.append(partial(self._delete, loser, winner))
            actions.append(partial(self._update_account, winner))
        if self.round == 4:
            assert self._deleted is not None
            actions.append(partial(self._undelete, self._deleted))
        targets = [a for a in accounts if a not in doomed]
        movable = [c.id for c in contacts if c.account_id not in doomed]
        if self.round == 2:
            gone = movable.pop(rng.randrange(len(movable)))
            actions.append(partial(self._delete_contact, gone))
        actions.append(partial(self._update_account, _BIG))
        for account_id in rng.sample([a for a in with_contacts if a not in doomed], 8):
            actions.append(partial(self._update_account, account_id))
        for contact_id in rng.sample(movable, 12):
            actions.append(partial(self._move, contact_id, rng.choice([*targets, None])))
        for contact_id in rng.sample(movable, 6):
            actions.append(partial(self._retitle, contact_id))
        for _ in range(2):
            actions.append(self._new_account)
        for _ in range(10):
            actions.append(partial(self._new_contact, rng.choice(targets)))
        rng.shuffle(actions)
        for action in actions:
            action()

    def _current(self, record_id: str) -> Account | Contact:
        for record in self.records("Account" if record_id.startswith("001") else "Contact"):
            if record.id == record_id:
                assert isinstance(record, Account | Contact)
                return record
        raise LookupError(record_id)

    def _update_account(self, account_id: str) -> None:
        current = self._current(account_id)
        fields = dict(current.fields)
        fields["Industry"] = self._rng.choice(_INDUSTRIES)
        fields["NumberOfEmployees"] = self._rng.randrange(1, 5000)
        if "Founded" in fields and self._rng.random() < 0.3:
            del fields["Founded"]  # a field that empties logs its old value and None
        self.source.upsert(Account(id=account_id, fields=fields, system_modstamp=self._stamp()))

    def _move(self, contact_id: str, to: str | None) -> None:
        current = self._current(contact_id)
        assert isinstance(current, Contact)
        self.source.upsert(
            Contact(
                id=contact_id, account_id=to, fields=current.fields, system_modstamp=self._stamp()
            )
        )

    def _retitle(self, contact_id: str) -> None:
        current = self._current(contact_id)
        assert isinstance(current, Contact)
        fields = {**current.fields, "Title": self._rng.choice(_TITLES)}
        self.source.upsert(
            Contact(
                id=contact_id,
                account_id=current.account_id,
                fields=fields,
                system_modstamp=self._stamp(),
            )
        )

    def _delete(self, account_id: str, winner: str | None) -> None:
        self.source.delete(
            Deletion(
                object_type="Account",
                id=account_id,
                deleted_at=self._stamp(),
                master_record_id=winner,
            )
        )

    def _delete_contact(self, contact_id: str) -> None:
        self.source.delete(
            Deletion(object_type="Contact", id=contact_id, deleted_at=self._stamp())
        )

    def _undelete(self, account_id: str) -> None:
        self.source.undelete("Account", account_id, at=self._stamp())

    def _new_account(self) -> None:
        number = self._next_account
        self._next_account += 1
        self.source.upsert(
            Account(
                id=make_id("001", number),
                fields=self._account_fields(number),
                system_modstamp=self._stamp(),
            )
        )

    def _new_contact(self, account_id: str) -> None:
        number = self._next_contact
        self._next_contact += 1
        self.source.upsert(
            Contact(
                id=make_id("003", number),
                account_id=account_id,
                fields=self._contact_fields(number),
                system_modstamp=self._stamp(),
            )
        )


@cache
def final_ids() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The IDs of every account and every contact the org has had, by the last round."""
    org = Org()
    for _ in range(ROUNDS):
        org.advance()
    records = org.records()
    return (
        tuple(sorted(r.id for r in records if r.id.startswith("001"))),
        tuple(sorted(r.id for r in records if r.id.startswith("003"))),
    )


# -- The work -------------------------------------------------------------------------------


def _edits(org: Org) -> list[tuple[str, str, FieldValue]]:
    """Local edits through contacts of four accounts, the big one (over the policy) first.

    Each sets a value no round gives, so making it again changes nothing.
    """
    contacts = sorted(
        (c for c in org.records() if isinstance(c, Contact) and c.account_id is not None),
        key=lambda c: (c.account_id != _BIG, c.id),
    )
    chosen: list[tuple[str, str, FieldValue]] = []
    seen: set[str | None] = set()
    for contact in contacts:
        if contact.account_id not in seen:
            seen.add(contact.account_id)
            chosen.append((contact.id, "Industry", f"Edited locally {len(chosen)}"))
    return chosen[:4]


def counts(report: SyncReport | EditResult) -> dict[str, int]:
    """What a sync or an edit changed, as numbers that add up across runs."""
    if isinstance(report, EditResult):
        return {"edits": int(report.changed), "activities": len(report.activities)}
    return {
        "accounts_upserted": report.accounts_upserted,
        "accounts_deleted": report.accounts_deleted,
        "contacts_upserted": report.contacts_upserted,
        "contacts_deleted": report.contacts_deleted,
        "activities": len(report.activities),
        "suppressed": len(report.suppressed),
        "local_edits_discarded": report.local_edits_discarded,
    }


def run_work(store: Store, on_report: Callable[[dict[str, int]], None] | None = None) -> None:
    """Sync every round into ``store``, then make the local edits.

    Safe to run again on whatever an earlier (killed) run left: see the module's doc.
    """
    org = Org()
    engine = SyncEngine(
        source=org.source, store=store, policy=POLICY, page_size=PAGE_SIZE, clock=lambda: CLOCK
    )
    for _ in range(ROUNDS):
        org.advance()
        report = engine.sync()
        if not report.ok:
            raise AssertionError(f"round {org.round} did not sync cleanly: {report!r}")
        if on_report is not None:
            on_report(counts(report))
    for contact_id, name, value in _edits(org):
        result = engine.edit_account_field(contact_id=contact_id, field=name, value=value)
        if on_report is not None:
            on_report(counts(result))


# -- What a store holds ---------------------------------------------------------------------


def _value(value: FieldValue) -> tuple[str, str]:
    return (type(value).__name__, repr(value))


def _fields(fields: Mapping[str, FieldValue]) -> tuple[tuple[str, str, str], ...]:
    return tuple(sorted((name, *_value(value)) for name, value in fields.items()))


def canonical(entry: object) -> Hashable:
    """A stored entry as a plain tuple that tells values of different types apart."""
    if isinstance(entry, AccountState):
        return (
            "AccountState",
            canonical(entry.upstream),
            _fields(entry.local_edits),
            entry.local_revision,
        )
    if isinstance(entry, Account):
        return ("Account", entry.id, entry.system_modstamp, _fields(entry.fields))
    if isinstance(entry, Contact):
        return (
            "Contact",
            entry.id,
            entry.account_id,
            entry.system_modstamp,
            _fields(entry.fields),
        )
    if isinstance(entry, Deletion):
        return ("Deletion", entry.object_type, entry.id, entry.deleted_at, entry.master_record_id)
    if isinstance(entry, ChangeDataValue):
        return (
            "Entry",
            entry.id,
            entry.contact_id,
            entry.account_id,
            entry.field,
            _value(entry.old_value),
            _value(entry.new_value),
            entry.origin.value,
            entry.occurred_at,
        )
    raise TypeError(f"not a stored entry: {entry!r}")


class Snapshot:
    """Everything a store holds for the org: entries (tombstones too), log, watermarks."""

    def __init__(self, store: Store, account_ids: Sequence[str], contact_ids: Sequence[str]):
        self.accounts = {k: canonical(v) for k, v in store.account_states(account_ids).items()}
        self.contacts = {k: canonical(v) for k, v in store.contact_states(contact_ids).items()}
        entries = list(store.activities())
        self.log = tuple(canonical(entry) for entry in entries)
        self.log_ids = [entry.id for entry in entries]
        self.watermarks = {stream: store.watermark(stream) for stream in STREAMS}

    def same_as(self, other: Snapshot) -> bool:
        """Equal records, watermarks and log, the log compared as a multiset."""
        return (
            self.accounts == other.accounts
            and self.contacts == other.contacts
            and self.watermarks == other.watermarks
            and Counter(self.log) == Counter(other.log)
        )

    def differences(self, other: Snapshot) -> list[str]:
        """What `same_as` finds different, for assertion messages."""
        found = []
        for name in ("accounts", "contacts"):
            mine, theirs = getattr(self, name), getattr(other, name)
            wrong = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            if wrong:
                found.append(f"{len(wrong)} {name} differ, e.g. {mine.get(wrong[0])!r}")
                found.append(f"  instead of {theirs.get(wrong[0])!r}")
        if self.watermarks != other.watermarks:
            found.append(f"watermarks {self.watermarks} instead of {other.watermarks}")
        extra, missing = (
            Counter(self.log) - Counter(other.log),
            Counter(other.log) - Counter(self.log),
        )
        if extra or missing:
            found.append(
                f"log has {sum(extra.values())} extra entries, lacks {sum(missing.values())}"
            )
            found.extend(f"  extra {e!r}" for e in list(extra)[:3])
            found.extend(f"  missing {e!r}" for e in list(missing)[:3])
        return found


def snapshot(store: Store) -> Snapshot:
    """The store's `Snapshot` over every ID the org has had."""
    account_ids, contact_ids = final_ids()
    return Snapshot(store, account_ids, contact_ids)


# -- The reference ------------------------------------------------------------------------


class ReferenceStore(InMemoryStore):
    """The in-memory store, listing an account's contacts by ID as the SQL store does.

    The order is the store's choice; with the same one, the two logs are equal in order
    too. It keeps a `Snapshot` after every batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.after: list[Snapshot] = [snapshot(self)]

    def contact_ids(self, account_id: str) -> list[str]:
        return sorted(super().contact_ids(account_id))

    def apply(self, batch: Batch) -> None:
        super().apply(batch)
        self.after.append(snapshot(self))


class Reference:
    """An uninterrupted run of the work into memory: the store after each batch, the counts."""

    def __init__(self) -> None:
        store, self.counts = ReferenceStore(), Counter[str]()
        run_work(store, self.counts.update)
        self.after = store.after

    @property
    def batches(self) -> int:
        """How many batches the run applied."""
        return len(self.after) - 1

    @property
    def final(self) -> Snapshot:
        """The store at the end of the run."""
        return self.after[-1]


def assert_same(found: Snapshot, expected: Snapshot) -> None:
    """Equal entries and watermarks, and the same log in the same order."""
    assert found.same_as(expected), "\n".join(found.differences(expected))
    assert found.log == expected.log, "the same entries, in another order"


def assert_sound(found: Snapshot, reference: Reference) -> None:
    """What a store may hold at any moment: no duplicate, and a prefix of the final log."""
    assert len(set(found.log_ids)) == len(found.log_ids), "an activity id is logged twice"
    assert found.log == reference.final.log[: len(found.log)], "the log is not a prefix"


# -- The child, seen from the test ------------------------------------------------------------


class Child:
    """A child process running this module, its stdout read line by line as it comes.

    It starts *warm*: it imports what it needs, then waits for `start` to say what to do.
    `Children` keeps one warming while a test uses another.
    """

    def __init__(self) -> None:
        self.args: tuple[str, ...] = ()
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._stderr: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, False), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def start(self, *args: str) -> Child:
        """Give the child its command line (as `main` takes it)."""
        self.args = args
        self.send(json.dumps(args))
        return self

    def _pump(self, stream: Iterable[str], stdout: bool) -> None:
        for line in stream:
            if stdout:
                self._queue.put(line.rstrip("\n"))
            else:
                self._stderr.append(line)
        if stdout:
            self._queue.put(None)

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait for the next line that starts with ``prefix``; the lines before are kept."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {prefix!r} from the child in {timeout} s{self}"
                ) from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"the child ended before {prefix!r}{self}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def line(self, prefix: str) -> str:
        """The first line read so far that starts with ``prefix``."""
        found = [line for line in self.lines if line.startswith(prefix)]
        assert found, f"no {prefix!r} from the child{self}"
        return found[0]

    def send(self, line: str) -> None:
        """Write a line to the child's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def release(self) -> None:
        """Close the child's stdin: a ``hold`` child lets go, a ``--wait`` child starts."""
        assert self.process.stdin is not None
        self.process.stdin.close()

    def kill(self) -> int:
        """SIGKILL the child and reap it, so that its pid is gone; its exit status."""
        self.process.kill()
        return self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        """Reap the child, read the rest of its output and close its pipes; its status."""
        status = self.process.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        self._queue.put(None)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        return status

    def reports(self) -> Counter[str]:
        """The counts of every ``report`` line, added up."""
        total: Counter[str] = Counter()
        for line in self.lines:
            if line.startswith("report "):
                total.update(json.loads(line.removeprefix("report ")))
        return total

    def __str__(self) -> str:
        tail = "".join(self._stderr)[-3000:]
        return f"\n--- child {self.args} stdout tail: {self.lines[-5:]}\n--- stderr:\n{tail}"


class Children:
    """Starts children, each warmed up before it is asked for: ``spares`` wait warm."""

    def __init__(self, spares: int = 1) -> None:
        self._spares = [Child() for _ in range(spares)]
        self._started: list[Child] = []

    def start(self, *args: str) -> Child:
        """A child running ``args``: a spare one, while another spare warms up."""
        child = self._spares.pop(0)
        self._spares.append(Child())
        self._started.append(child)
        return child.start(*args)

    def stop(self) -> None:
        """Kill and reap every child started that is still running (a test failed)."""
        for child in self._started:
            if child.process.returncode is None:
                child.kill()
        self._started.clear()

    def close(self) -> None:
        """`stop`, and kill and reap the spare children too."""
        self.stop()
        for child in self._spares:
            child.kill()
        self._spares.clear()


def store_args(db: str, org: str, schema: str | None = None) -> list[str]:
    """The child's options for a store: ``db`` is a SQLAlchemy URL."""
    return ["--db", db, "--org", org, *(["--schema", schema] if schema else [])]


class Database:
    """Where SQL stores live (a URL, maybe a schema): opens stores and starts children there."""

    def __init__(self, url: str, schema: str | None, children: Children) -> None:
        self.url, self.schema, self.children = url, schema, children

    def open(self, org: str, lock_timeout: float = 5.0) -> SqlStore:
        """A store of ``org`` in this database."""
        from acctsync.stores.sql import SqlStore

        return SqlStore(self.url, org=org, schema=self.schema, lock_timeout=lock_timeout)

    def start(self, mode: str, org: str, *options: str) -> Child:
        """A child running ``mode`` (``run`` or ``hold``) on ``org`` with ``options``."""
        return self.children.start(mode, *store_args(self.url, org, self.schema), *options)


# -- The child, inside ----------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _probed_store(options: argparse.Namespace) -> SqlStore:
    from sqlalchemy import event

    from acctsync.stores.sql import SqlStore

    class ProbedStore(SqlStore):
        """Says when it applies and commits a batch, and can die at a chosen one.

        Before: at the first commit from the batch's on, its rows written but not
        committed. After: at the first thing that happens once that commit is through
        (the next statement, `apply` returning, a report), so a batch applied in two
        transactions would be caught half applied.
        """

        applied = 0
        applying = 0  # the batch being applied, if any
        committing = 0  # the last batch in a commit not yet said
        armed = ""

        def apply(self, batch: Batch) -> None:
            number = self.applied + 1
            # The store's thread commits a group between two batches, never within one:
            # a commit it makes meanwhile is of the batches before this one.
            with self._turn:
                if number == options.kill_at:
                    self.armed = "before" if options.kill_before_commit else "after"
                self.applying = number
                super().apply(batch)
                self.applying, self.applied = 0, number
            self.after_commit()
            _say(f"applied {number}")

        def after_commit(self) -> None:
            """Say the commit that went through, if any; then die if armed to."""
            if self.committing:
                _say(f"committed {self.committing}")
                self.committing = 0
            if self.armed == "committed":
                _die()

    store = ProbedStore(
        options.db, org=options.org, schema=options.schema, lock_timeout=options.lock_timeout
    )

    def on_commit(conn: object) -> None:
        # Fires before the database is asked to commit.
        if store.armed == "before":
            _die()
        store.committing = store.applying or store.applied
        if store.armed == "after":
            store.armed = "committed"

    def on_statement(*args: object) -> None:
        store.after_commit()

    event.listen(store.engine, "commit", on_commit)
    event.listen(store.engine, "before_cursor_execute", on_statement)
    return store


def _warm_up() -> list[str]:
    """Import what a run needs, then read the run's arguments, a JSON list, from stdin."""
    import sqlalchemy.dialects.sqlite.pysqlite

    import acctsync.stores.sql  # noqa: F401

    with contextlib.suppress(ImportError):
        import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
    args = json.loads(sys.stdin.readline() or "[]")
    assert isinstance(args, list)
    return [str(arg) for arg in args]


def main(argv: Sequence[str]) -> int:
    """Run as the child (see the module's doc); no ``argv``: read it from stdin."""
    if not argv:
        argv = _warm_up()
        if not argv:
            return 0  # the spare child of a test that ended
    parser = argparse.ArgumentParser(prog="sql_child")
    parser.add_argument("mode", choices=["run", "hold"])
    parser.add_argument("--db", required=True, help="SQLAlchemy URL")
    parser.add_argument("--org", required=True)
    parser.add_argument("--schema")
    parser.add_argument("--lock-timeout", type=float, default=30.0)
    parser.add_argument("--kill-at", type=int, help="die at this batch")
    parser.add_argument("--kill-before-commit", action="store_true")
    parser.add_argument("--wait", action="store_true", help="start when stdin closes")
    options = parser.parse_args(argv)
    store = _probed_store(options)
    _say("ready")
    if options.wait:
        sys.stdin.read()
    try:
        if options.mode == "hold":
            with store.exclusive():
                _say("held")
                sys.stdin.read()
        else:

            def report(numbers: dict[str, int]) -> None:
                store.after_commit()
                _say(f"report {json.dumps(numbers)}")

            run_work(store, report)
            store.after_commit()
    except LockTimeoutError as error:
        _say(f"timeout {error}")
        return 3
    _say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
