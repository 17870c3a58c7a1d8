"""The README's example and the demo run as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from acctsync import demo

ROOT = Path(__file__).parent.parent


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)


def test_readme_python_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert blocks
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    store = namespace["store"]
    acme = namespace["acme"]
    assert store.get_account(acme).fields == {"Name": "Acme", "Industry": "Retail"}  # type: ignore[attr-defined]
    assert len(list(store.activities())) == 1  # type: ignore[attr-defined]


def test_demo_shows_every_rule_it_promises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--db", str(tmp_path / "demo.db")]) == 0
    out = capsys.readouterr().out
    assert "31 accounts of every size, 12,869 contacts" in out
    assert "rejected: Account not-an-id" in out
    assert "Industry: 'Tech' -> 'Retail' (salesforce)" in out
    assert "5,001 contacts (> 5,000): 5,001 entries not logged" in out
    # At exactly 5,000 contacts the entries are logged (S8).
    assert re.search(r"\b5,000 +. 5,000 +. 0 ", out)
    assert "a sync with no newer Acme version keeps it: 'Finance'" in out
    assert "Acme now: {'Name': 'Acme Inc', 'Industry': 'Retail'}" in out
    assert "a retry gave the same: True" in out
    assert "in the local store before the next sync: None" in out
    assert "holds 32 accounts, 12,870 contacts and 6,119 Change Data Value entries" in out


def test_demo_resumes_from_the_stored_watermark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "demo.db")
    demo.main(["--db", db])
    capsys.readouterr()
    for phone in ("5550101", "5550102"):
        demo.main(["--db", db])
        out = capsys.readouterr().out
        assert "Resuming from the stored watermark" in out
        # Only the changed account is read: not the org's 12,870 contacts again.
        assert "pages: 1 | applied: accounts 1, contacts 0 | already applied: 0" in out
        assert f"Phone: {'None' if phone == '5550101' else repr('5550101')} -> {phone!r}" in out


def test_demo_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "acctsync.demo", "--db", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Convert Person" in done.stdout
