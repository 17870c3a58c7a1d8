"""The commands: click parses, the library works, `_output` prints.

Every command checks all its arguments before it opens the database, so that a bad one
writes nothing (not even a new SQLite file), and turns the library's errors into the
exit codes of `ExitCode`.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from acctsync._engine import STREAMS, SyncEngine
from acctsync._errors import (
    AcctSyncError,
    ConfigurationError,
    InvalidRecordError,
    LockTimeoutError,
    NoAccountError,
    SourceError,
    StoreError,
    UnknownContactError,
    UnknownFieldError,
)
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX
from acctsync._protocols import FormulaSource, Source
from acctsync._records import FieldValue, check_field, field_name_problem
from acctsync.cli._exits import ExitCode
from acctsync.cli._output import (
    OrgStatus,
    Output,
    activity_document,
    activity_table,
    csv_value,
    edit_document,
    iso,
    shown_value,
)
from acctsync.cli._params import (
    DATABASE,
    SINCE,
    Database,
    RecordId,
    Seconds,
    parse_json_value,
)
from acctsync.cli._running import Runner, StopRequest
from acctsync.cli._sources import (
    NoReads,
    budget_exceeded,
    export_folder,
    pubsub_stream,
    salesforce,
)

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore

__all__ = ["app"]

_F = TypeVar("_F", bound=Callable[..., Any])
_CSV_COLUMNS: Final = (
    "occurred_at",
    "origin",
    "account_id",
    "contact_id",
    "field",
    "old_value",
    "new_value",
    "id",
)
# Checked in this order: a lock timeout is a store error, and gets its own code.
_EXIT_CODES: Final[
    tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], ExitCode], ...]
] = (
    (LockTimeoutError, ExitCode.LOCKED),
    (StoreError, ExitCode.STORE),
    (SourceError, ExitCode.SOURCE),
    ((UnknownContactError, NoAccountError, UnknownFieldError), ExitCode.REFUSED),
    (AcctSyncError, ExitCode.UNEXPECTED),
)


def _reporting(command: Callable[..., ExitCode]) -> Callable[..., None]:
    """Run ``command(out, ...)`` and exit with its code, or with its error's."""

    @functools.wraps(command)
    def run(**options: Any) -> None:
        out = Output(as_json=bool(options.get("as_json")))
        try:
            code = command(out, **options)
        except KeyboardInterrupt:
            out.error(ExitCode.INTERRUPTED, "interrupted")
            code = ExitCode.INTERRUPTED
        except (ConfigurationError, InvalidRecordError) as error:
            # A setting the library refused before it touched anything: a usage error,
            # reported as click reports its own.
            raise click.UsageError(str(error)) from None
        except AcctSyncError as error:
            code = (
                ExitCode.BUDGET
                if budget_exceeded(error)
                else next(code for kind, code in _EXIT_CODES if isinstance(error, kind))
            )
            out.error(code, error, message=_message(error))
        raise click.exceptions.Exit(int(code))

    return run


def _message(error: AcctSyncError) -> str | None:
    """``error`` in the command's words where the library names an argument (its option);
    None for the error's own message."""
    if isinstance(error, UnknownFieldError):
        near = error.close_matches
        hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
        return (
            f"{error.object_type} has no field {error.field!r}{hint}"
            " (--allow-new-field adds it as a local field)"
        )
    return None


def _store_options(function: _F) -> _F:
    """``--db``, ``--org`` and ``--json``, the options every store command takes."""
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
    return click.option(
        "--db",
        "database",
        type=DATABASE,
        required=True,
        envvar="ACCTSYNC_DB",
        help="A SQLAlchemy URL, or a path to a SQLite file. [env: ACCTSYNC_DB]",
    )(function)


def _lock_timeout(function: _F) -> _F:
    return click.option(
        "--lock-timeout",
        type=Seconds(),
        default=30.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for another runner of the org to finish.",
    )(function)


def _open(database: Database, *, org: str, lock_timeout: float = 30.0) -> SqlStore:
    from acctsync.stores.sql import SqlStore

    return SqlStore(database.url, org=org, lock_timeout=lock_timeout)


