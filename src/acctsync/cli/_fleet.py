"""``acctsync fleet``: the registry of a fleet's orgs, and where each org stands.

The commands edit and read the registry only; Celery workers run the syncs (see the
group's help and ``docs/scale.md``). Each command takes ``--db`` as the others do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import click
from rich.markup import escape
from rich.table import Table

from acctsync._errors import ConfigurationError
from acctsync.cli._command import database_option, reporting
from acctsync.cli._exits import ExitCode
from acctsync.cli._logs import logging_options
from acctsync.cli._output import Output, iso, when
from acctsync.cli._params import Database, Seconds, SettingError

if TYPE_CHECKING:
    from acctsync.fleet import FleetOrg, Registry

__all__ = ["fleet"]

_NEVER: Final = 0.0


@click.group(
    short_help="The orgs that Celery workers sync: add, pause, resume, list, status.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def fleet() -> None:
    """The registry of a fleet's orgs, in the database the syncs write to.

    Celery workers sync the orgs, each every few minutes (extra fleet). Start them with
    the same database and a broker in the environment:

    \b
        export ACCTSYNC_DB=postgresql+psycopg://sync@db/acctsync
        export CELERY_BROKER_URL=amqp://sync:secret@rabbitmq//
        celery -A acctsync.fleet worker --concurrency 8   # on as many machines as needed
        celery -A acctsync.fleet beat                     # once: the scheduler

    Each org's credentials come from the workers' environment (ACME_SESSION_ID and
    ACME_INSTANCE_URL for --credentials ACME), never from the database.
    """


def _command(function: Callable[..., ExitCode]) -> Callable[..., None]:
    """A fleet command ``function(out, ...)``: ``--db``, ``--json`` and the logging
    options, and the library's errors turned into exit codes as every command's are."""
    command: Callable[..., None] = logging_options(reporting(function))
    command = click.option(
        "--json", "as_json", is_flag=True, help="Write one JSON document to stdout."
    )(command)
    return database_option(command)


@contextmanager
def _registry(database: Database, *, creates: bool = False) -> Iterator[Registry]:
    """The registry in ``database``, made there if ``creates`` (only ``add`` does): a
    database without one is refused, and left as it was."""
    from acctsync.fleet import Registry

    database.check()
    if not creates and not database.exists():
        raise SettingError(f"no database at {database.path}", option="--db")
    database.check_writable()
    try:
        registry = Registry(database.url, create=creates)
    except ConfigurationError as error:  # no registry in it
        raise SettingError(f"{database.shown}: {error}", option="--db") from None
    with registry:
        yield registry


def _unknown(*orgs: str) -> SettingError:
    return SettingError(f"no org {', '.join(map(repr, orgs))} in the fleet", option="ORG")


def _interval(seconds: float | None) -> timedelta | None:
    return None if seconds is None or seconds == _NEVER else timedelta(seconds=seconds)


def _options(entries: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for entry in entries:
        name, equals, text = entry.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{entry!r} is not NAME=JSON", param_hint="'--option'")
        try:
            options[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[name.strip()] = text  # a bare word: the text itself
    return options


@fleet.command(short_help="Register an org, due for its first sync now.")
@click.argument("org")
@click.option(
    "--credentials",
    metavar="REFERENCE",
    required=True,
    help="What the org's credentials are found by: with the default resolver, the"
    " prefix of their environment variables (ACME: ACME_SESSION_ID...).",
)
@click.option(
    "--source",
    metavar="KIND",
    default="salesforce",
    show_default=True,
    help="The source kind: salesforce, a kind a package registers, or module:attribute.",
)
@click.option(
    "--every",
    type=Seconds(open=True),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the org syncs.",
)
@click.option(
    "--reconcile-every",
    type=Seconds(),
    default=86_400.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the whole org is read again (0: never).",
)
@click.option(
    "--refresh-every",
    type=Seconds(),
    default=3_600.0,
    show_default=True,
    metavar="SECONDS",
    help="How often formula fields are read again (0: never).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="NAME=JSON",
    help='An option of the source kind: fields={"Account": ["Name"]}, max_api_share=0.5;'
    " repeatable.",
)
@_command
def add(
    out: Output,
    *,
    database: Database,
    as_json: bool,
    org: str,
    credentials: str,
    source: str,
    every: float,
    reconcile_every: float,
    refresh_every: float,
    options: tuple[str, ...],
) -> ExitCode:
    """Register ORG: its source kind, its credentials reference, how often it syncs.

    No secret is stored: the workers resolve the reference when a job starts. The
    source kind must load here, so that a typo is caught now.
    """
    from acctsync.fleet import source_factory

    settings = _options(options)
    try:
        source_factory(source)
    except ConfigurationError as error:
        raise click.BadParameter(str(error), param_hint="'--source'") from None
    with _registry(database, creates=True) as registry:
        if registry.get(org) is not None:
            raise SettingError(f"org {org!r} is registered already", option="ORG")
        added = registry.add(
            org,
            credentials=credentials,
            source=source,
            every=timedelta(seconds=every),
            reconcile_every=_interval(reconcile_every),
            refresh_every=_interval(refresh_every),
            options=settings,
        )
    if out.json:
        out.document(_document(added, datetime.now(UTC)))
    else:
        out.console.print(f"Added org {escape(repr(org))}, due for its first sync now.")
    return ExitCode.OK


@fleet.command(short_help="Take an org out of the fleet; its synced data stays.")
@click.argument("org")
@_command
def remove(out: Output, *, database: Database, as_json: bool, org: str) -> ExitCode:
    """Take ORG out of the fleet. What it synced stays in the database."""
    with _registry(database) as registry:
        if not registry.remove(org):
            raise _unknown(org)
    if out.json:
        out.document({"org": org, "removed": True})
    else:
        out.console.print(f"Removed org {escape(repr(org))} from the fleet.")
    return ExitCode.OK


@fleet.command(short_help="Stop scheduling an org until it is resumed.")
@click.argument("org")
@click.option("--reason", default="paused by hand", show_default=True, help="Why, for status.")
@_command
def pause(out: Output, *, database: Database, as_json: bool, org: str, reason: str) -> ExitCode:
    """Stop scheduling ORG; a job running now finishes."""
    from acctsync.fleet import UnknownOrgError

    with _registry(database) as registry:
        try:
            paused = registry.pause(org, reason)
        except UnknownOrgError:
            raise _unknown(org) from None
    if out.json:
        out.document(_document(paused, datetime.now(UTC)))
    else:
        out.console.print(f"Paused org {escape(repr(org))}.")
    return ExitCode.OK


@fleet.command(short_help="Schedule a paused org again, its sync due now.")
@click.argument("org")
@_command
def resume(out: Output, *, database: Database, as_json: bool, org: str) -> ExitCode:
    """Schedule ORG again (after fixing what paused it): its sync is due now."""
    from acctsync.fleet import UnknownOrgError

    with _registry(database) as registry:
        try:
            resumed = registry.resume(org)
        except UnknownOrgError:
            raise _unknown(org) from None
    if out.json:
        out.document(_document(resumed, datetime.now(UTC)))
    else:
        out.console.print(f"Resumed org {escape(repr(org))}: its sync is due now.")
    return ExitCode.OK


@fleet.command(name="list", short_help="The fleet's orgs and their settings.")
@_command
def list_(out: Output, *, database: Database, as_json: bool) -> ExitCode:
    """The fleet's orgs: source kind, credentials reference, intervals, paused or not."""
    with _registry(database) as registry:
        orgs = registry.orgs()
    if out.json:
        now = datetime.now(UTC)
        out.document({"orgs": [_document(entry, now) for entry in orgs]})
        return ExitCode.OK
    table = Table("org", "source", "credentials", "every", "reconcile", "refresh", "paused")
    for entry in orgs:
        table.add_row(
            escape(entry.org),
            escape(entry.source),
            escape(entry.credentials),
            _span(entry.sync_every),
            _span(entry.reconcile_every),
            _span(entry.refresh_every),
            escape(entry.paused_reason or "yes") if entry.paused else "",
        )
    out.console.print(table if orgs else "The fleet has no org yet.")
    return ExitCode.OK


