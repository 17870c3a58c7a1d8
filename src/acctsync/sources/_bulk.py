"""Bulk API 2.0 query jobs for `SalesforceSource`: the requests, and their CSV as records.

Theory of operation: a read by Bulk creates one query job (``POST jobs/query``, operation
``queryAll``), polls it (``GET jobs/query/{id}``) until it is ``JobComplete``, then reads
its results one set at a time (``GET jobs/query/{id}/results?maxRecords=N&locator=L``),
following ``Sforce-Locator`` until it says ``null``. Bulk API 2.0 Developer Guide: "Create
a Query Job", "Get Information About a Query Job", "Get Results for a Query Job".

Each function here sends one request through the client's own ``requests`` session,
with simple-salesforce's ``call_salesforce`` (which raises its exceptions for an error
status, as the rest of the client does), so that the source can send each through its
``_call``: counted, budgeted, retried, and renewed with the session. The answer's
``Sforce-Limit-Info`` is read into the client's ``api_usage``, as simple-salesforce does
for its REST calls, so that the source's budget sees Bulk answers too.

A result set is one whole CSV with its header. Bulk API 2.0 writes null as an empty
field, booleans as ``true`` / ``false`` and datetimes as ``2026-01-05T09:00:00.000Z``
("Get Results for a Query Job"). A set is read straight into records, each value typed
once, by the object's describe (`CsvTyping`): a page of rows at a time, column by column,
so that a million records cost a few passes of C code per column rather than a call per
value. What that path does not read (a row of the wrong width, a value its type refuses,
a bad ID or stamp, a deletion that does not check) is handed to the export-file reader of
`acctsync.sources.files`, the general one, row by row: it types the row as an export and
hands it on as a REST payload, so that the engine rejects it with its job, set and line
and with the reason a REST record gets (rule R7). A header that is not plain (a system
field spelled otherwise, a name twice), text that is not UTF-8 or CSV that does not parse
sends the rest of the set that way. Tests hold both paths to one result.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from itertools import islice
from typing import Any, Final, TypeAlias, cast

import attrs
from attrs import frozen
from simple_salesforce.api import Salesforce
from simple_salesforce.util import call_salesforce

from acctsync._errors import InvalidRecordError
from acctsync._formats import AUDIT_FIELDS, EMPTY_ID, field_dicts, normalized_ids, text_value
from acctsync._ids import ACCOUNT_PREFIX, normalize_id
from acctsync._records import (
    OBJECT_PREFIXES,
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    RawRecord,
    Unreadable,
    checked_account,
    checked_accounts,
    checked_contact,
    checked_contacts,
    field_name_problem,
)
from acctsync.sources.files import csv_pages, types_from_describe

# "Get Information About a Query Job": the states after which a job changes no more.
FAILED_STATES: Final = frozenset({"Failed", "Aborted"})
COMPLETE: Final = "JobComplete"

Item: TypeAlias = Account | Contact | Deletion | RawRecord | Unreadable
"""What a result set's row becomes: a record, or what the engine decodes or rejects."""


@frozen
class ResultSet:
    """One set of a job's results: its CSV, and the locator of the next (None after the last)."""

    csv: bytes
    next_locator: str | None


def _sent(client: Salesforce, method: str, url: str, **options: Any) -> Any:
    headers = {**client.headers, "Accept": options.pop("accept", "application/json")}
    answer = call_salesforce(url, method, client.session, headers, **options)
    limit_info = answer.headers.get("Sforce-Limit-Info")
    if limit_info:
        client.api_usage = Salesforce.parse_api_usage(limit_info)
    return answer


def create_job(client: Salesforce, soql: str, operation: str) -> str:
    """Create a job of ``soql``: its id.

    ``operation`` is ``queryAll`` for changes, as the REST reads, so that deleted and
    merged rows come too; ``query`` for live rows only.
    """
    body = {"operation": operation, "query": soql, "columnDelimiter": "COMMA"}
    answer = _sent(client, "POST", f"{client.bulk2_url}query", json=body).json()
    return str(answer["id"])


