"""The library's log records on stderr while a command runs: as text, or one JSON object a
line for a log collector.

The library logs through the standard `logging` module under the ``acctsync`` logger and
configures nothing itself. The command sets that logger's level (``-v`` info, ``-vv``
debug, or ``--log-level``) and puts one handler on the root logger for the command's
duration, so that the warnings of the libraries beneath (SQLAlchemy's pool, say) come
out the same way. An exception in a record is one line (its type and message) unless
the level is debug; a record caused by Ctrl-C is dropped unless the level is debug: the
command itself says it was interrupted, once.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import click

__all__ = ["LEVELS", "JsonFormatter", "TextFormatter", "logging_options", "logging_to_stderr"]

LEVELS: Final = ("debug", "info", "warning", "error")
_META: Final = "acctsync.logging"
_VERBOSE: Final = {0: logging.WARNING, 1: logging.INFO}


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception(record: logging.LogRecord) -> BaseException | None:
    return record.exc_info[1] if record.exc_info else None


def _in_one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class TextFormatter(logging.Formatter):
    """``2024-01-31T12:00:00.000Z WARNING acctsync.sources.salesforce: message``.

    An exception is appended in one line, or as its traceback with ``tracebacks``.
    """

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__()
        self._tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (and its traceback, with ``tracebacks``)."""
        line = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        error = _exception(record)
        if error is None:
            return line
        if self._tracebacks and record.exc_info:
            return f"{line}\n{self.formatException(record.exc_info)}"
        return f"{line} ({_in_one_line(error)})"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, and
    ``error`` (``{"type", "message"}``, with ``traceback`` when ``tracebacks``)."""

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__()
        self._tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        document: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        error = _exception(record)
        if error is not None:
            described = {"type": type(error).__name__, "message": str(error)}
            if self._tracebacks and record.exc_info:
                described["traceback"] = self.formatException(record.exc_info)
            document["error"] = described
        return json.dumps(document, ensure_ascii=False, default=str)


def _not_an_interruption(record: logging.LogRecord) -> bool:
    return not isinstance(_exception(record), KeyboardInterrupt)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a logging option's value, and where it came from, for `logging_to_stderr`."""
    if param.name is None or value is None or value == 0:
        return
    source = ctx.get_parameter_source(param.name)
    settings = ctx.find_root().meta.setdefault(_META, {})
    given = settings.get(param.name)
    # Before the command's name or after it, an option given beats the environment's.
    if given is None or source is click.core.ParameterSource.COMMANDLINE:
        settings[param.name] = (value, source)


def logging_options(function: Any) -> Any:
    """``-v``, ``--log-level`` and ``--log-format``: on the group and on every command, so
    that they may come before or after the command's name."""
    function = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        envvar="ACCTSYNC_LOG_FORMAT",
        expose_value=False,
        callback=_remember,
        help="Log records as text or as JSON lines, on stderr. [default: text]"
        " [env: ACCTSYNC_LOG_FORMAT]",
    )(function)
    function = click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        envvar="ACCTSYNC_LOG_LEVEL",
        expose_value=False,
        callback=_remember,
        help="The library's log level. [default: warning] [env: ACCTSYNC_LOG_LEVEL]",
    )(function)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_remember,
        help="Log more on stderr: -v info, -vv debug.",
    )(function)


def _level(settings: dict[str, tuple[Any, click.core.ParameterSource]]) -> int:
    """The level the options ask for: an explicit --log-level, else -v, else the
    environment's, else warning."""
    given = settings.get("log_level")
    verbose = settings.get("verbose")
    if given is not None and (
        verbose is None or given[1] is not click.core.ParameterSource.ENVIRONMENT
    ):
        level: int = logging.getLevelNamesMapping()[str(given[0]).upper()]
        return level
    if verbose is not None:
        return _VERBOSE.get(int(verbose[0]), logging.DEBUG)
    return logging.WARNING


@contextmanager
def logging_to_stderr(ctx: click.Context) -> Iterator[None]:
    """Log to stderr as the context's options say, until the context exits."""
    settings = ctx.find_root().meta.get(_META, {})
    level = _level(settings)
    form = settings.get("log_format", ("text", None))[0]
    debug = level <= logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(tracebacks=debug) if form == "json" else TextFormatter(tracebacks=debug)
    )
    if not debug:
        handler.addFilter(_not_an_interruption)
    root, library = logging.getLogger(), logging.getLogger("acctsync")
    before = library.level
    library.setLevel(level)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        library.setLevel(before)
