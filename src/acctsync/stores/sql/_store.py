"""`SqlStore`: the `Store` protocol on SQLAlchemy Core, for SQLite and PostgreSQL.

This module holds what the store does: its configuration, transactions and the runner's
hold, the reads and the one write (`SqlStore.apply`). How it does each cheaply lives
beside it: records to rows and back in `_codec`, compiled statements and bulk writes in
`_statements`, the run history and overview in `_history`, tables in `_schema`, the
hold in `_locks`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import (
    Callable,
    Collection,
    Container,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from datetime import datetime
from itertools import compress, repeat
from operator import and_, attrgetter, getitem, itemgetter, setitem
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, cast

import attrs
from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Engine,
    RootTransaction,
    Row,
    Table,
    create_engine,
    event,
    func,
    make_url,
    select,
    tuple_,
)
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from acctsync._activity import ChangeDataValue
from acctsync._convert import make_converter
from acctsync._errors import ConfigurationError, SchemaVersionError, StoreError
from acctsync._ids import normalize_id
from acctsync._records import Account, Contact, ObjectType, parse_object_type
from acctsync._state import (
    AccountState,
    Batch,
    Conversion,
    StoredAccount,
    StoredContact,
)
from acctsync.stores.sql import _history as history
from acctsync.stores.sql._codec import Rows, micros, stamp
from acctsync.stores.sql._locks import WRITE, AdvisoryLock, Lease, RunnerLock
from acctsync.stores.sql._runs import StoreCounts, SyncRun
from acctsync.stores.sql._schema import SCHEMA_VERSION, Tables, current_version, migrate
from acctsync.stores.sql._statements import CopyBulk, NotNewError, Prepared, Statements

if TYPE_CHECKING:
    import sqlite3

__all__ = ["SqlStore", "engine_url"]

_DIALECTS: Final = ("sqlite", "postgresql")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}\Z")
_LOG_PAGE = 2000
_WAL_PAGES = 16_384  # SQLite's default is 1,000 (of 4 KiB)
_AUTO_CHECKPOINTS: Final = f"PRAGMA wal_autocheckpoint={_WAL_PAGES}"
_NO_AUTO_CHECKPOINTS: Final = "PRAGMA wal_autocheckpoint=0"
# How long `SqlStore.group_commits` keeps a transaction open for more batches: what
# another writer of the database may wait for it, beyond the batch itself and a
# checkpoint of the group's thread (`SqlStore._watch_group`).
_GROUP_SECONDS = 1.0
_CACHE_KIB = 32 * 1024  # SQLite's default is 2 MiB
_BY_ID = itemgetter(1)  # of a record's row
_ENTRY_ID = attrgetter("id")
_T = TypeVar("_T")
_log = logging.getLogger(__name__)


def _install_sqlite_transactions(engine: Engine, busy_timeout: float) -> None:
    """Make pysqlite's transactions SQLite's own: WAL, and BEGIN IMMEDIATE for writes.

    pysqlite otherwise begins transactions late and by itself; SQLAlchemy's documented
    remedy is to turn that off and emit ``BEGIN`` from the ``begin`` event.
    """
    if event.contains(engine, "begin", _on_sqlite_begin):
        return

    def on_connect(dbapi_connection: Any, _: object) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives any crash of the process; a power cut may lose the
        # last batches, but with their watermark, so the next sync reads them again.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        # A batch of 2,000 records in IDs of no order dirties a page of each index per
        # record, some 16 MiB of WAL, and SQLite's checkpoint after every 4 MiB (two
        # fsyncs and a copy) then followed each commit of a large load. Every 64 MiB
        # takes a fraction of the fsyncs, and copies a page written by several commits
        # once. It changes nothing a commit guarantees.
        cursor.execute(_AUTO_CHECKPOINTS)
        # A group's transaction (`SqlStore.group_commits`) keeps the pages it changed in
        # this cache until it commits, and writes them out early once the cache is full.
        # SQLite's 2 MiB held few of the pages a second of a large first load changes:
        # 32 MiB took a tenth off its time, 64 MiB no more. A cache grows as it is used.
        cursor.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _on_sqlite_begin)


def _main_file(driver_connection: Any) -> str:
    """The file of a SQLite connection's main database ("" in memory)."""
    return str(driver_connection.execute("PRAGMA database_list").fetchone()[2])  # main's first


def engine_url(url: str | URL) -> URL:
    """``url``, with PostgreSQL's driver named: psycopg 3, which SQLAlchemy 2.0 would
    take for psycopg2. ``postgres://``, as hosting providers hand URLs out, is PostgreSQL."""
    url = make_url(url)
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


def _on_sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    write = options.get(WRITE)
    if write is None:
        # Not the store's: the caller's own work on the engine it gave the store. Its
        # transaction begins as SQLAlchemy's pysqlite recipe begins it, unless the
        # caller asked for none.
        if options.get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN")
    elif write:
        # Straight to the driver: SQLAlchemy's execution machinery costs more here.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    # Each read of the store's is one statement, which SQLite runs in a read transaction
    # of its own: only its writes need one around them.