def job_state(client: Salesforce, job_id: str) -> tuple[str, str | None]:
    """The job's state, and its ``errorMessage`` (None when it has none)."""
    answer = _sent(client, "GET", f"{client.bulk2_url}query/{job_id}").json()
    message = answer.get("errorMessage")
    return str(answer["state"]), message if isinstance(message, str) else None


def result_set(client: Salesforce, job_id: str, locator: str | None, size: int) -> ResultSet:
    """The set of at most ``size`` results at ``locator`` (the first when None)."""
    params: dict[str, str | int] = {"maxRecords": size}
    if locator is not None:
        params["locator"] = locator
    answer = _sent(
        client,
        "GET",
        f"{client.bulk2_url}query/{job_id}/results",
        params=params,
        accept="text/csv",
    )
    following = answer.headers.get("Sforce-Locator")
    # "Get Results for a Query Job": the header is the string null after the last set.
    return ResultSet(answer.content, None if following in (None, "", "null") else following)


# -- Reading a set ------------------------------------------------------------------------

# How the export-file reader types a column, by the describe's type name (see
# `acctsync.sources.files`): the same kinds here, each value read once.
_KINDS: Final[Mapping[str, str]] = {
    **dict.fromkeys(("decimal", "double", "currency", "percent"), "decimal"),
    **dict.fromkeys(("id", "reference"), "text"),
    "int": "int",
    "long": "int",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
}
# The record attributes a header may hold, in Salesforce's spelling; the export reader
# reads them in any case, as does this one.
_SYSTEM: Final = ("Id", "SystemModstamp", "IsDeleted", "MasterRecordId", "AccountId")
_SYSTEM_FOLDED: Final = {name.casefold(): name for name in _SYSTEM}
_AUDIT_FOLDED: Final = frozenset(name.casefold() for name in AUDIT_FIELDS)
# Bulk API 2.0 writes true and false; the export reader takes any case, and 1 and 0.
_BOOLEANS: Final[Mapping[str, bool]] = {"true": True, "false": False, "1": True, "0": False}
_DIGITS: Final = frozenset("0123456789")
_DECIMAL_CHARACTERS: Final = frozenset("0123456789.eE+-")
# The shapes Bulk API 2.0 writes: where each has which separator. The other characters
# must be ASCII digits, which fromisoformat checks; other text (Unicode digits, other
# offsets, Data Export's datetimes) goes to the export reader, which reads it or refuses.
_DATE: Final = (10, {4: "-", 7: "-"})
_DATETIME: Final = (24, {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 23: "Z"})
_EMPTY_IDS: Final = (EMPTY_ID, EMPTY_ID[:15])
_CHUNK: Final = 250  # rows read and typed at a time


class _NotPlainError(Exception):
    """A value, row or page the column reader does not read: the export reader will."""


def _shaped(values: Sequence[str], shape: tuple[int, Mapping[int, str]]) -> bool:
    """Whether every value is ASCII of the shape's length, its separators in their places.

    A few passes of C over the column joined, rather than a pattern matched per value.
    """
    size, separators = shape
    if any(len(v) != size for v in values):
        return False
    joined = "".join(values)
    count = len(values)
    return joined.isascii() and all(
        joined[at::size] == char * count for at, char in separators.items()
    )


def _parsed(
    values: Sequence[str], shape: tuple[int, Mapping[int, str]], parse: Callable[[str], Any]
) -> list[Any]:
    """Each value parsed, None for an empty one; `_NotPlainError` for any other shape."""
    present = [v for v in values if v] if "" in values else values
    if not _shaped(present, shape):
        raise _NotPlainError
    try:
        parsed = list(map(parse, present))
    except ValueError:
        raise _NotPlainError from None
    if len(present) == len(values):
        return parsed
    each = iter(parsed)
    return [next(each) if v else None for v in values]


def _text_column(values: Sequence[str]) -> list[FieldValue]:
    # Most text is told from the empty ID and from a date's shape without a call.
    return [
        (v if (len(v) < 10 or v[4] != "-") and v != EMPTY_ID else text_value(v)) if v else None
        for v in values
    ]


