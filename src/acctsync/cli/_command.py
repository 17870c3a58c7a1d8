"""What every command shares: its database and org options, the checks made before the
database is opened, and the library's errors turned into exit codes.

Every command checks all its arguments before it opens the database, so that a bad one
writes nothing (not even a new SQLite file). A failure is one line on stderr (and, with
``--json``, one error document on stdout) naming what failed: the database by its path
or its URL without the password, the org, the record.
"""

from __future__ import annotations

import functools
import logging
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from acctsync._errors import (
    AcctSyncError,
    AlreadyAContactError,
    ConfigurationError,
    InvalidRecordError,
    LockTimeoutError,
    NoAccountError,
    SourceError,
    StoreError,
    UnknownContactError,
    UnknownFieldError,
)
from acctsync.cli._exits import ExitCode
from acctsync.cli._logs import logging_options, logging_to_stderr
from acctsync.cli._output import Output
from acctsync.cli._params import DATABASE, Database, Seconds, SettingError
from acctsync.cli._sources import budget_exceeded

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore

__all__ = [
    "UnknownRecordError",
    "existing",
    "held",
    "lock_timeout",
    "open_store",
    "reporting",
    "store_options",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_log = logging.getLogger("acctsync.cli")


class UnknownRecordError(AcctSyncError, LookupError):
    """A command named an account or contact the database does not hold live.

    ``deleted_at`` and ``master_record_id`` are its tombstone's, when Salesforce deleted
    it (and merged it into that record).
    """

    def __init__(
        self,
        object_type: str,
        record_id: str,
        *,
        deleted_at: datetime | None = None,
        master_record_id: str | None = None,
    ):
        self.object_type = object_type
        self.record_id = record_id
        self.deleted_at = deleted_at
        self.master_record_id = master_record_id
        name = f"{object_type.lower()} {record_id!r}"
        if deleted_at is None:
            message = f"no {name} in the store"
        else:
            stamp = deleted_at.astimezone(UTC).isoformat()
            merged = f", merged into {master_record_id!r}" if master_record_id else ""
            message = f"{name} was deleted in Salesforce at {stamp}{merged}"
        super().__init__(message)


# Checked in this order: a lock timeout is a store error, and gets its own code.
_EXIT_CODES: Final[
    tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], ExitCode], ...]
] = (
    (LockTimeoutError, ExitCode.LOCKED),
    (StoreError, ExitCode.STORE),
    (SourceError, ExitCode.SOURCE),
    (
        (
            UnknownContactError,
            UnknownRecordError,
            NoAccountError,
            UnknownFieldError,
            AlreadyAContactError,
        ),
        ExitCode.REFUSED,
    ),
    (AcctSyncError, ExitCode.UNEXPECTED),
)


def reporting(command: Callable[..., ExitCode]) -> Callable[..., None]:
    """Run ``command(out, ...)`` with the log on stderr, and exit with its code, or with
    its error's."""

    @functools.wraps(command)
    def run(**options: Any) -> None:
        out = Output(as_json=bool(options.get("as_json")))
        database = options.get("database")
        with logging_to_stderr(click.get_current_context()):
            try:
                code = command(out, **options)
            except KeyboardInterrupt:
                code = _report_interruption(out)
            except Exception as error:
                if _interrupted(error):
                    # Raised while Ctrl-C unwound the command (a connection caught in the
                    # middle of a transaction, say): the interruption is what happened.
                    _log.debug("an error while interrupted", exc_info=True)
                    code = _report_interruption(out)
                elif isinstance(error, ConfigurationError | InvalidRecordError):
                    # A setting the library refused before it touched anything: a usage
                    # error, reported as click reports its own.
                    raise click.UsageError(str(error)) from None
                elif isinstance(error, AcctSyncError):
                    code = (
                        ExitCode.BUDGET
                        if budget_exceeded(error)
                        else next(code for kind, code in _EXIT_CODES if isinstance(error, kind))
                    )
                    with _uninterrupted():
                        out.error(code, error, message=_message(error, database))
                else:
                    raise
        raise click.exceptions.Exit(int(code))

    return run


def _interrupted(error: BaseException) -> bool:
    """Whether ``error`` was raised while a `KeyboardInterrupt` was being handled."""
    context = error.__context__
    while context is not None:
        if isinstance(context, KeyboardInterrupt):
            return True
        context = context.__context__
    return False


