"""Mistakes an operator makes are caught, with one line on stderr that says what to do,
and nothing written where nothing should be: export folders with no exports, an org the
database does not hold, databases that cannot be opened, missing drivers, Ctrl-C twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("click")
pytest.importorskip("rich")
pytest.importorskip("sqlalchemy")

from click.testing import CliRunner

from acctsync.cli import ExitCode
from acctsync.cli._app import app
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from test_cli import (
    ACME,
    ADA,
    COMMAND,
    acctsync,
    environment,
    files_of,
    write_big_exports,
    write_exports,
)


def the_error(stderr: str) -> str:
    """The one ``Error:`` line of ``stderr`` (a usage error also prints the usage)."""
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def synced(tmp_path: Path) -> Path:
    """A SQLite file that org ``default`` was synced into from an export folder."""
    db = tmp_path / "acctsync.db"
    acctsync("sync", "--db", db, "--export-dir", write_exports(tmp_path / "exports"), code=3)
    return db


# -- export folders -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "found"),
    [
        ((), "; the folder is empty"),
        (("Acount.csv",), "; it holds Acount.csv (did you mean Account.csv?)"),
        (
            ("extract.csv",),
            "; it holds extract.csv (Data Loader's name: rename it Account.csv or Contact.csv)",
        ),
    ],
    ids=["empty", "Acount.csv", "extract.csv"],
)
def test_an_export_folder_without_exports_is_refused_naming_the_files_it_reads(
    tmp_path: Path, names: tuple[str, ...], found: str
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(f"Id,SystemModstamp\n{ACME},2024-01-31T12:00:00.000Z\n")
    before = files_of(tmp_path)
    done = acctsync(
        "sync", "--db", tmp_path / "x.db", "--export-dir", folder, "--json", code=ExitCode.USAGE
    )
    assert done.stderr.splitlines() == [
        f"Error: no Account or Contact export file in {folder}: it reads Account.csv,"
        " Accounts.csv, Contact.csv, Contacts.csv, in any case, optionally with a suffix that"
        " starts with a non-letter (Account_2024-01-31.csv) and does not end a custom"
        " object's name (Account_Plan__c.csv); or .jsonl / .ndjson for JSON"
        f" Lines{found}"
    ]
    assert done.stdout == ""
    assert files_of(tmp_path) == before  # no database made


@pytest.mark.parametrize(
    ("separator", "shown", "option"),
    [(";", "';'", "';'"), ("\t", "'\\t'", "$'\\t'")],
    ids=["semicolon", "tab"],
)
def test_a_csv_separated_otherwise_says_to_try_delimiter(
    tmp_path: Path, separator: str, shown: str, option: str
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "Account.csv").write_text(
        separator.join(['"Id"', '"Name"', '"SystemModstamp"'])
        + "\n"
        + separator.join([ACME, "Acme", "2024-01-31T12:00:00.000Z"])
        + "\n"
    )
    before = files_of(tmp_path)
    done = acctsync("sync", "--db", tmp_path / "x.db", "--export-dir", folder, code=2)
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: {folder / 'Account.csv'}: the header row ")
    assert line.endswith(
        f"; its columns are separated by {shown}, not ',': try --delimiter {option}"
    )
    assert files_of(tmp_path) == before
    # With the separator it names, the same folder syncs.
    acctsync("sync", "--db", tmp_path / "x.db", "--export-dir", folder, "--delimiter", separator)
    with SqlStore.sqlite(tmp_path / "x.db") as store:
        assert store.get_account(ACME) is not None


def test_an_export_in_windows_1252_syncs_with_its_encoding(tmp_path: Path) -> None:
    # Data Loader's default on Windows: its platform's character set, not UTF-8.
    folder = tmp_path / "exports"
    folder.mkdir()
    row = f'"{ACME}","Müller GmbH","2024-01-31T12:00:00.000Z"'
    text = f'"ID","NAME","SYSTEMMODSTAMP"\r\n{row}\r\n'
    (folder / "Account.csv").write_bytes(text.encode("cp1252"))
    done = acctsync(
        "sync", "--db", tmp_path / "x.db", "--export-dir", folder, "--json", code=ExitCode.REJECTED
    )
    assert json.loads(done.stdout)["rejected"][0]["reason"] == "the row is not UTF-8 text"
    acctsync("sync", "--db", tmp_path / "y.db", "--export-dir", folder, "--encoding", "cp1252")
    with SqlStore.sqlite(tmp_path / "y.db") as store:
        account = store.get_account(ACME)
        assert account is not None
        assert account.fields["NAME"] == "Müller GmbH"
    for wrong, said in (("utf-16", "writes ASCII as ASCII"), ("klingon", "no such text encoding")):
        refused = acctsync(
            "sync", "--db", tmp_path / "z.db", "--export-dir", folder, "--encoding", wrong, code=2
        )
        assert said in refused.stderr
    alone = acctsync(
        "sync", "--db", tmp_path / "z.db", "--salesforce", "--encoding", "cp1252", code=2
    )
    assert "--encoding go with --export-dir" in alone.stderr


# -- an org the database does not hold ----------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's database: its data is under org ``demo``."""
    db = tmp_path_factory.mktemp("demo") / "acctsync-demo.db"
    acctsync("demo", "--db", db, "--json")
    return db


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--org", "default"),
        ("activities",),
        ("activities", "--json"),
        ("edit", "--contact", ADA, "--field", "Industry", "--value", "x"),
        ("show", "account", ACME),
        ("refresh-formulas", "--salesforce"),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_an_org_the_database_does_not_hold_is_named_with_those_it_holds(
    demo_db: Path, args: tuple[str, ...]
) -> None:
    before = files_of(demo_db.parent)
    command, *rest = args
    if command == "show":
        command, *rest = ["show", rest[0], "--db", str(demo_db), *rest[1:]]
    else:
        rest = ["--db", str(demo_db), *rest]
    env = environment(SALESFORCE_INSTANCE_URL="https://x.example", SALESFORCE_SESSION_ID="s")
    done = acctsync(command, *rest, env=env, code=ExitCode.USAGE)
    assert done.stderr.splitlines() == [
        f"Error: Invalid value for '--org': {demo_db} holds no org 'default'; it holds 'demo'"
        " (--org demo)"
    ]
    assert done.stdout == ""
    assert files_of(demo_db.parent) == before


