"""`SqlStore`: the `Store` protocol on SQLAlchemy Core, for SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, Self, TypeVar, cast

import attrs
import orjson
from sqlalchemy import (
    URL,
    BigInteger,
    Column,
    Connection,
    CursorResult,
    Engine,
    MetaData,
    Row,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.schema import CreateTable

from acctsync._activity import ChangeDataValue, Origin
from acctsync._convert import make_converter
from acctsync._errors import ConfigurationError, SchemaVersionError, StoreError
from acctsync._ids import normalize_id
from acctsync._records import (
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    parse_object_type,
)
from acctsync._state import (
    AccountState,
    Batch,
    Conversion,
    DeleteContacts,
    MoveContacts,
    StoredAccount,
    StoredContact,
)
from acctsync.stores.sql._locks import WRITE, AdvisoryLock, Lease, RunnerLock
from acctsync.stores.sql._runs import StoreCounts, SyncRun
from acctsync.stores.sql._schema import SCHEMA_VERSION, Tables, current_version, migrate

__all__ = ["SqlStore"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIALECTS: Final = ("sqlite", "postgresql")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}\Z")
_LOG_PAGE = 2000
# A run keeps this many of its rejections and suppressions (with their total counts),
# and an org this many runs: enough to see what went wrong, not a second log.
_KEPT_ITEMS = 1000
_KEPT_RUNS = 100
_T = TypeVar("_T")


def _micros(stamp: datetime) -> int:
    delta = stamp - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _stamp(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class _Codec:
    """Field maps and values to JSON text and back, in the library's lossless form."""

    def __init__(self) -> None:
        converter = make_converter()
        self._load_fields = converter.get_structure_hook(Mapping[str, FieldValue])
        self._load_value = converter.get_structure_hook(FieldValue)
        # JSON calls ``default`` only for what it does not write itself (decimals, dates,
        # datetimes): the converter tags those, and plain values cost no Python call.
        self._tag = converter.get_unstructure_hook(FieldValue)
        self._fallback = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), default=self._tag
        ).encode

    def _dump(self, value: object) -> str:
        try:
            return orjson.dumps(value, default=self._tag, option=_DATES_BY_HOOK).decode()
        except TypeError:  # an integer beyond 64 bits: the standard library writes any
            return self._fallback(value)

    def fields(self, fields: Mapping[str, FieldValue]) -> str:
        if not fields:
            return "{}"
        # Records hold a read-only proxy: its copy() is a plain dict, several times faster
        # than dict(proxy), and orjson writes dicts only.
        plain = fields.copy() if isinstance(fields, MappingProxyType) else dict(fields)
        return self._dump(plain)

    def read_fields(self, raw: str) -> Mapping[str, FieldValue]:
        # The standard library, not orjson, reads: orjson turns integers beyond 64 bits
        # into floats.
        return self._load_fields(json.loads(raw), Mapping[str, FieldValue])  # type: ignore[no-any-return]

    def value(self, value: FieldValue) -> str:
        return self._dump(value)

    def read_value(self, raw: str) -> FieldValue:
        return self._load_value(json.loads(raw), FieldValue)  # type: ignore[no-any-return]


_DATES_BY_HOOK = orjson.OPT_PASSTHROUGH_DATETIME


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
        cursor.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _on_sqlite_begin)


def _on_sqlite_begin(conn: Connection) -> None:
    # Each read is one statement, which SQLite runs in a read transaction of its own:
    # only writes need one around them.
    if conn.get_execution_options().get(WRITE):
        # Straight to the driver: SQLAlchemy's execution machinery costs more here.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