@fleet.command(short_help="Per org: state, lag, last run and last error.")
@click.argument("orgs", nargs=-1, metavar="[ORG]...")
@_command
def status(out: Output, *, database: Database, as_json: bool, orgs: tuple[str, ...]) -> ExitCode:
    """Per org (every org, or those named): its state, its lag, its last run and its
    last error.

    The state is paused, running, queued (handed to a worker), backoff (after a
    failure), due, or scheduled. The lag is how long ago the last successful sync
    started: changes made since may not be in the database yet.
    """
    with _registry(database) as registry:
        found = registry.orgs()
    if orgs:
        known = {entry.org for entry in found}
        unknown = [org for org in orgs if org not in known]
        if unknown:
            raise _unknown(*unknown)
        found = [entry for entry in found if entry.org in orgs]
    now = datetime.now(UTC)
    if out.json:
        out.document({"now": iso(now), "orgs": [_document(entry, now) for entry in found]})
        return ExitCode.OK
    table = Table("org", "state", "lag", "last run", "next due", "last error")
    for entry in found:
        lag = entry.lag(now)
        last = (
            "-"
            if entry.finished_at is None
            else f"{entry.last_job} {entry.last_outcome} at {when(entry.finished_at)}"
        )
        error = entry.paused_reason if entry.paused else entry.last_error
        table.add_row(
            escape(entry.org),
            entry.state(now),
            "-" if lag is None else _span(lag),
            escape(last),
            when(entry.next_due),
            escape(error or ""),
        )
    out.console.print(table if found else "The fleet has no org yet.")
    return ExitCode.OK


def _span(length: timedelta | None) -> str:
    """A duration for people: 5m, 1h, 1.5d, 12.3s; never for None."""
    if length is None:
        return "never"
    seconds = length.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def _seconds(length: timedelta | None) -> float | None:
    return None if length is None else round(length.total_seconds(), 3)


def _document(entry: FleetOrg, now: datetime) -> dict[str, Any]:
    """An org as ``fleet list --json`` and ``fleet status --json`` write it."""
    return {
        "org": entry.org,
        "state": entry.state(now),
        "source": entry.source,
        "credentials": entry.credentials,
        "options": dict(entry.options),
        "every_seconds": _seconds(entry.sync_every),
        "reconcile_every_seconds": _seconds(entry.reconcile_every),
        "refresh_every_seconds": _seconds(entry.refresh_every),
        "paused": entry.paused,
        "paused_reason": entry.paused_reason,
        "lag_seconds": _seconds(entry.lag(now)),
        "synced_at": iso(entry.synced_at),
        "next_due": iso(entry.next_due),
        "due": {
            "sync": iso(entry.sync_due),
            "reconcile": iso(entry.reconcile_due),
            "refresh": iso(entry.refresh_due),
        },
        "failures": entry.failures,
        "last_run": None
        if entry.finished_at is None
        else {
            "job": entry.last_job,
            "outcome": entry.last_outcome,
            "started_at": iso(entry.started_at),
            "finished_at": iso(entry.finished_at),
        },
        "last_error": None
        if entry.last_error is None
        else {"message": entry.last_error, "at": iso(entry.failed_at)},
    }
