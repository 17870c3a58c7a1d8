"""A source over a folder of Salesforce export files: CSV and JSON Lines (rule R8).

CSV comes as Data Loader, the Bulk API 2.0 and the weekly Data Export service write it.

Theory of operation
-------------------
`ExportFolder.read_changes` reads the files of one object in two passes. The first pass
scans every row and keeps an index entry of where it is (file, byte offset, line) with
its ``SystemModstamp`` and ``Id``: one entry per record, its latest version, and only if
stamped at or after ``since`` (an older version can never be the one to send). The
entries are sorted by ``(SystemModstamp, Id)``; the second pass reads the rows of one
page at a time again from their offsets and hands them on as `RawRecord` s, for the
engine to decode or reject. Memory holds the index, not the rows.

A row that cannot be placed in that order (no readable stamp, broken CSV, the wrong
number of columns, not JSON) still goes to the engine, to be rejected with its file and
line: such rows come first, in every read, whatever ``since`` is.

The CSV tools differ in how they write a value, not in what it means; a CSV row is handed
on in the shape of a REST JSON record, so that one decoder reads every source. A checkbox
``1`` / ``0`` is a boolean, a Data Export datetime (UTC, no zone) becomes a datetime in
UTC, the empty ID in an ID column is null, and audit columns are dropped. A column typed
by ``types`` takes the spelling of its ``types`` entry (a describe's), in whatever case
the header wrote it.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import os
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import ExitStack
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Final, TypeAlias

from attrs import frozen

from acctsync._errors import ConfigurationError, InvalidRecordError, SourceError
from acctsync._formats import AUDIT_FIELDS, EMPTY_ID, parse_datetime
from acctsync._ids import normalize_id
from acctsync._records import (
    OBJECT_PREFIXES,
    ObjectType,
    RawRecord,
    Unreadable,
    parse_object_type,
)

__all__ = [
    "ExportFileError",
    "ExportFolder",
    "ExportPages",
    "csv_pages",
    "types_from_describe",
]

# A stem ending in "__" and letters is a custom object's (Account_Plan__c.csv, which the
# Data Export service writes beside Account.csv) or its history's or share's.
_OBJECT_FILE: Final = re.compile(
    r"(account|contact)s?(?:[\W\d_](?!.*__[a-z]+\.[a-z]+$).*)?\.(csv|jsonl|ndjson)",
    re.IGNORECASE | re.DOTALL,
)
_BOM: Final = b"\xef\xbb\xbf"
# The separators a spreadsheet writes CSV with: ";" where the decimal mark is ",".
_DELIMITERS: Final = (",", ";", "\t", "|")
# The names of the files `ExportFolder` reads, as an error lists them.
_OBJECTS: Final[tuple[ObjectType, ...]] = ("Account", "Contact")
_STEMS: Final = ("account", "accounts", "contact", "contacts")
_NAMES_READ: Final = (
    "Account.csv, Accounts.csv, Contact.csv, Contacts.csv, in any case, optionally with a"
    " suffix that starts with a non-letter (Account_2024-01-31.csv) and does not end a"
    " custom object's name (Account_Plan__c.csv); or .jsonl / .ndjson for JSON Lines"
)
_INT: Final = re.compile(r"[+-]?\d+")
_DECIMAL: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
# The weekly Data Export service (Setup > Data Export) writes a datetime in UTC with no
# zone, 2026-06-09 16:12:25, and an empty lookup as the empty ID (SALESFORCE.md, "Records
# and time"; Salesforce Help's "Backing Up Data from Salesforce" does not give the values).
_EXPORT_DATETIME: Final = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_AUDIT_COLUMNS: Final = frozenset(name.casefold() for name in AUDIT_FIELDS)
_ID_KINDS: Final = frozenset({"text", "reference"})
# parse_float=Decimal: a currency amount keeps its exact digits.
_JSON: Final = json.JSONDecoder(parse_float=Decimal)

_TEXT_TYPES: Final = (
    "text string textarea picklist multipicklist combobox email phone url"
    " encryptedstring time base64 anytype"
)
# Type names, the Salesforce describe's and a few plain ones, by how a value is read.
_KINDS: Final[Mapping[str, str]] = {
    **dict.fromkeys(_TEXT_TYPES.split(), "text"),
    **dict.fromkeys(("decimal", "double", "currency", "percent"), "decimal"),
    **dict.fromkeys(("id", "reference"), "reference"),
    "int": "int",
    "long": "int",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
}
_SYSTEM_COLUMNS: Final[Mapping[str, tuple[str, str]]] = {
    "id": ("Id", "reference"),
    "accountid": ("AccountId", "reference"),
    "masterrecordid": ("MasterRecordId", "reference"),
    "systemmodstamp": ("SystemModstamp", "datetime"),
    "isdeleted": ("IsDeleted", "boolean"),
}


class ExportFileError(SourceError):
    """A file of the export folder cannot be read as an export at all (not one bad row).

    ``path`` is the file, ``reason`` says why; ``__cause__`` holds an OS error, if any.
    ``delimiter`` is the column separator the file's header row reads with, when that is
    what is wrong with it (a ``;``-separated CSV read as ``,``-separated).
    """

    def __init__(self, path: Path, reason: str, *, delimiter: str | None = None):
        self.path = path
        self.reason = reason
        self.delimiter = delimiter
        super().__init__(f"{path}: {reason}")


def types_from_describe(describe: Mapping[str, Any]) -> dict[str, str]:
    """The ``types`` of an sObject describe (``GET .../sobjects/Account/describe``).

    Keys are qualified by the describe's object name (``"Account.AnnualRevenue"``).
    Compound fields (address, location) are left out, and so are field types this module
    does not know: those columns stay text.
    """
    name = describe.get("name")
    fields = describe.get("fields")
    if not isinstance(name, str) or not isinstance(fields, Sequence):
        raise ConfigurationError("a describe must have a 'name' and a list of 'fields'")
    types: dict[str, str] = {}
    for described in fields:
        if not isinstance(described, Mapping):
            raise ConfigurationError("each entry of a describe's 'fields' must be an object")
        field, kind = described.get("name"), described.get("type")
        if isinstance(field, str) and isinstance(kind, str) and kind.lower() in _KINDS:
            types[f"{name}.{field}"] = kind
    return types


def _text(text: str, field: str) -> object:
    return text


# Data Loader and the Bulk API 2.0 write a checkbox as true / false (Bulk API 2.0 and Bulk
# API Developer Guide, "Get Results for a Query Job"), the Data Export service as 1 / 0.
_BOOLEANS: Final[Mapping[str, bool]] = {"true": True, "1": True, "false": False, "0": False}


def _boolean(text: str, field: str) -> object:
    value = _BOOLEANS.get(text.lower())
    if value is None:
        raise InvalidRecordError(f"{text!r} is not a boolean (true, false, 1 or 0)", field=field)
    return value


def _reference(text: str, field: str) -> object:
    return None if text == EMPTY_ID else text


def _int(text: str, field: str) -> object:
    if _INT.fullmatch(text) is None:
        raise InvalidRecordError(f"{text!r} is not an integer", field=field)
    try:
        return int(text)
    except ValueError:  # longer than Python reads (sys.get_int_max_str_digits)
        raise InvalidRecordError(
            f"an integer of {len(text)} digits is longer than any field holds", field=field
        ) from None


def _decimal(text: str, field: str) -> object:
    if _DECIMAL.fullmatch(text) is None:
        raise InvalidRecordError(f"{text!r} is not a number", field=field)
    return Decimal(text)


def _date(text: str, field: str) -> object:
    if _DATE.fullmatch(text) is not None:
        try:
            date.fromisoformat(text)
        except ValueError:
            pass
        else:
            return text  # the decoder turns a Salesforce date string into a date
    raise InvalidRecordError(f"{text!r} is not a date (YYYY-MM-DD)", field=field)


def _zoned(text: str) -> str:
    """A Data Export datetime (UTC, no zone) as the REST API writes it; others as they are."""
    if _EXPORT_DATETIME.fullmatch(text) is not None:
        return f"{text[:10]}T{text[11:]}.000Z"
    return text


def _datetime(text: str, field: str) -> object:
    zoned = _zoned(text)
    try:
        parse_datetime(zoned, field=field)
    except InvalidRecordError:
        if zoned == text:
            raise
        raise InvalidRecordError(f"{text!r} is not a valid datetime", field=field) from None
    return zoned  # the decoder turns a Salesforce datetime string into a datetime


_Reader: TypeAlias = Callable[[str, str], object]
_READERS: Final[Mapping[str, _Reader]] = {
    "text": _text,
    "reference": _reference,
    "boolean": _boolean,
    "int": _int,
    "decimal": _decimal,
    "date": _date,
    "datetime": _datetime,
}


@frozen
class _Problem:
    """Why a row cannot be read; it becomes an `Unreadable` item of its page."""

    reason: str
    record_id: str | None = None
    field: str | None = None


def _csv_encoding(encoding: object) -> str:
    """``encoding``'s codec name, if CSV files can be read in it line by line."""
    try:
        name = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        name = None
    if name is None:
        raise ConfigurationError(f"no such text encoding: {encoding!r}")
    # Lines are split at the byte 0x0A before they are decoded, and CSV's punctuation must
    # read as itself: an encoding that writes ASCII as ASCII (UTF-16 does not).
    ascii_text = '\r\n",;|\t0aZ'
    try:
        same = ascii_text.encode(name) == ascii_text.encode("ascii")
    except UnicodeEncodeError:
        same = False
    if not same:
        raise ConfigurationError(
            f"CSV files are read in an encoding that writes ASCII as ASCII, not {encoding!r}"
        )
    return name


