"""``acctsync sync`` and ``acctsync refresh-formulas``: runs that read a source into the
database, recorded as runs (see `Runner`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from rich.console import Console

from acctsync._engine import SyncEngine
from acctsync._protocols import FormulaSource, Source
from acctsync.cli._command import (
    existing,
    held,
    lock_timeout,
    open_store,
    reporting,
    store_options,
)
from acctsync.cli._exits import ExitCode
from acctsync.cli._output import Output
from acctsync.cli._params import Database, Seconds
from acctsync.cli._running import Runner, StopRequest
from acctsync.cli._sources import export_folder, pubsub_stream, salesforce

__all__ = ["REFRESH_LABEL", "refresh_formulas", "sync"]

_F = TypeVar("_F", bound=Callable[..., Any])
_log = logging.getLogger("acctsync.cli")

REFRESH_LABEL: Final = "formula fields of "
"""How a formula refresh's run names its source, before the source's own name: what
tells its runs from a sync's."""


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
        "--encoding",
        metavar="NAME",
        default="utf-8",
        show_default=True,
        help="The CSV files' text encoding (cp1252: Data Loader's default on Windows).",
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
    encoding: str,
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
    database.check_writable()
    if not live and (fields_account or fields_contact):
        raise click.UsageError("--fields-account and --fields-contact go with --salesforce")
    if not live and max_api_share is not None:
        raise click.UsageError("--max-api-share goes with --salesforce")
    if not live and (bulk_threshold is not None or no_bulk):
        raise click.UsageError("--bulk-threshold and --no-bulk go with --salesforce")
    if no_bulk and bulk_threshold is not None:
        raise click.UsageError("--bulk-threshold sets when to read by Bulk: not with --no-bulk")
    if export_dir is None and (types or delimiter != "," or encoding != "utf-8"):
        raise click.UsageError("--type, --delimiter and --encoding go with --export-dir")
    if export_dir is not None:
        made = export_folder(export_dir, types, delimiter, encoding)
        return made, f"export folder {export_dir}"
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


@click.command(short_help="Sync an org from export files or Salesforce; --every keeps polling.")
@store_options
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
@lock_timeout
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
@reporting
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
    timeout = source_options["timeout"]
    stream = pubsub_stream(os.environ, topic=topic, timeout=timeout) if follow else None
    stop = StopRequest(out.note)
    _log.info("syncing org %r from %s into %s", org, label, database.shown)
    with open_store(database, org=org, lock_timeout=lock_timeout) as store, stop.handling():
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


@click.command(
    "refresh-formulas", short_help="Read formula and roll-up fields again, and apply them."
)
@store_options
@_source_options
@lock_timeout
@_page_size
@_progress
@reporting
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
    existing(database)  # it refreshes what a sync stored: an empty database has nothing
    stop = StopRequest(out.note)
    _log.info("refreshing the formula fields of org %r from %s", org, label)
    with open_store(database, org=org, lock_timeout=lock_timeout) as store, stop.handling():
        held(store, database)
        return Runner(
            out=out,
            store=store,
            make_source=make_source,
            label=f"{REFRESH_LABEL}{label}",
            stop=stop,
            engine_options={"page_size": page_size},
            progress=_progress_console(progress, as_json),
            operation=SyncEngine.refresh_formulas,
            name="formula refresh",
        ).once()