def _boolean_column(values: Sequence[str]) -> list[FieldValue]:
    try:
        return [_BOOLEANS[v] if v else None for v in values]
    except KeyError:
        pass
    out: list[FieldValue] = []
    for v in values:
        value = _BOOLEANS.get(v.lower()) if v else None
        if v and value is None:
            raise _NotPlainError
        out.append(value)
    return out


def _int_column(values: Sequence[str]) -> list[FieldValue]:
    # ASCII digits with an optional sign; the export reader takes any Unicode digit too.
    for v in values:
        if v:
            digits = v[1:] if v[0] in "+-" else v
            if not digits or not _DIGITS.issuperset(digits):
                raise _NotPlainError
    try:
        return [int(v) if v else None for v in values]
    except ValueError:  # longer than Python reads (sys.get_int_max_str_digits)
        raise _NotPlainError from None


def _decimal_column(values: Sequence[str]) -> list[FieldValue]:
    # Decimal() reads NaN, Infinity, Unicode digits, spaces and underscores too; the
    # export reader's pattern none of them.
    if not _DECIMAL_CHARACTERS.issuperset("".join(values)):
        raise _NotPlainError
    try:
        return [Decimal(v) if v else None for v in values]
    except ArithmeticError:  # "1e", "1.2.3": no number
        raise _NotPlainError from None


def _date_column(values: Sequence[str]) -> list[FieldValue]:
    # date.fromisoformat alone would take week dates and other forms too.
    return _parsed(values, _DATE, date.fromisoformat)


def _datetime_column(values: Sequence[str]) -> list[FieldValue]:
    # The offset is Z, so each is in UTC already, with the UTC that `Account` keeps.
    return _parsed(values, _DATETIME, datetime.fromisoformat)


_COLUMN_READERS: Final[Mapping[str, Callable[[Sequence[str]], list[FieldValue]]]] = {
    "text": _text_column,
    "boolean": _boolean_column,
    "int": _int_column,
    "decimal": _decimal_column,
    "date": _date_column,
    "datetime": _datetime_column,
}


@frozen
class _Header:
    """How a header's columns read: where the attributes are, and each field's name and kind.

    ``nulls_skipped`` are the fields whose null is a compound's, which the REST decoder
    leaves out of a record (see ``_formats``): a row with such a null is not plain.
    """

    width: int
    id_at: int
    stamp_at: int
    deleted_at: int | None
    master_at: int | None
    account_at: int | None
    fields: tuple[tuple[int, str, str], ...]  # position, name, kind
    nulls_skipped: tuple[int, ...]


