"""The ``acctsync`` command, run as a user runs it: a process, its output and exit status."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("click")
pytest.importorskip("rich")
pytest.importorskip("sqlalchemy")

from acctsync import (
    Account,
    Contact,
    FormulaSource,
    InvalidRecordError,
    Origin,
    SourceError,
    SyncEngine,
    WarningSource,
)
from acctsync._protocols import DescribedSource
from acctsync._records import Change, ObjectType
from acctsync.cli import ExitCode
from acctsync.cli._output import Output
from acctsync.cli._params import parse_json_value
from acctsync.cli._running import ObservedSource, Runner, Stopped, StopRequest, observed
from acctsync.stores.sql import SCHEMA_VERSION, SqlStore
from acctsync.testing import InMemorySource, InMemoryStore, make_id

ACME, GLOBEX = "001Ak00000AcmeQIAR", make_id("001", 2)
ADA, BO = "003Ak00000AdaLvIAJ", make_id("003", 2)
LONER = make_id("003", 3)
T0 = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
SCRIPT = Path(sys.executable).with_name("acctsync")
COMMAND = (sys.executable, "-m", "acctsync.cli")
RUN_KEYS = [
    "org",
    "id",
    "outcome",
    "source",
    "error",
    "started_at",
    "finished_at",
    "seconds",
    "pages",
    "accounts_upserted",
    "accounts_deleted",
    "contacts_upserted",
    "contacts_deleted",
    "already_applied",
    "stale",
    "local_edits_discarded",
    "refreshed",
    "api_requests",
    "activities",
    "rejected",
    "rejected_count",
    "suppressed",
    "suppressed_count",
    "refetch_count",
    "missing_fields",
    "watermarks",
]


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without settings the command would read on its own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ACCTSYNC_", "SALESFORCE_", "REQUESTS_CA_BUNDLE"))
    }
    return {**env, **extra}


def acctsync(
    *args: str | Path, env: dict[str, str] | None = None, code: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m acctsync.cli ARGS``, and check that it exits with ``code``."""
    done = subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=env or environment(),
        timeout=60,
    )
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by path, with its bytes: what a command may not change."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


BIG_EXPORT_CONTACTS = 20_000


def write_big_exports(folder: Path) -> Path:
    """An export folder of Acme and `BIG_EXPORT_CONTACTS` contacts, a minute apart: a
    sync long enough to be interrupted."""
    folder.mkdir()
    (folder / "Account.csv").write_text(
        f"Id,Name,SystemModstamp\n{ACME},Acme,2024-01-01T00:00:00.000Z\n"
    )
    total = BIG_EXPORT_CONTACTS
    with (folder / "Contact.csv").open("w") as rows:
        rows.write("Id,AccountId,SystemModstamp\n")
        for n in range(total):
            stamp = T0 - timedelta(minutes=total - n)
            rows.write(f"{make_id('003', n)},{ACME},{stamp:%Y-%m-%dT%H:%M:%S}.000Z\n")
    return folder


def write_exports(folder: Path) -> Path:
    """An export folder: Acme, two contacts (one 15-character reference), one bad row."""
    folder.mkdir()
    (folder / "Account.csv").write_text(
        '"Id","Name","AnnualRevenue","SystemModstamp","IsDeleted"\n'
        f'"{ACME}","Acme","1500000.50","2024-01-31T12:00:00.000Z","false"\n'
        '"not-an-id","Nope","1","2024-01-31T12:00:00.000Z","false"\n'
    )
    (folder / "Contact.jsonl").write_text(
        f'{{"attributes": {{"type": "Contact"}}, "Id": "{ADA}", "AccountId": "001Ak00000AcmeQ",'
        ' "Email": "ada@acme.example", "SystemModstamp": "2024-01-31T12:00:00.000+0000"}\n'
        f'{{"attributes": {{"type": "Contact"}}, "Id": "{BO}", "AccountId": "{ACME}",'
        ' "Email": "bo@acme.example", "SystemModstamp": "2024-01-31T12:00:00.000+0000"}\n'
        f'{{"attributes": {{"type": "Contact"}}, "Id": "{LONER}", "AccountId": null,'
        ' "SystemModstamp": "2024-01-31T12:00:00.000+0000"}\n'
    )
    return folder


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """The export folder, for one test."""
    return write_exports(tmp_path / "exports")


@pytest.fixture
def synced(tmp_path: Path, exports: Path) -> Path:
    """A SQLite file the export folder was synced into."""
    db = tmp_path / "acctsync.db"
    acctsync(
        "sync", "--db", db, "--export-dir", exports, "--type", "AnnualRevenue=currency", code=3
    )
    return db


# -- sync ---------------------------------------------------------------------------------


def test_sync_of_an_export_folder_reports_and_exits_3_for_rejections(
    tmp_path: Path, exports: Path
) -> None:
    db = tmp_path / "acctsync.db"
    done = acctsync(
        "sync", "--db", db, "--export-dir", exports, "--type", "AnnualRevenue=currency", code=3
    )
    assert "sync of org 'default': rejected" in done.stdout
    assert "accounts: 1 upserted" in done.stdout
    assert "contacts: 3 upserted" in done.stdout
    assert (
        "Account not-an-id (Account.csv:3) Id: 'not-an-id' is not a Salesforce ID" in done.stdout
    )
    assert "\x1b[" not in done.stdout + done.stderr  # piped: no colours, no progress bar
    with SqlStore.sqlite(db) as store:
        acme = store.get_account(ACME)
        assert acme is not None
        assert acme.fields["AnnualRevenue"] == Decimal("1500000.50")
        assert store.contact_ids(ACME) == sorted([ADA, BO])


def test_sync_json_is_one_document_of_the_run(tmp_path: Path, exports: Path) -> None:
    (exports / "Account.csv").write_text(
        "Id,Name,SystemModstamp\n" + f"{ACME},Acme,2024-01-31T12:00:00.000Z\n"
    )
    done = acctsync("sync", "--db", tmp_path / "x.db", "--export-dir", exports, "--json")
    run = json.loads(done.stdout)
    assert list(run) == RUN_KEYS
    assert run["outcome"] == "ok"
    assert run["org"] == "default"
    assert run["source"] == f"export folder {exports}"
    assert (run["accounts_upserted"], run["contacts_upserted"]) == (1, 3)
    assert run["rejected"] == []
    assert run["watermarks"] == {
        "Account": "2024-01-31T12:00:00+00:00",
        "Contact": "2024-01-31T12:00:00+00:00",
    }
    assert run["missing_fields"] == {}  # an export folder has no describe
    assert datetime.fromisoformat(run["finished_at"]) >= datetime.fromisoformat(run["started_at"])
    assert done.stderr == ""


def test_an_unreadable_export_file_exits_6_and_is_recorded(tmp_path: Path, exports: Path) -> None:
    (exports / "Account.csv").write_text("Name,SystemModstamp\nAcme,2024-01-31T12:00:00.000Z\n")
    db = tmp_path / "x.db"
    done = acctsync("sync", "--db", db, "--export-dir", exports, "--json", code=6)
    error = json.loads(done.stdout)["error"]
    assert error["exit_code"] == 6
    assert error["type"] == "ExportFileError"
    assert "Id" in error["message"]
    assert "Error:" in done.stderr
    with SqlStore.sqlite(db) as store:
        run = store.last_run()
    assert run is not None
    assert run.outcome == "failed"
    assert run.error == error["message"]


