"""``docs/cli.md`` lists every command, option, exit code and environment variable the
command has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("click")
pytest.importorskip("rich")

import click

from acctsync.cli import ExitCode
from acctsync.cli._app import app

DOCS = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()


def commands(group: click.Group, prefix: str = "acctsync") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from commands(command, path)
        else:
            yield path, command


def test_every_command_has_a_section_or_a_line() -> None:
    for path, _ in commands(app):
        parent = " ".join(path.split()[:2])
        assert f"## {path}" in DOCS or f"`{path}" in DOCS or f"## {parent}" in DOCS, path


@pytest.mark.parametrize("path", [path for path, _ in commands(app)])
def test_every_option_of_every_command_is_documented(path: str) -> None:
    command = dict(commands(app))[path]
    for parameter in command.params:
        if not isinstance(parameter, click.Option) or parameter.hidden:
            continue
        names = [*parameter.opts, *parameter.secondary_opts]
        if names == ["--help"] or "-h" in names:
            continue
        assert any(f"`{name}" in DOCS for name in names), (path, names)


def test_every_exit_code_is_in_the_table() -> None:
    table = DOCS.partition("## Exit codes")[2].partition("\n## ")[0]
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert listed == {int(code) for code in ExitCode}


def test_every_environment_variable_is_in_the_table() -> None:
    table = DOCS.partition("## Environment variables")[2].partition("\n## ")[0]
    read = {
        parameter.envvar
        for _, command in commands(app)
        for parameter in command.params
        if isinstance(parameter.envvar, str)
    }
    read |= {"_ACCTSYNC_COMPLETE"}
    for variable in read:
        assert f"`{variable}`" in table, variable
    source = "".join(
        path.read_text()
        for path in (Path(__file__).parent.parent / "src" / "acctsync" / "cli").glob("_*.py")
    )
    for variable in set(re.findall(r'"((?:SALESFORCE|ACCTSYNC)_[A-Z_]+)"', source)):
        assert variable in table, variable
