"""One runner per org: how each database makes a second runner wait.

PostgreSQL has session advisory locks: the runner's connection takes one keyed by the
org, and the server drops it when the connection ends, a killed process included.

SQLite has no lock that outlives a transaction, so the runner writes a *lease* row,
naming itself, in a ``BEGIN IMMEDIATE`` transaction. Every write of the runner renews
the lease in its own transaction and fails if the lease is no longer its own, so a runner
whose lease was taken can never write. A lease ends when its runner releases it, when it
expires, or at once when its process is gone (SQLite databases are local to one machine,
so the process can be asked after).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from typing import Protocol

from sqlalchemy import Connection, bindparam, delete, func, select, text, update

from acctsync._errors import LockLostError, LockTimeoutError
from acctsync.stores.sql._schema import Tables

__all__ = ["WRITE", "AdvisoryLock", "Lease", "RunnerLock"]

WRITE = "acctsync_write"
"""The execution option that makes a SQLite transaction begin with ``BEGIN IMMEDIATE``."""

_FIRST_WAIT = 0.01
_LONGEST_WAIT = 0.5


class RunnerLock(Protocol):
    """Held on the runner's own connection for as long as it runs."""

    def acquire(self, conn: Connection) -> None:
        """Wait for the lock, up to the timeout (`LockTimeoutError`)."""
        ...

    def renew(self, conn: Connection) -> None:
        """Inside each write transaction: `LockLostError` if the lock is no longer held."""
        ...

    def release(self, conn: Connection) -> None:
        """Give the lock up."""
        ...


def _wait_until(deadline: float, delay: float) -> float:
    """Sleep for ``delay`` (never past ``deadline``) and return the next delay."""
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
    return min(delay * 2, _LONGEST_WAIT)


def _now_us() -> int:
    return time.time_ns() // 1000


class AdvisoryLock:
    """A PostgreSQL session advisory lock keyed by the tables and the org."""

    def __init__(self, tables: Tables, org: str, timeout: float) -> None:
        self._tables = tables
        self._org = org
        self._timeout = timeout
        self._session: object = None
        self._key = 0  # known once the tables' schema is (see `_keyed`)

    def _keyed(self, conn: Connection) -> int:
        """The lock's key: of the schema the tables are in, not of how it was named, so
        that ``schema=None`` (the search path) and ``schema="public"`` take one lock."""
        if not self._key:
            table = conn.dialect.identifier_preparer.format_table(self._tables.accounts)
            schema = conn.scalar(
                text(
                    "SELECT relnamespace::regnamespace::text FROM pg_class"
                    " WHERE oid = to_regclass(:t)"
                ),
                {"t": table},
            )
            name = f"acctsync:{schema}:{self._tables.accounts.name}:{self._org}"
            digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
            self._key = int.from_bytes(digest, "big", signed=True)
        return self._key

    def acquire(self, conn: Connection) -> None:
        """Poll ``pg_try_advisory_lock`` with growing waits until it succeeds or time is up."""
        deadline = time.monotonic() + self._timeout
        delay = _FIRST_WAIT
        while True:
            with conn.begin():
                if conn.scalar(select(func.pg_try_advisory_lock(self._keyed(conn)))):
                    self._session = conn.connection.dbapi_connection
                    return
                holder = self._holder(conn)
            if time.monotonic() >= deadline:
                raise LockTimeoutError(self._org, self._timeout, holder)
            delay = _wait_until(deadline, delay)

    def renew(self, conn: Connection) -> None:
        """`LockLostError` if the connection was replaced: the lock ended with the old one.

        (SQLAlchemy reconnects a connection whose session the server dropped.)
        """
        if conn.connection.dbapi_connection is not self._session:
            raise LockLostError(self._org)

    def release(self, conn: Connection) -> None:
        """Unlock on the same connection."""
        with conn.begin():
            conn.scalar(select(func.pg_advisory_unlock(self._key)))

    def _holder(self, conn: Connection) -> str | None:
        # pg_locks splits a bigint advisory key into two 32-bit halves.
        unsigned = self._key & 0xFFFF_FFFF_FFFF_FFFF
        pid = conn.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = :hi AND objid = :lo AND objsubid = 1"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF},
        )
        return None if pid is None else f"PostgreSQL backend pid {pid}"


class Lease:
    """A lease row in the store's ``locks`` table, for SQLite."""

    def __init__(self, tables: Tables, org: str, timeout: float, duration: float) -> None:
        self._table = tables.locks
        self._org = org
        self._timeout = timeout
        self._duration_us = int(duration * 1_000_000)
        self._token = secrets.token_hex(16)
        self._host = socket.gethostname()
        self._pid = os.getpid()
        # Built once: every write renews the lease, a follower's a few times a second.
        self._renewal = (
            update(self._table)
            .where(self._table.c.org == org, self._table.c.token == self._token)
            .values(expires_at=bindparam("expires_at"))
        )

    def acquire(self, conn: Connection) -> None:
        """Take the lease when it is free, expired, or its runner's process is gone."""
        table = self._table
        deadline = time.monotonic() + self._timeout
        delay = _FIRST_WAIT
        while True:
            # Looked at first outside a write: the holder's writes may keep the database's
            # write lock for a second (`SqlStore.group_commits`), and a held lease is seen
            # without waiting for it.
            with conn.execution_options(**{WRITE: False}).begin():
                holder = self._holder(conn)
            if holder is None:
                # IMMEDIATE: a deferred transaction that reads first cannot write once
                # another connection wrote meanwhile, and SQLite refuses it at once.
                with conn.execution_options(**{WRITE: True}).begin():
                    holder = self._holder(conn)
                    if holder is None:
                        conn.execute(delete(table).where(table.c.org == self._org))
                        conn.execute(
                            table.insert().values(
                                org=self._org,
                                token=self._token,
                                holder=f"pid {self._pid} on {self._host}",
                                host=self._host,
                                pid=self._pid,
                                expires_at=_now_us() + self._duration_us,
                            )
                        )
                        return
            if time.monotonic() >= deadline:
                raise LockTimeoutError(self._org, self._timeout, holder)
            delay = _wait_until(deadline, delay)

    def renew(self, conn: Connection) -> None:
        """Extend the lease; `LockLostError` if another runner took it."""
        renewed = conn.execute(self._renewal, {"expires_at": _now_us() + self._duration_us})
        if renewed.rowcount != 1:
            raise LockLostError(self._org)

    def release(self, conn: Connection) -> None:
        """Delete the lease if it is still this runner's."""
        table = self._table
        with conn.execution_options(**{WRITE: True}).begin():
            conn.execute(
                delete(table).where(table.c.org == self._org, table.c.token == self._token)
            )

    def _holder(self, conn: Connection) -> str | None:
        """Who holds the lease, None when it is free, expired or its process gone."""
        table = self._table
        row = conn.execute(select(table).where(table.c.org == self._org)).first()
        if row is None or self._is_over(row.expires_at, row.host, row.pid):
            return None
        return str(row.holder)

    def _is_over(self, expires_at: int, host: str, pid: int) -> bool:
        if expires_at <= _now_us():
            return True
        return host == self._host and not _alive(pid)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # signal 0 there is CTRL_C_EVENT: rely on the lease's expiry
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True
