"""The entry point: runs the click application, and says which extra is missing if any."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from acctsync.cli._exits import ExitCode

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``acctsync`` with ``argv`` (the process's arguments when None); the exit status."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting, before a command handles it
        return ExitCode.INTERRUPTED


def _run(argv: Sequence[str] | None) -> int:
    try:
        from acctsync.cli._app import app
    except ImportError as error:  # the base install has the script, not the extra
        print(
            f"acctsync: the command line needs the cli extra ({error.name} is missing):"
            " pip install 'acctsync[cli]'",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    try:
        app.main(args=list(argv) if argv is not None else None, prog_name="acctsync")
    except SystemExit as done:  # click ends every run, a good one too, with SystemExit
        code = done.code
        if code is None:
            return ExitCode.OK
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return ExitCode.UNEXPECTED
    return ExitCode.OK