def test_the_demo_ends_with_commands_that_name_its_org(tmp_path: Path) -> None:
    db = tmp_path / "acctsync-demo.db"
    out = acctsync("demo", "--db", db).stdout.splitlines()
    assert out[-3:] == [
        f"See the last run: acctsync status --db {db} --org demo",
        f"The activity log: acctsync activities --db {db} --org demo",
        f"One account: acctsync show account {make_id('001', 1)} --db {db} --org demo",
    ]
    table = acctsync("activities", "--db", db, "--org", "demo", "--limit", "2").stdout
    assert "2 entries shown, 6,117 more" in table


# -- databases that cannot be opened ------------------------------------------------------

READERS = [
    ("status",),
    ("activities", "--json"),
    ("edit", "--contact", ADA, "--field", "Industry", "--value", "x"),
    ("show", "contact", ADA),
]


def command_line(args: tuple[str, ...], db: str) -> list[str]:
    if args[0] == "show":
        return [*args[:3], "--db", db, *args[3:]]
    return [args[0], "--db", db, *args[1:]]


@pytest.mark.parametrize("args", [("sync", "--export-dir", "{exports}"), *READERS, ("demo",)])
def test_a_sqlite_file_in_a_missing_folder_is_named(tmp_path: Path, args: tuple[str, ...]) -> None:
    exports = write_exports(tmp_path / "exports")
    before = files_of(tmp_path)
    db = tmp_path / "nowhere" / "acctsync.db"
    filled = [a.format(exports=exports) for a in command_line(args, str(db))]
    done = acctsync(*filled, code=ExitCode.USAGE)
    expected = (
        f"no folder {db.parent} for the SQLite file acctsync.db"
        if args[0] in ("sync", "demo")
        else f"no database at {db}"
    )
    assert done.stderr.splitlines() == [f"Error: Invalid value for '--db': {expected}"]
    assert files_of(tmp_path) == before
    assert not db.parent.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files and folders")
