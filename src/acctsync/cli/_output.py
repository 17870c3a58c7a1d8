"""What the commands print: rich text for people, one JSON document for scripts.

The JSON shapes are documented in ``docs/cli.md``; field values in them take the
library's lossless form (`acctsync.make_converter`), so that a `Decimal`, a date or a
datetime stays one, and timestamps are ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, overload

from attrs import frozen
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from acctsync._activity import ChangeDataValue
from acctsync._convert import make_converter
from acctsync._records import FieldValue
from acctsync._report import EditResult
from acctsync.cli._exits import ExitCode

if TYPE_CHECKING:  # the SQL store imports SQLAlchemy: not for --help or a usage error
    from acctsync.stores.sql import StoreCounts, SyncRun

__all__ = [
    "OrgStatus",
    "Output",
    "activity_document",
    "activity_table",
    "csv_value",
    "edit_document",
    "print_run",
    "run_document",
    "shown_value",
    "when",
]

_CONVERTER: Final = make_converter()
_UNSTRUCTURE_VALUE: Final = _CONVERTER.get_unstructure_hook(FieldValue)
# A pipe gets long lines rather than rich's 80 columns: IDs and reasons stay whole.
_PIPE_WIDTH: Final = 160


class Output:
    """Where a command writes: rich text on stdout, or one JSON document with ``--json``.

    Messages about the run itself (errors, a stop request) go to stderr either way.
    """

    def __init__(self, *, as_json: bool) -> None:
        self.json = as_json
        self.console = Console(highlight=False)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            self.console = Console(highlight=False, width=_PIPE_WIDTH)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def document(self, document: Mapping[str, Any], *, one_line: bool = False) -> None:
        """Write ``document`` as JSON; ``one_line`` for a stream of them (JSON Lines)."""
        text = json.dumps(document, ensure_ascii=False, indent=None if one_line else 2)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        """A message about the run, on stderr."""
        self.errors.print(escape(text))

    def warning(self, text: str) -> None:
        """A source's warning about a run that did not fail (a lesser way of reading), on
        stderr."""
        self.errors.print(f"[yellow]Warning:[/] {escape(text)}")

    def error(
        self, code: ExitCode | int, error: BaseException | str, *, message: str | None = None
    ) -> None:
        """Report a failure: on stderr, and as the JSON document with ``--json``.

        ``message`` says it instead of ``str(error)``, where the command words it its way.
        """
        if message is None:
            message = error if isinstance(error, str) else str(error) or type(error).__name__
        self.errors.print(f"[bold red]Error:[/] {escape(message)}")
        if self.json:
            kind = "" if isinstance(error, str) else type(error).__name__
            # One line: after a stream of runs (sync --every) it is the stream's last.
            error_document = {"exit_code": int(code), "type": kind, "message": message}
            self.document({"error": error_document}, one_line=True)


# -- Values -------------------------------------------------------------------------------


def when(stamp: datetime | None) -> str:
    """A timestamp for people: UTC, to the millisecond, as Salesforce shows it."""
    if stamp is None:
        return "-"
    return stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@overload
def iso(stamp: datetime) -> str: ...
@overload
def iso(stamp: datetime | None) -> str | None: ...
def iso(stamp: datetime | None) -> str | None:
    """A timestamp for documents: ISO 8601 in UTC, to the microsecond (None stays None)."""
    if stamp is None:
        return None
    # Stored times are UTC already: a listing formats hundreds of thousands of them.
    return (stamp if stamp.tzinfo is UTC else stamp.astimezone(UTC)).isoformat()


def shown_value(value: FieldValue) -> str:
    """A field value for people: text quoted, so that ``"null"`` and null differ."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, date | Decimal):
        return str(value)
    return repr(value)