class SqlStore:
    """A `Store` in a SQL database: SQLite (embedded) or PostgreSQL, through SQLAlchemy.

    ``engine`` is a SQLAlchemy `Engine` or a database URL; the tables
    (``{table_prefix}accounts`` and kin) are created on first use, in ``schema`` if
    given, and upgraded in place when an older acctsync created them. One database holds
    many orgs: each store works on ``org``'s rows only, with its own watermarks.

    Each `apply` is one transaction. `exclusive` (which `SyncEngine` holds while it
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
            self._engine = engine if isinstance(engine, Engine) else create_engine(engine)
        except (ImportError, ArgumentError) as error:  # NoSuchModuleError is an ArgumentError
            # Not the URL itself: it may hold a password.
            raise ConfigurationError(
                f"cannot open that database URL ({type(error).__name__}: {error}); PostgreSQL"
                " needs the postgres extra, whose driver is psycopg 3 (postgresql+psycopg://)"
            ) from None
        self._dialect = self._engine.dialect.name
        if self._dialect not in _DIALECTS:
            raise ConfigurationError(
                f"SqlStore supports SQLite and PostgreSQL, not {self._dialect!r}"
            )
        if self._dialect == "sqlite":
            _install_sqlite_transactions(self._engine, busy_timeout=max(lock_timeout, 5.0))
        self._org = org
        self._tables = Tables.define(table_prefix, schema)
        self._codec = _Codec()
        self._runs = make_converter()
        self._lock: RunnerLock = (
            Lease(self._tables, org, lock_timeout, lease)
            if self._dialect == "sqlite"
            else AdvisoryLock(self._tables, org, lock_timeout)
        )
        self._pinned: Connection | None = None
        self._options: dict[bool, dict[str, object]] = {True: {WRITE: True}, False: {WRITE: False}}
        self._written = 0  # rows this store wrote, for when to refresh statistics
        self._analyze_at = 1000
        self._depth = 0
        self._statements = _Statements(self._tables, self._engine.dialect)
        self._open()

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str], **options: Any) -> Self:
        """A store in the SQLite file at ``path`` (created if missing), in WAL mode.

        ``options`` are those of `SqlStore` (``org``, ``lock_timeout``...).
        """
        return cls(URL.create("sqlite", database=os.fspath(path)), **options)

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
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
        try:
            if self._pinned is not None:
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
        except DBAPIError as error:
            raise StoreError(f"the database failed: {error.orig}") from error
        except SQLAlchemyError as error:
            raise StoreError(f"the database failed: {error}") from error

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
            except SQLAlchemyError as error:
                raise StoreError(f"the database failed: {error}") from error
            self._pinned, self._depth = conn, 1
            try:
                yield
            finally:
                self._pinned, self._depth = None, 0
                try:
                    self._lock.release(conn)
                except SQLAlchemyError:
                    # Dropping the connection ends an advisory lock; a lease lapses.
                    conn.invalidate()

    # -- Reads ---------------------------------------------------------------------------

    def watermark(self, stream: str) -> datetime | None:
        """The stored watermark of ``stream`` for this org."""
        with self._transaction(write=False) as conn:
            micros = self._statements.watermark.execute(conn, org=self._org, stream=stream)
            found = micros.scalar()
        return None if found is None else _stamp(found)

    def account_states(self, ids: Collection[str]) -> Mapping[str, StoredAccount]:
        """Stored entries of ``ids``, tombstones included."""
        return self._states(self._statements.accounts_of, ids, self._account_state)

    def contact_states(self, ids: Collection[str]) -> Mapping[str, StoredContact]:
        """Stored entries of ``ids``, tombstones included."""
        return self._states(self._statements.contacts_of, ids, self._contact_state)

    def _states(
        self, query: _Prepared, ids: Collection[str], read: Callable[[Row[Any]], _T]
    ) -> dict[str, _T]:
        if not ids:
            return {}
        # One parameter for a page's thousands of IDs: a JSON array for SQLite's
        # json_each, an array for PostgreSQL.
        listed = json.dumps(list(ids)) if self._dialect == "sqlite" else list(ids)
        with self._transaction(write=False) as conn:
            rows = query.execute(conn, org=self._org, ids=listed)
            return {row.id: read(row) for row in rows}

    def count_contacts(self, account_id: str) -> int:
        """The number of live contacts of the account, counted in the database."""
        account_id = normalize_id(account_id)
        with self._transaction(write=False) as conn:
            count = self._statements.count_contacts.execute(
                conn, org=self._org, account_id=account_id
            )
            return int(count.scalar() or 0)

    def contact_ids(self, account_id: str) -> Sequence[str]:
        """The IDs of the account's live contacts, in ID order."""
        account_id = normalize_id(account_id)
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
        listed = json.dumps(wanted) if self._dialect == "sqlite" else wanted
        with self._transaction(write=False) as conn:
            counted = self._statements.contact_counts_of.execute(conn, org=self._org, ids=listed)
            counts = dict(cast("list[tuple[str, int]]", counted.all()))
            small = [i for i in wanted if 0 < counts.get(i, 0) <= up_to]
            members: dict[str, list[str]] = {i: [] for i in wanted if i not in counts}
            if small:
                listed = json.dumps(small) if self._dialect == "sqlite" else small
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
    ) -> Iterator[ChangeDataValue]:
        """The activity log, oldest entry first, optionally of one account or contact.

        ``since`` keeps entries that occurred at or after it. The log is read a page at
        a time, so it may be longer than memory.
        """
        table = self._tables.activities
        where = [table.c.org == self._org]
        if account_id is not None:
            where.append(table.c.account_id == normalize_id(account_id))
        if contact_id is not None:
            where.append(table.c.contact_id == normalize_id(contact_id))
        if since is not None:
            where.append(table.c.occurred_at >= _micros(since))
        after = 0
        while True:
            with self._transaction(write=False) as conn:
                rows = conn.execute(
                    select(table)
                    .where(*where, table.c.seq > after)
                    .order_by(table.c.seq)
                    .limit(_LOG_PAGE)
                ).all()
            for row in rows:
                yield self._entry(row)
            if len(rows) < _LOG_PAGE:
                return
            after = rows[-1].seq

    def accounts(self) -> Iterator[Account]:
        """Every live account, with effective values, in ID order."""
        for state in self._walk(self._tables.accounts, self._account_state):
            if isinstance(state, AccountState):
                yield state.effective()

    def contacts(self) -> Iterator[Contact]:
        """Every live contact, in ID order."""
        for contact in self._walk(self._tables.contacts, self._contact_state):
            if isinstance(contact, Contact):
                yield contact

    def live_ids(self, object_type: ObjectType) -> Iterator[str]:
        """The IDs of every live account or contact, in ID order (`ListingStore`)."""
        kind = parse_object_type(object_type)
        table = self._tables.accounts if kind == "Account" else self._tables.contacts
        after = ""
        while True:
            with self._transaction(write=False) as conn:
                ids = (
                    conn.execute(
                        select(table.c.id)
                        .where(table.c.org == self._org, table.c.id > after, ~table.c.deleted)
                        .order_by(table.c.id)
                        .limit(_LOG_PAGE)
                    )
                    .scalars()
                    .all()
                )
            yield from ids
            if len(ids) < _LOG_PAGE:
                return
            after = ids[-1]

    def counts(self) -> StoreCounts:
        """How many live accounts and contacts, and activity entries, this org has."""
        accounts, contacts, log = (
            self._tables.accounts,
            self._tables.contacts,
            self._tables.activities,
        )
        with self._transaction(write=False) as conn:
            return StoreCounts(
                accounts=self._count(conn, accounts, ~accounts.c.deleted),
                contacts=self._count(conn, contacts, ~contacts.c.deleted),
                activities=self._count(conn, log),
            )

    def _count(self, conn: Connection, table: Table, *where: Any) -> int:
        found = conn.scalar(select(func.count()).where(table.c.org == self._org, *where))
        return int(found or 0)

    def orgs(self) -> list[str]:
        """Every org this database holds a sync, a run or a conversion of, in order.

        Unlike the other reads it looks beyond this store's org: at the whole database.
        """
        tables = self._tables
        listed = [
            select(table.c.org).distinct()
            for table in (tables.watermarks, tables.runs, tables.conversions)
        ]
        with self._transaction(write=False) as conn:
            found: set[str] = set()
            for query in listed:
                found.update(conn.scalars(query))
        return sorted(found)

    # -- Runs ----------------------------------------------------------------------------

    def record_run(self, run: SyncRun) -> SyncRun:
        """Keep ``run`` as this org's latest, and return it with its ``id``.

        The store keeps the newest 100 runs of each org, and of each run the first 1,000
        rejections and suppressions (``rejected_count`` and ``suppressed_count`` keep the
        totals).
        """
        kept = attrs.evolve(
            run,
            rejected=run.rejected[:_KEPT_ITEMS],
            suppressed=run.suppressed[:_KEPT_ITEMS],
            rejected_count=max(run.rejected_count, len(run.rejected)),
            suppressed_count=max(run.suppressed_count, len(run.suppressed)),
            id=None,
        )
        summary = json.dumps(self._runs.unstructure(kept), ensure_ascii=False)
        table = self._tables.runs
        with self._transaction(write=True) as conn:
            inserted = conn.execute(
                table.insert().values(
                    org=self._org,
                    started_at=_micros(run.started_at),
                    outcome=run.outcome,
                    summary=summary,
                )
            )
            seq = int(cast("tuple[int]", inserted.inserted_primary_key)[0])
            newest = (
                select(table.c.seq)
                .where(table.c.org == self._org)
                .order_by(table.c.seq.desc())
                .limit(_KEPT_RUNS)
                .subquery()
            )
            conn.execute(
                delete(table).where(
                    table.c.org == self._org,
                    table.c.seq < select(func.min(newest.c.seq)).scalar_subquery(),
                )
            )
        return attrs.evolve(kept, id=seq)

    def runs(self, *, limit: int = 10) -> list[SyncRun]:
        """This org's latest ``limit`` recorded runs, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an int >= 1: {limit!r}")
        table = self._tables.runs
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(table.c.seq, table.c.summary)
                .where(table.c.org == self._org)
                .order_by(table.c.seq.desc())
                .limit(limit)
            ).all()
        return [
            attrs.evolve(self._runs.structure(json.loads(row.summary), SyncRun), id=row.seq)
            for row in rows
        ]

    def last_run(self) -> SyncRun | None:
        """This org's latest recorded run, or None before the first."""
        latest = self.runs(limit=1)
        return latest[0] if latest else None

    def _walk(self, table: Table, read: Callable[[Row[Any]], _T]) -> Iterator[_T]:
        after = ""
        while True:
            with self._transaction(write=False) as conn:
                rows = conn.execute(
                    select(table)
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
        """Apply ``batch`` in one transaction (see `Batch` for the order)."""
        batch.check()
        org, codec, statements = self._org, self._codec, self._statements
        # Keyed by ID: the last entry of an ID wins, as `Batch` says, and no upsert meets
        # the same row twice.
        accounts = {entry.id: self._account_row(entry) for entry in batch.accounts}
        contacts = {entry.id: self._contact_row(entry) for entry in batch.contacts}
        activities: dict[str, tuple[object, ...]] = {}
        for entry in batch.activities:
            if entry.id not in activities:
                activities[entry.id] = (
                    org,
                    entry.id,
                    entry.contact_id,
                    entry.account_id,
                    entry.field,
                    codec.value(entry.old_value),
                    codec.value(entry.new_value),
                    entry.origin.value,
                    _micros(entry.occurred_at),
                )
        with self._transaction(write=True) as conn:
            if accounts:
                statements.upsert_account.run(conn, accounts.values())
            if contacts:
                statements.upsert_contact.run(conn, contacts.values())
            for op in batch.contact_ops:
                conn.execute(statements.contact_op(org, op))
            if activities:
                statements.insert_activity.run(conn, activities.values())
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
            for watermark in batch.watermarks:
                conn.execute(
                    statements.upsert_watermark,
                    {
                        "org": org,
                        "stream": watermark.stream,
                        "system_modstamp": _micros(watermark.system_modstamp),
                    },
                )
        self._written += len(accounts) + len(contacts) + len(activities)
        if self._dialect == "postgresql" and self._written >= self._analyze_at:
            self._analyze()

    def _analyze(self) -> None:
        """Refresh PostgreSQL's statistics of tables this store has grown tenfold.

        Before autovacuum first gets to them, a new org's tables have none, and the
        planner then scans the whole org for each page's lookup.
        """
        self._analyze_at = self._written * 10
        with self._transaction(write=True) as conn:
            for table in (self._tables.accounts, self._tables.contacts, self._tables.activities):
                conn.exec_driver_sql(f"ANALYZE {self._quoted(table)}")

    def _quoted(self, table: Table) -> str:
        return self._engine.dialect.identifier_preparer.format_table(table)

    # -- Rows ----------------------------------------------------------------------------

    # Rows are tuples in the tables' column order (see `_Bulk`).

    def _account_row(self, entry: StoredAccount) -> tuple[object, ...]:
        if isinstance(entry, Deletion):
            stamp = _micros(entry.deleted_at)
            return (self._org, entry.id, True, stamp, entry.master_record_id, "{}", "{}", 0)
        return (
            self._org,
            entry.id,
            False,
            _micros(entry.system_modstamp),
            None,
            self._codec.fields(entry.upstream.fields),
            self._codec.fields(entry.local_edits),
            entry.local_revision,
        )

    def _contact_row(self, entry: StoredContact) -> tuple[object, ...]:
        if isinstance(entry, Deletion):
            stamp = _micros(entry.deleted_at)
            return (self._org, entry.id, True, stamp, entry.master_record_id, None, "{}")
        return (
            self._org,
            entry.id,
            False,
            _micros(entry.system_modstamp),
            None,
            entry.account_id,
            self._codec.fields(entry.fields),
        )

    def _account_state(self, row: Row[Any]) -> StoredAccount:
        if row.deleted:
            return _tombstone("Account", row)
        return AccountState(
            upstream=Account(
                id=row.id,
                fields=self._codec.read_fields(row.fields),
                system_modstamp=_stamp(row.system_modstamp),
            ),
            local_edits=self._codec.read_fields(row.local_edits),
            local_revision=row.local_revision,
        )

    def _contact_state(self, row: Row[Any]) -> StoredContact:
        if row.deleted:
            return _tombstone("Contact", row)
        return Contact(
            id=row.id,
            account_id=row.account_id,
            fields=self._codec.read_fields(row.fields),
            system_modstamp=_stamp(row.system_modstamp),
        )

    def _entry(self, row: Row[Any]) -> ChangeDataValue:
        return ChangeDataValue(
            id=row.id,
            contact_id=row.contact_id,
            account_id=row.account_id,
            field=row.field,
            old_value=self._codec.read_value(row.old_value),
            new_value=self._codec.read_value(row.new_value),
            origin=Origin(row.origin),
            occurred_at=_stamp(row.occurred_at),
        )


def _tombstone(object_type: ObjectType, row: Row[Any]) -> Deletion:
    return Deletion(
        object_type=object_type,
        id=row.id,
        deleted_at=_stamp(row.system_modstamp),
        master_record_id=row.master_record_id,
    )


class _Prepared:
    """A statement compiled once, run straight through the driver.

    SQLAlchemy builds it in the dialect's own form; parameters skip its per-row
    processing, which for these column types (text, integers, booleans) does nothing but
    costs more than the database's own work on the store's small, frequent statements.
    """

    def __init__(self, statement: Any, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self._sql = str(compiled)
        self._keys = tuple(keys)
        self._positional = bool(compiled.positional)
        if self._positional and tuple(compiled.positiontup or ()) != self._keys:
            raise AssertionError(f"unexpected parameter order in {self._sql}")

    def run(self, conn: Connection, rows: Iterable[tuple[object, ...]]) -> None:
        """Execute once per row; each row holds the values of ``keys``, in order.

        For SQLite, whose parameters are positional (PostgreSQL's many rows go by
        `_CopyBulk`).
        """
        if not self._positional:
            raise AssertionError("run() takes positional rows")
        conn.exec_driver_sql(self._sql, list(rows))

    def execute(self, conn: Connection, **params: object) -> CursorResult[Any]:
        """Execute once with ``params``, one per key."""
        values = tuple(params[key] for key in self._keys) if self._positional else params
        return conn.exec_driver_sql(self._sql, values)


class _CopyBulk:
    """PostgreSQL's fast path for many rows: ``COPY`` into a temporary table, then one
    ``INSERT ... SELECT ... ON CONFLICT`` from it, in the caller's transaction.

    Rows are tuples in the table's column order, as for `_Prepared.run`; they keep their
    order (the activity log's order) through a row number.
    """

    def __init__(self, table: Table, keys: Sequence[str], *, update: bool) -> None:
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        names = [c.name for c in table.c if c is not table.autoincrement_column]
        stage = Table(
            f"{table.name}_stage",
            MetaData(),
            Column("n", BigInteger),
            *(Column(name, table.c[name].type) for name in names),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DELETE ROWS",
        )
        self._create = str(CreateTable(stage, if_not_exists=True).compile(dialect=dialect))
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in ("n", *names))
        self._copy = f"COPY {quote(stage.name)} ({columns}) FROM STDIN"
        insert = postgresql.insert(table).from_select(
            names, select(*(stage.c[name] for name in names)).order_by(stage.c.n)
        )
        if update:
            insert = insert.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: insert.excluded[name] for name in names if name not in keys},
            )
        else:
            insert = insert.on_conflict_do_nothing(index_elements=list(keys))
        self._insert = str(insert.compile(dialect=dialect))

    def run(self, conn: Connection, rows: Iterable[tuple[object, ...]]) -> None:
        """Write ``rows`` to the table."""
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(self._create)
            with cursor.copy(self._copy) as copy:
                for n, row in enumerate(rows):
                    copy.write_row((n, *row))
            cursor.execute(self._insert)


