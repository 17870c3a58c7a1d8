"""Bulk API 2.0 query jobs of `FakeSalesforce`'s org.

Theory of operation: ``POST jobs/query`` runs the query at once through the REST API's
SOQL engine (a ``run`` function `RestApi` passes in) and keeps its result, a `Snapshot`
of the rows it matched, as the job's; the job then shows ``UploadComplete``, ``InProgress`` and
``JobComplete`` over successive ``GET jobs/query/{id}`` polls, or ``Failed`` in place of
``JobComplete`` when a test asked for it (`BulkJobs.failing`). Results are read in sets
of ``maxRecords`` rows, each a whole CSV with its header, with ``Sforce-Locator`` naming
the next set (the string ``null`` after the last) and ``Sforce-NumberOfRecords``
counting this one. Bulk API 2.0 Developer Guide: "Create a Query Job", "Get Information
About a Query Job", "Get Results for a Query Job".

A set's rows are written as CSV when it is asked for, from the snapshot's rows, which
are the org's own (the org replaces a row it changes, never changes one): a job of a
million rows holds a list of them, not a million rows of text. Salesforce keeps a job's
results for days; so does this org, at that cost.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

from attrs import Factory, define, frozen

from acctsync._formats import format_datetime
from acctsync._ids import normalize_id
from acctsync.testing.salesforce._describe import ApiError, Described, Row, dumps, malformed
from acctsync.testing.salesforce._soql import Parser, Soql


@frozen
class Snapshot:
    """A query's result as it was when the query ran: the rows it matched, in its order.

    ``names`` are the fields selected, ``selected`` their describe entries and ``visible``
    the object's fields the user could see then (a compound's components). The rows are
    the org's own, which it replaces and never changes: a snapshot costs a list, and its
    records are encoded only as they are served.
    """

    object_type: str
    names: list[str]
    rows: list[Row]
    selected: list[Described]
    visible: list[Described]

    @property
    def size(self) -> int:
        return len(self.rows)


# The handlers' answer: status, content type, body, and the headers to send with it.
BulkResponse = tuple[int, str, bytes, dict[str, str]]
# Runs a parsed query, refusing compound fields: (query, API version, include deleted) ->
# its result.
Run = Callable[[Soql, str, bool], Snapshot]

_JSON: Final = "application/json;charset=UTF-8"
_CSV: Final = "text/csv;charset=UTF-8"
# "Get Results for a Query Job": without maxRecords Salesforce picks the set size.
_DEFAULT_SET: Final = 50_000
# The states a job shows at each poll, before its last (JobComplete or Failed).
_POLLED: Final = ("UploadComplete", "InProgress")
# What Salesforce answers for a compound field in a Bulk query (the Bulk API's
# "Selecting compound data not supported in Bulk Query", xjsender/haoide#137; "Create a
# Query Job" lists compound fields and FIELDS() as unsupported).
COMPOUND_REFUSED: Final = (
    "FUNCTIONALITY_NOT_ENABLED",
    "Selecting compound data not supported in Bulk Query",
)


# "Create a Query Job": lineEnding is LF (the default) or CRLF; it ends each row.
_LINE_ENDINGS: Final = {"LF": "\n", "CRLF": "\r\n"}


@define
class _Job:
    id: str
    operation: str
    object_type: str
    created: datetime
    version: str
    result: Snapshot
    failure: str | None  # the errorMessage it fails with, None when it completes
    line_ending: str = "LF"
    polls: int = 0

    @property
    def state(self) -> str:
        if self.polls < len(_POLLED):
            return _POLLED[self.polls]
        return "Failed" if self.failure is not None else "JobComplete"


@define
class BulkJobs:
    """The org's query jobs; `RestApi` routes ``jobs/query`` requests here."""

    jobs: dict[str, _Job] = Factory(dict)
    # errorMessages of the next jobs to fail, one each, oldest first.
    failing: list[str] = Factory(list)

    def create(self, body: Any, version: str, now: datetime, run: Run) -> BulkResponse:
        """``POST jobs/query``: a job whose result is the query's rows as they are now."""
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise ApiError(400, "INVALIDJOB", "The query job must have a query")
        operation = body.get("operation")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation!r}")
        if body.get("columnDelimiter", "COMMA") != "COMMA":
            # The fake writes commas only; Salesforce also offers CARET, PIPE and others.
            raise ApiError(400, "INVALIDJOB", "this org writes COMMA-delimited results only")
        line_ending = body.get("lineEnding", "LF")
        if line_ending not in _LINE_ENDINGS:
            raise ApiError(400, "INVALIDJOB", f"Invalid lineEnding: {line_ending!r}")
        result = run(Parser(body["query"]).parse(), version, operation == "queryAll")
        job_id = normalize_id(f"750{len(self.jobs) + 1:012d}")
        failure = self.failing.pop(0) if self.failing else None
        job = _Job(
            job_id, operation, result.object_type, now, version, result, failure, line_ending
        )
        self.jobs[job_id] = job
        return 200, _JSON, dumps(_info(job)).encode(), {}

    def info(self, job_id: str) -> BulkResponse:
        """``GET jobs/query/{id}``: the job, one state further on than the last poll saw."""
        job = self._job(job_id)
        body = _info(job)
        job.polls += 1
        return 200, _JSON, dumps(body).encode(), {}

    def results(self, job_id: str, query: dict[str, list[str]], version: str) -> BulkResponse:
        """``GET jobs/query/{id}/results``: one set of rows as CSV, from ``locator`` on."""
        job = self._job(job_id)
        if job.state != "JobComplete":
            raise ApiError(400, "INVALIDJOB", f"Query job {job_id} is in state {job.state}")
        if version != job.version:
            # "Get Results for a Query Job": results are read in the job's own version.
            raise ApiError(409, "INVALIDJOB", "Use the API version that created the job")
        size = _DEFAULT_SET
        if "maxRecords" in query:
            written = query["maxRecords"][0]
            if not written.isdigit() or int(written) < 1:
                raise ApiError(400, "INVALIDJOB", f"Invalid maxRecords: {written}")
            size = int(written)
        start, total = 0, job.result.size
        if "locator" in query:
            start = _offset(query["locator"][0], total)
        rows = job.result.rows[start : start + size]
        names = job.result.names
        out = io.StringIO()
        writer = csv.writer(
            out, lineterminator=_LINE_ENDINGS[job.line_ending], quoting=csv.QUOTE_ALL
        )
        writer.writerow(names)
        columns = [_csv_column([row.get(name) for row in rows]) for name in names]
        writer.writerows(zip(*columns, strict=True))
        end = start + len(rows)
        locator = _locator(end) if end < total else "null"
        headers = {"Sforce-Locator": locator, "Sforce-NumberOfRecords": str(len(rows))}
        return 200, _CSV, out.getvalue().encode(), headers

    def _job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job