class SqlStore:
    """A `Store` in a SQL database: SQLite (embedded) or PostgreSQL, through SQLAlchemy.

    ``engine`` is a SQLAlchemy `Engine` or a database URL; the tables
    (``{table_prefix}accounts`` and kin) are created on first use, in ``schema`` if
    given, and upgraded in place when an older acctsync created them. One database holds
    many orgs: each store works on ``org``'s rows only, with its own watermarks.

    Each `apply` is atomic: a transaction of its own, or on SQLite, inside
    `group_commits` (which `SyncEngine` holds for a sync), one shared with the batches
    of the same second. `exclusive` (which `SyncEngine` holds while it
    works) lets one runner at a time work on an org: another waits up to
    ``lock_timeout`` seconds, then gets `LockTimeoutError`. On SQLite the hold is a lease
    that lapses after ``lease`` seconds without a write, or at once when its process is
    gone.

    Raises `SchemaVersionError` for a database written by a newer acctsync, and
    `StoreError` (with the database's error as its cause) when the database fails.
    """

    def __init__(
        self,
        engine: Engine | str | URL,
        *,
        org: str = "default",
        schema: str | None = None,
        table_prefix: str = "acctsync_",
        lock_timeout: float = 30.0,
        lease: float = 600.0,
    ) -> None:
        if not isinstance(org, str) or not org or len(org) > 255:
            raise ConfigurationError(f"org must be a string of 1 to 255 characters: {org!r}")
        if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
            raise ConfigurationError(
                f"table_prefix must be a letter or _ then up to 30 letters, digits or _:"
                f" {table_prefix!r}"
            )
        for name, seconds in (("lock_timeout", lock_timeout), ("lease", lease)):
            number = not isinstance(seconds, bool) and isinstance(seconds, int | float)
            if not number or not math.isfinite(seconds) or seconds < 0:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0: {seconds!r}")
        self._owns_engine = not isinstance(engine, Engine)
        try:
            self._engine = (
                engine if isinstance(engine, Engine) else create_engine(engine_url(engine))
            )
        except ValueError as error:  # a port that is no number, say
            # Not the URL itself: it may hold a password.
            raise ConfigurationError(f"that is no database URL: {error}") from None
        except (ImportError, ArgumentError) as error:  # NoSuchModuleError is an ArgumentError
            raise ConfigurationError(
                f"cannot open that database URL ({type(error).__name__}: {error}); PostgreSQL"
                " needs the postgres extra, whose driver is psycopg 3 (postgresql+psycopg://)"
            ) from None
        self._dialect = self._engine.dialect.name
        if self._dialect not in _DIALECTS:
            raise ConfigurationError(
                f"SqlStore supports SQLite and PostgreSQL, not {self._dialect!r}"
            )
        if self._dialect == "postgresql" and self._engine.dialect.driver != "psycopg":
            raise ConfigurationError(
                "SqlStore talks to PostgreSQL through psycopg 3 (postgresql+psycopg://),"
                f" not {self._engine.dialect.driver}"
            )
        self._driver_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error
        if self._dialect == "sqlite":
            _install_sqlite_transactions(self._engine, busy_timeout=max(lock_timeout, 5.0))
        self._org = org
        self._tables = Tables.define(table_prefix, schema)
        self._rows = Rows(org)
        self._runs = make_converter()
        self._lock: RunnerLock = (
            Lease(self._tables, org, lock_timeout, lease)
            if self._dialect == "sqlite"
            else AdvisoryLock(self._tables, org, lock_timeout)
        )
        self._pinned: Connection | None = None
        self._options: dict[bool, dict[str, object]] = {True: {WRITE: True}, False: {WRITE: False}}
        # IDs that reads of each kind under the runner's hold found no entry of, and no
        # write has written since (PostgreSQL only; forgotten when the hold ends).
        self._unheld: dict[Prepared | CopyBulk, set[str]] = {}
        # The IDs a group wrote to each table that held none of the org's rows when the
        # group began (`_fresh_tables`).
        self._fresh: dict[Prepared | CopyBulk, _Fresh] = {}
        self._data_version = 0  # SQLite's, on the pinned connection as the group began
        self._written = 0  # rows this store wrote, for when to refresh statistics
        self._analyze_at = 1000
        self._depth = 0
        # Group commits (SQLite): whether they are on, and the transaction they hold open.
        self._grouping = False
        self._group: RootTransaction | None = None
        self._group_ends = 0.0
        self._group_failed = False
        self._group_error: StoreError | None = None  # the watcher's failed commit
        self._group_error_told = False  # by a write the group refused
        # A group's transaction is committed once due by a watcher thread, told by the
        # batch that finds it due or waking by itself while the runner waits for its
        # source; this lock takes turns on the connection between them.
        self._turn = threading.RLock()
        self._due = threading.Event()
        self._watcher: threading.Thread | None = None
        # The contacts' by-account index, which a group may put off (`_put_off_index`).
        self._by_account = next(
            index
            for index in self._tables.contacts.indexes
            if index.name == f"{table_prefix}contacts_by_account"
        )
        self._may_put_off = False
        self._put_off = False
        self._statements = Statements(self._tables, self._engine.dialect)
        try:
            self._open()
        except BaseException:
            if self._owns_engine:  # no store to close: its connections go now
                self._engine.dispose()
            raise

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str], **options: Any) -> Self:
        """A store in the SQLite file at ``path`` (created if missing), in WAL mode.

        ``options`` are those of `SqlStore` (``org``, ``lock_timeout``...).
        """
        return cls(URL.create("sqlite", database=os.fspath(path)), **options)

    def __repr__(self) -> str:
        # Without the query too: a password may be given there (?password=).
        url = self._engine.url.set(query={}).render_as_string(hide_password=True)
        return f"<SqlStore {url} org={self._org!r}>"

    @property
    def org(self) -> str:
        """The org key whose rows this store reads and writes."""
        return self._org

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the store uses."""
        return self._engine

    def close(self) -> None:
        """Release the database connections, if the store created its engine."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- Transactions and the runner's hold ----------------------------------------------

    def _open(self) -> None:
        with self._transaction(write=True) as conn:
            if self._dialect == "postgresql":
                # Two processes opening a new database at once must not both create it.
                conn.execute(select(func.pg_advisory_xact_lock(0x61637473796E63)))
            found = current_version(conn, self._tables)
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(found, SCHEMA_VERSION)
            migrate(conn, self._tables, found)
            if self._dialect == "sqlite":
                # A runner that put the index off and died before building it again.
                self._by_account.create(conn, checkfirst=True)
            if self._dialect == "postgresql":
                # Each read is one statement, and so its own snapshot: in autocommit it
                # takes one round trip, not three (BEGIN, it, COMMIT). Writes keep the
                # level the engine gives.
                self._options = {
                    True: {WRITE: True, "isolation_level": conn.get_isolation_level()},
                    False: {WRITE: False, "isolation_level": "AUTOCOMMIT"},
                }

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self._turn, self._transaction_errors():
            if self._pinned is not None and self._grouping and (write or self._group):
                with self._grouped(self._pinned, write=write) as conn:
                    yield conn
            elif self._pinned is not None:
                conn = self._pinned.execution_options(**self._options[write])
                with conn.begin():
                    if write:
                        self._lock.renew(conn)
                    yield conn
            else:
                with self._engine.connect() as conn:
                    conn.execution_options(**self._options[write])
                    with conn.begin():
                        yield conn

    @contextmanager
    def _transaction_errors(self) -> Iterator[None]:
        """The database's errors as `StoreError`."""
        try:
            yield
        except DBAPIError as error:
            raise StoreError(f"the database failed: {error.orig}") from error
        except (SQLAlchemyError, self._driver_error) as error:
            # The driver's own errors, from what goes to it directly: the bulk writes,
            # SQLite's BEGIN.
            raise StoreError(f"the database failed: {error}") from error

    @contextmanager
    def _grouped(self, pinned: Connection, *, write: bool) -> Iterator[Connection]:
        """A write within the group's transaction, or a read inside it.

        A write that fails rolls back the group's open transaction, and so the batches
        before it with their watermarks, as a crash would; the writes after it in the
        group are refused. Each batch in a savepoint of its own would have kept them,
        but SQLite copies each page a savepoint changes first: a tenth of a large load.
        """
        if not write:
            try:
                yield pinned
            except BaseException:
                # SQLite ends the whole transaction on some errors (a full disk): then
                # the group's batches are gone, and so is the group.
                if not self._pinned_driver().in_transaction:
                    self._drop_group()
                raise
            return
        if self._group_failed:
            self._group_error_told = True
            raise StoreError(
                "a batch before this one failed, and the batches applied with it were rolled"
                " back with their watermarks: end the run, and the next reads them again"
            ) from self._group_error
        if self._group is None:
            self._group = pinned.execution_options(**self._options[True]).begin()
            self._group_ends = time.monotonic() + _GROUP_SECONDS
            if self._may_put_off:
                self._may_put_off = False
                self._put_off_index(pinned)
        try:
            self._lock.renew(pinned)
            yield pinned
        except BaseException:
            self._drop_group()
            raise

    def _shared_across_threads(self) -> bool:
        """Whether the watcher may use the group's connection: sqlite3 refuses another
        thread where the connection checks its thread, as SQLAlchemy has it for a
        database in memory
        (https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#threading-pooling-behavior)."""
        driver = self._pinned_driver()
        used: list[bool] = []

        def probe() -> None:
            try:
                driver.execute("SELECT 1")
            except self._driver_error:
                used.append(False)
            else:
                used.append(True)

        thread = threading.Thread(target=probe, name="acctsync-probe", daemon=True)
        thread.start()
        thread.join()
        return used == [True]

    def _group_due(self) -> bool:
        """Whether the group's transaction has been open its second."""
        return self._group is not None and time.monotonic() >= self._group_ends

    def _watch_group(self, stop: threading.Event, checkpointer: sqlite3.Connection | None) -> None:
        """Commit a due group when a batch finds it due, or while no batch comes: the
        runner may be waiting for its source (a Bulk job's polls, a retry's backoff) and
        other writers for the lock. After each commit, checkpoint on ``checkpointer``
        (see `_checkpointer`)."""
        wal_frames = 0  # in the WAL, as the last checkpoint found it
        while not stop.is_set():
            self._due.wait(max(_GROUP_SECONDS / 4, 0.01))
            self._due.clear()
            if stop.is_set():
                return  # the group's end commits
            # Under the store's turn: the error is the group's before the runner writes again.
            with self._turn:
                try:
                    committed = self._group_due()
                    if committed:
                        with self._transaction_errors():
                            self._commit_group()
                except StoreError as error:
                    self._group_error = error  # the group is dropped: its next write says why
                    return
                if committed and checkpointer is not None and wal_frames >= _WAL_PAGES:
                    # Once a transaction begins on a WAL copied whole, SQLite writes it from
                    # its start again; one that begins beside a checkpoint cannot. So every
                    # `_WAL_PAGES` the runner waits, as SQLite's own checkpoint has it, for
                    # the copy of a commit's pages (the others' were copied beside it).
                    if self._checkpoint(self._pinned_driver(), wal_frames) is None:
                        checkpointer = None
                    wal_frames = 0
                    continue
            if committed and checkpointer is not None:
                frames = self._checkpoint(checkpointer, wal_frames)
                checkpointer, wal_frames = (None, 0) if frames is None else (checkpointer, frames)

    def _checkpointer(self) -> sqlite3.Connection | None:
        """A connection of the group's own to checkpoint the WAL on, with the pinned
        connection's automatic checkpoints off; None where the database keeps no WAL (in
        memory), where the engine's URL names another database than its connections (an
        engine of a ``creator`` of its own), or where no second connection opens.

        SQLite checkpoints a WAL of `_WAL_PAGES` after the commit that passed them, in the
        committing connection (https://sqlite.org/c3ref/wal_autocheckpoint.html): in a
        group, the watcher's, in the store's turn, so that a large load's runner would
        wait for each copy of 64 MiB into the database and its fsyncs. The same PASSIVE
        checkpoint on a connection of its own needs no turn: the runner writes its next
        batches meanwhile, which WAL allows (https://sqlite.org/wal.html#ckpt).
        """
        pinned = self._pinned_driver()
        if pinned.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            return None
        dialect = self._engine.dialect
        cargs, cparams = dialect.create_connect_args(self._engine.url)
        try:
            # Not from the engine's pool, whose only connection may be the pinned one: a
            # checkout would wait for it. The watcher's thread uses it.
            conn = cast(
                "sqlite3.Connection",
                dialect.connect(*cargs, **{**cparams, "check_same_thread": False}),
            )
        except self._driver_error:
            return None  # SQLite checkpoints by itself, as outside a group
        try:
            if _main_file(conn) != _main_file(pinned):
                conn.close()
                return None
            pinned.execute(_NO_AUTO_CHECKPOINTS)
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkpoint(self, conn: sqlite3.Connection, wal_frames: int) -> int | None:
        """Copy the WAL's committed pages into the database on ``conn`` (PASSIVE, as
        SQLite's own): the frames in the WAL (``wal_frames`` still where another
        connection's checkpoint kept this one from counting them), or None where the
        checkpoint failed.

        A failed checkpoint loses nothing (the pages stay in the WAL), and SQLite reports
        none of its automatic ones; but one that failed may fail again, so the pinned
        connection then checkpoints by itself again, as outside a group.
        """
        try:
            ((busy, frames, _),) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except self._driver_error:
            with self._turn:
                # Not given up on here, with the group's transaction on it: should this
                # fail too, the group's end tries again.
                self._auto_checkpoints(or_invalidate=False)
            return None
        return wal_frames if busy else int(frames)

    def _auto_checkpoints(self, *, or_invalidate: bool) -> None:
        """Let the pinned connection checkpoint by itself again, as every connection does
        (`_install_sqlite_transactions`); where it cannot, ``or_invalidate`` keeps it out
        of the pool."""
        pinned = self._pinned
        if pinned is None or pinned.invalidated or pinned.closed:
            return  # a connection given up on goes back to no pool
        try:
            self._pinned_driver().execute(_AUTO_CHECKPOINTS)
        except (SQLAlchemyError, self._driver_error):
            if or_invalidate:
                pinned.invalidate()

    def _pinned_driver(self) -> Any:
        """The driver's own connection under the pinned one (`exclusive`)."""
        assert self._pinned is not None
        return self._pinned.connection.driver_connection

    def _commit_group(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            try:
                group.commit()
            except BaseException:
                self._drop_group()
                raise

    def _fresh_tables(self) -> dict[Prepared | CopyBulk, _Fresh]:
        """A `_Fresh` for each table that holds none of the org's rows, by the statement
        that writes them: while the group lasts, a lookup there asks the database only
        for IDs the group may have written, so that a first load's pages, new records
        all, ask for few. That holds while no other connection writes to the database
        (`_others_wrote`): the engine's writers hold the org (`exclusive`), as the group
        does, but a store's `apply` outside it, or another org's runner, may write."""
        tables, statements = self._tables, self._statements
        fresh: dict[Prepared | CopyBulk, _Fresh] = {}
        with self._transaction(write=False) as conn:
            self._data_version = self._read_data_version(conn)
            for table, bulk in (
                (tables.accounts, statements.upsert_account),
                (tables.contacts, statements.upsert_contact),
            ):
                held = select(table.c.id).where(table.c.org == self._org).limit(1)
                if conn.execute(held).first() is None:
                    fresh[bulk] = _Fresh()
        return fresh

    def _others_wrote(self, conn: Connection) -> bool:
        """Whether another connection has committed to the database since the group
        began (https://sqlite.org/pragma.html#pragma_data_version): checkpoints and the
        group's own commits leave SQLite's count as it is."""
        return self._read_data_version(conn) != self._data_version

    @staticmethod
    def _read_data_version(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA data_version").scalar_one())

    def _put_off_index(self, conn: Connection) -> None:
        """Drop the contacts' by-account index, in the group's first transaction, when the
        database holds no contact yet: a first load then writes one index instead of two,
        and SQLite builds the second at the end by sorting, several times faster."""
        if conn.execute(select(self._tables.contacts.c.id).limit(1)).first() is None:
            # Another org's first load may have dropped it already.
            self._by_account.drop(conn, checkfirst=True)
            self._put_off = True

    def _build_index(self) -> None:
        """Build the by-account index again, where a group put it off and now a statement
        of the group needs it, or the group ends."""
        if self._put_off:
            with self._transaction(write=True) as conn:
                self._by_account.create(conn, checkfirst=True)
            self._put_off = False

    def _drop_group(self) -> None:
        """Roll the group's transaction back; refuse the group's later writes."""
        self._group, self._group_failed = None, True
        pinned = self._pinned
        if pinned is not None and pinned.in_transaction():
            try:
                pinned.rollback()
            except (SQLAlchemyError, self._driver_error):
                pinned.invalidate()

    @contextmanager
    def group_commits(self) -> Iterator[None]:
        """Let the batches applied inside the context share transactions (on SQLite).

        SQLite's commit writes every page its transaction changed, so that the same page
        of an index, changed by each of many small batches, was written once a batch: in
        a large first sync the commits took half the time. Inside the context a batch's
        transaction stays open for those applied in the next second, and is committed
        then by a thread of the store's own while the runner reads on (its next
        statement waits for the commit), or once the second is over while the runner
        waits for its source; reads see every batch applied, and all are committed when
        the context exits. A batch that fails takes the uncommitted ones before it with
        it, watermarks included, and the context then refuses more (`StoreError`); a
        commit that fails is raised by the next write, or by the context's exit. On
        SQLite it holds the store (`exclusive`) meanwhile. PostgreSQL's commit writes its
        log only, and goes on committing each batch.
        """
        if self._dialect != "sqlite" or self._grouping:
            yield
            return
        with self.exclusive():
            # Before the checkpointer, which the group's end closes: nothing to undo.
            self._fresh = self._fresh_tables()
            # Where the watcher may not use the connection, the runner commits each due
            # group itself, and SQLite checkpoints by itself.
            shared = self._shared_across_threads()
            checkpointer = None
            if shared:
                with self._transaction_errors():
                    checkpointer = self._checkpointer()
            self._grouping = self._may_put_off = True
            self._group_failed, self._group_error = False, None
            self._group_error_told = False
            stop = threading.Event()
            watcher = threading.Thread(
                target=self._watch_group,
                args=(stop, checkpointer),
                name="acctsync-group",
                daemon=True,
            )
            try:
                if shared:
                    watcher.start()
                    self._watcher = watcher
                yield
            finally:
                stop.set()
                self._due.set()
                if watcher.ident is not None:  # started
                    watcher.join()
                self._due.clear()
                self._watcher = None
                self._grouping = self._may_put_off = False
                self._fresh = {}
                try:
                    with self._transaction_errors():
                        self._commit_group()
                finally:
                    if checkpointer is not None:
                        checkpointer.close()
                        self._auto_checkpoints(or_invalidate=True)
                    self._build_index()
            if self._group_error is not None and not self._group_error_told:
                raise self._group_error  # the watcher's commit failed, and no write said so

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this org's store for this runner until the context exits (re-entrant).

        Every write inside the context checks that the hold is still this runner's
        (`LockLostError` otherwise). A store instance serves one thread.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as error:
            raise StoreError(f"the database failed: {error}") from error
        with conn:
            try:
                self._lock.acquire(conn)
            except (SQLAlchemyError, self._driver_error) as error:
                # The driver's own: SQLite's BEGIN, which bypasses SQLAlchemy.
                raise StoreError(f"the database failed: {error}") from error
            self._pinned, self._depth = conn, 1
            try:
                yield
            finally:
                self._pinned, self._depth, self._unheld = None, 0, {}
                try:
                    self._lock.release(conn)
                except (SQLAlchemyError, self._driver_error):
                    # Dropping the connection ends an advisory lock; a lease lapses. The
                    # driver's own error comes from SQLite's BEGIN, which bypasses
                    # SQLAlchemy (`_on_sqlite_begin`): after a Ctrl-C, say.
                    conn.invalidate()

    # -- Reads ---------------------------------------------------------------------------

    def watermark(self, stream: str) -> datetime | None:
        """The stored watermark of ``stream`` for this org."""
        with self._transaction(write=False) as conn:
            cursor = self._statements.watermark.execute(conn, org=self._org, stream=stream)
            found = cursor.scalar()
        return None if found is None else stamp(found)

    def checkpoint(self, name: str) -> bytes | None:
        """The position stored for the event stream ``name`` for this org (`CheckpointStore`)."""
        with self._transaction(write=False) as conn:
            found = self._statements.checkpoint.execute(conn, org=self._org, name=name).scalar()
        return None if found is None else bytes(found)

    def account_states(self, ids: Collection[str]) -> Mapping[str, StoredAccount]:
        """Stored entries of ``ids``, tombstones included."""
        statements = self._statements
        return self._states(
            statements.accounts_of, ids, self._rows.account_state, statements.upsert_account
        )

    def contact_states(self, ids: Collection[str]) -> Mapping[str, StoredContact]:
        """Stored entries of ``ids``, tombstones included."""
        statements = self._statements
        return self._states(
            statements.contacts_of, ids, self._rows.contact_state, statements.upsert_contact
        )

    def _states(
        self,
        query: Prepared,
        ids: Collection[str],
        read: Callable[[Row[Any]], _T],
        written_by: Prepared | CopyBulk,
    ) -> dict[str, _T]:
        if not ids:
            return {}
        with self._transaction(write=False) as conn:
            fresh = self._fresh.get(written_by)
            if fresh is not None and self._others_wrote(conn):
                self._fresh, fresh = {}, None
            if fresh is not None:
                ids = fresh.among(ids)
                if not ids:
                    return {}
            rows = query.execute(conn, org=self._org, ids=self._listed(ids))
            found = {row.id: read(row) for row in rows}
        if self._dialect == "postgresql" and self._depth:
            # For `apply`: a runner reads a page's entries, then writes them, and
            # PostgreSQL writes rows it knows to be new fastest (see `CopyBulk.run`).
            # Only under the hold, which bounds what is remembered by a run.
            unheld = self._unheld.setdefault(written_by, set())
            unheld.difference_update(found)
            unheld.update(i for i in ids if i not in found)
        return found

    @staticmethod
    def _listed(ids: Collection[str]) -> str:
        """``ids`` as one parameter, for a page's thousands of IDs: a JSON array."""
        return json.dumps(list(ids))

    def count_contacts(self, account_id: str) -> int:
        """The number of live contacts of the account, counted in the database."""
        account_id = normalize_id(account_id)
        self._build_index()
        with self._transaction(write=False) as conn:
            count = self._statements.count_contacts.execute(
                conn, org=self._org, account_id=account_id
            )
            return int(count.scalar() or 0)

    def contact_ids(self, account_id: str) -> Sequence[str]:
        """The IDs of the account's live contacts, in ID order."""
        account_id = normalize_id(account_id)
        self._build_index()
        with self._transaction(write=False) as conn:
            ids = self._statements.contact_ids.execute(conn, org=self._org, account_id=account_id)
            return [row[0] for row in ids]

    def contact_ids_of(
        self, account_ids: Collection[str], *, up_to: int
    ) -> Mapping[str, Sequence[str]]:
        """The contact IDs, in ID order, of each account with at most ``up_to`` of them.

        Two queries for all the accounts: their counts, then the IDs of the small ones.
        """
        wanted = [normalize_id(i) for i in account_ids]
        if not wanted:
            return {}
        listed = self._listed(wanted)
        self._build_index()
        with self._transaction(write=False) as conn:
            counted = self._statements.contact_counts_of.execute(conn, org=self._org, ids=listed)
            counts = dict(cast("list[tuple[str, int]]", counted.all()))
            small = [i for i in wanted if 0 < counts.get(i, 0) <= up_to]
            members: dict[str, list[str]] = {i: [] for i in wanted if i not in counts}
            if small:
                listed = self._listed(small)
                rows = self._statements.contacts_of_accounts.execute(
                    conn, org=self._org, ids=listed
                )
                for account_id, contact_id in cast("Iterable[tuple[str, str]]", rows):
                    members.setdefault(account_id, []).append(contact_id)
            return members

    def conversion(self, person_id: str) -> Conversion | None:
        """The recorded Convert Person result for ``person_id``."""
        table = self._tables.conversions
        with self._transaction(write=False) as conn:
            row = conn.execute(
                select(table).where(table.c.org == self._org, table.c.person_id == person_id)
            ).first()
        if row is None:
            return None
        return Conversion(
            person_id=row.person_id,
            account_id=row.account_id,
            contact_id=row.contact_id,
            opportunity_id=row.opportunity_id,
        )

    def field_names(self, object_type: ObjectType) -> list[str]:
        """The org's field names of ``object_type``, each in its one spelling (rule R9)."""
        kind = parse_object_type(object_type)
        with self._transaction(write=False) as conn:  # every follow batch reads them
            rows = self._statements.field_names.execute(conn, org=self._org, object_type=kind)
            return [row[0] for row in rows]

    def get_account(self, account_id: str) -> Account | None:
        """The live account with its effective values (local edits on top), or None."""
        state = self.account_states([normalize_id(account_id)]).get(normalize_id(account_id))
        return state.effective() if isinstance(state, AccountState) else None

    def get_contact(self, contact_id: str) -> Contact | None:
        """The live contact, or None."""
        contact = self.contact_states([normalize_id(contact_id)]).get(normalize_id(contact_id))
        return contact if isinstance(contact, Contact) else None

    def activities(
        self,
        *,
        account_id: str | None = None,
        contact_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        by_time: bool = False,
        newest_first: bool = False,
    ) -> Iterator[ChangeDataValue]:
        """The activity log, oldest entry first, optionally of one account or contact.

        Entries come in the order they were logged, or with ``by_time`` by
        ``occurred_at`` (those of one instant as logged): a local edit, or a change
        committed late in Salesforce (rule R1), is logged after entries of later times.
        ``newest_first`` turns the order round. ``since`` keeps entries that occurred at
        or after it, ``until`` those that occurred before it, and ``limit`` ends the log
        after that many. The log is read a page at a time, so it may be longer than
        memory.
        """
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise ConfigurationError(f"limit must be None or an int >= 0: {limit!r}")
        table = self._tables.activities
        where = self._log_filter(account_id, contact_id, since, until)
        if not by_time and account_id is None and contact_id is None:
            # In the order logged, pages are ranges of the primary key. Left to itself,
            # SQLite takes the by-time index for the org and sorts every page; a term on
            # an expression constrains no index, as the unary + of "The SQLite Query
            # Optimizer Overview" (disqualifying WHERE clause terms) does.
            where[0] = table.c.org.concat("") == self._org
        columns = (table.c.occurred_at, table.c.seq) if by_time else (table.c.seq,)
        key = tuple_(*columns)
        order = [c.desc() for c in columns] if newest_first else list(columns)
        left = limit
        after: tuple[int, ...] | None = None
        while left is None or left > 0:
            page = _LOG_PAGE if left is None else min(_LOG_PAGE, left)
            query = select(table).where(*where).order_by(*order).limit(page)
            if after is not None:  # keyset paging: each page one range of an index
                query = query.where(key < after if newest_first else key > after)
            with self._transaction(write=False) as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield self._rows.entry(row)
            if len(rows) < page:
                return
            if left is not None:
                left -= len(rows)
            last = rows[-1]
            after = (last.occurred_at, last.seq) if by_time else (last.seq,)

    def count_activities(
        self,
        *,
        account_id: str | None = None,
        contact_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many entries `activities` would give with the same filters and no limit."""
        where = self._log_filter(account_id, contact_id, since, until)
        with self._transaction(write=False) as conn:
            return (
                conn.scalar(
                    select(func.count()).select_from(self._tables.activities).where(*where)
                )
                or 0
            )

    def _log_filter(
        self,
        account_id: str | None,
        contact_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[ColumnElement[bool]]:
        for name, moment in (("since", since), ("until", until)):
            if moment is not None and (
                not isinstance(moment, datetime) or moment.utcoffset() is None
            ):
                raise ConfigurationError(f"{name} must be a timezone-aware datetime: {moment!r}")
        table = self._tables.activities
        where = [table.c.org == self._org]
        if account_id is not None:
            where.append(table.c.account_id == normalize_id(account_id))
        if contact_id is not None:
            where.append(table.c.contact_id == normalize_id(contact_id))
        if since is not None:
            where.append(table.c.occurred_at >= micros(since))
        if until is not None:
            where.append(table.c.occurred_at < micros(until))
        return where

    def accounts(self) -> Iterator[Account]:
        """Every live account, with effective values, in ID order."""
        for state in self._walk(self._tables.accounts, self._rows.account_state):
            if isinstance(state, AccountState):
                yield state.effective()

    def contacts(self) -> Iterator[Contact]:
        """Every live contact, in ID order."""
        for contact in self._walk(self._tables.contacts, self._rows.contact_state):
            if isinstance(contact, Contact):
                yield contact

    def live_ids(self, object_type: ObjectType) -> Iterator[str]:
        """The IDs of every live account or contact, in ID order (`ListingStore`)."""
        kind = parse_object_type(object_type)
        table = self._tables.accounts if kind == "Account" else self._tables.contacts
        return self._walk(table, attrgetter("id"), table.c.id)

    def counts(self) -> StoreCounts:
        """How many live accounts and contacts, and activity entries, this org has."""
        with self._transaction(write=False) as conn:
            return history.count(conn, self._tables, self._org)

    def orgs(self) -> list[str]:
        """Every org this database holds a sync, a run or a conversion of, in order.

        Unlike the other reads it looks beyond this store's org: at the whole database.
        """
        with self._transaction(write=False) as conn:
            return history.orgs(conn, self._tables)

    # -- Runs ----------------------------------------------------------------------------

    def record_run(self, run: SyncRun) -> SyncRun:
        """Keep ``run`` as this org's latest, and return it with its ``id``.

        The store keeps the newest 100 runs of each org, and of each run the first 1,000
        rejections and suppressions (``rejected_count`` and ``suppressed_count`` keep the
        totals).
        """
        kept, summary = history.kept(run, self._runs)
        with self._transaction(write=True) as conn:
            seq = history.record_run(conn, self._tables, self._org, kept, summary)
        return attrs.evolve(kept, id=seq)

    def runs(self, *, limit: int = 10) -> list[SyncRun]:
        """This org's latest ``limit`` recorded runs, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an int >= 1: {limit!r}")
        with self._transaction(write=False) as conn:
            return history.recent_runs(conn, self._tables, self._org, self._runs, limit)

    def last_run(self) -> SyncRun | None:
        """This org's latest recorded run, or None before the first."""
        latest = self.runs(limit=1)
        return latest[0] if latest else None

    def _walk(self, table: Table, read: Callable[[Row[Any]], _T], *columns: Any) -> Iterator[_T]:
        """The table's live rows of this org (only ``columns``, if given), in ID order."""
        after = ""
        while True:
            with self._transaction(write=False) as conn:
                rows = conn.execute(
                    select(*(columns or (table,)))
                    .where(table.c.org == self._org, table.c.id > after, ~table.c.deleted)
                    .order_by(table.c.id)
                    .limit(_LOG_PAGE)
                ).all()
            yield from map(read, rows)
            if len(rows) < _LOG_PAGE:
                return
            after = rows[-1].id

    # -- The one write -------------------------------------------------------------------

    def apply(self, batch: Batch) -> None:
        """Apply ``batch`` in one transaction (see `Batch` for the order), or in a group's
        (`group_commits`)."""
        batch.check()
        with self._turn:  # the watcher commits before a batch or after it, never within
            if batch.contact_ops:  # they find an account's contacts by the index
                self._build_index()
            self._apply(batch)
            if self._group_due():
                if self._watcher is None:
                    with self._transaction_errors():
                        self._commit_group()
                else:
                    # SQLite writes the commit's pages without Python's lock: the watcher
                    # commits while the runner reads on, and the runner's next statement
                    # waits its turn.
                    self._due.set()

    def _apply(self, batch: Batch) -> None:
        # Keyed by ID: the last entry of an ID wins, as `Batch` says, and no upsert meets
        # the same row twice; the log keeps an ID's first entry, as it would on a replay.
        accounts = dict(zip(map(_ENTRY_ID, batch.accounts), batch.accounts, strict=True))
        contacts = dict(zip(map(_ENTRY_ID, batch.contacts), batch.contacts, strict=True))
        activities: dict[str, ChangeDataValue] = {}
        for entry in batch.activities:
            activities.setdefault(entry.id, entry)
        statements, unheld = self._statements, self._unheld
        for bulk, written in (
            (statements.upsert_account, accounts),
            (statements.upsert_contact, contacts),
        ):
            fresh = self._fresh.get(bulk)
            if fresh is not None:  # before the write: should it fail, a lookup asks again
                fresh.add(written)
        # Replays aside, which are rare, each log entry is new to the log.
        new = {**unheld, statements.insert_activity: activities.keys()}
        try:
            self._write(batch, accounts, contacts, activities, new)
        except NotNewError:
            # A row presumed new was there after all (a replayed log entry, another
            # writer's row); the transaction was rolled back whole.
            self._write(batch, accounts, contacts, activities, {})
        for bulk, written in (
            (statements.upsert_account, accounts),
            (statements.upsert_contact, contacts),
        ):
            unheld.get(bulk, set()).difference_update(written)
        self._written += len(accounts) + len(contacts) + len(activities)
        if self._dialect == "postgresql" and self._written >= self._analyze_at:
            self._analyze()

    def _write(
        self,
        batch: Batch,
        accounts: Mapping[str, StoredAccount],
        contacts: Mapping[str, StoredContact],
        activities: Mapping[str, ChangeDataValue],
        new: Mapping[Prepared | CopyBulk, Container[str]],
    ) -> None:
        """One transaction; rows whose ID is in ``new`` of their statement are presumed
        new (see `CopyBulk.run`)."""
        org, statements, rows = self._org, self._statements, self._rows
        lazy = self._dialect == "postgresql"

        def made(
            row: Callable[[_T], tuple[object, ...]],
            entries: Collection[_T],
            *,
            by_id: bool,
            live: Callable[[list[_T]], list[tuple[object, ...]] | None] | None = None,
        ) -> tuple[Iterable[tuple[object, ...]], Mapping[str, bool | None] | None]:
            # PostgreSQL takes in rows while the next are made (see `CopyBulk.run`).
            # SQLite writes in this thread, under the database's one write lock that
            # other orgs' runners wait for: its rows are made before the lock is taken
            # (where a group commit holds it already, before the batch's statements), all
            # at once, those of live records without the columns they share (`Rows.live`),
            # records' in ID order (one row per ID), so that each index is written along
            # its pages rather than back and forth.
            if lazy:
                return map(row, entries), None
            listed = list(entries)
            slim = live(listed) if live is not None else None
            made_rows = slim if slim is not None else list(map(row, listed))
            if by_id:
                made_rows.sort(key=_BY_ID)
            return made_rows, None if slim is None else rows.live

        account_rows = made(rows.account, accounts.values(), by_id=True, live=rows.live_accounts)
        contact_rows = made(rows.contact, contacts.values(), by_id=True, live=rows.live_contacts)
        activity_rows = made(rows.activity, activities.values(), by_id=False)  # log order

        def write(
            bulk: Prepared | CopyBulk,
            made_rows: tuple[Iterable[tuple[object, ...]], Mapping[str, bool | None] | None],
        ) -> None:
            listed, fixed = made_rows
            if fixed is None:
                bulk.run(conn, listed, new=new.get(bulk, frozenset()))
            else:  # only SQLite's rows leave columns out
                cast("Prepared", bulk).run(conn, listed, fixed=fixed)

        with self._transaction(write=True) as conn:
            write(statements.upsert_account, account_rows)
            write(statements.upsert_contact, contact_rows)
            for op in batch.contact_ops:
                conn.execute(statements.contact_op(org, op))
            write(statements.insert_activity, activity_rows)
            for conversion in batch.conversions:
                conn.execute(
                    statements.upsert_conversion,
                    {
                        "org": org,
                        "person_id": conversion.person_id,
                        "account_id": conversion.account_id,
                        "contact_id": conversion.contact_id,
                        "opportunity_id": conversion.opportunity_id,
                    },
                )
            if batch.field_names:
                conn.execute(
                    statements.insert_field_name,
                    [
                        {
                            "org": org,
                            "object_type": entry.object_type,
                            "folded": entry.name.lower(),
                            "name": entry.name,
                        }
                        for entry in batch.field_names
                    ],
                )
            if batch.watermarks:  # one call for all: psycopg pipelines its executemany
                conn.execute(
                    statements.upsert_watermark,
                    [
                        {
                            "org": org,
                            "stream": watermark.stream,
                            "system_modstamp": micros(watermark.system_modstamp),
                        }
                        for watermark in batch.watermarks
                    ],
                )
            if batch.checkpoints:
                conn.execute(
                    statements.upsert_checkpoint,
                    [
                        {"org": org, "name": checkpoint.name, "position": checkpoint.position}
                        for checkpoint in batch.checkpoints
                    ],
                )

    def _analyze(self) -> None:
        """Refresh PostgreSQL's statistics of tables this store has grown tenfold.

        Before autovacuum first gets to them, a new org's tables have none, and the
        planner then scans the whole org for each page's lookup.
        """
        self._analyze_at = self._written * 10
        try:
            with self._transaction(write=True) as conn:
                for table in (
                    self._tables.accounts,
                    self._tables.contacts,
                    self._tables.activities,
                ):
                    conn.exec_driver_sql(f"ANALYZE {self._quoted(table)}")
        except StoreError as error:
            # The batch is committed: a statistics refresh that failed (a lock timeout
            # beside a VACUUM, say) is no failure of it. Autovacuum will get to it.
            _log.warning("could not refresh the statistics of org %r: %s", self._org, error)

    def _quoted(self, table: Table) -> str:
        return self._engine.dialect.identifier_preparer.format_table(table)


class _Fresh:
    """The IDs a group wrote to a table that held none of the org's rows when the group
    began, as a filter: an ID not among them is in no row of the org there.

    A byte a slot, each ID at its hash's slot, so that both ways are passes of C, in
    8 MiB: once a million IDs are written, about one ID in nine shares a slot with one
    and is asked for. Only ever too many, never too few: an ID is added before its row
    is written.
    """

    _MASK: Final = (1 << 23) - 1

    def __init__(self) -> None:
        self._slots = bytearray(self._MASK + 1)

    def add(self, ids: Iterable[str]) -> None:
        """Count ``ids`` among those written."""
        # `operator`'s functions, not the bytearray's methods: a method wrapper makes a
        # tuple of its arguments each call (150 against 190 ns an ID).
        deque(map(setitem, repeat(self._slots), self._places(ids), repeat(1)), maxlen=0)

    def among(self, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` that may have been written: the others are in no row."""
        listed = list(ids)
        return list(compress(listed, map(getitem, repeat(self._slots), self._places(listed))))

    def _places(self, ids: Iterable[str]) -> Iterator[int]:
        return map(and_, map(hash, ids), repeat(self._MASK))