class _Statements:
    """The store's frequent statements, built once, upserts in the dialect's own form."""

    def __init__(self, tables: Tables, dialect: Dialect) -> None:
        self._tables = tables
        self._insert = sqlite.insert if dialect.name == "sqlite" else postgresql.insert
        self.upsert_account: _Prepared | _CopyBulk
        self.upsert_contact: _Prepared | _CopyBulk
        self.insert_activity: _Prepared | _CopyBulk
        if dialect.name == "postgresql":
            self.upsert_account = _CopyBulk(tables.accounts, ("org", "id"), update=True)
            self.upsert_contact = _CopyBulk(tables.contacts, ("org", "id"), update=True)
            self.insert_activity = _CopyBulk(tables.activities, ("org", "id"), update=False)
        else:
            self.upsert_account = self._bulk(self._upsert(tables.accounts, ("org", "id")), dialect)
            self.upsert_contact = self._bulk(self._upsert(tables.contacts, ("org", "id")), dialect)
            self.insert_activity = self._bulk(
                self._insert(tables.activities).on_conflict_do_nothing(
                    index_elements=["org", "id"]
                ),
                dialect,
            )
        self.upsert_conversion = self._upsert(tables.conversions, ("org", "person_id"))
        self.upsert_watermark = self._upsert(tables.watermarks, ("org", "stream"))

        org = bindparam("org", type_=String)
        account_id = bindparam("account_id", type_=String)
        contacts, marks = tables.contacts, tables.watermarks
        self.watermark = _Prepared(
            select(marks.c.system_modstamp).where(
                marks.c.org == org, marks.c.stream == bindparam("stream")
            ),
            dialect,
            ("org", "stream"),
        )
        live = (contacts.c.org == org, contacts.c.account_id == account_id)
        self.count_contacts = _Prepared(
            select(func.count()).where(*live), dialect, ("org", "account_id")
        )
        self.contact_ids = _Prepared(
            select(contacts.c.id).where(*live).order_by(contacts.c.id),
            dialect,
            ("org", "account_id"),
        )
        account_is_one_of = self._one_of(contacts.c.account_id, dialect)
        self.contact_counts_of = _Prepared(
            select(contacts.c.account_id, func.count())
            .where(contacts.c.org == org, account_is_one_of)
            .group_by(contacts.c.account_id),
            dialect,
            ("org", "ids"),
        )
        self.contacts_of_accounts = _Prepared(
            select(contacts.c.account_id, contacts.c.id)
            .where(contacts.c.org == org, account_is_one_of)
            .order_by(contacts.c.account_id, contacts.c.id),
            dialect,
            ("org", "ids"),
        )
        self.accounts_of, self.contacts_of = (
            _Prepared(
                select(table).where(table.c.org == org, self._one_of(table.c.id, dialect)),
                dialect,
                ("org", "ids"),
            )
            for table in (tables.accounts, tables.contacts)
        )

    @staticmethod
    def _one_of(column: Any, dialect: Dialect) -> Any:
        """``column`` is one of the parameter ``ids``: one parameter, thousands of IDs."""
        if dialect.name == "sqlite":
            listed = func.json_each(bindparam("ids", type_=String)).table_valued("value")
            return column.in_(select(listed.c.value))
        # Not ``= ANY(:ids)``: on a sequential scan PostgreSQL compares each row with the
        # whole array; a set from unnest lets it hash or probe the index.
        ids = bindparam("ids", type_=postgresql.ARRAY(String))
        return column.in_(select(func.unnest(ids)))

    @staticmethod
    def _bulk(statement: Any, dialect: Dialect) -> _Prepared:
        table = statement.table
        # Only the columns rows give: not an autoincrementing key.
        keys = [c.name for c in table.c if c is not table.autoincrement_column]
        return _Prepared(statement, dialect, keys)

    def _upsert(self, table: Table, keys: Sequence[str]) -> Any:
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: statement.excluded[c.name] for c in table.c if c.name not in keys},
        )

    def contact_op(self, org: str, op: MoveContacts | DeleteContacts) -> Any:
        """The statement that carries out a `MoveContacts` or `DeleteContacts`."""
        table = self._tables.contacts
        if isinstance(op, MoveContacts):
            return (
                update(table)
                .where(table.c.org == org, table.c.account_id == op.from_account_id)
                .values(account_id=op.to_account_id)
            )
        # A deleted account's contacts become tombstones with their own stamps.
        return (
            update(table)
            .where(table.c.org == org, table.c.account_id == op.account_id)
            .values(deleted=True, account_id=None, master_record_id=None, fields="{}")
        )
