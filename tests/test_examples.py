"""The examples run as their docstrings say, and `make demo` runs as the README says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 120  # seconds; each run takes one to three


def run(command: list[str], cwd: Path) -> str:
    """Run ``command`` in ``cwd``; return its output once it has exited 0."""
    # No __pycache__ written next to the examples.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def run_example(name: str, cwd: Path) -> list[str]:
    """The lines an example prints, run as a script from an empty working directory."""
    out = run([sys.executable, str(EXAMPLES / name)], cwd)
    assert list(cwd.iterdir()) == [], "an example writes only to its own temporary folder"
    return out.splitlines()


def test_every_example_is_tested() -> None:
    tested = {
        "testing_with_fakes.py",
        "sqlite_from_exports.py",
        "salesforce_client.py",
        "follow_live.py",
    }
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_testing_with_fakes_runs_as_a_script(tmp_path: Path) -> None:
    lines = run_example("testing_with_fakes.py", tmp_path)
    assert [line.split(":")[0] for line in lines] == [
        "ok  test_an_industry_change_notifies_every_contact_of_the_account",
        "ok  test_replaying_every_change_logs_nothing_twice",
        "ok  test_my_store_conforms",
        "ok  test_my_source_conforms",
        "4 tests passed",
    ]


def test_testing_with_fakes_runs_under_pytest(tmp_path: Path) -> None:
    example = str(EXAMPLES / "testing_with_fakes.py")
    out = run([sys.executable, "-m", "pytest", example, "-p", "no:cacheprovider", "-q"], tmp_path)
    assert "4 passed" in out


def test_sqlite_from_exports(tmp_path: Path) -> None:
    lines = run_example("sqlite_from_exports.py", tmp_path)
    assert "  seen by all 2 contacts of Acme, not sent to Salesforce" in lines
    # S3: a sync without a newer Acme keeps the edit; the newer export overwrites it.
    assert "  Acme: {'Name': 'Acme', 'Industry': 'Retail', 'NumberOfEmployees': 120}" in lines
    assert "  Acme: {'Name': 'Acme', 'Industry': 'Tech', 'NumberOfEmployees': 150}" in lines
    assert (
        "  applied: accounts 1, contacts 0; Change Data Values logged: 4;"
        " local edits overwritten: 1"
    ) in lines
    # R7: the bad row is rejected with its file and line; the record keeps its last version.
    assert (
        "  rejected Account_2024-02-01.csv:3: 001Ak00000GlobXIAR NumberOfEmployees:"
        " 'twelve' is not an integer"
    ) in lines
    assert any(line.startswith("  Globex keeps its last good version: {") for line in lines)
    # S2 and S7: the local edit and the Salesforce update, each logged for both contacts.
    log = lines[lines.index("The activity log:") + 1 :]
    assert [line.split() for line in log] == [
        ["local", "Ng", "Industry:", "'Tech'", "->", "'Retail'"],
        ["local", "Ito", "Industry:", "'Tech'", "->", "'Retail'"],
        ["salesforce", "Ng", "Industry:", "'Retail'", "->", "'Tech'"],
        ["salesforce", "Ng", "NumberOfEmployees:", "120", "->", "150"],
        ["salesforce", "Ito", "Industry:", "'Retail'", "->", "'Tech'"],
        ["salesforce", "Ito", "NumberOfEmployees:", "120", "->", "150"],
    ]


def test_salesforce_client(tmp_path: Path) -> None:
    lines = run_example("salesforce_client.py", tmp_path)
    out = "\n".join(lines)
    assert "  Acme (Tier__c 'Gold'): ['Ng', 'Ito']" in lines
    # S6: created in Salesforce, once; in the local copy only after the next sync.
    assert "  a retry returns the same records: True" in lines
    assert "  opportunities in the org: ['Initech']" in lines
    assert "  locally, before the next sync: None" in lines
    assert "  Initech (Tier__c None): ['Doe']" in lines
    # A formula change and a purge: a sync sees neither, a reconciliation both. The formula
    # changes on a record last saved before the lookback window, which a sync reads again.
    nothing = "applied: accounts 0, contacts 0 | accounts deleted: 0 | refreshed: 0 | ok: True"
    step_3 = out[out.index("3. ") : out.index("4. ")].splitlines()
    assert step_3[1:5] == [
        f"  sync      {nothing}",
        "  reconcile applied: accounts 1, contacts 0 | accounts deleted: 0 | refreshed: 1"
        " | ok: True",
        "  Change Data Value for Ng: Tier__c 'Gold' -> 'Platinum'",
        "  Change Data Value for Ito: Tier__c 'Gold' -> 'Platinum'",
    ]
    step_4 = out[out.index("4. ") :].splitlines()
    assert step_4[1:] == [
        f"  sync      {nothing}",
        "  reconcile applied: accounts 0, contacts 0 | accounts deleted: 1 | refreshed: 0"
        " | ok: True",
        "  Acme (Tier__c 'Platinum'): ['Ng', 'Ito']",
        "  Initech (Tier__c None): ['Doe']",
    ]


def test_follow_live(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    lines = run_example("follow_live.py", tmp_path)
    assert lines == [
        "caught up: 1 account, 2 contacts",
        "1 event(s): 1 account updated",
        "  Change Data Value for 003Ak0000000001IAA: Name 'Acme' -> 'Acme Corp'",
        "  Change Data Value for 003Ak0000000002IAA: Name 'Acme' -> 'Acme Corp'",
        "stored: Acme Corp; the next follow resumes after its event: True",
    ]


# `make test` is not run here: it runs this test suite, which would run it again, and so
# on. `make demo` is, as the README's first block tells a newcomer to run it.
def test_make_demo_as_the_readme_says(tmp_path: Path) -> None:
    installed = ROOT / ".venv" / "bin" / ".installed"
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    if (
        not installed.exists()
        or installed.stat().st_mtime <= (ROOT / "pyproject.toml").stat().st_mtime
    ):
        pytest.skip(
            "make demo would create or reinstall .venv first (it is missing or older than"
            " pyproject.toml): run make demo or make test once, then the tests"
        )
    db = tmp_path / "demo.db"
    command = ["make", "--no-print-directory", "demo", f"DEMO_DB={db}"]
    # A dry run first: if the target ignored DEMO_DB, the demo would write into the repo.
    planned = run([*command, "--dry-run"], ROOT)
    assert f"--db {db}" in planned, f"make demo does not pass DEMO_DB on:\n{planned}"
    demo_dbs = sorted(ROOT.glob("acctsync-demo.db*"))

    out = run(command, ROOT)

    assert f"A new local copy in {db}" in out
    assert "Industry: 'Tech' -> 'Retail' (salesforce)" in out
    assert "a retry gave the same: True" in out
    assert "holds 32 accounts, 12,870 contacts and 6,119 Change Data Value entries" in out
    assert db.is_file()
    assert sorted(ROOT.glob("acctsync-demo.db*")) == demo_dbs