def _report_interruption(out: Output) -> ExitCode:
    # From here the command only reports and exits: a further Ctrl-C would only cut that
    # short, with a traceback.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    out.error(ExitCode.INTERRUPTED, "interrupted")
    return ExitCode.INTERRUPTED


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C ignored while a failure is reported: the report is what the user waits for,
    and a traceback out of the middle of it would hide it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _message(error: AcctSyncError, database: object) -> str | None:
    """``error`` in the command's words where the library names an argument (its option)
    or leaves out the database; None for the error's own message."""
    if isinstance(error, UnknownFieldError):
        near = error.close_matches
        hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
        return (
            f"{error.object_type} has no field {error.field!r}{hint}"
            " (--allow-new-field adds it as a local field)"
        )
    if isinstance(error, StoreError) and not isinstance(error, LockTimeoutError):
        # The database's own message may run over lines (psycopg's does), and never
        # says which database: a scheduler's log holds many.
        text = " ".join(str(error).split())
        return f"{database.shown}: {text}" if isinstance(database, Database) else text
    return None


def store_options(function: _F) -> _F:
    """``--db``, ``--org``, ``--json`` and the logging options, which every store command
    takes."""
    function = logging_options(function)
    function = click.option(
        "--json", "as_json", is_flag=True, help="Write one JSON document to stdout."
    )(function)
    function = click.option(
        "--org",
        metavar="ORG",
        default="default",
        show_default=True,
        envvar="ACCTSYNC_ORG",
        help="The org key: one database holds many orgs. [env: ACCTSYNC_ORG]",
    )(function)
    return database_option(function)


def database_option(function: _F) -> _F:
    """``--db``, required: a URL or a path, or ``ACCTSYNC_DB``."""
    return click.option(
        "--db",
        "database",
        type=DATABASE,
        required=True,
        envvar="ACCTSYNC_DB",
        help="A SQLAlchemy URL, or a path to a SQLite file. [env: ACCTSYNC_DB]",
    )(function)


def lock_timeout(function: _F) -> _F:
    """``--lock-timeout``: how long a command that writes waits for the org's runner."""
    return click.option(
        "--lock-timeout",
        type=Seconds(),
        default=30.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for another runner of the org to finish.",
    )(function)


def open_store(database: Database, *, org: str, lock_timeout: float = 30.0) -> SqlStore:
    """The org's store in ``database``, which the command has checked."""
    from acctsync.stores.sql import SqlStore

    return SqlStore(database.url, org=org, lock_timeout=lock_timeout)


def existing(database: Database) -> None:
    """Check ``database`` for a command that reads what a sync wrote: its URL, its
    driver, a SQLite file that is there and writable, and acctsync tables in it.

    Reading must not create the tables, so they are looked for through a bare engine,
    before a `SqlStore` would create them (and put a SQLite file in WAL mode). A server
    that cannot be reached raises `StoreError`, as it would for a `SqlStore`.
    """
    database.check()
    if not database.exists():
        raise SettingError(f"no database at {database.path}", option="--db")
    database.check_writable()
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from acctsync.stores.sql._schema import Tables

    meta = Tables.define("acctsync_", None).meta
    engine = create_engine(database.url)
    try:
        with engine.connect() as conn:
            held = inspect(conn).has_table(meta.name)
    except SQLAlchemyError as error:
        reason = error.orig if isinstance(error, DBAPIError) else error
        if database.path is None:  # a server: down, or refusing us
            raise StoreError(f"the database failed: {reason}") from error
        raise SettingError(f"cannot read {database.path}: {reason}", option="--db") from None
    finally:
        engine.dispose()
    if not held:
        raise SettingError(
            f"{database.shown} holds no acctsync tables: sync into it first", option="--db"
        )


def held(store: SqlStore, database: Database) -> None:
    """Refuse an org the database holds nothing of, naming those it holds: a typo in
    ``--org`` would otherwise read as an empty org."""
    org = store.org
    orgs = store.orgs()
    if org in orgs:
        return
    if not orgs:
        raise SettingError(
            f"{database.shown} holds no org yet: sync into it first", option="--org"
        )
    named = ", ".join(map(repr, orgs))
    hint = f" (--org {shlex.quote(orgs[0])})" if len(orgs) == 1 else ""
    raise SettingError(
        f"{database.shown} holds no org {org!r}; it holds {named}{hint}", option="--org"
    )
