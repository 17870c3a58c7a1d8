"""The registry of a fleet's orgs: one row per org in the store's database.

Theory of operation: a row says how to reach the org (its source kind, a *reference* to
its credentials, options for the source: never a secret), how often each job runs, and
where the org stands: paused or not, each job's next due time, failures in a row, the
last run and the last error. The table lives in the same database as the synced data,
beside the store's tables, in a metadata of its own, and is created when first needed.

The scheduler *claims* the due orgs with one ``UPDATE``: it marks each with the time and
the job, and only an unclaimed org (or one whose claim is older than the claim timeout:
its message was lost) can be claimed. Two schedulers running at once therefore never
enqueue an org twice: the database lets one ``UPDATE`` claim each row. The worker that
runs the job clears the claim when it is done and writes the job's next due time. An org
is synced under the store's own per-org lock besides, so that even a message delivered
twice (a worker lost after it started, the message then given to another) never runs an
org twice at once.

Times are stored as integers, microseconds since the Unix epoch in UTC, as the store does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from attrs import field, frozen
from sqlalchemy import (
    URL,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    delete,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from acctsync._errors import ConfigurationError, StoreError
from acctsync.fleet._schedule import JOBS, Job, Pause, Retry
from acctsync.stores.sql._codec import micros, stamp
from acctsync.stores.sql._store import engine_url

__all__ = ["Claim", "FleetOrg", "Registry", "UnknownOrgError"]

_LONGEST: Final = timedelta(days=3660)  # ten years: beyond that an interval is a mistake
_CREATE_LOCK: Final = 0x61637473796E6366  # "actsyncf": one process creates the table


def _micros(moment: datetime) -> int:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ConfigurationError(f"the fleet's times are timezone-aware datetimes: {moment!r}")
    return micros(moment)


def _stamp(since_epoch: int | None) -> datetime | None:
    return None if since_epoch is None else stamp(since_epoch)


def database_url(database: str | URL) -> URL:
    """``database`` as a SQLAlchemy URL, PostgreSQL's with its driver named.

    Raises `ConfigurationError` without the text, which may hold a password.
    """
    try:
        return engine_url(database)
    except (ArgumentError, ValueError) as error:  # ValueError: a port that is no number
        raise ConfigurationError(f"not a database URL ({type(error).__name__}: {error})") from None


def shown(url: URL) -> str:
    """``url`` as it may be printed: without its password, nor its query, where drivers
    take passwords too (``?password=``)."""
    return url.set(query={}).render_as_string(hide_password=True)


def open_engine(database: str | URL, **options: Any) -> Engine:
    """A SQLAlchemy engine of ``database``; `ConfigurationError` as `database_url`, or
    when its dialect or driver is not installed."""
    url = database_url(database)
    try:
        return create_engine(url, **options)
    except (ImportError, ArgumentError) as error:  # NoSuchModuleError is an ArgumentError
        raise ConfigurationError(
            f"cannot open that database URL ({type(error).__name__}: {error})"
        ) from None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UnknownOrgError(ConfigurationError, LookupError):
    """The registry holds no org of that key."""

    def __init__(self, org: str) -> None:
        self.org = org
        super().__init__(f"no org {org!r} in the fleet's registry")


def define_table(table_prefix: str, schema: str | None) -> Table:
    """The registry's table, in a metadata of its own (the store's tables are not in it)."""
    return Table(
        f"{table_prefix}fleet_orgs",
        MetaData(schema=schema),
        Column("org", String(255), primary_key=True),
        Column("source", String(255), nullable=False),
        Column("credentials", String(255), nullable=False),
        Column("options", Text, nullable=False),
        Column("sync_every", Float, nullable=False),
        Column("reconcile_every", Float),
        Column("refresh_every", Float),
        Column("paused", Boolean, nullable=False),
        Column("paused_reason", Text),
        Column("failures", Integer, nullable=False),
        Column("sync_due", BigInteger, nullable=False),
        Column("reconcile_due", BigInteger),
        Column("refresh_due", BigInteger),
        Column("claimed_at", BigInteger),
        Column("claimed_job", String(16)),
        Column("started_at", BigInteger),
        Column("finished_at", BigInteger),
        Column("last_job", String(16)),
        Column("last_outcome", String(16)),
        Column("synced_at", BigInteger),
        Column("last_error", Text),
        Column("failed_at", BigInteger),
        Column("added_at", BigInteger, nullable=False),
    )


@frozen(kw_only=True)
class Claim:
    """A due job the scheduler handed out: run ``job`` for ``org``."""

    org: str
    job: Job


@frozen(kw_only=True)
class FleetOrg:
    """One org of the fleet, as the registry holds it.

    ``source`` is its source kind and ``credentials`` the reference its secrets are
    looked up by; ``options`` go to the source kind. ``sync_every`` is the sync's
    interval; ``reconcile_every`` and ``refresh_every`` those of the reconciliation and
    the formula refresh (None: never). Each job's next due time is in ``*_due``. An org
    with a ``claimed_at`` has a job (``claimed_job``) handed to a worker. ``started_at``
    and ``finished_at`` are of the last job a worker ran (``last_job``, ending with
    ``last_outcome``: ``ok``, ``rejected``, ``failed`` or ``skipped``), ``synced_at`` the
    start of the last sync or reconciliation that succeeded, and ``last_error`` the last
    failure's message (at ``failed_at``), kept after a later success. ``failures``
    counts the failures in a row.
    """

    org: str
    source: str
    credentials: str
    options: Mapping[str, Any] = field(factory=dict)
    sync_every: timedelta
    reconcile_every: timedelta | None
    refresh_every: timedelta | None
    paused: bool = False
    paused_reason: str | None = None
    failures: int = 0
    sync_due: datetime
    reconcile_due: datetime | None = None
    refresh_due: datetime | None = None
    claimed_at: datetime | None = None
    claimed_job: Job | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_job: Job | None = None
    last_outcome: str | None = None
    synced_at: datetime | None = None
    last_error: str | None = None
    failed_at: datetime | None = None
    added_at: datetime

    def every(self, job: Job) -> timedelta | None:
        """How often ``job`` runs (None: never)."""
        return {
            "sync": self.sync_every,
            "reconcile": self.reconcile_every,
            "refresh": self.refresh_every,
        }[job]

    @property
    def next_due(self) -> datetime:
        """When the org's next job comes due."""
        return min(d for d in (self.sync_due, self.reconcile_due, self.refresh_due) if d)

    def lag(self, now: datetime) -> timedelta | None:
        """How old the local copy may be: the time since the last successful sync started
        (changes since then may not be in it yet); None before the first."""
        return None if self.synced_at is None else now - self.synced_at

    def state(self, now: datetime) -> str:
        """``paused``; ``running`` or ``queued`` (claimed, and started or not yet);
        ``backoff`` after a failure; ``due``; or ``scheduled``."""
        if self.paused:
            return "paused"
        if self.claimed_at is not None:
            started = self.started_at is not None and self.started_at >= self.claimed_at
            return "running" if started else "queued"
        if self.failures:
            return "backoff"
        return "due" if self.next_due <= now else "scheduled"