def _label(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8" else encoding


class _Lines:
    """The lines of a binary file from an offset, decoded, counting bytes and lines."""

    def __init__(self, handle: IO[bytes], offset: int, line: int, encoding: str = "utf-8"):
        handle.seek(offset)
        self._handle = handle
        self._encoding = encoding
        self.offset = offset
        self.line = line  # lines consumed so far
        self.undecodable = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self._handle.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.line += 1
        try:
            return raw.decode(self._encoding)
        except UnicodeDecodeError:
            self.undecodable = True
            return raw.decode(self._encoding, "replace")


# What the first pass learns of a row: offset, line, its SystemModstamp (None when it has
# none that reads, or the row itself cannot be read: then nothing orders it), its Id as
# written, and whether it is a deletion.
_Scanned: TypeAlias = tuple[int, int, datetime | None, object, bool]


def _stamp(raw: object) -> datetime | None:
    try:
        return parse_datetime(raw, field="SystemModstamp")
    except InvalidRecordError:
        return None


# A CSV column the payload keeps: its position in the row, its name, how it is read.
_Column: TypeAlias = tuple[int, str, _Reader]


class _CsvFile:
    """A CSV export: a header row of API field names, then one record per row."""

    def __init__(
        self,
        path: Path,
        object_type: ObjectType,
        types: Mapping[str, tuple[str, str]],
        delimiter: str,
        encoding: str = "utf-8",
    ):
        self.path = path
        self.object_type = object_type
        self._delimiter = delimiter
        self._encoding = encoding
        self._not_text = f"not {_label(encoding)} text"
        self._types = types
        self._width = 0
        self._columns: list[_Column] = []
        self._id_at = self._stamp_at = 0
        self._deleted_at: int | None = None
        self._body = (0, 0)  # offset and lines consumed where the rows begin

    def _reader(self, lines: _Lines) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self._delimiter, strict=True)

    def _read_header(self, handle: IO[bytes]) -> bool:
        start = len(_BOM) if handle.read(len(_BOM)) == _BOM else 0
        lines = _Lines(handle, start, 0, self._encoding)
        try:
            header = next(self._reader(lines), None)
        except csv.Error as error:
            raise self._header_error(handle, f"the header row is not valid CSV: {error}") from None
        if header is None:
            return False
        if lines.undecodable:
            raise ExportFileError(self.path, f"the header row is {self._not_text}")
        if not header:
            raise ExportFileError(self.path, "the first line is empty, not a header row")
        positions: dict[str, int] = {}
        columns: list[_Column] = []
        for position, written in enumerate(header):
            if not written:
                raise ExportFileError(
                    self.path, f"column {position + 1} of the header has no name"
                )
            name, kind = self._column(written)
            if name.casefold() in positions:
                raise ExportFileError(self.path, f"column {name!r} appears twice in the header")
            positions[name.casefold()] = position
            # Audit columns are not account information (see AUDIT_FIELDS). Data Loader
            # writes every header in upper case (its CSVFileWriter, forcedotcom/dataloader):
            # they are known in any case. A relationship column (``Owner.Name``, which Data
            # Loader's export wizard offers) holds a field of another record: not this
            # record's either, and no API name (R10), so it is passed over too.
            if name.casefold() not in _AUDIT_COLUMNS and "." not in name:
                columns.append((position, name, _READERS[kind]))
        for required in ("Id", "SystemModstamp"):
            if required.casefold() not in positions:
                raise self._header_error(handle, f"the header row has no {required} column")
        self._width, self._columns = len(header), columns
        self._id_at, self._stamp_at = positions["id"], positions["systemmodstamp"]
        self._deleted_at = positions.get("isdeleted")
        self._body = (lines.offset, lines.line)
        return True

    def _header_error(self, handle: IO[bytes], reason: str) -> ExportFileError:
        """``reason`` as the file's error, saying so when another separator reads the
        header: the likeliest cause of a header that does not read."""
        handle.seek(0)
        first = handle.readline().decode(self._encoding, "replace").removeprefix("\ufeff")
        for other in _DELIMITERS:
            if other != self._delimiter:
                names = next(csv.reader([first], delimiter=other), [])
                if {"id", "systemmodstamp"} <= {name.strip().casefold() for name in names}:
                    return ExportFileError(
                        self.path,
                        f"{reason}; its columns are separated by {other!r},"
                        f" not {self._delimiter!r}",
                        delimiter=other,
                    )
        return ExportFileError(self.path, reason)

    def _column(self, written: str) -> tuple[str, str]:
        """A header's column name and kind: the system columns' own, else its type's."""
        folded = written.casefold()
        system = _SYSTEM_COLUMNS.get(folded)
        if system is not None:
            return system
        if "." in written:
            # A relationship column (Account.Name in a Contact file), passed over by the
            # header's reader: never one of the ``types``, which may name Account.Name.
            return written, "text"
        qualified = f"{self.object_type}.{written}".casefold()
        return self._types.get(qualified) or self._types.get(folded) or (written, "text")

    def scan(self, handle: IO[bytes]) -> Iterator[_Scanned]:
        if not self._read_header(handle):
            return
        id_at, stamp_at, deleted_at = self._id_at, self._stamp_at, self._deleted_at
        lines = _Lines(handle, *self._body, self._encoding)
        rows = self._reader(lines)
        while True:
            offset, line = lines.offset, lines.line + 1
            lines.undecodable = False
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error:
                yield offset, line, None, None, False
                continue
            if not row:  # a blank line
                continue
            if len(row) != self._width or lines.undecodable:
                yield offset, line, None, None, False
                continue
            deleted = deleted_at is not None and _BOOLEANS.get(row[deleted_at].lower(), False)
            yield offset, line, _stamp(_zoned(row[stamp_at])), row[id_at], deleted

    def payload(self, handle: IO[bytes], offset: int, line: int) -> Mapping[str, Any] | _Problem:
        lines = _Lines(handle, offset, line - 1, self._encoding)
        try:
            row = next(self._reader(lines), None)
        except csv.Error as error:
            return _Problem(f"not valid CSV: {error}", record_id=None)
        if row is None:
            raise ExportFileError(self.path, "the file changed while it was read")
        complete = len(row) == self._width
        record_id = (row[self._id_at] or None) if complete else None
        if lines.undecodable:
            return _Problem(f"the row is {self._not_text}", record_id=record_id)
        if not complete:
            return _Problem(
                f"the row has {len(row)} values, the header {self._width} columns",
                record_id=record_id,
            )
        payload: dict[str, Any] = {}
        for position, name, read in self._columns:
            text = row[position]
            if not text:
                payload[name] = None  # an export writes null as an empty cell
                continue
            try:
                payload[name] = read(text, name)
            except InvalidRecordError as error:
                return _Problem(error.reason, record_id=record_id, field=name)
        return payload