def _existing(database: Database) -> None:
    """Refuse a database that holds no acctsync tables: reading one must not create them.

    Looked at through a bare engine, before a `SqlStore` would create the tables (and
    put a SQLite file in WAL mode).
    """
    if not database.exists():
        raise click.BadParameter(f"no database at {database.path}", param_hint="'--db'")
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    from acctsync.stores.sql._schema import Tables
    from acctsync.stores.sql._store import engine_url

    meta = Tables.define("acctsync_", None).meta
    engine = create_engine(engine_url(database.url))
    try:
        with engine.connect() as conn:
            held = inspect(conn).has_table(meta.name)
    except SQLAlchemyError as error:
        raise click.BadParameter(f"cannot read it: {error}", param_hint="'--db'") from None
    finally:
        engine.dispose()
    if not held:
        raise click.BadParameter(
            f"{database.shown} holds no acctsync tables: sync into it first", param_hint="'--db'"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acctsync", prog_name="acctsync")
def app() -> None:
    """Keep a local copy of Salesforce Accounts and Contacts in step with Salesforce."""


# -- sync ---------------------------------------------------------------------------------


def _source_options(function: _F) -> _F:
    """The options that name the source of a run: an export folder or a live org."""
    for option in reversed(_SOURCE_OPTIONS):
        function = option(function)
    return function


_SOURCE_OPTIONS: Final = (
    click.option(
        "--export-dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Read a folder of Account and Contact export files (CSV, JSON Lines).",
    ),
    click.option(
        "--type",
        "types",
        multiple=True,
        metavar="COLUMN=TYPE",
        help="The Salesforce type of a CSV column (AnnualRevenue=currency); repeatable.",
    ),
    click.option(
        "--delimiter",
        metavar="CHAR",
        default=",",
        show_default=True,
        help="The CSV column separator.",
    ),
    click.option(
        "--salesforce",
        "live",
        is_flag=True,
        help="Read a live org; credentials come from SALESFORCE_* variables.",
    ),
    click.option(
        "--fields-account",
        multiple=True,
        metavar="FIELD,...",
        help="The Account fields to sync (default: all its describe lists).",
    ),
    click.option(
        "--fields-contact",
        multiple=True,
        metavar="FIELD,...",
        help="The Contact fields to sync (default: all its describe lists).",
    ),
    click.option(
        "--timeout",
        type=Seconds(open=True),
        default=120.0,
        show_default=True,
        metavar="SECONDS",
        help="How long one Salesforce request may take.",
    ),
    click.option(
        "--max-api-share",
        type=click.FloatRange(0, 1, min_open=True),
        metavar="SHARE",
        help="With --salesforce: stop, exit 8, once the org has used more than this share"
        " of its daily API allowance (0.5 is half). [default: no share of its own]",
    ),
    click.option(
        "--bulk-threshold",
        type=click.IntRange(min=0),
        metavar="N",
        help="With --salesforce: read by Bulk API 2.0 query jobs when a read has more"
        " records than this. [default: 10000]",
    ),
    click.option(
        "--no-bulk",
        is_flag=True,
        help="With --salesforce: read by REST only, however many records.",
    ),
)


def _source(
    database: Database,
    *,
    export_dir: Path | None,
    types: tuple[str, ...],
    delimiter: str,
    live: bool,
    fields_account: tuple[str, ...],
    fields_contact: tuple[str, ...],
    timeout: float,
    max_api_share: float | None,
    bulk_threshold: int | None,
    no_bulk: bool,
) -> tuple[Callable[[], Source], str]:
    """What makes the source the options name, and its label; usage errors before any
    source is read, and the database checked first of all but the choice of source."""
    if (export_dir is None) == (not live):
        raise click.UsageError("give one source: --export-dir DIR or --salesforce")
    database.check()  # before any source is read
    if not live and (fields_account or fields_contact):
        raise click.UsageError("--fields-account and --fields-contact go with --salesforce")
    if not live and max_api_share is not None:
        raise click.UsageError("--max-api-share goes with --salesforce")
    if not live and (bulk_threshold is not None or no_bulk):
        raise click.UsageError("--bulk-threshold and --no-bulk go with --salesforce")
    if no_bulk and bulk_threshold is not None:
        raise click.UsageError("--bulk-threshold sets when to read by Bulk: not with --no-bulk")
    if export_dir is None and (types or delimiter != ","):
        raise click.UsageError("--type and --delimiter go with --export-dir")
    if export_dir is not None:
        return export_folder(export_dir, types, delimiter), f"export folder {export_dir}"
    return salesforce(
        os.environ,
        fields_account=fields_account,
        fields_contact=fields_contact,
        timeout=timeout,
        max_api_share=max_api_share,
        bulk=not no_bulk,
        bulk_threshold=bulk_threshold,
    )


def _page_size(function: _F) -> _F:
    return click.option(
        "--page-size",
        metavar="N",
        type=click.IntRange(min=1),
        default=2000,
        show_default=True,
        help="Changes applied, and committed, per batch.",
    )(function)


def _progress(function: _F) -> _F:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show a progress bar on stderr. [default: when stdout is a terminal]",
    )(function)