def _interval(name: str, value: timedelta | None, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if not isinstance(value, timedelta) or not timedelta(0) < value <= _LONGEST:
        raise ConfigurationError(
            f"{name} must be a timedelta of more than 0, up to ten years: {value!r}"
        )
    return value.total_seconds()


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise ConfigurationError(f"{name} must be a string of 1 to 255 characters: {value!r}")
    return value


class Registry:
    """The fleet's orgs, in a table of the store's database (created on first use).

    ``engine`` is a SQLAlchemy `Engine` or a database URL, as for `SqlStore`; the table
    is ``{table_prefix}fleet_orgs``, in ``schema`` if given, and made unless ``create``
    is False: then a database without it raises `ConfigurationError`. ``clock`` gives
    the current time. Raises `StoreError` when the database fails.
    """

    def __init__(
        self,
        engine: Engine | str | URL,
        *,
        schema: str | None = None,
        table_prefix: str = "acctsync_",
        create: bool = True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._owns_engine = not isinstance(engine, Engine)
        self._engine = engine if isinstance(engine, Engine) else open_engine(engine)
        self._table = define_table(table_prefix, schema)
        self._clock = clock
        try:
            with self._transaction() as conn:
                if not create:
                    if not inspect(conn).has_table(self._table.name, schema=schema):
                        raise ConfigurationError(
                            f"the database holds no fleet registry ({self._table.name}):"
                            " add an org first"
                        )
                    return
                if conn.dialect.name == "postgresql":
                    # Two workers starting at once must not both create the table.
                    conn.execute(select(func.pg_advisory_xact_lock(_CREATE_LOCK)))
                self._table.create(conn, checkfirst=True)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Registry {shown(self._engine.url)} table={self._table.name!r}>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the registry uses."""
        return self._engine

    def close(self) -> None:
        """Release the database connections, if the registry created its engine."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except DBAPIError as error:
            # The driver's message, as the store gives it: not the statement and its values.
            raise StoreError(f"the database failed: {error.orig}") from error
        except SQLAlchemyError as error:
            raise StoreError(f"the database failed: {error}") from error

    # -- What a person does --------------------------------------------------------------

    def add(
        self,
        org: str,
        *,
        credentials: str,
        source: str = "salesforce",
        every: timedelta = timedelta(minutes=5),
        reconcile_every: timedelta | None = timedelta(days=1),
        refresh_every: timedelta | None = timedelta(hours=1),
        options: Mapping[str, Any] | None = None,
    ) -> FleetOrg:
        """Register ``org``, due for its first sync now.

        ``credentials`` is the reference its secrets are resolved by (see
        `environment_credentials`), never a secret; ``options`` (JSON values) go to the
        source kind. The first reconciliation and formula refresh come one of their
        intervals later: the first sync reads everything anyway. Raises
        `ConfigurationError` when the org is registered already.
        """
        _check_text("org", org)
        now = self._clock()
        row = {
            "org": org,
            "source": _check_text("source", source),
            "credentials": _check_text("credentials", credentials),
            "options": self._options(options or {}),
            "sync_every": _interval("every", every, optional=False),
            "reconcile_every": _interval("reconcile_every", reconcile_every, optional=True),
            "refresh_every": _interval("refresh_every", refresh_every, optional=True),
            "paused": False,
            "failures": 0,
            "sync_due": _micros(now),
            "reconcile_due": _later(now, reconcile_every),
            "refresh_due": _later(now, refresh_every),
            "added_at": _micros(now),
        }
        try:
            with self._transaction() as conn:
                conn.execute(self._table.insert().values(**row))
        except StoreError as error:
            if isinstance(error.__cause__, IntegrityError):  # the org's key is taken
                raise ConfigurationError(f"org {org!r} is registered already") from None
            raise
        return self._get(org)

    @staticmethod
    def _options(options: Mapping[str, Any]) -> str:
        try:
            return json.dumps(dict(options), allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"options must be JSON values: {error}") from None

    def remove(self, org: str) -> bool:
        """Take ``org`` out of the fleet; whether it was in. Its synced data stays."""
        table = self._table
        with self._transaction() as conn:
            return conn.execute(delete(table).where(table.c.org == org)).rowcount == 1

    def pause(self, org: str, reason: str = "paused by hand") -> FleetOrg:
        """Stop scheduling ``org`` until `resume`; a job running now finishes."""
        self._update(org, paused=True, paused_reason=reason)
        return self._get(org)

    def resume(self, org: str) -> FleetOrg:
        """Schedule ``org`` again, its sync due now and its failures forgotten."""
        now = _micros(self._clock())
        self._update(org, paused=False, paused_reason=None, failures=0, sync_due=now)
        return self._get(org)

    def _update(self, org: str, **values: Any) -> None:
        table = self._table
        with self._transaction() as conn:
            if conn.execute(update(table).where(table.c.org == org).values(**values)).rowcount:
                return
        raise UnknownOrgError(org)

    # -- Reads ---------------------------------------------------------------------------

    def get(self, org: str) -> FleetOrg | None:
        """The org ``org``, or None."""
        table = self._table
        with self._transaction() as conn:
            row = conn.execute(select(table).where(table.c.org == org)).first()
        return None if row is None else _org(row._mapping)

    def _get(self, org: str) -> FleetOrg:
        found = self.get(org)
        if found is None:
            raise UnknownOrgError(org)
        return found

    def orgs(self) -> list[FleetOrg]:
        """Every org of the fleet, by key."""
        table = self._table
        with self._transaction() as conn:
            rows = conn.execute(select(table).order_by(table.c.org)).all()
        return [_org(row._mapping) for row in rows]

    # -- What the scheduler does ---------------------------------------------------------

    def claim_due(self, *, stale_after: timedelta) -> list[Claim]:
        """Claim every org not paused with a job due, and not claimed in the last
        ``stale_after``: each claim is one job to hand to a worker.

        The reconciliation goes first, then the formula refresh, then the sync: one job
        per org at a time, the others stay due.
        """
        now = self._clock()
        at, stale = _micros(now), _micros(now - stale_after)
        t = self._table
        reconcile, refresh = t.c.reconcile_due <= at, t.c.refresh_due <= at
        job = case((reconcile, "reconcile"), (refresh, "refresh"), else_="sync")
        claimable = and_(
            ~t.c.paused,
            or_(t.c.claimed_at.is_(None), t.c.claimed_at < stale),
            or_(t.c.sync_due <= at, reconcile, refresh),
        )
        with self._transaction() as conn:
            claimed = conn.execute(
                update(t)
                .where(claimable)
                .values(claimed_at=at, claimed_job=job)
                .returning(t.c.org, t.c.claimed_job)
            ).all()
        return [Claim(org=org, job=cast(Job, kind)) for org, kind in sorted(claimed)]

    def release(self, org: str) -> None:
        """Let ``org`` be claimed again now (its job was never handed out)."""
        t = self._table
        with self._transaction() as conn:
            conn.execute(update(t).where(t.c.org == org).values(claimed_at=None, claimed_job=None))

    # -- What a worker does --------------------------------------------------------------

    def started(self, org: str, job: Job, at: datetime) -> None:
        """A worker started ``job`` of ``org`` (holding the org's store) ``at``."""
        t = self._table
        with self._transaction() as conn:
            conn.execute(
                update(t).where(t.c.org == org).values(started_at=_micros(at), last_job=job)
            )

    def succeeded(self, org: str, job: Job, *, started: datetime, outcome: str) -> None:
        """``job`` of ``org``, started at ``started``, ended with ``outcome`` (``ok`` or
        ``rejected``): its next run is one interval after this one started."""
        t = self._table
        every = t.c[f"{job}_every"]
        # In the database: the interval may have been changed since the job started.
        next_due = sql_cast(_micros(started) + every * 1_000_000, BigInteger)
        values: dict[str, Any] = {f"{job}_due": next_due, "failures": 0}
        if job != "refresh":
            values["synced_at"] = _micros(started)
        self._ended(org, job, outcome, values)

    def skipped(self, org: str, job: Job, *, retry_at: datetime) -> None:
        """``job`` of ``org`` did not run (the store was held, or the source cannot do
        it): it is due again at ``retry_at``."""
        self._ended(org, job, "skipped", {f"{job}_due": _micros(retry_at)})

    def failed(self, org: str, job: Job, *, error: str, decision: Pause | Retry) -> None:
        """``job`` of ``org`` failed with ``error``: pause the org, or retry the job."""
        now = _micros(self._clock())
        t = self._table
        values: dict[str, Any] = {
            "failures": t.c.failures + 1,
            "last_error": error,
            "failed_at": now,
        }
        if isinstance(decision, Pause):
            values.update(paused=True, paused_reason=decision.reason)
        else:
            values[f"{job}_due"] = _micros(decision.at)
        self._ended(org, job, "failed", values)

    def _ended(self, org: str, job: Job, outcome: str, values: dict[str, Any]) -> None:
        if job not in JOBS:
            raise ConfigurationError(f"job must be one of {', '.join(JOBS)}: {job!r}")
        t = self._table
        now = _micros(self._clock())
        with self._transaction() as conn:
            conn.execute(
                update(t)
                .where(t.c.org == org)
                .values(
                    claimed_at=None,
                    claimed_job=None,
                    finished_at=now,
                    last_job=job,
                    last_outcome=outcome,
                    **values,
                )
            )


def _later(start: datetime, every: timedelta | None) -> int | None:
    return None if every is None else _micros(start + every)


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None or math.isnan(value) else timedelta(seconds=value)


def _org(row: RowMapping) -> FleetOrg:
    every = _seconds(row["sync_every"])
    sync_due = _stamp(row["sync_due"])
    added_at = _stamp(row["added_at"])
    # NOT NULL columns
    assert every is not None
    assert sync_due is not None
    assert added_at is not None
    return FleetOrg(
        org=row["org"],
        source=row["source"],
        credentials=row["credentials"],
        options=json.loads(row["options"]),
        sync_every=every,
        reconcile_every=_seconds(row["reconcile_every"]),
        refresh_every=_seconds(row["refresh_every"]),
        paused=bool(row["paused"]),
        paused_reason=row["paused_reason"],
        failures=row["failures"],
        sync_due=sync_due,
        reconcile_due=_stamp(row["reconcile_due"]),
        refresh_due=_stamp(row["refresh_due"]),
        claimed_at=_stamp(row["claimed_at"]),
        claimed_job=row["claimed_job"],
        started_at=_stamp(row["started_at"]),
        finished_at=_stamp(row["finished_at"]),
        last_job=row["last_job"],
        last_outcome=row["last_outcome"],
        synced_at=_stamp(row["synced_at"]),
        last_error=row["last_error"],
        failed_at=_stamp(row["failed_at"]),
        added_at=added_at,
    )