def _member(record: Mapping[str, Any], name: str) -> object:
    """``record[name]``, the name matched in any case as Salesforce does (rule R9)."""
    if name in record:
        return record[name]
    folded = name.casefold()
    return next((v for k, v in record.items() if k.casefold() == folded), None)


class _JsonLinesFile:
    """A JSON Lines export: one REST JSON record per line; blank lines are skipped."""

    def __init__(self, path: Path, object_type: ObjectType):
        self.path = path
        self.object_type = object_type

    def scan(self, handle: IO[bytes]) -> Iterator[_Scanned]:
        start = len(_BOM) if handle.read(len(_BOM)) == _BOM else 0
        lines = _Lines(handle, start, 0)
        for offset, line, record in self._records(lines):
            if isinstance(record, dict):
                stamp = _stamp(_member(record, "SystemModstamp"))
                deleted = _member(record, "IsDeleted") is True
                yield offset, line, stamp, _member(record, "Id"), deleted
            else:
                yield offset, line, None, None, False

    def _records(self, lines: _Lines) -> Iterator[tuple[int, int, object]]:
        while True:
            offset = lines.offset
            lines.undecodable = False
            text = next(lines, None)
            if text is None:
                return
            if text.strip():
                yield offset, lines.line, None if lines.undecodable else _parse_json(text)

    def payload(self, handle: IO[bytes], offset: int, line: int) -> Mapping[str, Any] | _Problem:
        lines = _Lines(handle, offset, line - 1)
        for _, _, record in self._records(lines):
            if lines.undecodable:
                return _Problem("the line is not UTF-8 text", record_id=None)
            if isinstance(record, Mapping | _Problem):
                return record
            return _Problem(
                f"a record must be a JSON object, not {type(record).__name__}", record_id=None
            )
        raise ExportFileError(self.path, "the file changed while it was read")


