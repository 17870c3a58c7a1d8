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


def test_demo_shows_every_rule_it_promises(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main()
    out = capsys.readouterr().out
    assert "rejected: Account not-an-id" in out
    assert "Industry: 'Tech' -> 'Retail' (salesforce)" in out
    assert "5,001 contacts (> 5,000): 5,001 entries not logged" in out
    assert "a sync with no newer Acme version keeps it: 'Finance'" in out
    assert "Acme now: {'Name': 'Acme Inc', 'Industry': 'Retail'}" in out
    assert "a retry gave the same: True" in out
    assert "in the local store before the next sync: None" in out


def test_demo_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "acctsync.demo"], capture_output=True, text=True, check=True
    )
    assert "Convert Person" in done.stdout
