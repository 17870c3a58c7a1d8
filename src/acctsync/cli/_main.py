"""The entry point: runs the click application, and says which extra is missing if any."""

from __future__ import annotations

import gc
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from acctsync.cli._exits import ExitCode

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``acctsync`` with ``argv`` (the process's arguments when None); the exit status.

    It runs CPython's cyclic garbage collector less often than the default, for the
    process: it is the command's entry point, not the library's.

    A Ctrl-C that reaches a finalizer (an object collected just then) is not printed: the
    command says it was interrupted. After a run stopped by Ctrl-C (SIGINT) or SIGTERM, a
    further Ctrl-C is ignored: what is left is the interpreter's exit, which it would only
    cut short with a traceback.
    """
    if sys.implementation.name == "cpython":
        # A sync allocates a few containers per record (the record, its fields, its row):
        # at CPython's default, a collection every 700 allocations, a first sync of a
        # million records spent 8-10% of its CPU in the collector. The command is a
        # process of its own, so it tunes the collector for itself, as mypy does; the
        # library leaves the settings of the application that imports it alone.
        gc.set_threshold(50_000)
    hook = sys.unraisablehook
    sys.unraisablehook = _without_interruptions(hook)
    try:
        code = _run(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting, before a command handles it
        code = ExitCode.INTERRUPTED
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        sys.unraisablehook = hook
    return code


def _without_interruptions(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """``hook``, but silent on a `KeyboardInterrupt` that reached a finalizer (an object
    collected while Ctrl-C unwound the stack): the run already said it was interrupted."""

    def unraisable(unraisable: Any) -> object:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return None
        return hook(unraisable)

    return unraisable


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
