"""``acctsync fleet``: the registry's commands, run by click's test runner."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("click")
pytest.importorskip("rich")

from click.testing import CliRunner, Result

from acctsync.cli._fleet import fleet
from acctsync.fleet import Registry, Retry


def run(*arguments: object, db: Path | None = None) -> Result:
    """``acctsync fleet ARGUMENTS``, with ``--db`` from the environment."""
    env = {"ACCTSYNC_DB": str(db)} if db is not None else {}
    return CliRunner().invoke(fleet, [str(a) for a in arguments], env=env)


def document(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_org_added_is_listed_with_its_settings_and_due_now(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    added = run(
        "add", "acme", "--credentials", "ACME", "--every", "120", "--refresh-every", "0",
        "--option", 'fields={"Account": ["Name"]}', "--option", "max_api_share=0.5",
        "--json", db=db,
    )  # fmt: skip
    entry = document(added)
    assert entry["org"] == "acme"
    assert entry["state"] == "due"
    assert entry["options"] == {"fields": {"Account": ["Name"]}, "max_api_share": 0.5}
    assert (entry["every_seconds"], entry["reconcile_every_seconds"]) == (120.0, 86_400.0)
    assert entry["refresh_every_seconds"] is None  # 0: never
    assert document(run("list", "--json", db=db))["orgs"] == [
        {**entry, "lag_seconds": None, "state": "due"}
    ]
    listed = run("list", db=db)
    assert listed.exit_code == 0
    assert "acme" in listed.stdout
    assert "2m" in listed.stdout
    assert "ACME" in listed.stdout


def test_pause_resume_and_remove(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    assert run("add", "acme", "--credentials", "ACME", db=db).exit_code == 0
    paused = run("pause", "acme", "--reason", "the password changes today", db=db)
    assert paused.exit_code == 0, paused.output
    status = document(run("status", "--json", db=db))["orgs"][0]
    assert (status["state"], status["paused"]) == ("paused", True)
    assert status["paused_reason"] == "the password changes today"
    assert "the password changes today" in run("status", db=db).stdout
    assert run("resume", "acme", db=db).exit_code == 0
    assert document(run("status", "--json", "acme", db=db))["orgs"][0]["state"] == "due"
    assert run("remove", "acme", db=db).exit_code == 0
    assert document(run("list", "--json", db=db)) == {"orgs": []}
    assert "The fleet has no org yet." in run("list", db=db).stdout


def test_status_shows_each_org_lag_state_last_run_and_last_error(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    for org in ("acme", "globex"):
        assert run("add", org, "--credentials", org.upper(), db=db).exit_code == 0
    started = datetime.now(UTC) - timedelta(seconds=30)
    with Registry(f"sqlite:///{db}") as registry:
        registry.started("acme", "sync", started)
        registry.succeeded("acme", "sync", started=started, outcome="ok")
        registry.failed(
            "globex",
            "sync",
            error="SalesforceError: QUERY_TIMEOUT",
            decision=Retry(at=datetime.now(UTC) + timedelta(minutes=10)),
        )
    found = document(run("status", "--json", db=db))
    acme, globex = found["orgs"]
    assert acme["state"] == "scheduled"
    assert 30 <= acme["lag_seconds"] < 90
    assert acme["last_run"]["job"] == "sync"
    assert acme["last_run"]["outcome"] == "ok"
    assert acme["last_run"]["started_at"] == started.isoformat()
    assert acme["last_error"] is None
    assert (globex["state"], globex["failures"], globex["lag_seconds"]) == ("backoff", 1, None)
    assert globex["last_error"]["message"] == "SalesforceError: QUERY_TIMEOUT"
    shown = run("status", db=db)
    assert shown.exit_code == 0
    assert "backoff" in shown.stdout
    assert "QUERY_TIMEOUT" in shown.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("add", "acme", "--credentials", "ACME", "--source", "nosuch"), "no source kind"),
        (("add", "acme", "--credentials", "ACME", "--option", "fields"), "NAME=JSON"),
        (("add", "acme", "--credentials", "ACME", "--every", "0"), "--every"),
        (("pause", "globex"), "no org 'globex'"),
        (("resume", "globex"), "no org 'globex'"),
        (("remove", "globex"), "no org 'globex'"),
        (("status", "globex"), "no org 'globex'"),
    ],
)
def test_a_bad_argument_is_a_usage_error(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    db = tmp_path / "fleet.db"
    assert run("add", "acme", "--credentials", "ACME", db=db).exit_code == 0
    result = run(*arguments, db=db)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_reading_a_database_without_a_registry_creates_nothing(tmp_path: Path) -> None:
    missing = run("list", db=tmp_path / "none.db")
    assert missing.exit_code == 2
    assert "no database" in missing.output
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    refused = run("status", db=empty)
    assert refused.exit_code == 2
    assert "no fleet registry" in refused.output
    assert run("add", "acme", "--credentials", "ACME", db=tmp_path / "new.db").exit_code == 0


def test_adding_an_org_twice_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    assert run("add", "acme", "--credentials", "ACME", db=db).exit_code == 0
    again = run("add", "acme", "--credentials", "OTHER", db=db)
    assert again.exit_code == 2
    assert "registered already" in again.output


def test_the_group_tells_how_to_start_the_workers_and_the_scheduler() -> None:
    shown = run("--help")
    assert "celery -A acctsync.fleet worker" in shown.stdout
    assert "celery -A acctsync.fleet beat" in shown.stdout


def test_the_fleet_group_is_a_command_of_acctsync(tmp_path: Path) -> None:
    from acctsync.cli._app import app

    result = CliRunner().invoke(
        app, ["fleet", "add", "acme", "--credentials", "ACME", "--db", str(tmp_path / "f.db")]
    )
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(app, ["fleet", "list", "--json", "--db", str(tmp_path / "f.db")])
    assert [o["org"] for o in document(listed)["orgs"]] == ["acme"]


def test_pause_resume_and_remove_write_json_documents(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    assert run("add", "acme", "--credentials", "ACME", db=db).exit_code == 0
    paused = document(run("pause", "acme", "--reason", "audit", "--json", db=db))
    assert (paused["org"], paused["state"], paused["paused_reason"]) == ("acme", "paused", "audit")
    resumed = document(run("resume", "acme", "--json", db=db))
    assert (resumed["state"], resumed["paused"]) == ("due", False)
    assert document(run("remove", "acme", "--json", db=db)) == {"org": "acme", "removed": True}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("pause", "globex"), "Error: Invalid value for 'ORG': no org 'globex' in the fleet"),
        (("status", "globex", "acme", "initech"), "no org 'globex', 'initech' in the fleet"),
        (("add", "acme", "--credentials", "X"), "Error: Invalid value for 'ORG': org 'acme' is"),
    ],
)
def test_an_org_the_fleet_has_not_or_has_already_is_refused_in_one_line(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    db = tmp_path / "fleet.db"
    assert run("add", "acme", "--credentials", "ACME", db=db).exit_code == 0
    refused = run(*arguments, "--json", db=db)
    assert refused.exit_code == 2
    [line] = refused.stderr.splitlines()
    assert message in line
    assert refused.stdout == ""


def test_add_refuses_a_bad_argument_before_it_creates_the_database(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    for arguments in (("--source", "nosuch"), ("--option", "fields")):
        assert run("add", "acme", "--credentials", "ACME", *arguments, db=db).exit_code == 2
    refused = run("add", "acme", "--credentials", "ACME", db=tmp_path / "none" / "new.db")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == [
        "Error: Invalid value for '--db': no folder"
        f" {tmp_path / 'none'} for the SQLite file new.db"
    ]
    assert sorted(tmp_path.iterdir()) == []


def test_a_database_that_fails_exits_7_in_one_line_naming_it_without_secrets() -> None:
    pytest.importorskip("psycopg")
    down = "postgresql://sync:s3cret@127.0.0.1:1/crm?password=s3cret-too"
    for arguments in (("list",), ("status", "--json"), ("add", "acme", "--credentials", "A")):
        failed = CliRunner().invoke(fleet, [*arguments, "--db", down])
        assert failed.exit_code == 7, failed.output
        [line] = failed.stderr.splitlines()
        assert line.startswith(
            "Error: postgresql+psycopg://sync:***@127.0.0.1:1/crm: the database failed:"
        )
        assert "s3cret" not in failed.stdout + failed.stderr
        if "--json" in arguments:
            error = json.loads(failed.stdout)["error"]
            assert (error["exit_code"], error["type"]) == (7, "StoreError")
            assert error["message"] == line.removeprefix("Error: ")