def test_the_installed_script_runs(tmp_path: Path, exports: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("acctsync is not installed next to this Python")
    done = subprocess.run(
        [SCRIPT, "--help"], capture_output=True, text=True, env=environment(), check=True
    )
    listed = done.stdout.partition("Commands:")[2].splitlines()
    names = {line.split()[0] for line in listed if line.startswith("  ") and line.split()}
    assert {"demo", "sync", "status", "activities", "edit"} <= names


def test_a_progress_bar_is_shown_when_asked(tmp_path: Path, exports: Path) -> None:
    done = acctsync(
        "sync", "--db", tmp_path / "x.db", "--export-dir", exports, "--progress", code=3
    )
    assert "records" in done.stderr
    assert "pages" in done.stderr
    assert "records/s" in done.stderr


# -- bad arguments ------------------------------------------------------------------------


NAIVE = '{{"$datetime": "2024-01-31T12:00:00"}}'  # braces doubled for str.format
BAD = [
    (["sync", "--export-dir", "{exports}"], "Missing option '--db'"),
    (["sync", "--db", "{db}"], "give one source"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--salesforce"], "give one source"),
    (["sync", "--db", "{db}", "--export-dir", "{tmp}/nope"], "does not exist"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--type", "Amount"], "COLUMN=TYPE"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--type", "A=money"], "money"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--fields-account", "Name"], "go with"),
    (["sync", "--db", "{db}", "--salesforce"], "SALESFORCE_INSTANCE_URL"),
    (
        ["sync", "--db", "{db}", "--export-dir", "{exports}", "--max-api-share", "0.5"],
        "--max-api-share goes with --salesforce",
    ),
    (["sync", "--db", "{db}", "--salesforce", "--max-api-share", "0"], "--max-api-share"),
    (["sync", "--db", "{db}", "--salesforce", "--max-api-share", "1.5"], "--max-api-share"),
    (
        ["sync", "--db", "{db}", "--export-dir", "{exports}", "--bulk-threshold", "5"],
        "--bulk-threshold and --no-bulk go with --salesforce",
    ),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--no-bulk"], "go with --salesforce"),
    (["sync", "--db", "{db}", "--salesforce", "--bulk-threshold", "-1"], "--bulk-threshold"),
    (
        ["sync", "--db", "{db}", "--salesforce", "--bulk-threshold", "5", "--no-bulk"],
        "not with --no-bulk",
    ),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--every", "0"], "--every"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--every", "nan"], "--every"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--every", "inf"], "--every"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--lookback", "1e30"], "--lookback"),
    (
        ["sync", "--db", "{tmp}/new.db", "--export-dir", "{exports}", "--lock-timeout", "nan"],
        "--lock-timeout",
    ),
    (["sync", "--db", "mysql://u@h/d", "--export-dir", "{exports}"], "SQLite or PostgreSQL"),
    (["sync", "--db", "{db}", "--export-dir", "{exports}", "--org", ""], "org must be"),
    (["edit", "--db", "{db}", "--contact", ADA[:-1] + "X", "--field", "F", "--value", "v"], "IAJ"),
    (["edit", "--db", "{db}", "--contact", ACME, "--field", "F", "--value", "v"], "key prefix"),
    (["edit", "--db", "{db}", "--contact", ADA, "--field", "F"], "--value TEXT or --json-value"),
    (["edit", "--db", "{db}", "--contact", ADA, "--field", "Id", "--value", "v"], "attribute"),
    # R9: a record attribute in any case; the name, not the value, is what is wrong.
    (
        ["edit", "--db", "{db}", "--contact", ADA, "--field", "ID", "--json-value", "1"],
        "Invalid value for '--field': is a record attribute",
    ),
    (
        ["edit", "--db", "{db}", "--contact", ADA, "--field", "systemmodstamp", "--value", "v"],
        "Invalid value for '--field': is a record attribute",
    ),
    (
        ["edit", "--db", "{db}", "--contact", ADA, "--field", "Due Date", "--json-value", "1"],
        "Invalid value for '--field': is not a Salesforce API name",
    ),
    # R10: a byte that is not UTF-8 reaches Python as a lone surrogate: no Salesforce text.
    (
        ["edit", "--db", "{db}", "--contact", ADA, "--field", "F", "--value", "\udcff"],
        "Invalid value for '--value': is not valid Unicode text",
    ),
    (["edit", "--db", "{db}", "--contact", ADA, "--field", "F", "--json-value", "x"], "not JSON"),
    (["edit", "--db", "{db}", "--contact", ADA, "--field", "F", "--json-value", "[1]"], "a list"),
    (
        ["edit", "--db", "{db}", "--contact", ADA, "--field", "F", "--json-value", NAIVE],
        "Invalid value for '--json-value': datetimes must be timezone-aware",
    ),
    (["edit", "--db", "{tmp}/nope.db", "--contact", ADA, "--field", "F", "--value", "v"], "no "),
    (["activities", "--db", "{db}", "--since", "2024-01-31T12:00"], "no time zone"),
    (["activities", "--db", "{db}", "--since", "yesterday"], "is not a time"),
    (["activities", "--db", "{db}", "--json", "--format", "csv"], "does not go with"),
    (["status", "--db", "{tmp}/nope.db"], "no database at"),
    (["status", "--db", "{tmp}/other.db"], "holds no acctsync tables"),
    (["activities", "--db", "{tmp}/other.db"], "holds no acctsync tables"),
    (["frobnicate"], "No such command"),
    (["refresh-formulas", "--db", "{db}"], "give one source"),
    (
        ["refresh-formulas", "--db", "{db}", "--export-dir", "{exports}"],
        "cannot read formula fields alone, as refresh-formulas needs",
    ),
    (["refresh-formulas", "--db", "{tmp}/nope.db", "--export-dir", "{exports}"], "formula"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a database and an export folder, for tests that must not change them."""
    folder = tmp_path_factory.mktemp("shared")
    acctsync(
        "sync",
        "--db",
        folder / "acctsync.db",
        "--export-dir",
        write_exports(folder / "exports"),
        code=3,
    )
    # Another application's database, which reading commands must leave as it is.
    with contextlib.closing(sqlite3.connect(folder / "other.db")) as other:
        other.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        other.commit()
    return folder


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_arguments_exit_2_and_write_nothing(
    shared: Path, args: list[str], message: str
) -> None:
    before = {path: path.read_bytes() for path in shared.glob("*.db*")}
    filled = [
        a.format(db=shared / "acctsync.db", exports=shared / "exports", tmp=shared) for a in args
    ]
    done = acctsync(*filled, code=ExitCode.USAGE)
    assert message in done.stderr
    assert done.stdout == ""
    assert {path: path.read_bytes() for path in shared.glob("*.db*")} == before


# -- status -------------------------------------------------------------------------------


def test_status_shows_each_org_with_its_last_run(synced: Path, exports: Path) -> None:
    acctsync("sync", "--db", synced, "--export-dir", exports, "--org", "globex", code=3)
    done = acctsync("status", "--db", synced, "--json")
    status = json.loads(done.stdout)
    assert status["database"] == str(synced)
    assert status["schema_version"] == SCHEMA_VERSION
    assert [org["org"] for org in status["orgs"]] == ["default", "globex"]
    org = status["orgs"][0]
    assert list(org) == ["org", "watermarks", "counts", "last_run"]
    assert org["counts"] == {"accounts": 1, "contacts": 3, "activities": 0}
    assert org["watermarks"]["Account"] == "2024-01-31T12:00:00+00:00"
    run = org["last_run"]
    assert list(run) == RUN_KEYS
    assert run["outcome"] == "rejected"
    assert run["rejected"][0]["origin"] == "Account.csv:3"
    assert run["rejected_count"] == 1

    text = acctsync("status", "--db", synced, "--org", "globex").stdout
    assert f"{synced}: schema version {SCHEMA_VERSION}" in text
    assert "org 'globex'" in text
    assert "org 'default'" not in text
    assert "holds 1 accounts, 3 contacts, 0 activities" in text
    assert "last run: rejected" in text
    assert "Account not-an-id (Account.csv:3)" in text


def test_status_of_a_database_without_syncs(tmp_path: Path) -> None:
    SqlStore.sqlite(tmp_path / "empty.db").close()
    done = acctsync("status", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert "No org has synced into this database yet." in done.stdout
    assert (
        json.loads(acctsync("status", "--db", tmp_path / "empty.db", "--json").stdout)["orgs"]
        == []
    )


# -- edit and activities ------------------------------------------------------------------


def test_an_edit_reaches_every_contact_and_the_log(synced: Path) -> None:
    done = acctsync(
        "edit", "--db", synced, "--contact", ADA, "--field", "Industry", "--value", "42"
    )
    assert f'account {ACME} field Industry: null -> "42"' in done.stdout
    assert "seen by every contact of the account (2); 2 Change Data Value entries logged" in (
        done.stdout
    )
    edited = json.loads(
        acctsync(
            "edit", "--db", synced, "--contact", BO, "--field", "AnnualRevenue",
            "--json-value", "12.50", "--json",
        ).stdout
    )  # fmt: skip
    assert edited == {
        "org": "default",
        "contact_id": BO,
        "account_id": ACME,
        "field": "AnnualRevenue",
        "old_value": {"$decimal": "1500000.50"},
        "new_value": {"$decimal": "12.50"},
        "changed": True,
        "contact_count": 2,
        "activities": 2,
        "suppressed": None,
    }
    again = acctsync(
        "edit",
        "--db",
        synced,
        "--contact",
        BO,
        "--field",
        "AnnualRevenue",
        "--json-value",
        "12.50",
    )
    assert "already 12.50: nothing written" in again.stdout
    with SqlStore.sqlite(synced) as store:
        acme = store.get_account(ACME)
        assert acme is not None
        assert acme.fields["Industry"] == "42"
        assert acme.fields["AnnualRevenue"] == Decimal("12.50")
        logged = list(store.activities())
    assert len(logged) == 4
    assert {entry.origin for entry in logged} == {Origin.LOCAL}


def test_an_edit_the_rules_refuse_exits_4(synced: Path) -> None:
    unknown = make_id("003", 99)
    done = acctsync(
        "edit", "--db", synced, "--contact", unknown, "--field", "F", "--value", "v", "--json",
        code=ExitCode.REFUSED,
    )  # fmt: skip
    assert json.loads(done.stdout) == {
        "error": {
            "exit_code": 4,
            "type": "UnknownContactError",
            "message": f"no contact '{unknown}' in the store",
        }
    }
    done = acctsync(
        "edit", "--db", synced, "--contact", LONER, "--field", "F", "--value", "v",
        code=ExitCode.REFUSED,
    )  # fmt: skip
    assert "has no account; accounts are created only by a sync from Salesforce" in done.stderr
    with SqlStore.sqlite(synced) as store:
        assert store.counts().activities == 0


def test_r9_an_edit_names_a_field_in_any_case_and_takes_the_orgs_spelling(synced: Path) -> None:
    done = acctsync(
        "edit", "--db", synced, "--contact", ADA, "--field", "annualREVENUE",
        "--json-value", "12.50",
    )  # fmt: skip
    assert f"account {ACME} field AnnualRevenue: 1500000.50 -> 12.50" in done.stdout
    edited = json.loads(
        acctsync(
            "edit", "--db", synced, "--contact", ADA, "--field", "INDUSTRY", "--value", "Retail",
            "--json",
        ).stdout
    )  # fmt: skip
    assert (edited["field"], edited["changed"]) == ("Industry", True)  # a standard field
    with SqlStore.sqlite(synced) as store:
        acme = store.get_account(ACME)
        assert acme is not None
        assert acme.fields["AnnualRevenue"] == Decimal("12.50")
        assert acme.fields["Industry"] == "Retail"
        assert {"annualREVENUE", "INDUSTRY"}.isdisjoint(acme.fields)


def test_r9_an_edit_of_a_field_the_org_has_not_got_exits_4_unless_allowed(synced: Path) -> None:
    typo = ["edit", "--db", synced, "--contact", ADA, "--field", "AnualRevenue", "--value", "1"]
    done = acctsync(*typo, code=ExitCode.REFUSED)
    message = (
        "Account has no field 'AnualRevenue'; did you mean 'AnnualRevenue'?"
        " (--allow-new-field adds it as a local field)"
    )
    assert done.stderr == f"Error: {message}\n"
    assert done.stdout == ""
    error = json.loads(acctsync(*typo, "--json", code=ExitCode.REFUSED).stdout)
    assert error == {"error": {"exit_code": 4, "type": "UnknownFieldError", "message": message}}
    with SqlStore.sqlite(synced) as store:
        assert store.counts().activities == 0
        assert "AnualRevenue" not in store.get_account(ACME).fields  # type: ignore[union-attr]

    far = acctsync(*typo[:-3], "Xyzzy", "--value", "1", code=ExitCode.REFUSED)
    assert "Error: Account has no field 'Xyzzy' (--allow-new-field" in far.stderr

    done = acctsync(*typo, "--allow-new-field")
    assert f'account {ACME} field AnualRevenue: null -> "1"' in done.stdout
    with SqlStore.sqlite(synced) as store:
        assert store.get_account(ACME).fields["AnualRevenue"] == "1"  # type: ignore[union-attr]
        assert store.counts().activities == 2


def test_activities_as_a_table_json_and_csv(synced: Path) -> None:
    acctsync("edit", "--db", synced, "--contact", ADA, "--field", "Industry", "--value", "Retail")
    acctsync(
        "edit", "--db", synced, "--contact", ADA, "--field", "Since",
        "--json-value", '{"$date": "2024-02-01"}', "--allow-new-field",
    )  # fmt: skip
    table = acctsync("activities", "--db", synced).stdout
    assert '"Retail"' in table
    assert "2024-02-01" in table
    assert "4 entries" in table

    log = json.loads(acctsync("activities", "--db", synced, "--contact", ADA, "--json").stdout)
    assert list(log) == ["org", "activities"]
    assert [(e["field"], e["new_value"]) for e in log["activities"]] == [
        ("Industry", "Retail"),
        ("Since", {"$date": "2024-02-01"}),
    ]
    entry = log["activities"][0]
    assert list(entry) == [
        "id",
        "contact_id",
        "account_id",
        "field",
        "old_value",
        "new_value",
        "origin",
        "occurred_at",
    ]
    assert (entry["account_id"], entry["old_value"], entry["origin"]) == (ACME, None, "local")

    rows = acctsync("activities", "--db", synced, "--format", "csv", "--limit", "3").stdout
    lines = rows.splitlines()
    assert lines[0] == "occurred_at,origin,account_id,contact_id,field,old_value,new_value,id"
    assert len(lines) == 4
    assert f",local,{ACME},{ADA},Industry,,Retail," in rows

    later = acctsync("activities", "--db", synced, "--since", "1d", "--account", ACME, "--json")
    assert len(json.loads(later.stdout)["activities"]) == 4
    future = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert "0 entries" in acctsync("activities", "--db", synced, "--since", future).stdout


def test_field_values_from_json_keep_their_types() -> None:
    assert parse_json_value('"42"') == "42"
    assert parse_json_value("42") == 42
    assert parse_json_value("1500000.50") == Decimal("1500000.50")
    assert parse_json_value("true") is True
    assert parse_json_value("null") is None
    assert parse_json_value('{"$date": "2024-01-31"}') == date(2024, 1, 31)
    assert parse_json_value('{"$datetime": "2024-01-31T12:00:00+00:00"}') == T0
    for bad in ("[1]", '{"a": 1, "b": 2}', '{"$date": "31.1."}', "nope"):
        with pytest.raises(InvalidRecordError):
            parse_json_value(bad)


# -- one runner at a time -----------------------------------------------------------------


def test_a_held_lock_exits_5(synced: Path, exports: Path) -> None:
    with SqlStore.sqlite(synced) as holder, holder.exclusive():
        done = acctsync(
            "sync", "--db", synced, "--export-dir", exports, "--lock-timeout", "0.2", "--json",
            code=ExitCode.LOCKED,
        )  # fmt: skip
        error = json.loads(done.stdout)["error"]
        assert error["type"] == "LockTimeoutError"
        assert "gave up after waiting 0.2 s" in error["message"]
        done = acctsync(
            "edit", "--db", synced, "--contact", ADA, "--field", "F", "--value", "v",
            "--lock-timeout", "0", code=ExitCode.LOCKED,
        )  # fmt: skip
        assert "another runner holds the store of org 'default'" in done.stderr
    with SqlStore.sqlite(synced) as store:
        assert len(store.runs()) == 1  # the first sync's: a run that never started is not
        assert store.counts().activities == 0


# -- Salesforce ---------------------------------------------------------------------------


@pytest.fixture
def org() -> Iterator[Any]:
    pytest.importorskip("simple_salesforce")
    pytest.importorskip("cryptography")
    from acctsync.testing.salesforce import FakeSalesforce

    with FakeSalesforce(tls=True, clock=T0 + timedelta(days=1)) as fake:
        fake.put(
            Account(id=ACME, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0),
            Contact(id=ADA, account_id=ACME, fields={"LastName": "Lovelace"}, system_modstamp=T0),
        )
        yield fake


def salesforce_env(org: Any, **extra: str) -> dict[str, str]:
    """What a scheduler would set: the org's session, and trust in its certificate."""
    settings = {
        "SALESFORCE_INSTANCE_URL": org.url,
        "SALESFORCE_SESSION_ID": org.session_id,
        "SALESFORCE_API_VERSION": org.api_version,
        "REQUESTS_CA_BUNDLE": str(org.certificate),
        "NO_PROXY": "127.0.0.1",
    }
    return environment(**{**settings, **extra})


def test_sync_from_salesforce_over_tls_with_credentials_from_the_environment(
    tmp_path: Path, org: Any
) -> None:
    assert org.url.startswith("https://127.0.0.1:")
    db = tmp_path / "sf.db"
    done = acctsync(
        "sync", "--db", db, "--salesforce", "--fields-account", "Name,Industry",
        "--fields-contact", "LastName", "--json", env=salesforce_env(org),
    )  # fmt: skip
    run = json.loads(done.stdout)
    assert run["outcome"] == "ok"
    assert run["source"] == f"salesforce {org.url}"
    assert (run["accounts_upserted"], run["contacts_upserted"]) == (1, 1)
    assert org.session_id not in done.stdout + done.stderr
    with SqlStore.sqlite(db) as store:
        assert store.get_account(ACME).fields == {"Name": "Acme", "Industry": "Tech"}  # type: ignore[union-attr]
        assert store.contact_ids(ACME) == [ADA]
    soql = [r.soql for r in org.requests if r.soql]
    assert soql[0].startswith("SELECT Id, SystemModstamp, IsDeleted, MasterRecordId, Name,")
    assert {r.method for r in org.requests} == {"GET"}  # S1: a sync only reads Salesforce


@pytest.mark.parametrize(
    ("options", "jobs"),
    [((), 1), (("--bulk-threshold", "20000"), 0), (("--no-bulk",), 0)],
    ids=["default", "threshold", "no-bulk"],
)
def test_a_sync_reads_by_bulk_past_the_threshold(
    tmp_path: Path, org: Any, options: tuple[str, ...], jobs: int
) -> None:
    org.put(
        *(
            Account(id=make_id("001", n), fields={"Name": f"A{n}"}, system_modstamp=T0)
            for n in range(10, 10_011)
        )
    )
    done = acctsync(
        "sync", "--db", tmp_path / "sf.db", "--salesforce", "--fields-account", "Name",
        "--fields-contact", "LastName", "--json", *options, env=salesforce_env(org),
    )  # fmt: skip
    run = json.loads(done.stdout)
    assert run["outcome"] == "ok"
    # Accounts past the 10,000 records Bulk starts at by default; the one contact not.
    assert (run["accounts_upserted"], run["contacts_upserted"]) == (10_002, 1)
    created = [r for r in org.requests if r.method == "POST" and r.path.endswith("/jobs/query")]
    assert len(created) == jobs
    # Every request counted, Bulk's too (a session signs in with none), in the run stored.
    assert run["api_requests"] == len(org.requests) == org.api_used
    status = json.loads(acctsync("status", "--db", tmp_path / "sf.db", "--json").stdout)
    assert status["orgs"][0]["last_run"]["api_requests"] == run["api_requests"]


def test_the_fake_org_serves_https_under_a_ca_of_its_own(org: Any) -> None:
    import requests

    from acctsync import ConfigurationError
    from acctsync.testing.salesforce import FakeSalesforce

    certificate = org.certificate
    assert certificate.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert org.client().query("SELECT Id FROM Account")["totalSize"] == 1
    with requests.Session() as session:
        session.trust_env = False  # no proxy: straight to 127.0.0.1, which is not trusted
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"{org.url}/services/data/", timeout=5)
    with FakeSalesforce() as plain:
        assert plain.url.startswith("http://")
        with pytest.raises(ConfigurationError, match="tls=True"):
            plain.certificate  # noqa: B018
    org.stop()
    assert not certificate.exists()


