"""The REST API of `FakeSalesforce`'s org: routing, and the handlers of each resource.

`RestApi` holds what the API reads and changes (the `Org`, the describe, the fields
hidden from the integration user, the cursors of queries being paged through, the
failures a test injected, the org's API usage) and answers one `Request` at a time, under the lock
`FakeSalesforce` holds. The API sees only the `visible` fields, as field-level security
lets a user see them: a hidden field is missing from describe, from records and from
``FIELDS()``, and naming one is ``INVALID_FIELD``. Handlers raise `ApiError` for an error
response. A write stages its changes on a copy of the org and commits the copy only when
the request succeeds, so a failed request, or a composite one with ``allOrNone``, leaves
no trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs, urlsplit

import attrs
from attrs import Factory, define, frozen

from acctsync._errors import InvalidRecordError
from acctsync._ids import normalize_id
from acctsync.testing.salesforce._bulk import COMPOUND_REFUSED, BulkJobs, BulkResponse, Snapshot
from acctsync.testing.salesforce._describe import (
    COMPOUND_TYPES,
    KEY_PREFIXES,
    ApiError,
    Described,
    Row,
    by_name,
    compound_key,
    dumps,
    malformed,
    modstamp,
    no_column,
    object_type_named,
    wire,
)
from acctsync.testing.salesforce._events import Change, ChangeLog
from acctsync.testing.salesforce._org import SOBJECT, VERSION, Org, write
from acctsync.testing.salesforce._soql import (
    COUNT,
    Parser,
    Soql,
    filter_literal,
    matches,
    sort_key,
)

MESSAGES: Final = {
    "INVALID_SESSION_ID": "Session expired or invalid",
    "REQUEST_LIMIT_EXCEEDED": "TotalRequests Limit exceeded.",
    "QUERY_TIMEOUT": "Your query request was running for too long.",
    "SERVER_UNAVAILABLE": "Server temporarily unavailable.",
}
_HALTED: Final = (
    "The transaction was rolled back since another operation in the same transaction failed."
)


# Salesforce Developer Edition's daily allowance of API requests (Salesforce Developer
# Limits and Allocations Quick Reference, "API Request Limits and Allocations").
DAILY_ALLOWANCE: Final = 15_000


# A failure `FakeSalesforce.fail` injected, answered in place of the next ``times``
# requests whose path contains ``path`` (any path when None).
@define
class Failure:
    status: int
    error_code: str | None
    message: str
    path: str | None
    times: int


# An HTTP request as the handlers read it; a body that is not JSON comes as an object
# that no handler's check accepts.
@frozen
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # by lower-case name
    body: Any


Response: TypeAlias = tuple[int, str, bytes]  # status, content type, body
_JSON: Final = "application/json;charset=UTF-8"
_REFERENCE: Final = re.compile(r"@\{([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\}")
# SOQL and SOSL Reference, "SELECT" (Bounded and Unbounded Queries): FIELDS(ALL) and
# FIELDS(CUSTOM) name a set of fields the API cannot know in advance, and need a LIMIT
# of at most 200; FIELDS(STANDARD) does not.
_UNBOUNDED: Final = ("FIELDS(ALL)", "FIELDS(CUSTOM)")
_UNBOUNDED_LIMIT: Final = 200


def _json_response(status: int, body: Any) -> Response:
    return status, _JSON, dumps(body).encode()


@define
class RestApi:
    """The org as the REST API sees it; the caller holds the lock around each call."""

    org: Org
    describe: dict[str, list[Described]]
    hidden: dict[str, set[str]] = Factory(dict)  # by object type: lower-case field names
    failures: list[Failure] = Factory(list)
    # Requests counted against the daily allowance: every one answered, an injected
    # failure too, but not one refused because the allowance was spent.
    api_used: int = 0
    api_allowance: int = DAILY_ALLOWANCE
    bulk: BulkJobs = Factory(BulkJobs)
    # The org's change events, when it publishes them (FakeSalesforce(pubsub=True)).
    changes: ChangeLog | None = None
    # Headers of the last answer beyond those of every answer (a Bulk result set's).
    headers: dict[str, str] = Factory(dict)
    # Each query's result by its cursor, and its page size. Salesforce keeps a cursor for
    # two days, however many there are ("API Query Cursor Limits"); a snapshot holds the
    # org's rows, not copies of them (see Snapshot), so keeping them all is cheap.
    _cursors: dict[str, tuple[Snapshot, int]] = Factory(dict)
    _cursors_made: int = 0

    def visible(self, object_type: str) -> list[Described]:
        """The describe of ``object_type`` as the integration user sees it."""
        hidden = self.hidden.get(object_type, set())
        return [
            entry for entry in self.describe[object_type] if entry["name"].lower() not in hidden
        ]

    def _visible_describe(self) -> dict[str, list[Described]]:
        return {object_type: self.visible(object_type) for object_type in self.describe}

    def respond(self, request: Request, sessions: Collection[str]) -> Response:
        """The answer to ``request``: an injected failure, or the API's own.

        ``sessions`` are the access tokens the org takes; any other is refused. Each
        request counts against the org's daily allowance; once it is spent, the answer
        is 403 ``REQUEST_LIMIT_EXCEEDED`` "TotalRequests Limit exceeded.".
        """
        self.headers = {}
        if self.api_used >= self.api_allowance:
            code = "REQUEST_LIMIT_EXCEEDED"
            return _json_response(403, [{"message": MESSAGES[code], "errorCode": code}])
        self.api_used += 1
        for rule in self.failures:
            if rule.path is None or rule.path in request.path:
                rule.times -= 1
                if rule.times == 0:
                    self.failures.remove(rule)
                if rule.error_code is None:
                    page = f"<html><body><h1>{rule.status} {rule.message}</h1></body></html>"
                    return rule.status, "text/html;charset=UTF-8", page.encode()
                return _json_response(
                    rule.status, [{"message": rule.message, "errorCode": rule.error_code}]
                )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or token not in sessions:
            body = [{"message": MESSAGES["INVALID_SESSION_ID"], "errorCode": "INVALID_SESSION_ID"}]
            return _json_response(401, body)
        try:
            return self._route(request)
        except ApiError as error:
            return _json_response(error.status, error.body)
        except Exception as error:  # a fault of the fake: show it as Salesforce shows its own
            message = f"{type(error).__name__}: {error}"
            return _json_response(500, [{"message": message, "errorCode": "UNKNOWN_EXCEPTION"}])

    def limit_info(self) -> str:
        """The ``Sforce-Limit-Info`` header of every answer (REST API Developer Guide,
        "Limit Info Header"): requests in the last 24 hours, and the daily allowance."""
        return f"api-usage={self.api_used}/{self.api_allowance}"

    def _route(self, request: Request) -> Response:
        routes: tuple[tuple[str, str, Callable[[Request, re.Match[str]], Response]], ...] = (
            ("GET", VERSION + r"/(?P<resource>query|queryAll)/?", self._serve_query),
            ("GET", VERSION + r"/(?:query|queryAll)/(?P<locator>[^/]+)", self._serve_more),
            ("GET", VERSION + r"/sobjects/(?P<object>\w+)/describe/?", self._serve_describe),
            (
                "GET",
                VERSION + r"/sobjects/(?P<object>\w+)/(?P<id>\w{15}|\w{18})/?",
                self._serve_row,
            ),
            ("POST", VERSION + r"/composite/?", self._serve_composite),
            ("POST", VERSION + r"/jobs/query/?", self._serve_bulk_create),
            ("GET", VERSION + r"/jobs/query/(?P<job>\w+)/?", self._serve_bulk_info),
            ("GET", VERSION + r"/jobs/query/(?P<job>\w+)/results/?", self._serve_bulk_results),
            ("POST PATCH", SOBJECT.pattern, self._serve_write),
        )
        for methods, pattern, serve in routes:
            match = re.fullmatch(pattern, request.path)
            if match is None:
                continue
            if request.method not in methods.split():
                raise ApiError(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{request.method}' not allowed. Allowed are {methods}",
                )
            return serve(request, match)
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")

    def _serve_describe(self, request: Request, match: re.Match[str]) -> Response:
        try:
            object_type = object_type_named(self.describe, match["object"])
        except ApiError:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist") from None
        return _json_response(
            200,
            {
                "name": object_type,
                "label": object_type,
                "keyPrefix": KEY_PREFIXES[object_type],
                "custom": False,
                "queryable": True,
                "createable": True,
                "updateable": True,
                "deletable": True,
                "fields": [dict(entry) for entry in self.visible(object_type)],
            },
        )

    def _serve_row(self, request: Request, match: re.Match[str]) -> Response:
        # REST API Developer Guide, "Get Field Values from a Standard Object Record": every
        # field describe lists, or those of the fields parameter, where naming one that
        # does not exist or is hidden is a 400 error.
        try:
            object_type = object_type_named(self.describe, match["object"])
            record_id = normalize_id(match["id"], prefix=KEY_PREFIXES[object_type])
        except (ApiError, InvalidRecordError):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist") from None
        row = self.org.live(object_type, record_id)
        if row is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        visible = self.visible(object_type)
        selected = visible
        if "fields" in request.query:
            described = by_name(visible)
            selected = []
            for name in request.query["fields"][0].split(","):
                entry = described.get(name.strip().lower())
                if entry is None:
                    raise no_column(name.strip(), object_type)
                selected.append(entry)
        encoded = _encode(object_type, row, selected, visible, match["version"])
        return _json_response(200, encoded)

    # -- Queries -----------------------------------------------------------------------------

    def _serve_query(self, request: Request, match: re.Match[str]) -> Response:
        soql = request.query.get("q", [""])[0]
        if not soql.strip():
            raise malformed("A query string has to be specified")
        parsed = Parser(soql).parse()
        deleted = match["resource"] == "queryAll"
        if parsed.fields == (COUNT,):
            rows = attrs.evolve(parsed, fields=("Id",), order=())
            counted = self._run(rows, match["version"], deleted)
            return _json_response(200, {"totalSize": counted.size, "done": True, "records": []})
        snapshot = self._run(parsed, match["version"], deleted)
        option = re.search(
            r"batchSize\s*=\s*(\d+)", request.headers.get("sforce-query-options", "")
        )
        # Salesforce takes batch sizes from 200 to 2000 and bends others into that range.
        size = min(max(int(option[1]), 200), 2000) if option else 2000
        cursor = ""
        if snapshot.size > size:
            self._cursors_made += 1
            cursor = normalize_id(f"01g{self._cursors_made:012d}")
            self._cursors[cursor] = (snapshot, size)
        return self._page(match["version"], cursor, snapshot, 0, size)

    def _serve_more(self, request: Request, match: re.Match[str]) -> Response:
        cursor, _, offset = match["locator"].partition("-")
        found = self._cursors.get(cursor)
        if found is None or not offset.isdigit() or int(offset) >= found[0].size:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        snapshot, size = found
        return self._page(match["version"], cursor, snapshot, int(offset), size)

    def _page(
        self, version: str, cursor: str, snapshot: Snapshot, offset: int, size: int
    ) -> Response:
        total = snapshot.size
        body: dict[str, Any] = {"totalSize": total, "done": offset + size >= total}
        if not body["done"]:
            # Even a queryAll cursor is read under query/, as in Salesforce.
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{offset + size}"
        body["records"] = [
            _encode(snapshot.object_type, row, snapshot.selected, snapshot.visible, version)
            for row in snapshot.rows[offset : offset + size]
        ]
        return _json_response(200, body)

    # -- Bulk API 2.0 query jobs (see _bulk) ---------------------------------------------

    def _bulk_answer(self, answer: BulkResponse) -> Response:
        status, content_type, body, headers = answer
        self.headers = headers
        return status, content_type, body

    def _serve_bulk_create(self, request: Request, match: re.Match[str]) -> Response:
        def run(soql: Soql, version: str, include_deleted: bool) -> Snapshot:
            return self._run(soql, version, include_deleted, bulk=True)

        return self._bulk_answer(
            self.bulk.create(request.body, match["version"], self.org.now, run)
        )

    def _serve_bulk_info(self, request: Request, match: re.Match[str]) -> Response:
        return self._bulk_answer(self.bulk.info(match["job"]))

    def _serve_bulk_results(self, request: Request, match: re.Match[str]) -> Response:
        return self._bulk_answer(self.bulk.results(match["job"], request.query, match["version"]))

    def _run(
        self, soql: Soql, version: str, include_deleted: bool, *, bulk: bool = False
    ) -> Snapshot:
        """The query's result as it is now: the snapshot a cursor or a job pages through.

        ``bulk`` refuses what Bulk API 2.0 refuses: compound fields and ``FIELDS()``
        (Bulk API 2.0 Developer Guide, "Create a Query Job").
        """
        object_type = object_type_named(self.describe, soql.object_type)
        visible = self.visible(object_type)
        described = by_name(visible)

        def entry(name: str) -> Described:
            found = described.get(name.lower())
            if found is None:
                raise no_column(name, object_type)
            return found

        if any(group in soql.fields for group in _UNBOUNDED) and (
            soql.limit is None or soql.limit > _UNBOUNDED_LIMIT
        ):
            raise malformed(
                f"The SOQL FIELDS function must have a LIMIT of at most {_UNBOUNDED_LIMIT}"
            )
        selected: list[Described] = []
        for name in soql.fields:
            if name == COUNT:
                # Bulk API 2.0 Developer Guide, "Create a Query Job": no aggregate function.
                raise malformed("COUNT() is served by the REST query resource only")
            if bulk and name in _GROUPS:
                raise ApiError(400, *COMPOUND_REFUSED)
            if name in _GROUPS:
                selected += [e for e in visible if _GROUPS[name](e)]
            else:
                selected.append(entry(name))
        names = [e["name"] for e in selected]
        if bulk and any(e["type"] in COMPOUND_TYPES for e in selected):
            raise ApiError(400, *COMPOUND_REFUSED)
        for name in names:
            if names.count(name) > 1:
                # SOQL and SOSL Reference, "SELECT": a field selected twice, by name or
                # through FIELDS(), is this error.
                raise ApiError(400, "INVALID_FIELD", f"duplicate field selected: {name}")
        where = []
        for name, op, literals in soql.where:
            found = entry(name)
            values = tuple(filter_literal(found, literal) for literal in literals)
            where.append((found["name"], found["type"], op, values))
        order = [(entry(name), descending) for name, descending in soql.order]
        for e, _ in order:
            if e["type"] in COMPOUND_TYPES:
                raise ApiError(400, "INVALID_FIELD", f"field '{e['name']}' can not be sorted")
        rows = [
            row
            for row in self.org.rows[object_type].values()
            if (include_deleted or not row["IsDeleted"])
            and all(matches(kind, row.get(n), op, lits) for n, kind, op, lits in where)
        ]
        if not any(e["name"] == "Id" for e, _ in order):
            rows.sort(key=_BY_ID)  # ties in the order asked for come by Id
        for e, descending in reversed(order):
            # The fields every row holds compare as they are, without a call a row.
            plain = e["name"] in _ALWAYS_SET
            rows.sort(key=itemgetter(e["name"]) if plain else sort_key(e), reverse=descending)
        if soql.limit is not None:
            rows = rows[: soql.limit]
        return Snapshot(object_type, names, rows, selected, visible)

    # -- Writes ------------------------------------------------------------------------------

    def _serve_write(self, request: Request, match: re.Match[str]) -> Response:
        staged = self.org.copy()
        status, body, _ = write(
            staged, self._visible_describe(), request.method, match, request.body
        )
        self._commit(staged, request, match["version"])
        return _json_response(status, body)

    def _commit(self, staged: Org, request: Request, version: str) -> None:
        if self.changes is not None:
            self.changes.commit(
                [
                    Change(kind, self.org.rows[kind].get(record_id), staged.rows[kind][record_id])
                    for kind, record_id in dict.fromkeys(staged.written)
                ],
                at=modstamp(staged.now, "now"),
                origin=_change_origin(request, version),
                describe=self.describe,
                saves=True,
            )
        staged.written.clear()
        # Each record written in a request carries the request's stamp; the next gets a later one.
        staged.now += timedelta(milliseconds=1)
        self.org = staged

    def _serve_composite(self, request: Request, match: re.Match[str]) -> Response:
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must hold compositeRequest")
        subrequests: list[dict[str, Any]] = body["compositeRequest"]
        seen: set[str] = set()
        for sub in subrequests:
            ref = sub.get("referenceId") if isinstance(sub, dict) else None
            if (
                not isinstance(ref, str)
                or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ref)
                or ref in seen
                or not isinstance(sub.get("method"), str)
                or not isinstance(sub.get("url"), str)
            ):
                raise ApiError(400, "JSON_PARSER_ERROR", f"Invalid subrequest: {dumps(sub)}")
            seen.add(ref)
        all_or_none = body.get("allOrNone") is True
        staged = self.org.copy()
        results: dict[str, dict[str, Any]] = {}
        entries: list[dict[str, Any]] = []
        failed: int | None = None
        for position, sub in enumerate(subrequests):
            ref = sub["referenceId"]
            if failed is not None and all_or_none:
                entries.append(_halted(ref))
                continue
            try:
                url = _resolve(sub["url"], results)
                split = urlsplit(url)
                query = re.fullmatch(VERSION + r"/(?P<resource>query|queryAll)/?", split.path)
                if query is not None and sub["method"] == "GET":
                    # A query too long for a URI goes in the body (Salesforce Help,
                    # article 000386264): its first page, as GET query/ gives it.
                    status, _, raw = self._serve_query(
                        Request(
                            "GET",
                            split.path,
                            parse_qs(split.query, keep_blank_values=True),
                            {k.lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()},
                            None,
                        ),
                        query,
                    )
                    entries.append(_entry(ref, status, json.loads(raw, parse_float=Decimal), {}))
                    continue
                sub_match = SOBJECT.fullmatch(split.path)
                if sub_match is None:
                    raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
                if sub["method"] not in ("POST", "PATCH"):
                    raise ApiError(
                        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{sub['method']}' not allowed"
                    )
                sub_body = _resolve(sub.get("body"), results)
                status, out, headers = write(
                    staged, self._visible_describe(), sub["method"], sub_match, sub_body
                )
            except ApiError as error:
                failed = position if failed is None else failed
                entries.append(_entry(ref, error.status, error.body, {}))
            else:
                results[ref] = out
                entries.append(_entry(ref, status, out, headers))
        if failed is not None and all_or_none:
            entries = [
                e if i == failed else _halted(e["referenceId"]) for i, e in enumerate(entries)
            ]
        elif results:
            self._commit(staged, request, match["version"])
        return _json_response(200, {"compositeResponse": entries})


# Fields every row of the org holds, never null: `put` and the API's writes set them.
_ALWAYS_SET: Final = frozenset({"Id", "SystemModstamp"})
_BY_ID: Final = itemgetter("Id")


def _encode(
    object_type: str,
    row: Row,
    selected: list[Described],
    visible: list[Described],
    version: str,
) -> dict[str, Any]:
    """``row`` as the REST API writes a record of the ``selected`` fields."""
    url = f"/services/data/v{version}/sobjects/{object_type}/{row['Id']}"
    out: dict[str, Any] = {"attributes": {"type": object_type, "url": url}}
    for entry in selected:
        name = entry["name"]
        if entry["type"] in COMPOUND_TYPES:
            out[name] = _compound(visible, row, name)
        else:
            out[name] = wire(row.get(name))
    return out


def _compound(visible: list[Described], row: Row, parent: str) -> dict[str, Any] | None:
    # BillingAddress is {"street": BillingStreet, "postalCode": BillingPostalCode, ...},
    # a custom geolocation Loc__c {"latitude": Loc__Latitude__s, "longitude": ...}.
    parts: dict[str, Any] = {}
    for entry in visible:
        if entry["compoundFieldName"] == parent:
            key = compound_key(entry["name"])
            if key is not None:
                parts[key] = wire(row.get(entry["name"]))
    return parts if any(value is not None for value in parts.values()) else None


# What each FIELDS() group selects; STANDARD and CUSTOM go by describe's ``custom``.
_GROUPS: Final[dict[str, Callable[[Described], bool]]] = {
    "FIELDS(ALL)": lambda entry: True,
    "FIELDS(STANDARD)": lambda entry: not entry["custom"],
    "FIELDS(CUSTOM)": lambda entry: bool(entry["custom"]),
}


def _change_origin(request: Request, version: str) -> str:
    """A change event's ``changeOrigin`` for a write through this API.

    Apex Reference, "ChangeEventHeader Class": ``com/salesforce/api/<API>/<version>``, and
    ``;client=<Client_ID>`` when the call named a client in its ``Sforce-Call-Options``
    header (REST API Developer Guide, "Call Options Header").
    """
    origin = f"com/salesforce/api/rest/{version}"
    client = re.search(r"(?:^|,)\s*client=([^,]*)", request.headers.get("sforce-call-options", ""))
    return origin if client is None else f"{origin};client={client[1].strip()}"


def _entry(ref: str, status: int, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    return {"body": body, "httpHeaders": headers, "httpStatusCode": status, "referenceId": ref}


def _halted(ref: str) -> dict[str, Any]:
    return _entry(ref, 400, [{"errorCode": "PROCESSING_HALTED", "message": _HALTED}], {})


def _resolve(value: Any, results: Mapping[str, Mapping[str, Any]]) -> Any:
    """``value`` with each ``@{ref.field}`` replaced by that field of an earlier result."""
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(item, results) for item in value]
    if not isinstance(value, str) or "@{" not in value:
        return value

    def lookup(match: re.Match[str]) -> Any:
        ref, name = match.groups()
        if name not in results.get(ref, {}):
            raise ApiError(
                400,
                "PROCESSING_HALTED",
                f"Invalid reference specified. No value for {ref}.{name} found in {ref}.",
            )
        return results[ref][name]

    whole = _REFERENCE.fullmatch(value)
    if whole is not None:
        return lookup(whole)
    return _REFERENCE.sub(lambda match: str(lookup(match)), value)
