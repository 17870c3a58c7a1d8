"""`Fleet`: what the scheduler and the workers of one fleet do, without Celery.

Theory of operation: the scheduler's `Fleet.tick` claims the due jobs in the registry;
Celery carries each claim to a worker, whose `Fleet.run` runs it. A run resolves the org's
credentials and makes its source, then holds the org's store (`SqlStore.exclusive`: a
PostgreSQL advisory lock, which the server drops with the connection of a killed worker)
for the job and the record of its run. A store held by another runner is left to it: the
job is skipped, and due again one interval later. Every other failure is the org's own:
it is recorded, and the org backs off or is paused (`Backoff`), while the worker goes on
with the next org.

One `Fleet` serves the threads of a worker process: each job makes its own store and
source, and they share the process's database engine, made on first use (after a
prefork pool forked), so that its connections are the process's own.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Final

from attrs import Attribute, define, field
from sqlalchemy import URL, Engine

from acctsync._engine import SyncEngine
from acctsync._errors import AcctSyncError, ConfigurationError, LockTimeoutError
from acctsync._protocols import CompleteSource, FormulaSource, MeteredSource, Source
from acctsync._report import SyncReport
from acctsync.fleet._registry import (
    Claim,
    FleetOrg,
    Registry,
    database_url,
    open_engine,
    shown,
)
from acctsync.fleet._schedule import JOBS, Backoff, Job
from acctsync.fleet._sources import CredentialsResolver, environment_credentials, source_factory
from acctsync.stores.sql import SqlStore, SyncRun

__all__ = ["Fleet"]

_log = logging.getLogger("acctsync.fleet")

_OPERATIONS: Final[dict[Job, Callable[[SyncEngine], SyncReport]]] = {
    "sync": SyncEngine.sync,
    "reconcile": SyncEngine.reconcile,
    "refresh": SyncEngine.refresh_formulas,
}
# What each job needs of the source beyond reading changes.
_NEEDS: Final[dict[Job, type | None]] = {
    "sync": None,
    "reconcile": CompleteSource,
    "refresh": FormulaSource,
}

# How a formula refresh's run is labelled, as `acctsync refresh-formulas` labels its own:
# `acctsync status --check` takes the last run without it for the org's last sync.
_REFRESH_LABEL: Final = "formula fields of "


def _utc_now() -> datetime:
    return datetime.now(UTC)


# Checked here, once: a setting that the store or the engine refused only when a job
# made them would be taken for each org's own failure, and pause every org.
def _seconds(instance: object, attribute: Attribute[float], value: float) -> None:
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not number or not 0 < value < math.inf:
        raise ConfigurationError(f"{attribute.name} must be a number of seconds > 0: {value!r}")


def _count(instance: object, attribute: Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an int >= 1: {value!r}")


def _duration(instance: object, attribute: Attribute[timedelta], value: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigurationError(f"{attribute.name} must be a timedelta > 0: {value!r}")


def _database(instance: object, attribute: Attribute[str | URL], value: str | URL) -> None:
    database_url(value)


@define(repr=False)
class Fleet:
    """The jobs of a fleet whose registry and stores are in ``database`` (a URL).

    ``credentials`` resolves an org's credentials reference (the environment by default);
    ``backoff`` decides what a failure does; ``lock_timeout`` is how long a job waits for
    an org's store that another runner holds before it skips; ``claim_timeout`` is how
    long a claimed job may wait in the queue before the scheduler hands it out again
    (its message was lost); ``page_size`` is the engine's. ``pool_size`` is how many
    connections to the database a worker process keeps open: a job holds one while it
    runs, and briefly a second.
    """

    database: str | URL = field(validator=_database)
    credentials: CredentialsResolver = field(default=environment_credentials, kw_only=True)
    backoff: Backoff = field(factory=Backoff, kw_only=True)
    lock_timeout: float = field(default=10.0, kw_only=True, validator=_seconds)
    claim_timeout: timedelta = field(default=timedelta(hours=1), kw_only=True, validator=_duration)
    page_size: int = field(default=2000, kw_only=True, validator=_count)
    pool_size: int = field(default=10, kw_only=True, validator=_count)
    clock: Callable[[], datetime] = field(default=_utc_now, kw_only=True)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)
    _made: tuple[int, Engine, Registry] | None = field(default=None, init=False)

    def __repr__(self) -> str:
        return f"<Fleet {shown(database_url(self.database))}>"

    def _opened(self) -> tuple[Engine, Registry]:
        """This process's engine and registry, made on first use in the process."""
        with self._lock:
            made = self._made
            if made is None or made[0] != os.getpid():
                if made is not None:
                    # The parent's connections, inherited by a fork: left to the parent,
                    # which a close from here would cut.
                    made[1].dispose(close=False)
                # Beyond pool_size, connections open as the threads need them (a job
                # holds one, and briefly a second for the registry) and close after.
                engine = open_engine(
                    self.database,
                    pool_size=self.pool_size,
                    max_overflow=-1,
                    pool_pre_ping=True,
                )
                try:
                    registry = Registry(engine, clock=self.clock)
                except BaseException:
                    engine.dispose()
                    raise
                made = self._made = (os.getpid(), engine, registry)
            return made[1], made[2]

    @property
    def registry(self) -> Registry:
        """The fleet's registry, on this process's engine."""
        return self._opened()[1]

    def close(self) -> None:
        """Close this process's database connections."""
        with self._lock:
            made, self._made = self._made, None
        if made is not None and made[0] == os.getpid():
            made[1].dispose()

    # -- The scheduler -------------------------------------------------------------------

    def tick(self) -> list[Claim]:
        """Claim the jobs due now, each org's once (see `Registry.claim_due`)."""
        return self.registry.claim_due(stale_after=self.claim_timeout)

    # -- A worker ------------------------------------------------------------------------

    def run(self, org: str, job: str) -> str:
        """Run ``job`` (one of `JOBS`) of ``org``, record it, and schedule the next; how
        it ended: ``ok``, ``rejected`` (the run rejected records), ``failed``,
        ``skipped`` (the store was held, or the source cannot do the job), ``paused`` or
        ``unknown`` (the org was paused or removed meanwhile: nothing ran).

        A failure is recorded in the registry (and in the store's runs, when the job
        started) and decided by `Backoff`; only a failure of the database that holds the
        registry is raised.
        """
        if job not in JOBS:
            raise ConfigurationError(f"job must be one of {', '.join(JOBS)}: {job!r}")
        registry = self.registry
        entry = registry.get(org)
        if entry is None:
            return "unknown"
        if entry.paused:
            registry.release(org)
            return "paused"
        try:
            return self._run(entry, job)
        except Exception as error:  # the org's own failure: the worker goes on
            every = entry.every(job) or entry.sync_every
            decision = self.backoff.after(
                error, every=every, failures=entry.failures, now=self.clock()
            )
            message = f"{type(error).__name__}: {error}"
            _log.warning("%s of org %r failed: %s (%r)", job, org, message, decision)
            registry.failed(org, job, error=message, decision=decision)
            return "failed"

    def _run(self, entry: FleetOrg, job: Job) -> str:
        org, registry = entry.org, self.registry
        every = entry.every(job) or entry.sync_every
        source = source_factory(entry.source)(entry, self.credentials(entry.credentials))
        needs = _NEEDS[job]
        if needs is not None and not isinstance(source, needs):
            _log.info("org %r: its source cannot %s; skipped", org, job)
            registry.skipped(org, job, retry_at=self.clock() + every)
            return "skipped"
        store = SqlStore(self._opened()[0], org=org, lock_timeout=self.lock_timeout)
        engine = SyncEngine(source=source, store=store, page_size=self.page_size)
        what = f"{_REFRESH_LABEL}{entry.source}" if job == "refresh" else f"{entry.source} {job}"
        label = f"{what}, worker {socket.gethostname()} pid {os.getpid()}"
        try:
            # Held across the job and its records, so that they are of this job: a runner
            # that takes the org next finds the registry saying so.
            with store.exclusive():
                started = self.clock()
                registry.started(org, job, started)
                outcome = self._record(store, engine, source, job, started, label)
                registry.succeeded(org, job, started=started, outcome=outcome)
        except LockTimeoutError as error:
            _log.info("org %r: %s; skipped", org, error)
            registry.skipped(org, job, retry_at=self.clock() + every)
            return "skipped"
        return outcome

    def _record(
        self,
        store: SqlStore,
        engine: SyncEngine,
        source: Source,
        job: Job,
        started: datetime,
        label: str,
    ) -> str:
        sent = source.requests_made if isinstance(source, MeteredSource) else 0
        try:
            report = _OPERATIONS[job](engine)
        except AcctSyncError as error:
            requests = source.requests_made - sent if isinstance(source, MeteredSource) else 0
            failed = SyncRun(
                started_at=started,
                finished_at=self.clock(),
                outcome="failed",
                source=label,
                error=f"{type(error).__name__}: {error}",
                api_requests=requests,
            )
            # The job's own error is what matters; a store that failed may fail this too.
            with suppress(AcctSyncError):
                store.record_run(failed)
            raise
        run = SyncRun.from_report(
            report, started_at=started, finished_at=self.clock(), source=label
        )
        return store.record_run(run).outcome
