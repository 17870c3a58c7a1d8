"""The SQL behind the store's history and overview: its runs, its counts, its orgs.

`record_run` keeps a run and trims the org's history; `recent_runs` reads it back.
`count` and `orgs` are the other reads ``acctsync status`` shows beside the last run.
None of these is part of the `Store` protocol the engine drives, so they live apart from
the store, which keeps thin public methods that run them in its own transactions.
"""

from __future__ import annotations

import json
from typing import Any, cast

import attrs
from cattrs import Converter
from sqlalchemy import Connection, Table, delete, func, select

from acctsync.stores.sql._codec import micros
from acctsync.stores.sql._runs import StoreCounts, SyncRun
from acctsync.stores.sql._schema import Tables

__all__ = ["count", "kept", "orgs", "recent_runs", "record_run"]

# A run keeps this many of its rejections and suppressions (with their total counts),
# and an org this many runs: enough to see what went wrong, not a second log.
_KEPT_ITEMS = 1000
_KEPT_RUNS = 100


def kept(run: SyncRun, converter: Converter) -> tuple[SyncRun, str]:
    """``run`` as the store keeps it (its first rejections and suppressions, no ``id``),
    and the JSON summary it is kept as.

    Apart from `record_run` so that all of it happens before the transaction opens.
    """
    trimmed = attrs.evolve(
        run,
        rejected=run.rejected[:_KEPT_ITEMS],
        suppressed=run.suppressed[:_KEPT_ITEMS],
        rejected_count=max(run.rejected_count, len(run.rejected)),
        suppressed_count=max(run.suppressed_count, len(run.suppressed)),
        id=None,
    )
    # ASCII: a rejection may quote what was rejected, half a surrogate pair included (R10).
    return trimmed, json.dumps(converter.unstructure(trimmed))


def record_run(conn: Connection, tables: Tables, org: str, run: SyncRun, summary: str) -> int:
    """Insert ``run`` with its ``summary`` (both from `kept`) as ``org``'s latest, drop
    the org's runs older than the newest ``_KEPT_RUNS``, and return the new run's number.
    """
    table = tables.runs
    inserted = conn.execute(
        table.insert().values(
            org=org,
            started_at=micros(run.started_at),
            outcome=run.outcome,
            summary=summary,
        )
    )
    seq = int(cast("tuple[int]", inserted.inserted_primary_key)[0])
    newest = (
        select(table.c.seq)
        .where(table.c.org == org)
        .order_by(table.c.seq.desc())
        .limit(_KEPT_RUNS)
        .subquery()
    )
    conn.execute(
        delete(table).where(
            table.c.org == org,
            table.c.seq < select(func.min(newest.c.seq)).scalar_subquery(),
        )
    )
    return seq


def recent_runs(
    conn: Connection, tables: Tables, org: str, converter: Converter, limit: int
) -> list[SyncRun]:
    """``org``'s latest ``limit`` recorded runs, newest first, each with its ``id``."""
    table = tables.runs
    rows = conn.execute(
        select(table.c.seq, table.c.summary)
        .where(table.c.org == org)
        .order_by(table.c.seq.desc())
        .limit(limit)
    ).all()
    return [
        attrs.evolve(converter.structure(json.loads(row.summary), SyncRun), id=row.seq)
        for row in rows
    ]


def count(conn: Connection, tables: Tables, org: str) -> StoreCounts:
    """How many live accounts and contacts, and activity entries, ``org`` has."""
    accounts, contacts, log = tables.accounts, tables.contacts, tables.activities
    return StoreCounts(
        accounts=_count(conn, org, accounts, ~accounts.c.deleted),
        contacts=_count(conn, org, contacts, ~contacts.c.deleted),
        activities=_count(conn, org, log),
    )


def _count(conn: Connection, org: str, table: Table, *where: Any) -> int:
    found = conn.scalar(select(func.count()).where(table.c.org == org, *where))
    return int(found or 0)


def orgs(conn: Connection, tables: Tables) -> list[str]:
    """Every org the database holds a sync, a run or a conversion of, in order."""
    found: set[str] = set()
    for table in (tables.watermarks, tables.runs, tables.conversions):
        found.update(conn.scalars(select(table.c.org).distinct()))
    return sorted(found)
