"""The ``acctsync`` group: its commands, and the options that come before any of them.

Each command lives in a module of its own; `_command` holds what they share: the
database and org options, the checks made before the database is opened, and the
library's errors turned into exit codes.
"""

from __future__ import annotations

import click

from acctsync.cli._activities import activities
from acctsync.cli._command import reporting
from acctsync.cli._conversion import convert
from acctsync.cli._edit import edit
from acctsync.cli._exits import ExitCode
from acctsync.cli._fleet import fleet
from acctsync.cli._logs import logging_options
from acctsync.cli._output import Output
from acctsync.cli._params import DATABASE, Database
from acctsync.cli._show import show
from acctsync.cli._status import status
from acctsync.cli._sync import refresh_formulas, sync

__all__ = ["app"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acctsync", prog_name="acctsync")
@logging_options
def app() -> None:
    """Keep a local copy of Salesforce Accounts and Contacts in step with Salesforce.

    Shell completion: eval "$(_ACCTSYNC_COMPLETE=bash_source acctsync)" (zsh_source,
    fish_source for those shells).
    """


@click.command(short_help="Sync a synthetic org and show every rule at work.")
@click.option(
    "--db",
    "database",
    type=DATABASE,
    default="acctsync-demo.db",
    show_default=True,
    help="Where to keep the demo's local copy: a SQLite file or a SQLAlchemy URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@logging_options
@reporting
def demo(out: Output, *, database: Database, as_json: bool) -> ExitCode:
    """Sync a synthetic org into a database and show every rule at work.

    Run it again on the same database and it resumes from the stored watermark.
    """
    from acctsync.cli._demo import run_demo

    database.check()
    database.check_writable()
    run_demo(out, database)
    return ExitCode.OK


for _command in (demo, sync, refresh_formulas, status, activities, show, edit, convert, fleet):
    app.add_command(_command)