def _progress_console(progress: bool | None, as_json: bool) -> Console | None:
    """Where the progress bar goes, if one is shown."""
    shown = progress if progress is not None else sys.stdout.isatty() and not as_json
    return Console(stderr=True, force_terminal=True if progress else None) if shown else None


@app.command(short_help="Sync an org from export files or Salesforce; --every keeps polling.")
@_store_options
@_source_options
@click.option(
    "--every",
    type=Seconds(open=True),
    metavar="SECONDS",
    help="Keep syncing, this long after each sync ends, until stopped.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="With --salesforce: follow the org's change events live (Pub/Sub API) until"
    " stopped, after a catch-up sync.",
)
@click.option(
    "--topic",
    default="/data/ChangeEvents",
    show_default=True,
    metavar="TOPIC",
    help="With --follow: the Change Data Capture channel to follow.",
)
@_lock_timeout
@_page_size
@click.option(
    "--lookback",
    type=Seconds(),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How far before the watermark each sync reads again (late commits).",
)
@_progress
@_reporting
def sync(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    every: float | None,
    follow: bool,
    topic: str,
    lock_timeout: float,
    page_size: int,
    lookback: float,
    progress: bool | None,
    **source_options: Any,
) -> ExitCode:
    """Sync an org into the database: from an export folder or from Salesforce.

    Each batch commits with its watermark; the next sync reads from there. With --every
    it keeps polling until Ctrl-C or SIGTERM, which stop it after the current batch.
    With --follow it applies the org's change events as they come, until stopped.
    """
    if follow and not source_options["live"]:
        raise click.UsageError("--follow goes with --salesforce")
    if follow and every is not None:
        raise click.UsageError("give one of --every and --follow")
    if topic != "/data/ChangeEvents" and not follow:
        raise click.UsageError("--topic goes with --follow")
    make_source, label = _source(database, **source_options)
    stream = pubsub_stream(os.environ, topic=topic) if follow else None
    stop = StopRequest(out.note)
    with _open(database, org=org, lock_timeout=lock_timeout) as store, stop.handling():
        runner = Runner(
            out=out,
            store=store,
            make_source=make_source,
            label=label,
            stop=stop,
            engine_options={"page_size": page_size, "lookback": timedelta(seconds=lookback)},
            progress=_progress_console(progress, as_json),
        )
        if stream is not None:
            return runner.follow(stream)
        if every is None:
            return runner.once()
        return runner.every(every)


# -- refresh-formulas ---------------------------------------------------------------------


@app.command(
    "refresh-formulas", short_help="Read formula and roll-up fields again, and apply them."
)
@_store_options
@_source_options
@_lock_timeout
@_page_size
@_progress
@_reporting
def refresh_formulas(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    lock_timeout: float,
    page_size: int,
    progress: bool | None,
    **source_options: Any,
) -> ExitCode:
    """Read the org's formula and roll-up summary fields again, and apply what changed.

    Their values change without moving SystemModstamp, so a sync never reads them again.
    Local edits stay; watermarks do not move. Needs a database a sync has filled, and a
    source that reads those fields alone (--salesforce); the run is recorded like a
    sync's.
    """
    make_source, label = _source(database, **source_options)
    if not isinstance(make_source(), FormulaSource):
        raise click.UsageError(
            f"{label} cannot read formula fields alone, as refresh-formulas needs"
            " (a live org can: --salesforce)"
        )
    _existing(database)  # it refreshes what a sync stored: an empty database has nothing
    stop = StopRequest(out.note)
    with _open(database, org=org, lock_timeout=lock_timeout) as store, stop.handling():
        return Runner(
            out=out,
            store=store,
            make_source=make_source,
            label=f"formula fields of {label}",
            stop=stop,
            engine_options={"page_size": page_size},
            progress=_progress_console(progress, as_json),
            operation=SyncEngine.refresh_formulas,
            name="formula refresh",
        ).once()