def test_a_refused_session_exits_6(tmp_path: Path, org: Any) -> None:
    env = salesforce_env(org, SALESFORCE_SESSION_ID="00D000000000001!not-this-one")
    done = acctsync(
        "sync", "--db", tmp_path / "sf.db", "--salesforce", "--fields-account", "Name",
        "--fields-contact", "LastName", env=env, code=ExitCode.SOURCE,
    )  # fmt: skip
    assert "INVALID_SESSION_ID" in done.stderr
    assert "not-this-one" not in done.stderr


def test_refresh_formulas_applies_a_recalculated_field_and_is_recorded(
    tmp_path: Path, org: Any
) -> None:
    db, env = tmp_path / "sf.db", salesforce_env(org)
    org.set_formula("Account", ACME, Tier__c="Gold")
    acctsync("sync", "--db", db, "--salesforce", env=env)
    org.set_formula("Account", ACME, Tier__c="Platinum")  # its stamp stays
    asked = len(org.requests)

    done = acctsync("refresh-formulas", "--db", db, "--salesforce", "--json", env=env)

    run = json.loads(done.stdout)
    assert (run["outcome"], run["refreshed"], run["activities"]) == ("ok", 1, 1)
    assert run["source"] == f"formula fields of salesforce {org.url}"
    assert run["watermarks"] == {"Account": T0.isoformat(), "Contact": T0.isoformat()}
    soql = [r.soql for r in org.requests[asked:] if r.soql]
    # Only the calculated fields, of the one object that has some.
    assert len(soql) == 1
    assert soql[0].startswith("SELECT Id, SystemModstamp, Tier__c FROM Account ")
    with SqlStore.sqlite(db) as store:
        assert store.get_account(ACME).fields["Tier__c"] == "Platinum"  # type: ignore[union-attr]
        assert [(e.contact_id, e.new_value) for e in store.activities()] == [(ADA, "Platinum")]
        assert store.last_run().source == run["source"]  # type: ignore[union-attr]
    shown = acctsync("refresh-formulas", "--db", db, "--salesforce", env=env).stdout
    assert "formula refresh of org 'default': ok" in shown
    assert "already applied 1 | stale 0 | refreshed 0" in shown


