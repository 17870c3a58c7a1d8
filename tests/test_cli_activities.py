"""``acctsync activities``: every format streamed, a table a page at a time, a window of
time, and how many entries a page left out."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("click")
pytest.importorskip("rich")
pytest.importorskip("sqlalchemy")

from acctsync import ChangeDataValue, Origin
from acctsync._state import Batch, Watermark
from acctsync.cli import ExitCode
from acctsync.cli._activities import TABLE_PAGE
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from test_cli import acctsync

T0 = datetime(2024, 1, 31, tzinfo=UTC)
ACCOUNTS = [make_id("001", n) for n in range(3)]


def entry(n: int, *, at: datetime | None = None) -> ChangeDataValue:
    """The n-th entry: a minute after the one before, of one of three accounts."""
    account, contact = ACCOUNTS[n % 3], make_id("003", n)
    return ChangeDataValue(
        id=f"salesforce:{account}:{n}:{contact}:Industry",
        contact_id=contact,
        account_id=account,
        field="Industry",
        old_value=None if n % 2 else f"Old {n}",
        new_value=f"New {n}",
        origin=Origin.SALESFORCE,
        occurred_at=at or T0 + timedelta(minutes=n),
    )


def logged(db: Path, entries: list[ChangeDataValue]) -> Path:
    with SqlStore.sqlite(db) as store:
        store.apply(
            Batch(activities=entries, watermarks=[Watermark(stream="Account", system_modstamp=T0)])
        )
    return db


@pytest.fixture(scope="module")
def log250(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose org ``default`` has logged 250 entries."""
    return logged(tmp_path_factory.mktemp("log") / "log.db", [entry(n) for n in range(250)])


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("2024-")]


def test_a_table_shows_a_page_and_says_how_many_more(log250: Path) -> None:
    done = acctsync("activities", "--db", log250)
    rows = table_rows(done.stdout)
    assert len(rows) == TABLE_PAGE == 100
    assert rows[0].split()[:5] == [
        "2024-01-31T00:00:00.000Z", "salesforce", ACCOUNTS[0], make_id("003", 0), "Industry",
    ]  # fmt: skip
    assert done.stdout.splitlines()[-1] == (
        "100 entries shown, 150 more: --limit N, --since / --until, or --format csv for all"
        " of them"
    )
    done = acctsync("activities", "--db", log250, "--limit", "240")
    assert done.stdout.splitlines()[-1].startswith("240 entries shown, 10 more: a higher --limit")
    done = acctsync("activities", "--db", log250, "--limit", "1000")
    assert len(table_rows(done.stdout)) == 250
    assert done.stdout.splitlines()[-1] == "250 entries"
    # Rendered in chunks that line up as one table: one header, every row as wide.
    assert sum(line.startswith("occurred at") for line in done.stdout.splitlines()) == 1
    assert len({len(row.rstrip()) - len(row.rstrip().split()[-1]) for row in rows[:1]}) == 1


def test_a_narrowed_table_counts_what_else_matches(log250: Path) -> None:
    done = acctsync("activities", "--db", log250, "--account", ACCOUNTS[1], "--limit", "5")
    rows = table_rows(done.stdout)
    assert [row.split()[2] for row in rows] == [ACCOUNTS[1]] * 5
    assert done.stdout.splitlines()[-1].startswith("5 entries shown, 78 more:")
    done = acctsync("activities", "--db", log250, "--since", "2030-01-01")
    assert done.stdout.splitlines() == ["0 entries match, of the 250 org 'default' holds"]


def test_since_and_until_make_a_window_that_tiles(log250: Path) -> None:
    def ids(*window: str) -> list[str]:
        rows = acctsync(
            "activities", "--db", log250, "--format", "csv", *window
        ).stdout.splitlines()
        return [row.split(",")[-1] for row in rows[1:]]

    first = ids("--until", "2024-01-31T01:00:00Z")
    second = ids("--since", "2024-01-31T01:00:00Z", "--until", "2024-01-31T02:00:00+00:00")
    assert len(first) == len(second) == 60
    assert first[-1].split(":")[2] == "59"
    assert second[0].split(":")[2] == "60"
    assert set(first).isdisjoint(second)
    done = acctsync(
        "activities", "--db", log250, "--since", "2024-02-01", "--until", "2024-01-31",
        code=ExitCode.USAGE,
    )  # fmt: skip
    assert "--until must be later than --since" in done.stderr
    done = acctsync("activities", "--db", log250, "--until", "noon", code=ExitCode.USAGE)
    assert "Invalid value for '--until'" in done.stderr


def test_csv_and_json_write_every_entry_unless_limited(log250: Path) -> None:
    rows = list(
        csv.reader(io.StringIO(acctsync("activities", "--db", log250, "--format", "csv").stdout))
    )
    assert rows[0] == [
        "occurred_at", "origin", "account_id", "contact_id", "field", "old_value", "new_value",
        "id",
    ]  # fmt: skip
    assert len(rows) == 251
    assert rows[2] == [
        "2024-01-31T00:01:00+00:00", "salesforce", ACCOUNTS[1], make_id("003", 1), "Industry",
        "", "New 1", f"salesforce:{ACCOUNTS[1]}:1:{make_id('003', 1)}:Industry",
    ]  # fmt: skip
    limited = acctsync("activities", "--db", log250, "--format", "csv", "--limit", "7").stdout
    assert len(limited.splitlines()) == 8
    document = json.loads(acctsync("activities", "--db", log250, "--json").stdout)
    assert len(document["activities"]) == 250
    assert document["activities"][0]["old_value"] == "Old 0"
    limited = json.loads(acctsync("activities", "--db", log250, "--json", "--limit", "3").stdout)
    assert [e["new_value"] for e in limited["activities"]] == ["New 0", "New 1", "New 2"]
    empty = json.loads(
        acctsync("activities", "--db", log250, "--json", "--since", "2030-01-01").stdout
    )
    assert empty == {"org": "default", "activities": []}


def test_entries_come_by_occurred_at_whatever_order_they_were_logged_in(tmp_path: Path) -> None:
    # A late commit logs an older change after newer ones (rule R1).
    late = entry(0, at=T0 - timedelta(hours=1))
    db = logged(tmp_path / "late.db", [entry(1), entry(2), late])
    rows = acctsync("activities", "--db", db, "--format", "csv").stdout.splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == sorted(row.split(",")[0] for row in rows)
    table = table_rows(acctsync("activities", "--db", db, "--limit", "1").stdout)
    assert table[0].startswith("2024-01-30T23:00:00.000Z")