# -- status -------------------------------------------------------------------------------


@app.command(short_help="Watermarks, counts and the last run of each org.")
@click.option(
    "--db",
    "database",
    type=DATABASE,
    required=True,
    envvar="ACCTSYNC_DB",
    help="A SQLAlchemy URL, or a path to a SQLite file. [env: ACCTSYNC_DB]",
)
@click.option("--org", metavar="ORG", help="Show this org only. [default: every org]")
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@_reporting
def status(out: Output, *, database: Database, org: str | None, as_json: bool) -> ExitCode:
    """Per org: watermarks, counts, the last run's report; and the schema version."""
    _existing(database)
    from sqlalchemy import create_engine

    from acctsync.stores.sql import SCHEMA_VERSION, SqlStore
    from acctsync.stores.sql._store import engine_url

    engine = create_engine(engine_url(database.url))
    try:
        names = [org] if org is not None else SqlStore(engine).orgs()
        orgs = []
        for name in names:
            store = SqlStore(engine, org=name)
            orgs.append(
                OrgStatus(
                    org=name,
                    watermarks={stream: store.watermark(stream) for stream in STREAMS},
                    counts=store.counts(),
                    last_run=store.last_run(),
                )
            )
    finally:
        engine.dispose()
    if out.json:
        out.document(
            {
                "database": database.shown,
                "schema_version": SCHEMA_VERSION,
                "orgs": [entry.document() for entry in orgs],
            }
        )
        return ExitCode.OK
    out.console.print(f"{escape(database.shown)}: schema version {SCHEMA_VERSION}")
    if not orgs:
        out.console.print("No org has synced into this database yet.")
    for entry in orgs:
        entry.print(out.console)
    return ExitCode.OK


# -- activities ---------------------------------------------------------------------------


@app.command(short_help="The Change Data Value log, as a table, JSON or CSV.")
@_store_options
@click.option("--account", type=RecordId(ACCOUNT_PREFIX, "an account"), help="Of this account.")
@click.option("--contact", type=RecordId(CONTACT_PREFIX, "a contact"), help="Of this contact.")
@click.option(
    "--since",
    type=SINCE,
    help="At or after this time: 2024-01-31T12:00:00Z, 2024-01-31 (UTC), or 15m / 2h / 7d ago.",
)
@click.option(
    "--limit", metavar="N", type=click.IntRange(min=1), help="At most this many, oldest first."
)
@click.option(
    "--format",
    "form",
    type=click.Choice(["table", "json", "csv"]),
    default=None,
    help="How to write them. [default: table; json with --json]",
)
@_reporting
def activities(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    account: str | None,
    contact: str | None,
    since: datetime | None,
    limit: int | None,
    form: str | None,
) -> ExitCode:
    """The Change Data Value log, oldest entry first."""
    if as_json and form not in (None, "json"):
        raise click.UsageError(f"--json writes JSON: it does not go with --format {form}")
    form = "json" if as_json else form or "table"
    _existing(database)
    with _open(database, org=org) as store:
        entries = islice(
            store.activities(account_id=account, contact_id=contact, since=since), limit
        )
        if form == "json":
            _write_json_log(org, entries)
        elif form == "csv":
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(_CSV_COLUMNS)
            for entry in entries:
                writer.writerow(
                    [
                        iso(entry.occurred_at),
                        entry.origin.value,
                        entry.account_id,
                        entry.contact_id,
                        entry.field,
                        csv_value(entry.old_value),
                        csv_value(entry.new_value),
                        entry.id,
                    ]
                )
        else:
            shown = list(entries)
            if shown:
                out.console.print(activity_table(shown))
            out.console.print(f"{len(shown):,} entries")
    return ExitCode.OK


