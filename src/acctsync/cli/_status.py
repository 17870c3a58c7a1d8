"""``acctsync status``: what the database holds of each org, and ``--check`` for a monitor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from acctsync._engine import STREAMS
from acctsync.cli._command import database_option, existing, held, open_store, reporting
from acctsync.cli._exits import ExitCode
from acctsync.cli._logs import logging_options
from acctsync.cli._output import OrgStatus, Output, iso, run_document
from acctsync.cli._params import Database, Duration
from acctsync.cli._sync import REFRESH_LABEL

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore, SyncRun

__all__ = ["status"]

# The runs `--check` looks through for the last sync, past formula refreshes: as many
# as the store keeps.
_RUNS_KEPT = 100


@click.command(short_help="Watermarks, counts and the last run of each org; --check for monitors.")
@database_option
@click.option("--org", metavar="ORG", help="Show this org only. [default: every org]")
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 0 if the last sync of each org succeeded (within --max-age), else 9;"
    " one line says why.",
)
@click.option(
    "--max-age",
    type=Duration(),
    metavar="DURATION",
    help="With --check: how long ago the last sync may have ended: 15m, 2h, 1d.",
)
@logging_options
@reporting
def status(
    out: Output,
    *,
    database: Database,
    org: str | None,
    as_json: bool,
    check: bool,
    max_age: timedelta | None,
) -> ExitCode:
    """Per org: watermarks, counts, the last run's report; and the schema version.

    With --check, for a monitor or a scheduler's health check: exit 0 when the last
    sync of each org succeeded (and, with --max-age, ended within that time), 9 when
    not, with one line saying why.
    """
    if max_age is not None and not check:
        raise click.UsageError("--max-age goes with --check")
    existing(database)
    from acctsync.stores.sql import SCHEMA_VERSION

    with open_store(database, org=org or "default") as store:
        if org is not None:
            held(store, database)
        names = [org] if org is not None else store.orgs()
        if check:
            return _check(out, store, database, names, max_age)
        orgs = [_org_status(store, name) for name in names]
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


def _of(store: SqlStore, org: str) -> SqlStore:
    """A store of ``org`` on ``store``'s engine: each org's reads are its own."""
    from acctsync.stores.sql import SqlStore

    return store if org == store.org else SqlStore(store.engine, org=org)


def _org_status(store: SqlStore, org: str) -> OrgStatus:
    of_org = _of(store, org)
    return OrgStatus(
        org=org,
        watermarks={stream: of_org.watermark(stream) for stream in STREAMS},
        counts=of_org.counts(),
        last_run=of_org.last_run(),
    )


def _last_sync(store: SqlStore) -> SyncRun | None:
    """The org's latest recorded sync: a formula refresh does not bring its data up to
    date."""
    runs = store.runs(limit=_RUNS_KEPT)
    return next((run for run in runs if not (run.source or "").startswith(REFRESH_LABEL)), None)


def _age(length: timedelta) -> str:
    """A length of time for people, to two units: ``3m 12s``, ``2h 5m``, ``4d 1h``."""
    seconds = max(0, int(length.total_seconds()))
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def _verdict(run: SyncRun | None, max_age: timedelta | None, now: datetime) -> tuple[bool, str]:
    """Whether the org's last sync passes the check, and what to say of it."""
    if run is None:
        return False, "no sync recorded"
    ago = _age(now - run.finished_at)
    if run.outcome != "ok":
        error = f": {' '.join(run.error.split())}" if run.error else ""
        return False, f"the last sync ended {run.outcome} {ago} ago{error}"
    if max_age is not None and now - run.finished_at > max_age:
        return False, f"the last sync succeeded {ago} ago, more than {_age(max_age)}"
    return True, f"synced {ago} ago"


def _check(
    out: Output,
    store: SqlStore,
    database: Database,
    names: list[str],
    max_age: timedelta | None,
) -> ExitCode:
    now = datetime.now(UTC)
    entries: list[dict[str, Any]] = []
    failing, passing = [], []
    for name in names:
        run = _last_sync(_of(store, name))
        passed, said = _verdict(run, max_age, now)
        entries.append(
            {
                "org": name,
                "ok": passed,
                "reason": None if passed else said,
                "last_sync": None if run is None else run_document(run, name),
            }
        )
        if passed:
            passing.append(f"org {name!r} {said}")
        else:
            failing.append(f"org {name!r}: {said}")
    if not names:
        failing.append(f"{database.shown} holds no org yet")
    ok = not failing
    if out.json:
        out.document(
            {
                "database": database.shown,
                "checked_at": iso(now),
                "max_age_seconds": None if max_age is None else max_age.total_seconds(),
                "ok": ok,
                "orgs": entries,
            }
        )
    if ok:
        if not out.json:
            out.console.print(f"ok: {'; '.join(passing)}", soft_wrap=True)
        return ExitCode.OK
    out.errors.print(escape(f"check failed: {'; '.join(failing)}"))
    return ExitCode.CHECK_FAILED