class CsvTyping:
    """How an object's result sets read: its describe's field types."""

    def __init__(self, object_type: ObjectType, describe: Mapping[str, Any]) -> None:
        self._object_type = object_type
        self._prefix = OBJECT_PREFIXES[object_type]
        self._types = types_from_describe(describe)
        # Each described field by its name in any case: its spelling and kind.
        name = describe["name"]
        self._described: dict[str, tuple[str, str]] = {}
        for qualified, type_name in self._types.items():
            spelling = qualified.removeprefix(f"{name}.")
            kind = _KINDS.get(type_name.lower(), "text")
            self._described[spelling.casefold()] = (spelling, kind)
        self._headers: dict[tuple[str, ...], _Header | None] = {}
        # Contacts' accounts as written and as read: many contacts name one account.
        self._accounts: dict[str, str | None] = {}

    def pages(self, result: ResultSet, origin: str, page_size: int) -> Iterator[Sequence[Item]]:
        """The set's rows, in their order, as pages of at most ``page_size`` records.

        ``origin`` names the job and set in a rejection (``job 750... set 2:17``).
        """
        yielded = 0
        try:
            for read in self._read(result.csv, origin, page_size):
                yield read
                yielded += len(read)
        except (_NotPlainError, csv.Error, UnicodeDecodeError):
            # The rest of the set by the general reader, which reads the same rows into
            # the same items as far as this one got, and goes on where it could not.
            rest = self._general(result.csv, origin, page_size)
            page: list[Item] = []
            for item in islice((item for general in rest for item in general), yielded, None):
                page.append(item)
                if len(page) == page_size:
                    yield page
                    page = []
            if page:
                yield page

    def _general(
        self, data: bytes, origin: str, page_size: int
    ) -> Iterator[list[RawRecord | Unreadable]]:
        return csv_pages(data, self._object_type, self._types, origin=origin, page_size=page_size)

    def _read(self, data: bytes, origin: str, page_size: int) -> Iterator[Sequence[Item]]:
        """The set's pages by columns; raises `_NotPlainError` (or a CSV or decoding error)
        where the general reader must take over, having yielded only what it read."""
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="\n")
        reader = csv.reader(text, strict=True)
        written = next(reader, None)
        if written is None:
            return
        header = self._header(tuple(written))
        if header is None:
            raise _NotPlainError
        page: list[Item] = []
        while True:
            # A few hundred rows at a time: read and gone before the collector's older
            # generations see them, which a page's worth would reach.
            first = reader.line_num + 1  # the line the next row begins on
            chunk = list(islice(reader, min(_CHUNK, page_size - len(page))))
            if not chunk:
                break
            if reader.line_num - first + 1 == len(chunk):
                lines: Sequence[int] = range(first, first + len(chunk))
            else:  # a value holds a line break: its row spans more lines
                lines = []
                for row in chunk:
                    lines.append(first)
                    first += 1 + sum(v.count("\n") for v in row)
            if [] in chunk:  # blank lines
                kept = [i for i, row in enumerate(chunk) if row]
                chunk, lines = [chunk[i] for i in kept], [lines[i] for i in kept]
            if chunk:
                page.extend(self._page(header, written, chunk, lines, origin))
            if len(page) == page_size:
                yield page
                page = []
        if page:
            yield page

    def _header(self, written: tuple[str, ...]) -> _Header | None:
        """How the header reads, None where it is not plain (then the general reader's)."""
        if written in self._headers:
            return self._headers[written]
        header = None
        attributes: dict[str, int] = {}
        fields: list[tuple[int, str, str]] = []
        seen: set[str] = set()
        plain = True
        for position, name in enumerate(written):
            folded = name.casefold()
            if not name or folded in seen:
                plain = False  # the general reader says what is wrong
            seen.add(folded)
            system = _SYSTEM_FOLDED.get(folded)
            if system is not None:
                plain = plain and system == name
                attributes[system] = position
            elif folded in _AUDIT_FOLDED or "." in name:
                continue  # not account information, as the general reader drops them
            else:
                spelling, kind = self._described.get(folded, (name, "text"))
                # A name once checked is known to the decoder (`field_name_problem`).
                plain = plain and field_name_problem(spelling) is None
                fields.append((position, spelling, kind))
        if plain and "Id" in attributes and "SystemModstamp" in attributes:
            names = {spelling for _, spelling, _ in fields}
            skipped = tuple(
                position
                for position, spelling, _ in fields
                if spelling.endswith("Address")
                or (spelling.endswith("__c") and f"{spelling[:-3]}__Latitude__s" in names)
            )
            header = _Header(
                width=len(written),
                id_at=attributes["Id"],
                stamp_at=attributes["SystemModstamp"],
                deleted_at=attributes.get("IsDeleted"),
                master_at=attributes.get("MasterRecordId"),
                account_at=attributes.get("AccountId") if self._object_type == "Contact" else None,
                fields=tuple(fields),
                nulls_skipped=skipped,
            )
        if len(self._headers) < 16:  # a job's sets share one header
            self._headers[written] = header
        return header

    def _page(
        self,
        header: _Header,
        written: Sequence[str],
        rows: list[list[str]],
        lines: Sequence[int],
        origin: str,
    ) -> Sequence[Item]:
        """The items of a page of rows: records where each row reads plainly."""

        def each() -> list[Item]:
            return [
                self._row(header, written, row, line, origin)
                for row, line in zip(rows, lines, strict=True)
            ]

        if any(len(row) != header.width for row in rows):
            return each()
        columns = list(zip(*rows, strict=True))
        try:
            values = [
                _COLUMN_READERS[kind](columns[position]) for position, _, kind in header.fields
            ]
            stamps = _datetime_column(columns[header.stamp_at])
        except _NotPlainError:
            return each()
        if any("" in columns[position] for position in header.nulls_skipped):
            return each()
        names = [name for _, name, _ in header.fields]
        count = len(rows)
        fields = field_dicts(names, values, count)
        ids = normalized_ids(columns[header.id_at], self._prefix)
        accounts, refused = self._account_ids(columns, header)
        flags = columns[header.deleted_at] if header.deleted_at is not None else ()
        if (
            flags.count("false") == len(flags)
            and None not in ids
            and None not in stamps
            and not refused
        ):
            # Nothing but live records, each read: the common page, built in one go.
            plain_ids, plain_stamps = cast("list[str]", ids), cast("list[datetime]", stamps)
            if self._object_type == "Account":
                return checked_accounts(plain_ids, fields, plain_stamps)
            return checked_contacts(plain_ids, accounts, fields, plain_stamps)
        items: list[Item] = []
        for i in range(count):
            record_id, stamp, account_id = ids[i], stamps[i], accounts[i]
            flag = flags[i] if flags else "false"
            if record_id is None or not isinstance(stamp, datetime) or i in refused:
                items.append(self._row(header, written, rows[i], lines[i], origin))
            elif flag != "false":
                if _BOOLEANS.get(flag.lower()) is not True:
                    items.append(self._row(header, written, rows[i], lines[i], origin))
                    continue
                try:
                    items.append(self._deletion(header, rows[i], record_id, stamp))
                except InvalidRecordError:
                    items.append(self._row(header, written, rows[i], lines[i], origin))
            elif self._object_type == "Account":
                items.append(
                    checked_account(id=record_id, fields=fields[i], system_modstamp=stamp)
                )
            else:
                items.append(
                    checked_contact(
                        id=record_id,
                        account_id=account_id,
                        fields=fields[i],
                        system_modstamp=stamp,
                    )
                )
        return items

    def _account_ids(
        self, columns: Sequence[Sequence[str]], header: _Header
    ) -> tuple[list[str | None], set[int]]:
        """A contact page's account IDs as `normalize_id` makes them (None for none, as
        for an account page), and the rows whose account ID it refuses."""
        count = len(columns[0])
        if header.account_at is None:
            return [None] * count, set()
        known = self._accounts
        if len(known) > 1 << 17:  # bounded: an org's accounts may be many more
            known.clear()
        out: list[str | None] = []
        refused: set[int] = set()
        for i, written in enumerate(columns[header.account_at]):
            if written in known:
                out.append(known[written])
                continue
            account_id = None
            if written and written not in _EMPTY_IDS:
                try:
                    account_id = normalize_id(written, prefix=ACCOUNT_PREFIX)
                except InvalidRecordError:
                    refused.add(i)
            else:
                known[written] = None
            if account_id is not None:
                known[written] = account_id
            out.append(account_id)
        return out, refused

    def _deletion(
        self, header: _Header, row: Sequence[str], record_id: str, stamp: datetime
    ) -> Deletion:
        master = row[header.master_at] if header.master_at is not None else ""
        return Deletion(
            object_type=self._object_type,
            id=record_id,
            deleted_at=stamp,
            master_record_id=None if not master or master in _EMPTY_IDS else master,
        )

    def _row(
        self, header: _Header, written: Sequence[str], row: Sequence[str], line: int, origin: str
    ) -> Item:
        """One row as the general reader makes it, naming its line in the whole set."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(written)
        writer.writerow(row)
        pages = self._general(out.getvalue().encode(), origin, 1)
        (item,) = next(pages)
        return attrs.evolve(item, origin=f"{origin}:{line}")
