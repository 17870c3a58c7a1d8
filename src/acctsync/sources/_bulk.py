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

A result set is one whole CSV with its header. Its rows are typed by the object's
describe with the export-file reader of `acctsync.sources.files` (Bulk API 2.0 writes
null as an empty field, booleans as ``true`` / ``false``, datetimes as
``2026-01-05T09:00:00.000Z``), so that one CSV typer serves both, and a row it cannot
read becomes an `Unreadable` item, rejected with its job and line (rule R7).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from attrs import frozen
from simple_salesforce.api import Salesforce
from simple_salesforce.util import call_salesforce

from acctsync._records import ObjectType, RawRecord, Unreadable
from acctsync.sources.files import csv_pages, types_from_describe

# "Get Information About a Query Job": the states after which a job changes no more.
FAILED_STATES: Final = frozenset({"Failed", "Aborted"})
COMPLETE: Final = "JobComplete"


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


class CsvTyping:
    """How an object's result sets read: its describe's field types."""

    def __init__(self, object_type: ObjectType, describe: Mapping[str, Any]) -> None:
        self._object_type = object_type
        self._types = types_from_describe(describe)

    def pages(
        self, result: ResultSet, origin: str, page_size: int
    ) -> Iterator[list[RawRecord | Unreadable]]:
        """The set's rows, in their order, as pages of at most ``page_size`` records.

        ``origin`` names the job and set in a rejection (``job 750... set 2:17``).
        """
        return csv_pages(
            result.csv, self._object_type, self._types, origin=origin, page_size=page_size
        )
