"""``acctsync activities``: the Change Data Value log, streamed as a table, JSON or CSV.

Every format is written entry by entry as the store reads the log a page at a time, so a
log of millions goes through in constant memory. The table is rendered in chunks of
fixed-width columns that line up as one; by default it shows a page, and says how many
entries are left.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Final

import click
import orjson
from rich.console import Console

from acctsync._activity import ChangeDataValue
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX
from acctsync.cli._command import existing, held, open_store, reporting, store_options
from acctsync.cli._exits import ExitCode
from acctsync.cli._output import Output, activity_document, activity_table, csv_value, iso
from acctsync.cli._params import MOMENT, Database, RecordId

__all__ = ["CSV_COLUMNS", "TABLE_PAGE", "activities"]

CSV_COLUMNS: Final = (
    "occurred_at",
    "origin",
    "account_id",
    "contact_id",
    "field",
    "old_value",
    "new_value",
    "id",
)
TABLE_PAGE: Final = 100
"""The entries a table shows without ``--limit``: a screenful or two, not the log."""
_CHUNK: Final = 500  # rows of a table rendered, or of CSV written, at a time


@click.command(short_help="The Change Data Value log, as a table, JSON or CSV.")
@store_options
@click.option("--account", type=RecordId(ACCOUNT_PREFIX, "an account"), help="Of this account.")
@click.option("--contact", type=RecordId(CONTACT_PREFIX, "a contact"), help="Of this contact.")
@click.option(
    "--since",
    type=MOMENT,
    help="At or after this time: 2024-01-31T12:00:00Z, 2024-01-31 (UTC), or 15m / 2h / 7d ago.",
)
@click.option("--until", type=MOMENT, help="Before this time, given as --since is.")
@click.option(
    "--limit",
    metavar="N",
    type=click.IntRange(min=1),
    help=f"At most this many, the oldest that match. [default: {TABLE_PAGE} for the table,"
    " all for json and csv]",
)
@click.option(
    "--format",
    "form",
    type=click.Choice(["table", "json", "csv"]),
    default=None,
    help="How to write them. [default: table; json with --json]",
)
@reporting
def activities(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    account: str | None,
    contact: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    form: str | None,
) -> ExitCode:
    """The Change Data Value log, oldest entry first.

    A table shows the first 100 entries that match unless --limit says otherwise, and how
    many more there are; JSON and CSV write every one, entry by entry.
    """
    if as_json and form not in (None, "json"):
        raise click.UsageError(f"--json writes JSON: it does not go with --format {form}")
    if since is not None and until is not None and until <= since:
        raise click.UsageError("--until must be later than --since")
    form = "json" if as_json else form or "table"
    existing(database)
    with open_store(database, org=org) as store:
        held(store, database)
        selected = partial(
            store.activities,
            account_id=account,
            contact_id=contact,
            since=since,
            until=until,
            by_time=True,
        )
        if form == "table":
            page = limit or TABLE_PAGE
            shown = _write_table(out.console, selected(limit=page))
            matching = store.count_activities(
                account_id=account, contact_id=contact, since=since, until=until
            )
            if matching:
                out.console.print(_summary(shown, matching - shown, limited=limit is not None))
            elif any(given is not None for given in (account, contact, since, until)):
                held_entries = store.count_activities()  # say why: the log is not empty
                out.console.print(f"0 entries match, of the {held_entries:,} org {org!r} holds")
            else:
                out.console.print(f"0 entries: org {org!r} has logged none")
        elif form == "json":
            _write_json(org, selected(limit=limit))
        else:
            _write_csv(selected(limit=limit))
    return ExitCode.OK


def _summary(shown: int, rest: int, *, limited: bool) -> str:
    if rest <= 0:
        return f"{shown:,} entries"
    more = "a higher --limit" if limited else "--limit N"
    return (
        f"{shown:,} entries shown, {rest:,} more: {more}, --since / --until,"
        " or --format csv for all of them"
    )


def _write_table(console: Console, entries: Iterator[ChangeDataValue]) -> int:
    """The entries as one table, rendered a chunk at a time; how many there were."""
    shown = 0
    while chunk := list(islice(entries, _CHUNK)):
        console.print(activity_table(chunk, header=not shown))
        shown += len(chunk)
    return shown


def _write_json(org: str, entries: Iterable[ChangeDataValue]) -> None:
    """One JSON document, written entry by entry: a log may be longer than memory.

    Each entry by orjson (the cli extra's), a third of the time `json` takes.
    """
    sys.stdout.flush()
    write = sys.stdout.buffer.write
    write(b'{"org": ' + orjson.dumps(org) + b', "activities": [')
    separator = b"\n  "
    for entry in entries:
        write(separator + orjson.dumps(activity_document(entry)))
        separator = b",\n  "
    write(b"\n]}\n")
    sys.stdout.buffer.flush()


def _write_csv(entries: Iterable[ChangeDataValue]) -> None:
    """A header row and a row an entry, as Data Loader writes CSV: null is an empty cell.

    Rows are formatted a chunk at a time into memory and written at once: a third
    cheaper than a write to stdout per row.
    """
    chunk = io.StringIO()
    writer = csv.writer(chunk, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = (
        (
            iso(entry.occurred_at),
            entry.origin.value,
            entry.account_id,
            entry.contact_id,
            entry.field,
            csv_value(entry.old_value),
            csv_value(entry.new_value),
            entry.id,
        )
        for entry in entries
    )
    while True:
        writer.writerows(islice(rows, _CHUNK))
        if not chunk.tell():
            return
        sys.stdout.write(chunk.getvalue())
        chunk.seek(0)
        chunk.truncate()