def _write_json_log(org: str, entries: Iterator[Any]) -> None:
    """One JSON document, written entry by entry: a log may be longer than memory."""
    write = sys.stdout.write
    write(f'{{"org": {json.dumps(org, ensure_ascii=False)}, "activities": [')
    for number, entry in enumerate(entries):
        write(("," if number else "") + "\n  ")
        write(json.dumps(activity_document(entry), ensure_ascii=False))
    write("\n]}\n")


# -- edit ---------------------------------------------------------------------------------


@app.command(short_help="Edit an account field locally, through a contact.")
@_store_options
@click.option(
    "--contact",
    type=RecordId(CONTACT_PREFIX, "a contact"),
    required=True,
    help="The contact to edit the account field through.",
)
@click.option(
    "--field", metavar="NAME", required=True, help="The account field, by API name, in any case."
)
@click.option("--value", "text", metavar="TEXT", help="The new value, as text.")
@click.option(
    "--json-value",
    metavar="JSON",
    help='The new value as JSON: 42, 1.50, true, null, "text", {"$date": "2024-01-31"}.',
)
@click.option(
    "--allow-new-field",
    is_flag=True,
    help="Add the field locally when the org's accounts have not got it (else: exit 4).",
)
@_lock_timeout
@_reporting
def edit(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    contact: str,
    field: str,
    text: str | None,
    json_value: str | None,
    allow_new_field: bool,
    lock_timeout: float,
) -> ExitCode:
    """Edit an account field locally, through one of its contacts (rules S2, S3).

    Every contact of the account sees the new value; Salesforce does not, and the next
    Salesforce update of the account overwrites it. A field the org's accounts have not
    got (a typo) is refused, naming close matches, unless --allow-new-field.
    """
    if (text is None) == (json_value is None):
        raise click.UsageError("give the new value: --value TEXT or --json-value JSON")
    value: FieldValue
    try:
        value = text if text is not None else parse_json_value(str(json_value))
    except InvalidRecordError as error:
        raise click.BadParameter(error.reason, param_hint="'--json-value'") from None
    # The library's own checks, made before the database is opened: the name's first, so
    # that each problem is blamed on the option that gave it.
    problem = field_name_problem(field)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="'--field'")
    try:
        check_field(field, value)
    except InvalidRecordError as error:
        hint = "'--value'" if text is not None else "'--json-value'"
        raise click.BadParameter(error.reason, param_hint=hint) from None
    _existing(database)
    with _open(database, org=org, lock_timeout=lock_timeout) as store:
        engine = SyncEngine(source=NoReads(), store=store)
        result = engine.edit_account_field(
            contact_id=contact, field=field, value=value, allow_new_field=allow_new_field
        )
    if out.json:
        out.document(edit_document(result, org))
        return ExitCode.OK
    console = out.console
    # The org's spelling of the field, which the edit took (rule R9), not the one typed.
    what = f"account {result.account_id} field {escape(result.field)}"
    if not result.changed:
        console.print(f"{what} is already {escape(shown_value(value))}: nothing written")
        return ExitCode.OK
    console.print(
        f"{what}: {escape(shown_value(result.old_value))} -> {escape(shown_value(value))}"
        " (a local edit: not sent to Salesforce)"
    )
    seen = f"  seen by every contact of the account ({result.contact_count:,});"
    if result.suppressed is not None:
        console.print(
            f"{seen} no activities logged: the account has more contacts than the activity"
            " policy allows"
        )
    else:
        console.print(f"{seen} {len(result.activities):,} Change Data Value entries logged")
    return ExitCode.OK


# -- demo ---------------------------------------------------------------------------------


@app.command(short_help="Sync a synthetic org and show every rule at work.")
@click.option(
    "--db",
    "database",
    type=DATABASE,
    default="acctsync-demo.db",
    show_default=True,
    help="Where to keep the demo's local copy: a SQLite file or a SQLAlchemy URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@_reporting
def demo(out: Output, *, database: Database, as_json: bool) -> ExitCode:
    """Sync a synthetic org into a database and show every rule at work.

    Run it again on the same database and it resumes from the stored watermark.
    """
    from acctsync.cli._demo import run_demo

    database.check()
    run_demo(out, database)
    return ExitCode.OK
