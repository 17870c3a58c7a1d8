"""The operations the command line gained: convert, show, status --check, logging,
shell completion, and the progress bar's totals."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("click")
pytest.importorskip("rich")
pytest.importorskip("sqlalchemy")

from acctsync import Account, Contact
from acctsync.cli import ExitCode
from acctsync.cli._logs import JsonFormatter, TextFormatter
from acctsync.stores.sql import SqlStore, SyncRun
from acctsync.testing import make_id
from test_cli import (
    ACME,
    ADA,
    BO,
    LONER,
    T0,
    acctsync,
    environment,
    files_of,
    salesforce_env,
    write_exports,
)


@pytest.fixture
def synced(tmp_path: Path) -> Path:
    """A SQLite file org ``default`` was synced into (one rejected row: exit 3)."""
    db = tmp_path / "acctsync.db"
    acctsync(
        "sync", "--db", db, "--export-dir", write_exports(tmp_path / "exports"),
        "--type", "AnnualRevenue=currency", code=3,
    )  # fmt: skip
    return db


# -- convert ------------------------------------------------------------------------------


@pytest.fixture
def org() -> Iterator[Any]:
    pytest.importorskip("simple_salesforce")
    pytest.importorskip("cryptography")
    from acctsync.testing.salesforce import FakeSalesforce

    with FakeSalesforce(tls=True, clock=T0 + timedelta(days=1)) as fake:
        fake.put(
            Account(id=ACME, fields={"Name": "Acme"}, system_modstamp=T0),
            Contact(id=ADA, account_id=ACME, fields={"LastName": "Lovelace"}, system_modstamp=T0),
        )
        yield fake


def test_s6_convert_prints_the_three_ids_and_a_retry_creates_nothing(
    tmp_path: Path, org: Any
) -> None:
    db, env = tmp_path / "sf.db", salesforce_env(org)
    acctsync("sync", "--db", db, "--salesforce", env=env)
    person = tmp_path / "lead.json"
    person.write_text(
        json.dumps({"id": "lead-42", "fields": {"LastName": "Doe", "AnnualRevenue": 1500000.50}})
    )
    convert = (
        "convert", "--db", db, "--from-json", person, "--field", "Company=Initech",
        "--external-id-field", "External_Id__c",
    )  # fmt: skip
    done = acctsync(*convert, env=env)
    lines = done.stdout.splitlines()
    assert lines[0] == "person 'lead-42' converted in Salesforce:"
    ids = {line.split()[0]: line.split()[1] for line in lines[1:4]}
    assert [ids["account"][:3], ids["contact"][:3], ids["opportunity"][:3]] == [
        "001",
        "003",
        "006",
    ]
    assert lines[4] == "They reach the database with the next sync."
    created = [a.id for a in org.records("Account") if a.id != ACME]
    assert created == [ids["account"]]
    assert org.records("Account")[-1].fields["AnnualRevenue"] == pytest.approx(1500000.5)

    again = json.loads(acctsync(*convert, "--json", env=env).stdout)
    assert again == {
        "org": "default",
        "person_id": "lead-42",
        "account_id": ids["account"],
        "contact_id": ids["contact"],
        "opportunity_id": ids["opportunity"],
        "converted_before": True,
    }
    # The database lost its record of the conversion: Salesforce still creates nothing twice.
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # committed, then closed
        conn.execute("DELETE FROM acctsync_conversions")
    lost = json.loads(acctsync(*convert, "--json", env=env).stdout)
    assert (lost["account_id"], lost["converted_before"]) == (ids["account"], False)
    assert len(org.records("Account")) == 2
    assert len(org.opportunities()) == 1
    # The records arrive with the next sync.
    acctsync("sync", "--db", db, "--salesforce", env=env)
    shown = json.loads(acctsync("show", "account", ids["account"], "--db", db, "--json").stdout)
    assert shown["account"]["fields"]["Name"] == "Initech"
    assert [c["id"] for c in shown["contacts"]["first"]] == [ids["contact"]]


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ("--person", "lead-1", "--field", "LastName=Doe"),
            ExitCode.USAGE,
            "Error: record 'lead-1', field 'Company': Convert Person needs a non-empty value",
        ),
        (
            ("--person", ADA, "--field", "LastName=Doe", "--field", "Company=Acme"),
            ExitCode.REFUSED,
            f"Error: person '{ADA}' is already contact '{ADA}'",
        ),
        (("--field", "LastName=Doe"), ExitCode.USAGE, "Error: give the person's ID"),
        (("--person", "p", "--field", "LastName"), ExitCode.USAGE, "is not NAME=VALUE"),
    ],
    ids=["no-company", "a-contact", "no-id", "no-equals"],
)
def test_convert_refuses_what_the_rules_refuse_and_writes_nothing(
    tmp_path: Path, org: Any, args: tuple[str, ...], code: int, line: str
) -> None:
    db, env = tmp_path / "sf.db", salesforce_env(org)
    acctsync("sync", "--db", db, "--salesforce", env=env)
    asked = len(org.requests)
    before = files_of(tmp_path)
    done = acctsync("convert", "--db", db, *args, env=env, code=code)
    errors = [e for e in done.stderr.splitlines() if e.startswith("Error:")]
    assert len(errors) == 1
    assert line in errors[0]
    assert len(org.requests) == asked  # nothing sent to Salesforce
    after = files_of(tmp_path)
    assert {k: v for k, v in after.items() if "-wal" not in k and "-shm" not in k} == {
        k: v for k, v in before.items() if "-wal" not in k and "-shm" not in k
    }


# -- show ---------------------------------------------------------------------------------


def test_show_account_marks_local_edits_and_lists_its_contacts_and_log(synced: Path) -> None:
    acctsync("edit", "--db", synced, "--contact", ADA, "--field", "Industry", "--value", "Retail")
    acctsync(
        "edit", "--db", synced, "--contact", BO, "--field", "AnnualRevenue",
        "--json-value", "12.50",
    )  # fmt: skip
    text = acctsync("show", "account", ACME, "--db", synced, "--contacts", "1").stdout
    lines = text.splitlines()
    assert lines[0] == (
        f"account {ACME} of org 'default', SystemModstamp 2024-01-31T12:00:00.000Z"
    )
    assert lines[1].split() == [
        "AnnualRevenue",
        "12.50",
        "local",
        "edit",
        "(Salesforce:",
        "1500000.50)",
    ]
    assert lines[2].split() == ["Industry", '"Retail"', "local", "edit", "(Salesforce:", "null)"]
    assert lines[3].split() == ["Name", '"Acme"']
    assert lines[4:7] == [
        "contacts: 2",
        f"  {BO}  <bo@acme.example>",  # by ID
        "  ... and 1 more (--contacts N)",
    ]
    assert lines[7] == "activity log: the last 4 of 4 entries"

    shown = json.loads(
        acctsync(
            "show", "account", ACME[:15], "--db", synced, "--activities", "1", "--json"
        ).stdout
    )
    assert shown["account"] == {
        "id": ACME,
        "system_modstamp": "2024-01-31T12:00:00+00:00",
        "fields": {"Name": "Acme", "AnnualRevenue": {"$decimal": "12.50"}, "Industry": "Retail"},
        "local_edits": {"Industry": "Retail", "AnnualRevenue": {"$decimal": "12.50"}},
        "salesforce_values": {"Industry": None, "AnnualRevenue": {"$decimal": "1500000.50"}},
    }
    assert shown["contacts"]["count"] == 2
    assert [c["id"] for c in shown["contacts"]["first"]] == sorted([ADA, BO])
    assert shown["activities"]["count"] == 4
    [last] = shown["activities"]["last"]
    assert (last["field"], last["new_value"]) == ("AnnualRevenue", {"$decimal": "12.50"})


def test_show_contact_names_its_account(synced: Path) -> None:
    text = acctsync("show", "contact", ADA, "--db", synced).stdout.splitlines()
    assert text[0].startswith(f"contact {ADA} of org 'default', SystemModstamp ")
    assert text[1].split() == ["Email", '"ada@acme.example"']
    assert text[2] == (
        f'account {ACME} "Acme", with 2 contacts; the values every contact of it sees:'
    )
    assert text[-1] == "activity log: no entries"
    loner = json.loads(acctsync("show", "contact", LONER, "--db", synced, "--json").stdout)
    assert loner["contact"]["account_id"] is None
    assert loner["account"] is None
    assert "no account" in acctsync("show", "contact", LONER, "--db", synced).stdout


def test_show_of_a_record_the_database_does_not_hold_exits_4(synced: Path) -> None:
    unknown = make_id("001", 77)
    done = acctsync("show", "account", unknown, "--db", synced, "--json", code=ExitCode.REFUSED)
    assert done.stderr.splitlines() == [f"Error: no account '{unknown}' in the store"]
    assert json.loads(done.stdout)["error"]["type"] == "UnknownRecordError"
    with SqlStore.sqlite(synced) as store:
        from acctsync import Deletion
        from acctsync._state import Batch

        gone = Deletion(
            object_type="Contact", id=BO, deleted_at=T0 + timedelta(hours=1),
            master_record_id=ADA,
        )  # fmt: skip
        store.apply(Batch(contacts=[gone]))
    done = acctsync("show", "contact", BO, "--db", synced, code=ExitCode.REFUSED)
    assert done.stderr.splitlines() == [
        f"Error: contact '{BO}' was deleted in Salesforce at 2024-01-31T13:00:00+00:00,"
        f" merged into '{ADA}'"
    ]
    done = acctsync("show", "account", "001nope", "--db", synced, code=ExitCode.USAGE)
    assert "not an account ID" in done.stderr


# -- status --check -----------------------------------------------------------------------


def record(db: Path, **run: Any) -> None:
    with SqlStore.sqlite(db) as store:
        store.record_run(SyncRun(**run))


def test_status_check_passes_on_a_recent_successful_sync_only(synced: Path) -> None:
    now = datetime.now(UTC)
    check = ("status", "--db", synced, "--check", "--max-age", "15m")
    # The fixture's sync rejected a record.
    done = acctsync(*check, code=ExitCode.CHECK_FAILED)
    [line] = done.stderr.splitlines()
    assert line.startswith("check failed: org 'default': the last sync ended rejected ")
    assert done.stdout == ""

    record(synced, started_at=now, finished_at=now, outcome="ok", source="export folder x")
    done = acctsync(*check)
    [line] = done.stdout.splitlines()
    assert re.fullmatch(r"ok: org 'default' synced \d+s ago", line)
    assert done.stderr == ""
    # A formula refresh that failed since is not a sync: the data is as fresh.
    record(
        synced, started_at=now, finished_at=now, outcome="failed",
        source="formula fields of salesforce https://x", error="boom",
    )  # fmt: skip
    acctsync(*check)

    old = now - timedelta(hours=2, minutes=5)
    record(synced, started_at=old, finished_at=old, outcome="ok", source="export folder x")
    done = acctsync(*check, "--json", code=ExitCode.CHECK_FAILED)
    assert done.stderr.splitlines() == [
        "check failed: org 'default': the last sync succeeded 2h 5m ago, more than 15m"
    ]
    document = json.loads(done.stdout)
    assert (document["ok"], document["max_age_seconds"]) == (False, 900.0)
    [entry] = document["orgs"]
    assert entry["reason"] == "the last sync succeeded 2h 5m ago, more than 15m"
    assert entry["last_sync"]["outcome"] == "ok"
    acctsync("status", "--db", synced, "--check")  # no --max-age: the outcome only

    record(
        synced, started_at=now, finished_at=now, outcome="failed", source="salesforce x",
        error="INVALID_SESSION_ID:\nSession expired",
    )  # fmt: skip
    done = acctsync("status", "--db", synced, "--check", code=ExitCode.CHECK_FAILED)
    [line] = done.stderr.splitlines()
    assert re.fullmatch(
        r"check failed: org 'default': the last sync ended failed \d+s ago:"
        r" INVALID_SESSION_ID: Session expired",
        line,
    )


def test_status_check_of_every_org_and_of_none(tmp_path: Path, synced: Path) -> None:
    now = datetime.now(UTC)
    record(synced, started_at=now, finished_at=now, outcome="ok", source="x")
    with SqlStore.sqlite(synced, org="acme") as store:
        store.record_run(SyncRun(started_at=now, finished_at=now, outcome="interrupted"))
    done = acctsync("status", "--db", synced, "--check", code=ExitCode.CHECK_FAILED)
    [line] = done.stderr.splitlines()
    assert re.fullmatch(
        r"check failed: org 'acme': the last sync ended interrupted \d+s ago", line
    )
    acctsync("status", "--db", synced, "--check", "--org", "default")
    SqlStore.sqlite(tmp_path / "empty.db").close()
    done = acctsync("status", "--db", tmp_path / "empty.db", "--check", code=ExitCode.CHECK_FAILED)
    assert done.stderr.splitlines() == [f"check failed: {tmp_path / 'empty.db'} holds no org yet"]
    done = acctsync("status", "--db", synced, "--max-age", "15m", code=ExitCode.USAGE)
    assert "--max-age goes with --check" in done.stderr
    done = acctsync("status", "--db", synced, "--check", "--max-age", "0", code=ExitCode.USAGE)
    assert "not more than 0" in done.stderr


# -- logging ------------------------------------------------------------------------------


def test_verbose_logs_the_run_on_stderr_as_text_or_json(synced: Path, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    quiet = acctsync("sync", "--db", synced, "--export-dir", exports, code=3)
    assert quiet.stderr == ""
    done = acctsync("-v", "sync", "--db", synced, "--export-dir", exports, code=3)
    [line] = done.stderr.splitlines()
    assert line.endswith(
        f" INFO acctsync.cli: syncing org 'default' from export folder {exports} into {synced}"
    )
    assert datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).tzinfo is not None
    # After the command's name too, and as JSON lines.
    done = acctsync(
        "sync", "--db", synced, "--export-dir", exports, "--log-format", "json", "-v", code=3
    )
    [record_] = [json.loads(line) for line in done.stderr.splitlines()]
    assert list(record_) == ["time", "level", "logger", "message"]
    assert (record_["level"], record_["logger"]) == ("info", "acctsync.cli")
    # From the environment, as a scheduler sets it; an explicit option wins.
    env = environment(ACCTSYNC_LOG_LEVEL="info", ACCTSYNC_LOG_FORMAT="json")
    done = acctsync("sync", "--db", synced, "--export-dir", exports, env=env, code=3)
    assert json.loads(done.stderr)["level"] == "info"
    done = acctsync(
        "--log-level", "warning", "sync", "--db", synced, "--export-dir", exports, env=env, code=3
    )
    assert done.stderr == ""
    done = acctsync("--log-level", "loud", "status", "--db", synced, code=ExitCode.USAGE)
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error'" in done.stderr


def test_log_records_are_one_line_and_carry_their_error() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record_ = logging.LogRecord(
            "acctsync.sources.salesforce", logging.WARNING, __file__, 1,
            "retrying %s", ("GET /query",), sys.exc_info(),
        )  # fmt: skip
    text = TextFormatter().format(record_)
    assert text.endswith(
        " WARNING acctsync.sources.salesforce: retrying GET /query (ValueError: bad value)"
    )
    assert "\n" not in text
    document = json.loads(JsonFormatter().format(record_))
    assert document["error"] == {"type": "ValueError", "message": "bad\nvalue"}
    assert "traceback" not in document["error"]
    assert (
        "Traceback"
        in json.loads(JsonFormatter(tracebacks=True).format(record_))["error"]["traceback"]
    )
    assert "Traceback" in TextFormatter(tracebacks=True).format(record_)


# -- shell completion ---------------------------------------------------------------------


def test_shell_completion_is_clicks_own() -> None:
    script = acctsync(env=environment(_ACCTSYNC_COMPLETE="bash_source")).stdout
    assert "_acctsync_completion()" in script
    assert "complete -o nosort -F _acctsync_completion acctsync" in script
    done = acctsync(
        env=environment(
            _ACCTSYNC_COMPLETE="bash_complete", COMP_WORDS="acctsync show ", COMP_CWORD="2"
        )
    )
    assert done.stdout.splitlines() == ["plain,account", "plain,contact"]
    done = acctsync(
        env=environment(
            _ACCTSYNC_COMPLETE="bash_complete",
            COMP_WORDS="acctsync activities --format ",
            COMP_CWORD="3",
        )
    )
    assert done.stdout.splitlines() == ["plain,table", "plain,json", "plain,csv"]


# -- progress -----------------------------------------------------------------------------


def test_the_progress_bar_shows_each_objects_total_and_the_time_left(tmp_path: Path) -> None:
    exports = write_exports(tmp_path / "exports")
    done = acctsync(
        "sync", "--db", tmp_path / "x.db", "--export-dir", exports, "--progress", code=3
    )
    assert "Account" in done.stderr
    assert "2 of 2 records, 1 pages" in done.stderr  # Acme and the row without an Id
    assert "Contact" in done.stderr
    assert "3 of 3 records, 1 pages" in done.stderr
    assert "ETA 0:00:00" in done.stderr


def test_the_progress_bar_of_a_salesforce_sync_shows_the_querys_count(
    tmp_path: Path, org: Any
) -> None:
    org.put(
        *(
            Contact(id=make_id("003", n), account_id=ACME, fields={"LastName": f"N{n}"},
                    system_modstamp=T0 + timedelta(seconds=n))
            for n in range(1, 450)
        )
    )  # fmt: skip
    done = acctsync(
        "sync", "--db", tmp_path / "sf.db", "--salesforce", "--progress", "--page-size", "200",
        env=salesforce_env(org),
    )  # fmt: skip
    assert "1 of 1 records" in done.stderr  # Acme
    assert "450 of 450 records, 3 pages" in done.stderr  # Ada and 449 more, by REST
    assert "ETA 0:00:00" in done.stderr