def csv_value(value: FieldValue) -> str:
    """A field value as a CSV cell, as Data Loader writes one: null is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


@frozen(kw_only=True)
class OrgStatus:
    """What ``status`` shows of one org."""

    org: str
    watermarks: Mapping[str, datetime | None]
    counts: StoreCounts
    last_run: SyncRun | None

    def document(self) -> dict[str, Any]:
        """The org as ``status --json`` writes it."""
        return {
            "org": self.org,
            "watermarks": {stream: iso(mark) for stream, mark in self.watermarks.items()},
            "counts": {
                "accounts": self.counts.accounts,
                "contacts": self.counts.contacts,
                "activities": self.counts.activities,
            },
            "last_run": None if self.last_run is None else run_document(self.last_run, self.org),
        }

    def print(self, console: Console) -> None:
        """The org for people."""
        counts = self.counts
        console.print(f"\n[bold]org {escape(repr(self.org))}[/]")
        marks = ", ".join(f"{stream} {when(mark)}" for stream, mark in self.watermarks.items())
        console.print(f"  watermarks: {marks}")
        console.print(
            f"  holds {counts.accounts:,} accounts, {counts.contacts:,} contacts,"
            f" {counts.activities:,} activities"
        )
        if self.last_run is None:
            console.print("  no sync run recorded")
        else:
            print_run(console, self.last_run, title="last run", indent="  ")


# -- Documents ----------------------------------------------------------------------------


def run_document(run: SyncRun, org: str) -> dict[str, Any]:
    """A sync run as ``sync --json`` and ``status --json`` write it."""
    document: dict[str, Any] = {
        "org": org,
        "id": run.id,
        "outcome": run.outcome,
        "source": run.source,
        "error": run.error,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "seconds": round(run.duration.total_seconds(), 3),
    }
    counts = _CONVERTER.unstructure(run)
    document.update((key, value) for key, value in counts.items() if key not in document)
    document["watermarks"] = {stream: iso(mark) for stream, mark in run.watermarks.items()}
    return document


def activity_document(entry: ChangeDataValue) -> dict[str, Any]:
    """A Change Data Value entry as ``activities --format json`` writes it."""
    # By hand, not by the converter: a log of millions is written entry by entry.
    return {
        "id": entry.id,
        "contact_id": entry.contact_id,
        "account_id": entry.account_id,
        "field": entry.field,
        "old_value": _UNSTRUCTURE_VALUE(entry.old_value),
        "new_value": _UNSTRUCTURE_VALUE(entry.new_value),
        "origin": entry.origin.value,
        "occurred_at": iso(entry.occurred_at),
    }


def edit_document(result: EditResult, org: str) -> dict[str, Any]:
    """A local edit as ``edit --json`` writes it."""
    suppressed = result.suppressed
    return {
        "org": org,
        "contact_id": result.contact_id,
        "account_id": result.account_id,
        "field": result.field,
        "old_value": _UNSTRUCTURE_VALUE(result.old_value),
        "new_value": _UNSTRUCTURE_VALUE(result.new_value),
        "changed": result.changed,
        "contact_count": result.contact_count,
        "activities": len(result.activities),
        "suppressed": None if suppressed is None else _CONVERTER.unstructure(suppressed),
    }


# -- Text ---------------------------------------------------------------------------------

# Times and IDs have one width; the rest share what is left of the line.
_ACTIVITY_COLUMNS: Final = (
    ("occurred at", 24),
    ("origin", 10),
    ("account", 18),
    ("contact", 18),
    ("field", 0),
    ("old", 0),
    ("new", 0),
)
_OUTCOME_STYLES: Final = {
    "ok": "green",
    "rejected": "yellow",
    "failed": "red",
    "interrupted": "yellow",
}


def print_run(
    console: Console,
    run: SyncRun,
    *,
    title: str,
    indent: str = "",
) -> None:
    """A run for people: how it ended, its counts, rejections, suppressions, fields no
    longer read, watermarks."""
    for line in _run_lines(run, title):
        console.print(indent + line)


def _run_lines(run: SyncRun, title: str) -> Iterator[str]:
    """The lines of `print_run`, in rich markup: every value from the run is escaped."""
    style = _OUTCOME_STYLES[run.outcome]
    seconds = run.duration.total_seconds()
    source = f" from {escape(run.source)}" if run.source else ""
    yield (
        f"{escape(title)}: [{style}]{run.outcome}[/] in {seconds:.2f} s,"
        f" started {when(run.started_at)}{source}"
    )
    if run.error:
        yield f"  [red]{escape(run.error)}[/]"
    if run.outcome in ("failed", "interrupted"):
        # It returned no report: what it applied is not counted, only kept.
        yield (
            f"  pages read {run.pages:,}; the batches applied before it stopped stay applied,"
            " with their watermarks"
        )
        yield from _tail_lines(run)
        return
    yield (
        f"  pages {run.pages:,} | accounts: {run.accounts_upserted:,} upserted,"
        f" {run.accounts_deleted:,} deleted | contacts: {run.contacts_upserted:,} upserted,"
        f" {run.contacts_deleted:,} deleted"
    )
    yield (
        f"  already applied {run.already_applied:,} | stale {run.stale:,}"
        f" | refreshed {run.refreshed:,} | local edits overwritten {run.local_edits_discarded:,}"
        f" | activities logged {run.activities:,}"
    )
    yield from _items(
        "rejected",
        run.rejected_count,
        [
            f"{r.object_type} {r.record_id or '(no Id)'}"
            + (f" ({r.origin})" if r.origin else "")
            + (f" {r.field}" if r.field else "")
            + f": {r.reason}"
            for r in run.rejected
        ],
    )
    yield from _items(
        "suppressed",
        run.suppressed_count,
        [
            f"account {s.account_id} has {s.contact_count:,} contacts:"
            f" {s.entries_skipped:,} entries not logged ({s.origin.value})"
            for s in run.suppressed
        ],
    )
    if run.refetch_count:
        yield f"  [yellow]to fetch again: {run.refetch_count:,}[/]"
    for kind, names in run.missing_fields.items():
        # A warning, not a failure: the sync applied what it read. Said on every sync,
        # since nothing else tells that these fields have stopped following Salesforce.
        yield (
            f"  [yellow]{escape(kind)} fields no longer read: {escape(', '.join(names))}"
            " (has the integration user lost access to them?)[/]"
        )
    yield from _tail_lines(run)


def _tail_lines(run: SyncRun) -> Iterator[str]:
    """The lines every run ends with, however it ended: its requests and watermarks."""
    if run.api_requests:
        yield f"  Salesforce API requests {run.api_requests:,}"
    if run.watermarks:
        marks = ", ".join(f"{stream} {when(mark)}" for stream, mark in run.watermarks.items())
        yield f"  watermarks: {marks}"


def _items(label: str, total: int, lines: Sequence[str]) -> Iterator[str]:
    if not total:
        return
    yield f"  [yellow]{label}: {total:,}[/]"
    for line in lines:
        yield f"    {escape(line)}"
    if len(lines) < total:
        yield f"    ... and {total - len(lines):,} more"


def activity_table(entries: Iterable[ChangeDataValue], *, header: bool = True) -> Table:
    """Change Data Value entries as a table.

    Its columns' widths do not depend on the entries, so that the tables of a long log's
    consecutive chunks line up as one (``header`` for the first chunk's only).
    """
    table = Table(
        box=box.SIMPLE_HEAD, show_header=header, show_edge=False, expand=True, pad_edge=False
    )
    for name, width in _ACTIVITY_COLUMNS:
        if width:
            table.add_column(name, width=width, no_wrap=True)
        else:
            table.add_column(name, ratio=1)
    for entry in entries:
        table.add_row(
            when(entry.occurred_at),
            entry.origin.value,
            entry.account_id,
            entry.contact_id,
            escape(entry.field),
            escape(shown_value(entry.old_value)),
            escape(shown_value(entry.new_value)),
        )
    return table