@pytest.mark.parametrize("args", [("sync", "--export-dir", "{exports}"), *READERS])
def test_a_read_only_sqlite_file_is_named(synced: Path, args: tuple[str, ...]) -> None:
    exports = synced.parent / "exports"
    synced.chmod(0o444)
    before = files_of(synced.parent)
    filled = [a.format(exports=exports) for a in command_line(args, str(synced))]
    done = acctsync(*filled, code=ExitCode.USAGE)
    assert done.stderr.splitlines() == [
        f"Error: Invalid value for '--db': the SQLite file {synced} is read-only: acctsync"
        " writes to it, also to read it (its lock and journal)"
    ]
    assert files_of(synced.parent) == before


@pytest.mark.parametrize("args", [("sync", "--export-dir", "{exports}"), *READERS])
def test_a_read_only_or_unwritable_place_is_refused_before_sqlite_is_asked(
    synced: Path, args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user who is not root meets it; in-process, since root may write anywhere."""
    exports = synced.parent / "exports"
    before = files_of(synced.parent)
    filled = [a.format(exports=exports) for a in command_line(args, str(synced))]
    real_access = os.access

    def access(path: Any, mode: int, **options: Any) -> bool:
        if mode & os.W_OK and Path(path) in (synced, synced.parent):
            return False
        return real_access(path, mode, **options)

    monkeypatch.setattr(os, "access", access)
    result = CliRunner().invoke(app, filled, env=environment())
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr.splitlines() == [
        f"Error: Invalid value for '--db': the SQLite file {synced} is read-only: acctsync"
        " writes to it, also to read it (its lock and journal)"
    ]
    assert files_of(synced.parent) == before
    # A new file in a folder it may not write in.
    new = synced.parent / "new.db"
    created = [a.format(exports=exports) for a in command_line(("sync", *args[1:]), str(new))]
    if args[0] == "sync":
        result = CliRunner().invoke(app, created, env=environment())
        assert result.stderr.splitlines() == [
            f"Error: Invalid value for '--db': cannot write in the folder {synced.parent},"
            " where the SQLite file new.db keeps its journal"
        ]
        assert not new.exists()


DOWN = "postgresql://sync:s3cret@127.0.0.1:1/crm?password=s3cret-too"
SHOWN = "postgresql+psycopg://sync:***@127.0.0.1:1/crm"


@pytest.mark.parametrize(
    "args", [("sync", "--export-dir", "{exports}"), *READERS, ("status", "--check")]
)
def test_a_server_that_is_down_exits_7_naming_the_url_without_secrets(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    pytest.importorskip("psycopg")
    exports = write_exports(tmp_path / "exports")
    filled = [a.format(exports=exports) for a in command_line(args, DOWN)]
    done = acctsync(*filled, "--json", code=ExitCode.STORE)
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: {SHOWN}: the database failed: connection failed:")
    assert "Connection refused" in line
    error = json.loads(done.stdout)["error"]
    assert (error["exit_code"], error["type"]) == (7, "StoreError")
    assert error["message"] == line.removeprefix("Error: ")
    assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p@db:notaport/crm", "not a database URL: its port is not a number"),
        ("postgres://u@db:99999999/crm", "not a database URL: port 99999999 is not a TCP port"),
        ("postgresql+psycopg2://u@db/crm", "acctsync talks to PostgreSQL through psycopg 3"),
        ("sqlite+aiosqlite:///x.db", "acctsync opens SQLite through Python's sqlite3"),
        ("mysql://u@db/crm", "acctsync stores in SQLite or PostgreSQL, not mysql"),
    ],
)
@pytest.mark.parametrize("args", [("sync", "--export-dir", "{exports}"), *READERS])
def test_a_malformed_url_is_a_usage_error(
    tmp_path: Path, url: str, message: str, args: tuple[str, ...]
) -> None:
    exports = write_exports(tmp_path / "exports")
    before = files_of(tmp_path)
    filled = [a.format(exports=exports) for a in command_line(args, url)]
    done = acctsync(*filled, code=ExitCode.USAGE)
    assert message in the_error(done.stderr)
    assert "Traceback" not in done.stderr
    assert ":p@" not in done.stderr
    assert files_of(tmp_path) == before


def test_postgres_urls_as_hosting_providers_give_them_work(tmp_path: Path) -> None:
    from conftest import postgres_or_skip

    url = postgres_or_skip()
    import sqlalchemy

    schema = f"t_cli_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        parsed = sqlalchemy.make_url(url)
        given = (
            f"postgres://{parsed.username}@{parsed.host}:{parsed.port}/{parsed.database}"
            f"?options=-csearch_path%3D{schema}"
        )
        exports = write_exports(tmp_path / "exports")
        run_doc = json.loads(
            acctsync("sync", "--db", given, "--export-dir", exports, "--json", code=3).stdout
        )
        assert run_doc["accounts_upserted"] == 1
        status = json.loads(acctsync("status", "--db", given, "--json").stdout)
        assert status["database"] == (
            f"postgresql+psycopg://{parsed.username}@{parsed.host}:{parsed.port}/{parsed.database}"
        )
        assert status["orgs"][0]["counts"]["contacts"] == 3
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


# -- missing extras -----------------------------------------------------------------------

EVERY_COMMAND = [
    ("sync", "--export-dir", "{exports}"),
    ("refresh-formulas", "--salesforce"),
    *READERS,
    ("convert", "--person", "lead-1", "--field", "LastName=Doe", "--field", "Company=Acme"),
    ("demo",),
]


@pytest.mark.parametrize("args", EVERY_COMMAND, ids=lambda args: " ".join(args[:2]))
def test_a_postgresql_database_without_psycopg_says_what_to_install(
    tmp_path: Path, args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    exports = write_exports(tmp_path / "exports")
    before = files_of(tmp_path)
    filled = [a.format(exports=exports) for a in command_line(args, "postgres://u@db/crm")]
    result = CliRunner().invoke(app, filled, env=environment())
    assert result.exit_code == ExitCode.USAGE, (result.output, result.exception)
    assert result.stderr.splitlines() == [
        "Error: a PostgreSQL database needs the postgres extra (psycopg is missing):"
        " pip install 'acctsync[postgres]'"
    ]
    assert files_of(tmp_path) == before


def test_salesforce_without_its_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "acctsync.sources.salesforce", None)
    result = CliRunner().invoke(
        app, ["sync", "--db", str(tmp_path / "x.db"), "--salesforce"], env=environment()
    )
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.splitlines() == [
        "Error: --salesforce needs the salesforce extra (acctsync.sources.salesforce is"
        " missing): pip install 'acctsync[salesforce]'"
    ]
    assert list(tmp_path.iterdir()) == []


# -- Ctrl-C twice -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder of 20,000 contacts: a sync long enough to be interrupted."""
    return write_big_exports(tmp_path_factory.mktemp("big") / "exports")


def interrupted(
    folder: Path, db: Path, first: float, gaps: list[float]
) -> subprocess.CompletedProcess[str]:
    """A sync of ``folder`` sent SIGINT ``first`` seconds after it opened the database
    (Python has started: a Ctrl-C while the interpreter imports is its own), then after
    each gap."""
    process = subprocess.Popen(
        [*COMMAND, "sync", "--db", db, "--export-dir", folder, "--page-size", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    deadline = time.monotonic() + 60
    while not db.exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the sync never opened its database"
        time.sleep(0.01)
    time.sleep(first)
    for gap in [0.0, *gaps]:
        time.sleep(gap)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("seed", range(8))
def test_ctrl_c_again_during_the_cleanup_never_prints_a_traceback(
    tmp_path: Path, big_exports: Path, seed: int
) -> None:
    import random

    rng = random.Random(seed)
    # The first Ctrl-C at some point of the sync; the next ones while it stops, and
    # while it records the interrupted run and closes the database.
    done = interrupted(
        big_exports,
        tmp_path / "x.db",
        first=rng.uniform(0, 1.5),
        gaps=[rng.uniform(0, 0.05) for _ in range(rng.randint(1, 4))],
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    if "sync of org 'default': interrupted" in done.stdout:  # stopped between batches
        assert done.returncode == ExitCode.INTERRUPTED, done.stderr
    elif "sync of org 'default': ok" not in done.stdout:  # stopped at once
        assert done.returncode == ExitCode.INTERRUPTED, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert errors == ["Error: interrupted"], done.stderr
    # else it finished before a Ctrl-C came, which then ended the process