CONSUMER_KEY, CONSUMER_SECRET = "3MVG9.cli-consumer-key", "cli-consumer-secret-0123456789"


def signin_env(org: Any, **settings: str) -> dict[str, str]:
    """A scheduler's settings for a sign-in: the login hosts reached through the org's proxy."""
    env = salesforce_env(org, HTTPS_PROXY=org.proxy_url, **settings)
    del env["SALESFORCE_INSTANCE_URL"], env["SALESFORCE_SESSION_ID"]
    return env


def synced_through(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = acctsync(
        "sync", "--db", tmp_path / "sf.db", "--salesforce", "--fields-account", "Name",
        "--fields-contact", "LastName", "--json", env=env,
    )  # fmt: skip
    run = json.loads(done.stdout)
    assert (run["outcome"], run["accounts_upserted"], run["contacts_upserted"]) == ("ok", 1, 1)
    return done


def test_sync_signs_in_with_client_credentials_from_the_environment(
    tmp_path: Path, org: Any
) -> None:
    org.register_app(CONSUMER_KEY, consumer_secret=CONSUMER_SECRET)
    env = signin_env(
        org,
        SALESFORCE_CONSUMER_KEY=CONSUMER_KEY,
        SALESFORCE_CONSUMER_SECRET=CONSUMER_SECRET,
        SALESFORCE_DOMAIN="acme.my",
    )
    done = synced_through(tmp_path, env)
    assert CONSUMER_SECRET not in done.stdout + done.stderr
    assert [r.body["grant_type"] for r in org.requests if r.path.endswith("/token")] == [
        "client_credentials"
    ]


def jwt_app(org: Any, key_file: Path) -> dict[str, str]:
    """The JWT bearer settings of an app ``org`` knows, its private key in ``key_file``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    org.register_app(CONSUMER_KEY, public_key=public)
    return {
        "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
        "SALESFORCE_USERNAME": org.username,
        "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
    }


def test_sync_signs_in_with_a_password_from_the_environment(tmp_path: Path, org: Any) -> None:
    env = signin_env(
        org,
        SALESFORCE_USERNAME=org.username,
        SALESFORCE_PASSWORD=org.password,
        SALESFORCE_SECURITY_TOKEN=org.security_token,
    )
    done = synced_through(tmp_path, env)
    assert org.password not in done.stdout + done.stderr


TOKEN, SOAP = "/services/oauth2/token", "/services/Soap/u/{version}"


# The hosts of Salesforce Help's "OAuth Endpoints" and article 000385590 (SOAP login()):
# login.salesforce.com, test.salesforce.com for a sandbox, or the org's My Domain, which the
# client credentials flow takes only; the JWT's audience stays login or test ("OAuth 2.0
# JWT Bearer Flow for Server-to-Server Integration").
@pytest.mark.parametrize(
    ("flow", "settings", "host", "path"),
    [
        ("jwt", {"SALESFORCE_MY_DOMAIN": "acme.my"}, "acme.my.salesforce.com", TOKEN),
        (
            "jwt",
            {"SALESFORCE_DOMAIN": "test", "SALESFORCE_MY_DOMAIN": "acme--dev.sandbox.my"},
            "acme--dev.sandbox.my.salesforce.com",
            TOKEN,
        ),
        ("jwt", {"SALESFORCE_DOMAIN": "test"}, "test.salesforce.com", TOKEN),
        ("password", {}, "login.salesforce.com", SOAP),
        ("password", {"SALESFORCE_DOMAIN": "test"}, "test.salesforce.com", SOAP),
        ("password", {"SALESFORCE_DOMAIN": "acme.my"}, "acme.my.salesforce.com", SOAP),
        (
            "client_credentials",
            {"SALESFORCE_DOMAIN": "acme--dev.sandbox.my"},
            "acme--dev.sandbox.my.salesforce.com",
            TOKEN,
        ),
    ],
    ids=[
        "jwt-my-domain",
        "jwt-sandbox-my-domain",
        "jwt-sandbox",
        "password",
        "password-sandbox",
        "password-my-domain",
        "client-credentials-sandbox",
    ],
)
def test_sync_signs_in_on_the_host_the_environment_names(
    tmp_path: Path, org: Any, flow: str, settings: dict[str, str], host: str, path: str
) -> None:
    if flow == "jwt":
        settings = {**settings, **jwt_app(org, tmp_path / "server.key")}
    elif flow == "password":
        settings = {
            **settings,
            "SALESFORCE_USERNAME": org.username,
            "SALESFORCE_PASSWORD": org.password,
            "SALESFORCE_SECURITY_TOKEN": org.security_token,
        }
    else:
        org.register_app(CONSUMER_KEY, consumer_secret=CONSUMER_SECRET)
        settings = {
            **settings,
            "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
            "SALESFORCE_CONSUMER_SECRET": CONSUMER_SECRET,
        }
    synced_through(tmp_path, signin_env(org, **settings))
    assert org.sign_ins == [(host, path.format(version=org.api_version))]
    if flow == "jwt":
        import jwt

        (assertion,) = [r.body["assertion"] for r in org.requests if r.path == TOKEN]
        claims = jwt.decode(assertion, options={"verify_signature": False})
        audience = settings.get("SALESFORCE_DOMAIN", "login")
        assert claims["aud"] == f"https://{audience}.salesforce.com"


def test_a_refused_sign_in_exits_6_without_showing_the_secret(tmp_path: Path, org: Any) -> None:
    org.register_app(CONSUMER_KEY, consumer_secret=CONSUMER_SECRET)
    wrong = "not-the-consumer-secret-987"
    env = signin_env(
        org,
        SALESFORCE_CONSUMER_KEY=CONSUMER_KEY,
        SALESFORCE_CONSUMER_SECRET=wrong,
        SALESFORCE_DOMAIN="acme.my",
    )
    done = acctsync("sync", "--db", tmp_path / "sf.db", "--salesforce", env=env, code=6)
    assert "acme.my.salesforce.com was refused: invalid_client" in done.stderr
    assert wrong not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("settings", "needs"),
    [
        (
            {"SALESFORCE_CONSUMER_KEY": CONSUMER_KEY, "SALESFORCE_CONSUMER_SECRET": "s"},
            "with the client credentials flow, SALESFORCE_DOMAIN",
        ),
        (
            {"SALESFORCE_CONSUMER_KEY": CONSUMER_KEY, "SALESFORCE_USERNAME": "u@x"},
            "with the JWT bearer flow, SALESFORCE_PRIVATE_KEY_FILE",
        ),
        (
            {"SALESFORCE_CONSUMER_KEY": CONSUMER_KEY, "SALESFORCE_CONSUMER_SECRET": "s",
             "SALESFORCE_DOMAIN": "login"},
            "with the client credentials flow: the client credentials flow signs in on the"
            " org's My Domain, not 'login'",
        ),
    ],
)  # fmt: skip
def test_an_incomplete_sign_in_is_a_usage_error_naming_what_is_missing(
    tmp_path: Path, settings: dict[str, str], needs: str
) -> None:
    env = environment(**settings)
    done = acctsync("sync", "--db", tmp_path / "sf.db", "--salesforce", env=env, code=2)
    assert needs in " ".join(done.stderr.split())
    assert "'s'" not in done.stderr


# A session id, a password and a key, each where another setting goes: refused, unshown.
@pytest.mark.parametrize(
    ("settings", "secret", "says"),
    [
        (
            {"SALESFORCE_INSTANCE_URL": "00D000000000001!AQ4AQ.swapped-session-id",
             "SALESFORCE_SESSION_ID": "https://acme.my.salesforce.com"},
            "00D000000000001!AQ4AQ.swapped-session-id",
            "with a session: an instance URL starts with https://",
        ),
        (
            {"SALESFORCE_USERNAME": "u@x", "SALESFORCE_PASSWORD": "acme.my",
             "SALESFORCE_DOMAIN": "pass/word+1"},
            "pass/word+1",
            "with a username-password login: this is not a Salesforce domain",
        ),
        (
            {"SALESFORCE_CONSUMER_KEY": CONSUMER_KEY, "SALESFORCE_USERNAME": "u@x",
             "SALESFORCE_PRIVATE_KEY_FILE": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0"
             "BAQEFAASC\n-----END PRIVATE KEY-----\n"},
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "with the JWT bearer flow: a private key file is given by its path",
        ),
    ],
    ids=["session-id-as-instance-url", "password-as-domain", "key-as-key-file"],
)  # fmt: skip
def test_a_sign_in_setting_refused_as_malformed_is_not_shown(
    tmp_path: Path, settings: dict[str, str], secret: str, says: str
) -> None:
    env = environment(**settings)
    done = acctsync("sync", "--db", tmp_path / "sf.db", "--salesforce", env=env, code=2)
    assert secret not in done.stdout + done.stderr
    shown = " ".join(done.stderr.split())
    assert says in shown
    assert "(its value is not shown" in shown


def test_r9_sync_warns_of_a_field_the_org_no_longer_lets_it_read(tmp_path: Path, org: Any) -> None:
    db, env = tmp_path / "sf.db", salesforce_env(org)
    first = acctsync("sync", "--db", db, "--salesforce", env=env)
    assert "no longer read" not in first.stdout
    org.hide_fields("Account", "Industry")  # field-level security revoked
    done = acctsync("sync", "--db", db, "--salesforce", env=env)  # exits 0: nothing failed
    assert "sync of org 'default': ok" in done.stdout
    warning = "  Account fields no longer read: Industry (has the integration user lost access"
    assert warning in done.stdout.splitlines()[3]
    run = json.loads(acctsync("sync", "--db", db, "--salesforce", "--json", env=env).stdout)
    assert list(run) == RUN_KEYS
    assert run["outcome"] == "ok"
    assert run["missing_fields"] == {"Account": ["Industry"]}
    with SqlStore.sqlite(db) as store:
        assert store.last_run().outcome == "ok"  # type: ignore[union-attr]


def test_a_sync_past_the_api_share_exits_8_and_the_next_goes_on(tmp_path: Path, org: Any) -> None:
    db, env = tmp_path / "sf.db", salesforce_env(org)
    sync = ("sync", "--db", db, "--salesforce", "--max-api-share", "0.5", "--json")
    # describe x2 and a query of each: past half of 4 after the third answer.
    org.api_allowance = 4
    done = acctsync(*sync, env=env, code=ExitCode.BUDGET)
    error = json.loads(done.stdout)["error"]
    assert (error["exit_code"], error["type"]) == (8, "ApiBudgetExceededError")
    assert "used 3 of its 4 daily API requests, more than max_api_share=0.5" in error["message"]
    assert len(done.stderr.strip().splitlines()) == 1
    status = json.loads(acctsync("status", "--db", db, "--json").stdout)
    last = status["orgs"][0]["last_run"]
    assert (last["outcome"], last["api_requests"]) == ("failed", 3)

    org.api_allowance, org.api_used = 100, 0
    run = json.loads(acctsync(*sync, env=env).stdout)
    assert (run["outcome"], run["api_requests"]) == ("ok", 4)
    assert org.api_used == 4
    shown = acctsync("sync", "--db", db, "--salesforce", env=env).stdout
    assert "  Salesforce API requests 4" in shown.splitlines()


def test_a_spent_daily_allowance_exits_8_with_one_line(tmp_path: Path, org: Any) -> None:
    org.api_allowance = org.api_used = 10
    done = acctsync(
        "sync", "--db", tmp_path / "sf.db", "--salesforce", env=salesforce_env(org),
        code=ExitCode.BUDGET,
    )  # fmt: skip
    assert done.stderr.count("\n") == 1
    assert "the org's daily API allowance is spent" in done.stderr
    assert "REQUEST_LIMIT_EXCEEDED" in done.stderr
    assert [r.status for r in org.requests] == [403]  # not retried


def sync_salesforce_every(tmp_path: Path, org: Any) -> subprocess.Popen[str]:
    """``sync --salesforce --every 0.2 --json`` against ``org``, running."""
    return subprocess.Popen(
        [*COMMAND, "sync", "--db", tmp_path / "sf.db", "--salesforce", "--every", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=salesforce_env(org),
    )


def test_every_goes_on_after_the_api_budget_ran_out(tmp_path: Path, org: Any) -> None:
    org.api_allowance = org.api_used = 10
    process = sync_salesforce_every(tmp_path, org)
    assert process.stdout is not None
    skipped = json.loads(process.stdout.readline())["skipped"]
    assert skipped["type"] == "ApiBudgetExceededError"
    org.api_allowance = 100  # the 24-hour window moved on
    line = json.loads(process.stdout.readline())
    while "skipped" in line:  # a sync that started before the allowance grew
        line = json.loads(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.OK, err
    assert line["outcome"] == "ok"
    assert "the API budget ran out, the next sync goes on" in err


def test_every_sync_of_a_loop_reads_describe_again(tmp_path: Path, org: Any) -> None:
    process = sync_salesforce_every(tmp_path, org)
    assert process.stdout is not None
    runs = [json.loads(process.stdout.readline())]
    org.hide_fields("Account", "Industry")
    # The sync running when the field went may still have read it; the next one may not.
    while len(runs) < 3 and not runs[-1].get("missing_fields"):
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "no sync within 30 s"
        line = process.stdout.readline()
        assert line, f"the loop ended: {process.communicate(timeout=30)[1]}"
        runs.append(json.loads(line))
        assert "outcome" in runs[-1], runs[-1]  # a run, not an error document
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.OK, err
    assert runs[0]["missing_fields"] == {}
    assert runs[-1]["outcome"] == "ok"
    assert runs[-1]["missing_fields"] == {"Account": ["Industry"]}


# -- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_every_keeps_syncing_until_stopped(
    tmp_path: Path, exports: Path, stop: signal.Signals
) -> None:
    db = tmp_path / "x.db"
    process = subprocess.Popen(
        [*COMMAND, "sync", "--db", db, "--export-dir", exports, "--every", "30", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())  # one JSON document a line
    assert first["outcome"] == "rejected"
    started = time.monotonic()
    process.send_signal(stop)
    out, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.OK, err
    assert time.monotonic() - started < 10  # not after the 30 s wait
    assert out == ""
    assert f"{stop.name}: stopping" in err
    with SqlStore.sqlite(db) as store:
        assert [run.outcome for run in store.runs()] == ["rejected"]


def test_every_reports_a_skipped_sync_as_a_json_line(synced: Path, exports: Path) -> None:
    with SqlStore.sqlite(synced) as holder, holder.exclusive():
        process = subprocess.Popen(
            [
                *COMMAND, "sync", "--db", synced, "--export-dir", exports, "--every", "30",
                "--lock-timeout", "0.1", "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )  # fmt: skip
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = json.loads(process.stdout.readline()) if ready else {}
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.OK, err
    assert line["skipped"]["type"] == "LockTimeoutError"
    assert "gave up after waiting 0.1 s" in line["skipped"]["message"]
    assert "skipped a sync" in err
    assert out == ""


def test_ctrl_c_stops_a_sync_between_batches(tmp_path: Path) -> None:
    folder = write_big_exports(tmp_path / "big")
    total = BIG_EXPORT_CONTACTS
    db = tmp_path / "big.db"
    # A batch a record: the batches a sync commits together (`SqlStore.group_commits`)
    # first show a second in, long before the sync's end.
    process = subprocess.Popen(
        [*COMMAND, "sync", "--db", db, "--export-dir", folder, "--page-size", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    deadline = time.monotonic() + 30
    while not committed_watermark(db):  # the first batch is in
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED, err
    run = json.loads(out)
    assert run["outcome"] == "interrupted"
    assert run["error"] == "stopped by SIGINT"
    assert "stopping" in err
    with SqlStore.sqlite(db) as store:
        applied = store.counts().contacts
        mark = store.watermark("Contact")
    assert 0 < applied < total
    assert run["watermarks"]["Contact"] == mark.isoformat()  # type: ignore[union-attr]
    # The next sync reads on from the watermark and misses nothing.
    done = acctsync("sync", "--db", db, "--export-dir", folder, "--json")
    assert json.loads(done.stdout)["already_applied"] < applied
    with SqlStore.sqlite(db) as store:
        assert store.counts().contacts == total
        assert store.watermark("Contact") == T0 - timedelta(minutes=1)


def committed_watermark(db: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=0.1)) as conn:
            return conn.execute("SELECT count(*) FROM acctsync_watermarks").fetchone()[0] > 0
    except sqlite3.Error:  # not created yet, or busy
        return False


def test_a_stop_request_ends_a_sync_with_whole_batches_only() -> None:
    source = InMemorySource()
    source.upsert(Account(id=ACME, fields={"Name": "Acme"}, system_modstamp=T0))
    for n in range(95):
        stamp = T0 + timedelta(seconds=n)
        source.upsert(
            Contact(id=make_id("003", n), account_id=ACME, fields={}, system_modstamp=stamp)
        )
    store = InMemoryStore()
    stop = StopRequest(announce=print)
    pages: list[int] = []

    def on_page(kind: str, size: int) -> None:
        pages.append(size)
        if len(pages) == 3:
            stop.request()

    watched = ObservedSource(source, stop, on_page)
    with pytest.raises(Stopped):
        SyncEngine(source=watched, store=store, page_size=10).sync()
    assert watched.pages == 3
    assert stop.requested
    applied = len(store.contacts())
    assert (applied + len(store.accounts())) % 10 == 0  # whole batches of 10 changes
    mark = store.watermark("Contact")
    assert mark is not None
    assert all(c.system_modstamp <= mark for c in store.contacts())
    SyncEngine(source=source, store=store, page_size=10).sync()
    reference = InMemoryStore()
    SyncEngine(source=source, store=reference, page_size=10).sync()
    assert store.contacts() == reference.contacts()
    assert store.accounts() == reference.accounts()


def _noted(number: int, frame: object) -> None:
    """A handler of the test's own, to tell from the defaults and from SIG_IGN."""


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM handled by `_noted` for the test; the handlers before it after."""
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in before:
        signal.signal(number, _noted)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


@pytest.mark.usefixtures("own_handlers")
def test_a_stop_request_gives_back_the_handlers_it_took_when_no_signal_came() -> None:
    stop = StopRequest(announce=print)
    with stop.handling():
        assert signal.getsignal(signal.SIGINT) == stop._on_signal
    assert signal.getsignal(signal.SIGINT) is _noted
    assert signal.getsignal(signal.SIGTERM) is _noted


@pytest.mark.usefixtures("own_handlers")
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_after_a_stop_asked_by_a_signal_ctrl_c_stays_ignored(number: int) -> None:
    # What is left is closing the database and saying "interrupted": a Ctrl-C let in
    # there ended the command with click's "Aborted!" instead.
    announced: list[str] = []
    stop = StopRequest(announce=announced.append)
    with stop.handling():
        signal.raise_signal(number)
        assert stop.requested
    assert len(announced) == 1
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is _noted


@pytest.mark.usefixtures("own_handlers")
def test_after_ctrl_c_twice_interrupted_a_run_ctrl_c_stays_ignored() -> None:
    stop = StopRequest(announce=print)

    def run() -> None:
        with stop.handling():
            signal.raise_signal(signal.SIGINT)  # a stop between batches
            signal.raise_signal(signal.SIGINT)  # at once: the handler raises here

    with pytest.raises(KeyboardInterrupt):
        run()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is _noted
    signal.raise_signal(signal.SIGINT)  # ignored: nothing is raised


@pytest.mark.usefixtures("own_handlers")
def test_a_signal_in_the_middle_of_an_import_is_announced_once_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The announcement imports what the interrupted step was importing, as rich's first
    # print with markup imports its emoji table: said from the signal handler, it found
    # the module half made, and the command ended with a traceback.
    (tmp_path / "halfway.py").write_text(
        "import signal\n\nsignal.raise_signal(signal.SIGTERM)\nDONE = True\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "halfway", raising=False)
    said: list[tuple[str, bool]] = []

    def announce(text: str) -> None:
        from halfway import DONE

        said.append((text, DONE))

    stop = StopRequest(announce=announce)
    with stop.handling():
        importlib.import_module("halfway")
        assert stop.requested
        assert stop.wait(5)
    assert said == [("SIGTERM: stopping; a sync in progress stops after its current batch", True)]
    assert stop.signal == signal.SIGTERM


class DescribedOrg:
    """An in-memory org that says which fields it reads, as a Salesforce source does."""

    def __init__(self, org: InMemorySource, fields: dict[str, list[str]]) -> None:
        self.org = org
        self.fields = fields

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Any:
        return self.org.read_changes(object_type, since, page_size=page_size)

    def field_names(self, object_type: ObjectType) -> list[str]:
        return self.fields[object_type]


def test_an_observed_source_describes_exactly_when_the_source_does() -> None:
    stop = StopRequest(announce=print)
    org = InMemorySource()
    org.upsert(Account(id=ACME, fields={"NAME": "Acme", "INDUSTRY": "Tech"}, system_modstamp=T0))
    described = DescribedOrg(org, {"Account": ["Name", "Industry"], "Contact": []})
    assert isinstance(described, DescribedSource)
    assert not isinstance(observed(org, stop), DescribedSource)
    watched = observed(described, stop)
    assert isinstance(watched, DescribedSource)

    store = InMemoryStore()
    SyncEngine(source=watched, store=store).sync()
    # R9: the fields take describe's spelling, not the records'.
    assert store.get_account(ACME).fields == {"Name": "Acme", "Industry": "Tech"}  # type: ignore[union-attr]
    described.fields["Account"] = ["Name"]
    report = SyncEngine(source=observed(described, stop), store=store).sync()
    assert report.missing_fields == {"Account": ("Industry",)}
    plain = ObservedSource(org, stop)
    SyncEngine(source=plain, store=InMemoryStore()).sync()
    assert watched.pages == plain.pages > 0  # still an observer: it counts what it passes on


class DegradedOrg:
    """An in-memory org with calculated fields, read a lesser way that it warns of."""

    def __init__(self, org: InMemorySource, *, fail: bool = False) -> None:
        self.org = org
        self.fail = fail
        self.pending: list[str] = []

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        self.pending.append(f"{object_type}: the Bulk API job failed; read by REST")
        if self.fail:
            raise SourceError("REST failed too")
        return self.org.read_changes(object_type, since, page_size=page_size)

    def formula_fields(self, object_type: ObjectType) -> Collection[str]:
        return self.org.formula_fields(object_type)

    def read_formulas(
        self, object_type: ObjectType, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        return self.org.read_formulas(object_type, page_size=page_size)

    def take_warnings(self) -> Sequence[str]:
        taken, self.pending = tuple(self.pending), []
        return taken


def run_once(store: SqlStore, source: DegradedOrg, **options: Any) -> ExitCode:
    stop = StopRequest(announce=print)
    return Runner(
        out=Output(as_json=False),
        store=store,
        make_source=lambda: source,
        label="an org in memory",
        stop=stop,
        engine_options={},
        progress=None,
        **options,
    ).once()


def test_a_formula_refresh_is_run_and_recorded_like_a_sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = InMemorySource(formula_fields={"Account": ["Score__c"]})
    org.upsert(Account(id=ACME, fields={"Name": "Acme", "Score__c": 1}, system_modstamp=T0))
    org.upsert(Contact(id=ADA, account_id=ACME, system_modstamp=T0))
    with SqlStore.sqlite(tmp_path / "f.db") as store:
        SyncEngine(source=org, store=store).sync()
        org.recalculate("Account", ACME, {"Score__c": 2})
        code = run_once(
            store,
            DegradedOrg(org),
            operation=SyncEngine.refresh_formulas,
            name="formula refresh",
        )
        run = store.last_run()
        account = store.get_account(ACME)
    assert code == ExitCode.OK
    assert run is not None
    assert (run.outcome, run.refreshed, run.activities) == ("ok", 1, 1)
    assert run.source == "an org in memory"
    assert account is not None
    assert account.fields["Score__c"] == 2
    out = capsys.readouterr().out
    assert "formula refresh of org 'default': ok" in out
    assert "refreshed 1" in out


def test_a_runs_source_warnings_are_printed_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = InMemorySource()
    org.upsert(Account(id=ACME, fields={"Name": "Acme"}, system_modstamp=T0))
    source = DegradedOrg(org)
    assert isinstance(source, WarningSource)
    with SqlStore.sqlite(tmp_path / "w.db") as store:
        assert run_once(store, source) == ExitCode.OK
        done = capsys.readouterr()
        assert done.err.splitlines() == [
            "Warning: Account: the Bulk API job failed; read by REST",
            "Warning: Contact: the Bulk API job failed; read by REST",
        ]
        assert "sync of org 'default': ok" in done.out
        # A run that fails prints what it was warned of before it failed.
        source.fail = True
        with pytest.raises(SourceError):
            run_once(store, source)
        failed = store.last_run()
    assert failed is not None
    assert failed.outcome == "failed"
    assert capsys.readouterr().err.splitlines() == [
        "Warning: Account: the Bulk API job failed; read by REST"
    ]


def test_an_observed_source_reads_formulas_exactly_when_the_source_does() -> None:
    stop = StopRequest(announce=print)
    org = InMemorySource(formula_fields={"Account": ["Score__c"]})
    org.upsert(Account(id=ACME, fields={"Score__c": 1}, system_modstamp=T0))
    assert not isinstance(observed(DescribedOrg(org, {}), stop), FormulaSource)
    watched = observed(org, stop)
    assert isinstance(watched, FormulaSource)
    assert not isinstance(watched, DescribedSource)
    assert [len(page) for page in watched.read_formulas("Account", page_size=5)] == [1]
    assert watched.pages == 1  # counted as the engine's other reads are

    class DescribedFormulas(DescribedOrg):
        def formula_fields(self, object_type: ObjectType) -> Collection[str]:
            return self.org.formula_fields(object_type)

        def read_formulas(self, object_type: ObjectType, *, page_size: int) -> Any:
            return self.org.read_formulas(object_type, page_size=page_size)

    both = observed(DescribedFormulas(org, {"Account": ["Score__c"]}), stop)
    assert isinstance(both, FormulaSource)
    assert isinstance(both, DescribedSource)
    assert list(both.field_names("Account")) == ["Score__c"]
    stop.request()
    with pytest.raises(Stopped):
        list(both.read_formulas("Account", page_size=5))


# -- demo ---------------------------------------------------------------------------------


def test_demo_as_json_then_resumed(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    first = json.loads(acctsync("demo", "--db", db, "--json").stdout)
    assert first["resumed"] is False
    assert first["holds"] == {"accounts": 32, "contacts": 12_870, "activities": 6_119}
    assert len(first["steps"]) == 6
    step3 = first["steps"][2]["runs"][0]
    assert step3["suppressed"][0]["contact_count"] == 5_001
    assert step3["activities"] == 6_111  # 5,000 contacts at the threshold logged, too
    assert first["steps"][0]["runs"][0]["rejected"][0]["record_id"] == "not-an-id"
    again = json.loads(acctsync("demo", "--db", db, "--json").stdout)
    assert again["resumed"] is True
    resumed = again["steps"][0]["runs"][0]
    assert (resumed["pages"], resumed["accounts_upserted"], resumed["already_applied"]) == (
        1,
        1,
        0,
    )
    status = json.loads(acctsync("status", "--db", db, "--json").stdout)
    assert status["orgs"][0]["last_run"]["source"] == "demo org"


# -- following ----------------------------------------------------------------------------


@pytest.fixture
def live_org() -> Iterator[Any]:
    """The org of `org`, publishing its change events over the Pub/Sub API."""
    pytest.importorskip("grpc")
    pytest.importorskip("cryptography")
    from acctsync.testing.salesforce import FakeSalesforce

    with FakeSalesforce(
        tls=True, clock=T0 + timedelta(days=1), pubsub=True, keepalive=0.1
    ) as fake:
        fake.put(
            Account(id=ACME, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0),
            Contact(id=ADA, account_id=ACME, fields={"LastName": "Lovelace"}, system_modstamp=T0),
        )
        yield fake


def test_sync_follow_applies_each_batch_of_events_until_stopped(
    tmp_path: Path, live_org: Any
) -> None:
    db = tmp_path / "sf.db"
    env = salesforce_env(
        live_org, SALESFORCE_PUBSUB_TARGET=live_org.pubsub_target, SALESFORCE_PUBSUB_INSECURE="1"
    )
    process = subprocess.Popen(
        [*COMMAND, "sync", "--db", db, "--salesforce", "--fields-account", "Name,Industry",
         "--fields-contact", "LastName", "--follow", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    caught_up = json.loads(process.stdout.readline())  # the catch-up sync
    live_org.put(
        Account(
            id=ACME,
            fields={"Name": "Acme Corp", "Industry": "Tech"},
            system_modstamp=T0 + timedelta(hours=1),
        )
    )
    ready, _, _ = select.select([process.stdout], [], [], 30)
    assert ready, "no batch within 30 s"
    applied = json.loads(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)

    assert process.returncode == ExitCode.OK, err
    assert (caught_up["outcome"], caught_up["accounts_upserted"]) == ("ok", 1)
    assert (applied["outcome"], applied["accounts_upserted"]) == ("ok", 1)
    assert live_org.session_id not in err
    with SqlStore.sqlite(db) as store:
        assert store.get_account(ACME).fields["Name"] == "Acme Corp"  # type: ignore[union-attr]
        assert store.checkpoint("pubsub /data/ChangeEvents") is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--export-dir", "{exports}", "--follow"), "--follow goes with --salesforce"),
        (("--salesforce", "--follow", "--every", "5"), "one of --every and --follow"),
        (("--export-dir", "{exports}", "--topic", "/data/X"), "--topic goes with --follow"),
    ],
)
def test_follow_options_are_checked(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    args = [o.format(exports=exports) for o in options]
    done = acctsync("sync", "--db", tmp_path / "x.db", *args, code=ExitCode.USAGE)
    assert message in done.stderr


def test_a_follower_killed_at_any_point_resumes_without_loss_or_repeat(
    tmp_path: Path, live_org: Any
) -> None:
    import random

    contacts = [make_id("003", n) for n in range(10, 13)]
    live_org.put(
        *(
            Contact(id=c, account_id=ACME, fields={"LastName": c[-6:]}, system_modstamp=T0)
            for c in contacts
        )
    )
    db = tmp_path / "sf.db"
    env = salesforce_env(
        live_org, SALESFORCE_PUBSUB_TARGET=live_org.pubsub_target, SALESFORCE_PUBSUB_INSECURE="1"
    )
    command = [*COMMAND, "sync", "--db", db, "--salesforce", "--fields-account", "Name",
               "--fields-contact", "LastName", "--follow", "--json"]  # fmt: skip
    renames = 12
    random_kills = random.Random(13)

    def follower() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )

    def applied(position: object) -> None:
        deadline = time.monotonic() + 30
        with SqlStore.sqlite(db) as store:
            while store.checkpoint("pubsub /data/ChangeEvents") in (None, position):
                assert time.monotonic() < deadline, "the follower applied nothing"
                time.sleep(0.05)

    process = follower()
    # Once it has a position, every restart reads on from it: each rename comes as an
    # event, none is folded into a catch-up sync.
    applied(None)
    for n in range(1, renames + 1):
        stamp = T0 + timedelta(minutes=n)
        live_org.put(Account(id=ACME, fields={"Name": f"Acme {n}"}, system_modstamp=stamp))
        if n % 4 == 0:  # SIGKILL: no handler runs, whatever the process was doing
            time.sleep(random_kills.uniform(0, 0.3))
            process.kill()
            process.communicate(timeout=30)
            process = follower()
    last = live_org.change_events("/data/ChangeEvents")[-1].replay_id
    deadline = time.monotonic() + 30
    with SqlStore.sqlite(db) as store:
        while store.checkpoint("pubsub /data/ChangeEvents") != last:
            assert time.monotonic() < deadline, "the follower did not catch up"
            time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.OK, err

    with SqlStore.sqlite(db) as store:
        assert store.get_account(ACME).fields["Name"] == f"Acme {renames}"  # type: ignore[union-attr]
        entries = list(store.activities())
    # Each rename logged once for each of the account's four contacts: none lost, none twice.
    assert len({e.id for e in entries}) == len(entries)
    renamed = [e for e in entries if e.field == "Name"]
    assert len(renamed) == renames * 4