def _info(job: _Job) -> dict[str, Any]:
    # "Get Information About a Query Job": the job's settings, state, and errorMessage
    # once it failed.
    body: dict[str, Any] = {
        "id": job.id,
        "operation": job.operation,
        "object": job.object_type,
        "createdById": "005000000000001AAA",
        "createdDate": format_datetime(job.created),
        "systemModstamp": format_datetime(job.created),
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": Decimal(job.version),
        "jobType": "V2Query",
        "lineEnding": job.line_ending,
        "columnDelimiter": "COMMA",
    }
    if job.state == "JobComplete":
        body["numberRecordsProcessed"] = job.result.size
    if job.state == "Failed":
        body["errorMessage"] = job.failure
    return body


def _csv_column(values: list[Any]) -> list[str]:
    """A column of a set's rows as Bulk API 2.0 writes it (see `_csv_value`): a column of
    text, the most common, without a call per value."""
    kinds = set(map(type, values))
    if kinds <= _TEXT:
        return ["" if value is None else value for value in values]
    return [_csv_value(value) for value in values]


_TEXT: Final = frozenset({str, type(None)})


def _csv_value(value: Any) -> str:
    """A row's value as Bulk API 2.0 writes it: null empty, booleans as true/false,
    datetimes in UTC to the millisecond with a Z (``2026-01-05T09:00:00.000Z``)."""
    if type(value) is str:  # most values, told without more checks
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is UTC and value.year >= 1000:  # as the org keeps them, faster
            return value.isoformat(timespec="milliseconds")[:-6] + "Z"
        return format_datetime(value).removesuffix("+0000") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


def _locator(offset: int) -> str:
    # Salesforce's locators are opaque strings; these encode the next set's first row.
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str, total: int) -> int:
    try:
        offset = int(base64.urlsafe_b64decode(locator + "=" * (-len(locator) % 4)))
    except ValueError:
        offset = -1
    if not 0 < offset < total:
        raise malformed(f"Invalid locator: {locator}")
    return offset