def _parse_json(text: str) -> object:
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as error:
        return _Problem(f"not valid JSON: {error.msg} (column {error.colno})", record_id=None)
    except RecursionError:
        return _Problem("not valid JSON: nested too deeply", record_id=None)
    except ValueError:  # an integer longer than Python reads (sys.get_int_max_str_digits)
        return _Problem("not valid JSON: a number longer than any field holds", record_id=None)


_ExportFile: TypeAlias = _CsvFile | _JsonLinesFile
# Where a row is: (file number, byte offset, line); an index entry puts its
# (SystemModstamp, Id) in front.
_Location: TypeAlias = tuple[int, int, int]
_Entry: TypeAlias = tuple[datetime, str, int, int, int]


def _check_types(types: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``types`` by name in any case: each column's spelling (the name, unqualified) and kind."""
    checked: dict[str, tuple[str, str]] = {}
    for name, type_name in types.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a field name in types must be a non-empty string: {name!r}")
        kind = _KINDS.get(type_name.lower()) if isinstance(type_name, str) else None
        if kind is None:
            known = ", ".join(sorted(_KINDS))
            raise ConfigurationError(
                f"unknown type name {type_name!r} for field {name!r}; known: {known}"
            )
        spelling = name.rpartition(".")[2]
        system = _SYSTEM_COLUMNS.get(spelling.casefold())
        # An ID column typed as text or as a reference reads the same: the system
        # columns keep their own reader either way.
        if system is not None and kind != system[1] and {kind, system[1]} != _ID_KINDS:
            raise ConfigurationError(
                f"{system[0]} is always read as {system[1]}, not as {type_name!r}"
            )
        checked[name.casefold()] = (spelling, kind)
    return checked


class ExportFolder:
    """A `Source` over a folder of Account and Contact export files.

    A file belongs to an object when its name, in any case, is the object's name,
    optionally plural, optionally followed by anything that starts with a non-letter,
    and ends in ``.csv`` (as Data Loader, the Bulk API 2.0 or the Data Export service
    write it) or ``.jsonl`` / ``.ndjson`` (one REST JSON record per line):
    ``Account.csv``, ``contacts_2024-01-31.jsonl``. Other files and subfolders are
    ignored. ``types`` maps CSV columns, in any case, to Salesforce field types
    (``{"AnnualRevenue": "currency", "Contact.Birthdate": "date"}``, or
    `types_from_describe`); a typed column takes its entry's spelling, untyped columns
    stay text. ``delimiter`` is the CSV column separator, and ``encoding`` the CSV files'
    text encoding: UTF-8, as Data Loader writes with its "Write all CSVs with UTF-8
    encoding" setting on, or another that writes ASCII as ASCII (``"cp1252"``, its default
    on Windows). JSON Lines are UTF-8 always.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        types: Mapping[str, str] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
    ):
        self._path = Path(path)
        if not self._path.is_dir():
            raise ConfigurationError(f"no export folder at {self._path}")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
            raise ConfigurationError(f"the delimiter must be one character: {delimiter!r}")
        self._types = _check_types(types or {})
        self._delimiter = delimiter
        self._encoding = _csv_encoding(encoding)

    def __repr__(self) -> str:
        return f"<ExportFolder {self._path.name!r} typed_columns={len(self._types)}>"

    @property
    def path(self) -> Path:
        """The folder."""
        return self._path

    def files(self, object_type: ObjectType) -> list[Path]:
        """The files holding ``object_type`` records, in the order they are read (by name)."""
        kind = parse_object_type(object_type)
        try:
            entries = sorted(self._path.iterdir(), key=lambda entry: entry.name)
        except OSError as error:
            raise ExportFileError(self._path, "cannot list the export folder") from error
        found = []
        for entry in entries:
            match = _OBJECT_FILE.fullmatch(entry.name)
            if match is not None and match[1].capitalize() == kind and not entry.is_dir():
                found.append(entry)
        return found

    def check(self) -> None:
        """Raise if a sync of the folder would read nothing, or not what was meant.

        `ConfigurationError` when the folder holds no Account and no Contact file (a sync
        would read nothing, and say nothing of it): the message names the files it reads
        and the ones it found. `ExportFileError`, with its ``delimiter``, for a CSV file
        whose header row reads with another column separator than the folder's. Reads the
        folder's listing and the first line of each CSV file only.
        """
        found = {kind: self.files(kind) for kind in _OBJECTS}
        if not any(found.values()):
            raise ConfigurationError(
                f"no Account or Contact export file in {self._path}: it reads {_NAMES_READ}"
                + _others(self._path)
            )
        for kind, paths in found.items():
            for path in paths:
                if path.suffix.lower() != ".csv":
                    continue
                with _open(path) as handle:
                    try:
                        self._csv_file(path, kind)._read_header(handle)
                    except ExportFileError as error:
                        if error.delimiter is not None:
                            raise
                    except OSError as error:
                        raise ExportFileError(path, "cannot read the file") from error

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> ExportPages:
        """Yield pages of the records stamped at or after ``since``, by (SystemModstamp, Id).

        Each record comes once, in its latest version across all files: the highest
        stamp; on a tie a deletion, else the row read last. Rows that cannot be ordered
        come first. The files are indexed before this returns: a file that cannot be
        read raises `ExportFileError` here, and the pages know how many records they
        hold (`ExportPages.total`).
        """
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            raise ConfigurationError(f"page_size must be an int >= 1: {page_size!r}")
        if since is not None and since.utcoffset() is None:
            raise ConfigurationError(f"since must be timezone-aware: {since.isoformat()}")
        kind = parse_object_type(object_type)
        files = [self._export_file(path, kind) for path in self.files(kind)]
        unordered, ordered = self._index(files, kind, since)
        locations = [*unordered, *(entry[2:] for entry in ordered)]
        return ExportPages(self._pages(files, locations, page_size), total=len(locations))

    def _export_file(self, path: Path, kind: ObjectType) -> _ExportFile:
        if path.suffix.lower() == ".csv":
            return self._csv_file(path, kind)
        return _JsonLinesFile(path, kind)

    def _csv_file(self, path: Path, kind: ObjectType) -> _CsvFile:
        return _CsvFile(path, kind, self._types, self._delimiter, self._encoding)

    def _index(
        self, files: Sequence[_ExportFile], kind: ObjectType, since: datetime | None
    ) -> tuple[list[_Location], list[_Entry]]:
        prefix = OBJECT_PREFIXES[kind]
        unordered: list[_Location] = []
        latest: dict[str, tuple[datetime, bool, _Entry]] = {}
        unnamed: list[_Entry] = []  # rows with a stamp but no usable Id
        for number, export in enumerate(files):
            with _open(export.path) as handle:
                for offset, line, stamp, raw_id, deleted in _scan(export, handle):
                    if stamp is None:
                        unordered.append((number, offset, line))
                        continue
                    if since is not None and stamp < since:
                        continue
                    try:
                        record_id = normalize_id(raw_id, prefix=prefix)
                    except InvalidRecordError:
                        text = raw_id if isinstance(raw_id, str) else ""
                        unnamed.append((stamp, text, number, offset, line))
                        continue
                    entry = (stamp, record_id, number, offset, line)
                    known = latest.get(record_id)
                    if known is None or (stamp, deleted) >= known[:2]:
                        latest[record_id] = (stamp, deleted, entry)
        ordered = [entry for _, _, entry in latest.values()]
        ordered.extend(unnamed)
        ordered.sort(key=lambda entry: entry[:2])
        return unordered, ordered

    def _pages(
        self, files: Sequence[_ExportFile], locations: Sequence[_Location], page_size: int
    ) -> Generator[list[RawRecord | Unreadable], None, None]:
        with ExitStack() as stack:
            handles: dict[int, IO[bytes]] = {}
            for start in range(0, len(locations), page_size):
                page: list[RawRecord | Unreadable] = []
                for number, offset, line in locations[start : start + page_size]:
                    export = files[number]
                    if number not in handles:
                        handles[number] = stack.enter_context(_open(export.path))
                    try:
                        payload = export.payload(handles[number], offset, line)
                    except OSError as error:
                        raise ExportFileError(export.path, "cannot read the file") from error
                    page.append(_item(export.object_type, payload, f"{export.path.name}:{line}"))
                yield page


class ExportPages(Iterator[list[RawRecord | Unreadable]]):
    """The pages of one `ExportFolder.read_changes`; ``total`` is how many records (and
    unreadable rows) they hold in all, known once the files are indexed."""

    def __init__(self, pages: Generator[list[RawRecord | Unreadable], None, None], *, total: int):
        self._pages = pages
        self.total = total

    def __repr__(self) -> str:
        return f"<ExportPages total={self.total}>"

    def __next__(self) -> list[RawRecord | Unreadable]:
        return next(self._pages)

    def close(self) -> None:
        """Close the files now, before the pages are all read."""
        self._pages.close()


def _others(folder: Path) -> str:
    """What else the folder holds, as the end of a sentence: the files an export may be."""
    try:
        names = sorted(entry.name for entry in folder.iterdir() if not entry.is_dir())
    except OSError:
        return ""
    if not names:
        return "; the folder is empty"
    shown = []
    for name in names[:8]:
        stem, _, suffix = name.partition(".")
        near = difflib.get_close_matches(stem.casefold(), _STEMS, n=1, cutoff=0.75)
        if name.casefold() == "extract.csv":  # Data Loader's name for every export
            shown.append(f"{name} (Data Loader's name: rename it Account.csv or Contact.csv)")
        elif near and suffix.casefold() in ("csv", "jsonl", "ndjson"):
            shown.append(f"{name} (did you mean {near[0].capitalize()}.{suffix}?)")
        else:
            shown.append(name)
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return f"; it holds {', '.join(shown)}{more}"


def _item(
    object_type: ObjectType, payload: Mapping[str, Any] | _Problem, origin: str
) -> RawRecord | Unreadable:
    """A row as the engine takes it: a record to decode, or a row it reports as unread."""
    if isinstance(payload, _Problem):
        return Unreadable(
            object_type=object_type,
            reason=payload.reason,
            record_id=payload.record_id,
            field=payload.field,
            origin=origin,
        )
    return RawRecord(object_type=object_type, payload=payload, origin=origin)


def csv_pages(
    data: bytes,
    object_type: ObjectType,
    types: Mapping[str, str],
    *,
    origin: str,
    page_size: int,
) -> Iterator[list[RawRecord | Unreadable]]:
    """The rows of one CSV in memory, in their order, as pages of the engine's items.

    For Bulk API 2.0 result sets, which are written as this module reads exports (see
    `acctsync.sources.salesforce`). ``types`` are as `ExportFolder` takes them;
    ``origin`` names the CSV in a rejection (``origin:line``).
    """
    reading = _CsvFile(Path(origin), parse_object_type(object_type), _check_types(types), ",")
    handle = io.BytesIO(data)
    # The rows' places first, then each row from its place: the reader's two passes.
    places = [(offset, line) for offset, line, *_ in reading.scan(handle)]
    for start in range(0, len(places), page_size):
        yield [
            _item(reading.object_type, reading.payload(handle, offset, line), f"{origin}:{line}")
            for offset, line in places[start : start + page_size]
        ]


def _scan(export: _ExportFile, handle: IO[bytes]) -> Iterator[_Scanned]:
    try:
        yield from export.scan(handle)
    except OSError as error:
        raise ExportFileError(export.path, "cannot read the file") from error


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as error:
        raise ExportFileError(path, "cannot open the file") from error
