"""How the command line's text becomes values: databases, IDs, times, field values.

The parameter types make a bad value a usage error (exit 2) raised while the arguments
are parsed: before anything is read or written.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from acctsync._convert import make_converter
from acctsync._errors import InvalidRecordError
from acctsync._ids import normalize_id
from acctsync._records import FieldValue

if TYPE_CHECKING:
    from sqlalchemy import URL

    _ParamType = click.ParamType[Any, Any]
else:  # click < 8.2's ParamType is not generic
    _ParamType = click.ParamType

__all__ = [
    "DATABASE",
    "MOMENT",
    "Database",
    "Duration",
    "RecordId",
    "Seconds",
    "SettingError",
    "field_value",
    "missing_extra",
    "parse_json",
    "parse_json_value",
]

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_AGO: Final = re.compile(r"(\d+)([smhd])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_CONNECT_TIMEOUT: Final = "10"  # seconds
# How hosting providers and libpq write a PostgreSQL URL: each means psycopg 3 here.
_POSTGRESQL: Final = frozenset({"postgres", "postgresql", "postgres+psycopg"})


class SettingError(click.ClickException):
    """A setting the command cannot start with: a database that is not there or cannot
    be written, an org it does not hold, a missing extra, an export folder without
    exports. Exit 2 like a usage error, in one line on stderr: the arguments were well
    formed, so their usage would not help.
    """

    exit_code = 2

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(f"Invalid value for '{option}': {message}" if option else message)


class Database:
    """Where ``--db`` points: a SQLAlchemy URL, or a path that means a SQLite file.

    ``postgres://`` and ``postgresql://`` (as hosting providers hand them out) mean
    PostgreSQL through psycopg 3. SQLAlchemy is imported only when the URL is needed, so
    that ``--help`` and a usage error answer without it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.given_as_path = not _SCHEME.match(text)
        """A plain path (a Windows drive letter has no ``//``): a SQLite file."""

    def __repr__(self) -> str:
        return f"<Database {self.shown!r}>"

    @functools.cached_property
    def url(self) -> URL:
        """The SQLAlchemy URL, PostgreSQL's with its driver named; `click.BadParameter` if
        the text is not one."""
        try:
            from sqlalchemy import URL, make_url
            from sqlalchemy.exc import ArgumentError
        except ImportError as error:
            raise missing_extra("cli", error) from None

        if self.given_as_path:
            return URL.create("sqlite", database=self.text)
        try:
            url = make_url(self.text)
        except ArgumentError:
            raise click.BadParameter(
                "not a database URL (dialect+driver://user@host/database)", param_hint="'--db'"
            ) from None
        except ValueError:  # SQLAlchemy reads the port as a number, and says so in Python's words
            raise click.BadParameter(
                "not a database URL: its port is not a number", param_hint="'--db'"
            ) from None
        if url.port is not None and not 0 < url.port < 2**16:
            raise click.BadParameter(
                f"not a database URL: port {url.port} is not a TCP port", param_hint="'--db'"
            )
        if url.drivername in _POSTGRESQL:
            url = url.set(drivername="postgresql+psycopg")
            if "connect_timeout" not in url.query:
                # libpq waits for a server that does not answer as long as TCP does
                # (minutes): a command should say it is down sooner.
                url = url.update_query_dict({"connect_timeout": _CONNECT_TIMEOUT})
        return url

    @property
    def path(self) -> Path | None:
        """The SQLite file the database is in; None for a server or an in-memory one."""
        if self.given_as_path:
            return Path(self.text)
        name = self.url.database if self.url.get_backend_name() == "sqlite" else None
        if name in (None, "", ":memory:") or str(name).startswith("file:"):
            return None
        return Path(str(name))

    @property
    def shown(self) -> str:
        """The database as it may be printed: the path as given, or the URL without its
        password and query (where drivers also take passwords)."""
        if self.given_as_path:
            return self.text
        return self.url.set(query={}).render_as_string(hide_password=True)

    def check(self) -> None:
        """Raise `click.BadParameter` now if the text is not a URL, and `SettingError` if
        its driver is not installed (naming the extra that brings it)."""
        if self.url.get_backend_name() == "postgresql":
            try:
                import psycopg  # noqa: F401
            except ImportError as error:
                raise missing_extra("postgres", error, needs="a PostgreSQL database") from None

    def exists(self) -> bool:
        """False for a SQLite file that is not there (a server database always counts)."""
        path = self.path
        return path is None or path.is_file()

    def check_writable(self) -> None:
        """Raise `SettingError` naming the path if a SQLite file could not be written
        there: its folder missing or not writable, the file read-only.

        Every command writes the file, reads too (the runner's lock, the write-ahead log
        beside it), and SQLite would only say "unable to open database file".
        """
        path = self.path
        if path is None:
            return
        folder = path.parent
        if not folder.is_dir():
            raise SettingError(
                f"no folder {folder} for the SQLite file {path.name}", option="--db"
            )
        if path.exists() and not path.is_file():
            raise SettingError(f"{path} is not a file", option="--db")
        if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
            raise SettingError(
                f"the SQLite file {path} is read-only: acctsync writes to it, also to read"
                " it (its lock and journal)",
                option="--db",
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingError(
                f"cannot write in the folder {folder}, where the SQLite file {path.name}"
                " keeps its journal",
                option="--db",
            )


def missing_extra(extra: str, error: ImportError, *, needs: str = "this") -> SettingError:
    """The error for an extra that is not installed, with the line that installs it."""
    return SettingError(
        f"{needs} needs the {extra} extra ({error.name or error} is missing):"
        f" pip install 'acctsync[{extra}]'"
    )


class _DatabaseType(_ParamType):
    name = "URL|PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Database):
            return value
        text = str(value)
        if not text:
            self.fail("an empty database", param, ctx)
        database = Database(text)
        if not database.given_as_path:
            scheme = text.partition(":")[0].lower()
            backend, _, driver = scheme.partition("+")
            if backend not in ("sqlite", "postgresql", "postgres"):
                self.fail(f"acctsync stores in SQLite or PostgreSQL, not {backend}", param, ctx)
            if backend != "sqlite" and driver not in ("", "psycopg"):
                self.fail(
                    f"acctsync talks to PostgreSQL through psycopg 3, not {driver}:"
                    " postgresql://... or postgresql+psycopg://...",
                    param,
                    ctx,
                )
            if backend == "sqlite" and driver not in ("", "pysqlite"):
                self.fail(
                    f"acctsync opens SQLite through Python's sqlite3, not {driver}", param, ctx
                )
        return database


DATABASE: Final = _DatabaseType()

_LONGEST: Final = 10 * 366 * 86_400.0  # ten years: beyond that a duration is a mistake


class Seconds(_ParamType):
    """A finite number of seconds, at least ``minimum`` (more than it with ``open``).

    click's FloatRange lets ``nan`` and ``inf`` through, which then loop or overflow.
    """

    name = "SECONDS"

    def __init__(self, minimum: float = 0.0, *, open: bool = False) -> None:
        self._minimum = minimum
        self._open = open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        low = seconds <= self._minimum if self._open else seconds < self._minimum
        if not math.isfinite(seconds) or low or seconds > _LONGEST:
            bound = "more than" if self._open else "at least"
            self.fail(
                f"{value!r} is not {bound} {self._minimum:g} and at most {_LONGEST:g} seconds",
                param,
                ctx,
            )
        return seconds


class RecordId(_ParamType):
    """A 15- or 18-character Salesforce ID of one object, as its 18-character form."""

    name = "ID"

    def __init__(self, prefix: str, what: str) -> None:
        self._prefix = prefix
        self._what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return normalize_id(value, prefix=self._prefix)
        except InvalidRecordError as error:
            self.fail(f"not {self._what} ID: {error.reason}", param, ctx)


class _MomentType(_ParamType):
    """An aware datetime, a date (its midnight in UTC) or a time ago (``15m``, ``7d``)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        ago = _AGO.fullmatch(text)
        if ago is not None:
            try:
                return datetime.now(UTC) - timedelta(**{_UNITS[ago[2]]: int(ago[1])})
            except OverflowError:
                self.fail(f"{text!r} reaches back before year 1", param, ctx)
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(), UTC)
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not a time: give 2024-01-31T12:00:00Z, 2024-01-31 or 15m / 2h / 7d",
                param,
                ctx,
            )
        if parsed.utcoffset() is None:
            # Guessing the zone would move the window by hours without a word.
            self.fail(f"{text!r} has no time zone: add Z (UTC) or an offset", param, ctx)
        return parsed


MOMENT: Final = _MomentType()


class Duration(_ParamType):
    """A length of time: ``90s``, ``15m``, ``2h``, ``7d``, or a number of seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip()
        ago = _AGO.fullmatch(text)
        try:
            if ago is not None:
                length = timedelta(**{_UNITS[ago[2]]: int(ago[1])})
            else:
                length = timedelta(seconds=float(text))
        except (ValueError, OverflowError):
            self.fail(f"{text!r} is not a duration: give 90s, 15m, 2h, 7d or seconds", param, ctx)
        if not timedelta(0) < length <= timedelta(seconds=_LONGEST):
            self.fail(f"{text!r} is not more than 0 and at most ten years", param, ctx)
        return length


_CONVERTER: Final = make_converter()
_STRUCTURE_VALUE: Final = _CONVERTER.get_structure_hook(FieldValue)
# Exact digits: 1500000.50 stays a Decimal, as currency fields hold it.
_JSON: Final = json.JSONDecoder(parse_float=Decimal)


def parse_json_value(text: str) -> FieldValue:
    """A field value from JSON: a string, a number, true/false, null, or a tagged value.

    Numbers with a fraction are `Decimal` s with exactly their digits; ``{"$date":
    "2024-01-31"}``, ``{"$datetime": "..."}`` and ``{"$decimal": "1.50"}`` are the
    library's lossless form. Raises `InvalidRecordError`.
    """
    return field_value(parse_json(text))


def parse_json(text: str) -> Any:
    """``text`` as JSON, its numbers with a fraction as `Decimal` s; raises
    `InvalidRecordError`."""
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as error:
        raise InvalidRecordError(f"not JSON: {error}") from None


def field_value(raw: Any) -> FieldValue:
    """A field value from what `parse_json` read (see `parse_json_value`)."""
    if isinstance(raw, list) or (isinstance(raw, dict) and len(raw) != 1):
        raise InvalidRecordError("a field value is one value, not a list or an object")
    if isinstance(raw, Decimal):
        return raw
    value: FieldValue = _STRUCTURE_VALUE(raw, FieldValue)
    return value
