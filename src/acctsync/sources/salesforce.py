"""A live org through the caller's ``simple_salesforce.Salesforce`` client (extra ``salesforce``).

Reading: one SOQL query per stream and sync, through ``queryAll`` so that deleted and
merged rows arrive too (``IsDeleted``, ``MasterRecordId``), filtered on the inclusive
``SystemModstamp`` watermark the engine passes (rule R1), ordered by ``SystemModstamp, Id``
and followed page by page along ``nextRecordsUrl``. Records go to the engine as
`RawRecord` items, so that a malformed one is rejected, not fatal (rule R7).

Fields: a source reads each object's ``describe`` when a sync starts (`field_names`) and
its last reading is older than ``describe_max_age``, and again once when a query fails
with ``INVALID_FIELD``.
Describe lists only the fields the integration user may read, so it is both the list of
fields to sync when none are configured and the check of those configured: a field it
lacks would fail the query with ``INVALID_FIELD``, so it fails before the query, naming
the field and its close matches. Names take describe's spelling (rule R9).

Writing: Convert Person (rule S6) is one all-or-none composite request of three upserts
on an external ID field keyed by the conversion's idempotency key, so that a retry after
a timeout finds the records the first try created instead of creating a second set.

Failures become `SalesforceError` (a `SourceError`): too many requests at once, query
timeouts, outages and dropped connections are retried with backoff first; a malformed
query stops at once. An expired session stops at once too, unless the source was given
its `SalesforceLogin`: then it signs in again, once, and repeats the request.

Bulk API 2.0 (``bulk=True``, the default): every read starts with its first REST page,
whose ``totalSize`` counts the records the query matches. Past ``bulk_threshold``, the
read runs instead as a query job of the same query (a first sync, a reconciliation, an
incremental sync with a large backlog), its results read set by set along
``Sforce-Locator`` and typed by describe (see ``_bulk``): a few requests where REST needs
one per 2,000 records. Each set is downloaded while the one before is read. The query
keeps ``ORDER BY SystemModstamp, Id``, so the engine sees the order rule R1 needs, as on
REST; a read of more than ``bulk_job_records`` is
split into jobs by windows of ``SystemModstamp``, read one after the other, which keep
that order (see `SalesforceSource._windows`). A job Salesforce refuses (an object Bulk
does not serve) or that ends ``Failed`` or ``Aborted`` is read by REST instead, with a
warning the engine puts in the sync report (`SalesforceSource.take_warnings`). A sync
stopped in the middle of a job (killed, or out of budget) does not come back to it: the
next sync reads from the watermark its applied pages saved, by a new job if the rest is
still large, and the records read twice are known versions, applied once.

Formula and roll-up summary fields (describe's ``calculated``) change without a new
``SystemModstamp``: `SalesforceSource.read_formulas` reads only them, by ``query`` (live
rows), for `SyncEngine.refresh_formulas`.

The API budget: every request the source sends (each try of a retried one, and a
renewal's sign-in) is counted in `SalesforceSource.requests_made`, which the engine puts
in the report. The org's daily allowance is shared by every integration, and each answer
says how much of it is used (the ``Sforce-Limit-Info`` header, which simple-salesforce
reads into ``api_usage``). Past the source's ``max_api_share`` of it, or when Salesforce
refuses a request because the allowance is spent, the source raises
`ApiBudgetExceededError`: the sync ends between pages, as on any failure, and the next
one goes on from its watermark.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import requests
import tenacity
from attrs import frozen
from requests.exceptions import ChunkedEncodingError, InvalidHeader
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError as ClientError

from acctsync._errors import ConfigurationError, InvalidRecordError, SourceError
from acctsync._formats import AUDIT_FIELDS, json_value, parse_datetime
from acctsync._ids import normalize_id
from acctsync._names import close_matches
from acctsync._records import (
    Change,
    FieldValue,
    ObjectType,
    RawRecord,
    Unreadable,
    field_name_problem,
    parse_object_type,
)
from acctsync._state import Conversion, ConversionRequest
from acctsync.sources import _bulk
from acctsync.sources._salesforce_login import SalesforceLogin

__all__ = [
    "ApiBudgetExceededError",
    "RetryPolicy",
    "SalesforceError",
    "SalesforceLogin",
    "SalesforceSource",
    "UnreadableFieldError",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_SYSTEM_FIELDS: Final[Mapping[ObjectType, tuple[str, ...]]] = {
    "Account": ("Id", "SystemModstamp", "IsDeleted", "MasterRecordId"),
    "Contact": ("Id", "SystemModstamp", "IsDeleted", "MasterRecordId", "AccountId"),
}
# Fields the source never reads: the record attributes it always selects, and those
# the decoders drop (rule R9: in any case).
_NOT_READ: Final[Mapping[ObjectType, frozenset[str]]] = {
    kind: frozenset(name.lower() for name in (*names, *AUDIT_FIELDS))
    for kind, names in _SYSTEM_FIELDS.items()
}
# Values that are objects, not scalars: address and geolocation compounds (whose
# components are fields of their own) and base64 file bodies, which are no account
# information. REST API Developer Guide, "sObject Describe"; SOAP API Developer Guide,
# "Address Compound Fields" and "Compound Field Considerations and Limitations".
_COMPOUND_TYPES: Final = frozenset({"address", "location"})
_SKIPPED_TYPES: Final = _COMPOUND_TYPES | {"base64"}
_RETRYABLE_CODES: Final = frozenset(
    {"REQUEST_LIMIT_EXCEEDED", "QUERY_TIMEOUT", "SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW"}
)
# REQUEST_LIMIT_EXCEEDED is two errors: with this message the org's 24-hour allowance is
# spent, which lasts hours, so no retry within minutes helps; with another (such as
# "ConcurrentPerOrgLongTxn Limit exceeded") too many long requests run at once, which a
# retry with backoff outlasts. Salesforce Developer Limits and Allocations Quick Reference,
# "API Request Limits and Allocations".
_DAILY_LIMIT: Final = ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
# Salesforce serves 200 to 2,000 records a page.
_BATCH_SIZES: Final = range(200, 2001)
# Records per Bulk result set: twice simple-salesforce's default maxRecords (its bulk2
# module), so that a million records cost 10 requests, not 20, for a set held in memory
# at a time (about 30 MB of CSV at ten fields a record). Salesforce sets no count of its
# own, only a size limit ("Get Results for a Query Job").
_BULK_SET_SIZE: Final = 100_000
# A read of more records than this goes by Bulk: REST serves it in 5 pages, a job in at
# least 3 requests (create, poll, results) and more time, as a job queues first.
_BULK_THRESHOLD: Final = 10_000
# At most this many records per Bulk job; more are split into windows (`_windows`).
_BULK_JOB_RECORDS: Final = 1_000_000
_DESCRIBE_MAX_AGE: Final = timedelta(minutes=15)
_ORDER: Final = " ORDER BY SystemModstamp, Id"
_SECOND: Final = timedelta(seconds=1)


class SalesforceError(SourceError):
    """Salesforce refused or failed a request.

    ``status`` is the HTTP status (None when no answer came), ``error_code`` Salesforce's
    own code (``INVALID_SESSION_ID``, ``REQUEST_LIMIT_EXCEEDED``...), when it sent one.
    The client's own error is not chained to it: its frames hold the session's token in
    their variables, which an error reporter that records them would keep.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        retryable: bool = False,
    ):
        self.status = status
        self.error_code = error_code
        super().__init__(message, retryable=retryable)


class ApiBudgetExceededError(SalesforceError):
    """The org's API usage passed what the source may use: the sync stopped to spare it.

    ``used`` and ``allowance`` are the requests the org has made in the last 24 hours and
    its daily allowance, from the last answer's ``Sforce-Limit-Info`` header (None when no
    answer told them). ``share`` is the source's ``max_api_share`` when the usage passed
    it; None when Salesforce itself refused the request because the allowance was spent
    (``error_code`` ``REQUEST_LIMIT_EXCEEDED``). Not retried: usage falls only as the
    24-hour window moves on. The pages applied before it stay, with their watermark.
    """

    def __init__(
        self,
        message: str,
        *,
        used: int | None,
        allowance: int | None,
        share: float | None,
        status: int | None = None,
        error_code: str | None = None,
    ):
        self.used = used
        self.allowance = allowance
        self.share = share
        super().__init__(message, status=status, error_code=error_code)


class UnreadableFieldError(SalesforceError):
    """Fields named in ``fields`` that the org's describe of ``object_type`` does not list.

    Salesforce leaves out of describe the fields the integration user may not read (field-
    level security) as well as those the org does not have, and refuses a query naming
    either with ``INVALID_FIELD``. ``fields`` are the names as configured;
    ``close_matches`` maps each to describe's names it may be a typo of, closest first.
    Grant the user read access to the field, or correct the name.
    """

    def __init__(self, object_type: ObjectType, close_matches: Mapping[str, tuple[str, ...]]):
        self.object_type = object_type
        self.fields = tuple(close_matches)
        self.close_matches = dict(close_matches)
        named = "; ".join(
            f"{name!r}" + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else "")
            for name, near in close_matches.items()
        )
        super().__init__(
            f"describe {object_type} does not list {named}: the org has no such field, or"
            " the integration user may not read it"
        )


@frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed request that may succeed later is tried again.

    Up to ``attempts`` tries in all, waiting exponentially longer between them (from
    ``initial`` seconds, doubling, at most ``maximum``), plus up to ``initial`` seconds of
    jitter so that runners that failed together do not retry together. ``sleep`` is how to
    wait; tests pass a function that records instead.
    """

    attempts: int = 5
    initial: float = 1.0
    maximum: float = 60.0
    sleep: Callable[[float], None] = tenacity.nap.sleep

    def __attrs_post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigurationError(f"attempts must be an integer >= 1: {self.attempts!r}")
        waits = (self.initial, self.maximum)
        if any(isinstance(w, bool) or not isinstance(w, int | float) for w in waits):
            raise ConfigurationError(f"waits must be numbers of seconds: {waits!r}")
        if self.attempts < 1 or not 0 <= self.initial <= self.maximum:
            raise ConfigurationError("retries need attempts >= 1 and 0 <= initial <= maximum")

    def call(self, what: str, request: Callable[[], _T]) -> _T:
        """``request()``, tried again while it fails with a retryable `SalesforceError`."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)
            + tenacity.wait_random(0, self.initial),
            retry=tenacity.retry_if_exception(
                lambda error: isinstance(error, SourceError) and error.retryable
            ),
            sleep=self.sleep,
            before_sleep=lambda state: _log.warning(
                "%s failed (%s); try %d of %d follows",
                what,
                state.outcome.exception() if state.outcome else None,
                state.attempt_number + 1,
                self.attempts,
            ),
            reraise=True,
        )
        result: _T = retrying(_translated, what, request)
        return result


def _translated(what: str, request: Callable[[], _T]) -> _T:
    failure: SalesforceError
    try:
        return request()
    except ClientError as error:
        failure = _answered(what, error.status, error.content)
    except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as error:
        failure = SalesforceError(f"{what}: no full answer ({error})", retryable=True)
    except requests.JSONDecodeError:  # cut short, or a proxy's page instead
        failure = SalesforceError(f"{what}: an answer that is not JSON", retryable=True)
    except InvalidHeader:  # its text quotes the header: the session's, say
        failure = SalesforceError(
            f"{what}: a header is not valid HTTP (a session id with a space or line break?)"
        )
    except requests.RequestException as error:
        failure = SalesforceError(f"{what}: the request failed ({error})")
    raise failure  # outside the handlers: nothing chained (see `SalesforceError`)


def _answered(what: str, status: int, content: object) -> SalesforceError:
    """Salesforce's error answer (``[{"errorCode": ..., "message": ...}]``) as an error."""
    code = message = None
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        code, message = content[0].get("errorCode"), content[0].get("message")
    retryable = _retryable(code, message) or status >= 500
    detail = f"{code}: {message}" if code else f"HTTP {status}"
    return SalesforceError(
        f"{what} failed: {detail}", status=status, error_code=code, retryable=retryable
    )


def _retryable(code: object, message: object) -> bool:
    return code in _RETRYABLE_CODES and (code, message) != _DAILY_LIMIT


def soql_datetime(value: datetime) -> str:
    """``value`` as a SOQL datetime literal, in whole seconds, rounded down.

    Rounding down only widens an inclusive ``>=`` filter: nothing is missed.
    """
    if value.utcoffset() is None:
        raise ConfigurationError("a SOQL datetime must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(since: datetime | None, until: datetime | None) -> str:
    """The ``WHERE`` clause of ``since <= SystemModstamp < until``, each bound optional."""
    bounds = []
    if since is not None:
        bounds.append(f"SystemModstamp >= {soql_datetime(since)}")
    if until is not None:
        bounds.append(f"SystemModstamp < {soql_datetime(until)}")
    return f" WHERE {' AND '.join(bounds)}" if bounds else ""


def _second(stamp: datetime) -> datetime:
    return stamp.replace(microsecond=0)


def _stamp(record: object) -> datetime:
    value = record.get("SystemModstamp") if isinstance(record, Mapping) else None
    try:
        return parse_datetime(value, field="SystemModstamp")
    except InvalidRecordError as error:
        raise SalesforceError(f"a query answer with {error.reason}") from None


# Salesforce Help, "Maximum number of rows returned by SOQL queries over the REST API"
# (article 000386264): a REST request's URI and headers take at most 16,384 bytes, and a
# longer query goes in the body of a Composite API request. The headers get 2 KiB.
_URI_BYTES: Final = 16_384 - 2_048


def _batch_size(page_size: int) -> dict[str, str]:
    size = min(max(page_size, _BATCH_SIZES.start), _BATCH_SIZES.stop - 1)
    return {"Sforce-Query-Options": f"batchSize={size}"}


def _check_page_size(page_size: int) -> None:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ConfigurationError(f"page_size must be a positive integer: {page_size!r}")


class SalesforceSource:
    """A live org through a client: a `WritableSource`, `CompleteSource`, `DescribedSource`,
    `FormulaSource`, `MeteredSource` and `WarningSource`.

    The client is a ``simple_salesforce.Salesforce``; create it with
    ``parse_float=decimal.Decimal`` to keep currency values exact.

    ``fields`` names the fields to sync per object, in any case: they are read as the
    org's ``describe`` spells them, and a name describe does not list (a typo, or a
    field the integration user may not read) raises `UnreadableFieldError` before any
    query. A compound field named there (``BillingAddress``) is read as its components.
    An object not named syncs every field its describe lists, except compound and file
    fields (the compounds' components sync one by one) and audit fields.

    Describe is read again when a sync starts and the last reading is older than
    ``describe_max_age`` (`field_names`), so that access granted since is seen; access
    revoked is seen at once, as the query naming the field fails and the source reads
    describe again. ``timedelta(0)`` reads it at every sync, at one request per object.

    ``external_id_field`` is an External ID field on Account, Contact and Opportunity
    that Convert Person writes its idempotency key to (create it in the org first).

    ``login`` is how the client signed in: when Salesforce answers ``INVALID_SESSION_ID``
    (the session expired, or an admin revoked it), the source signs in with it again, once,
    through the client's ``requests`` session, and repeats the request. Without it, or
    when the new session is refused too, the request fails with `SalesforceError`.

    ``max_api_share`` (a number in (0, 1]) is the share of the org's daily API allowance
    past which the source stops: once an answer says the org's usage (every integration's,
    in the last 24 hours) is above it, the next request raises `ApiBudgetExceededError`
    instead of being sent, as does Salesforce's own refusal once the allowance is spent.
    None sets no share of its own. `requests_made` counts the requests sent (a
    `MeteredSource`).

    ``bulk=True`` (the default) reads by Bulk API 2.0 query jobs any read of more than
    ``bulk_threshold`` records: a first sync, a reconciliation, an incremental sync with a
    large backlog, a formula refresh. Each read's first REST page counts its records, so
    smaller reads stay on REST at no cost. Results come in sets of at most
    ``bulk_set_size`` records, and a read of more than ``bulk_job_records`` is split into
    jobs by ``SystemModstamp`` windows. A job Salesforce refuses or fails is read by REST
    instead, with a warning in the sync report (`take_warnings`). Job polls wait as the
    ``retry`` policy's backoff does, through its ``sleep``.
    """

    def __init__(
        self,
        client: Salesforce,
        *,
        fields: Mapping[str, Sequence[str]] | None = None,
        retry: RetryPolicy | None = None,
        external_id_field: str = "Acctsync_Key__c",
        login: SalesforceLogin | None = None,
        max_api_share: float | None = None,
        bulk: bool = True,
        bulk_threshold: int = _BULK_THRESHOLD,
        bulk_set_size: int = _BULK_SET_SIZE,
        bulk_job_records: int = _BULK_JOB_RECORDS,
        describe_max_age: timedelta = _DESCRIBE_MAX_AGE,
    ) -> None:
        if not isinstance(bulk, bool):
            raise ConfigurationError(f"bulk must be True or False: {bulk!r}")
        counts = {
            "bulk_threshold": (bulk_threshold, 0),
            "bulk_set_size": (bulk_set_size, 1),
            "bulk_job_records": (bulk_job_records, 1),
        }
        for name, (value, least) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigurationError(f"{name} must be an integer >= {least}: {value!r}")
        if not isinstance(describe_max_age, timedelta) or describe_max_age < timedelta(0):
            raise ConfigurationError(
                f"describe_max_age must be a timedelta >= 0: {describe_max_age!r}"
            )
        self._bulk = bulk
        self._bulk_threshold = bulk_threshold
        self._bulk_set_size = bulk_set_size
        self._bulk_job_records = bulk_job_records
        self._describe_max_age = describe_max_age.total_seconds()
        self._described_at: dict[ObjectType, float] = {}
        self._formulas: dict[ObjectType, tuple[str, ...]] = {}
        self._warnings: list[str] = []
        self._typings: dict[ObjectType, _bulk.CsvTyping] = {}
        if max_api_share is not None and (
            isinstance(max_api_share, bool)
            or not isinstance(max_api_share, int | float)
            or not 0 < max_api_share <= 1
        ):
            raise ConfigurationError(
                f"max_api_share must be a number above 0 and at most 1: {max_api_share!r}"
            )
        self._max_api_share = max_api_share
        self._requests_made = 0
        self._one_at_a_time = threading.RLock()
        # The org's usage and allowance, as this source's last answer told them.
        self._usage: tuple[int | None, int | None] = (None, None)
        self._client = client
        self._login = login
        self._retry = retry or RetryPolicy()
        self._external_id_field = external_id_field
        self._configured: dict[ObjectType, tuple[str, ...]] = {}
        self._readings: dict[ObjectType, tuple[str, ...]] = {}
        for object_type, names in (fields or {}).items():
            try:
                kind = parse_object_type(object_type)
            except InvalidRecordError as error:
                raise ConfigurationError(f"fields: {error.reason}") from None
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
                raise ConfigurationError(f"fields of {kind} must be a list of field names")
            read = tuple(n for n in names if n.lower() not in _NOT_READ[kind])
            for name in read:
                # Checked here, so that no name can change the query's meaning.
                problem = field_name_problem(name)
                if problem is not None:
                    raise ConfigurationError(f"fields of {kind}: {name!r} {problem}")
            self._configured[kind] = read

    def __repr__(self) -> str:
        return f"<SalesforceSource {self._client.base_url!r}>"

    @property
    def requests_made(self) -> int:
        """The requests sent to Salesforce since the source was made (`MeteredSource`).

        Each try of a retried request counts, and so does the sign-in of a renewal.
        """
        return self._requests_made

    def _call(self, what: str, request: Callable[[], _T]) -> _T:
        """``request()`` under the retry policy, after a new sign-in if the session expired.

        ``request`` must read ``self._client`` when called, so that a repeat uses the new
        one, and send one HTTP request. Requests go one at a time, whichever thread sends
        them (a Bulk read downloads its next set from a thread of its own, see
        `_job_results`): the count, the usage and a renewed client stay one story.
        """
        with self._one_at_a_time:
            return self._renewing(what, request)

    def _renewing(self, what: str, request: Callable[[], _T]) -> _T:
        try:
            return self._tried(what, request)
        except SalesforceError as error:
            login = self._login
            if error.error_code != "INVALID_SESSION_ID" or login is None or not login.renewable:
                raise
        _log.warning("%s: the Salesforce session expired; signing in again (%r)", what, login)
        old = self._client
        # The new client reads numbers as the old one did (Decimal, say), through its session.
        parse_float = getattr(old, "_parse_float", None)
        self._requests_made += 1  # every flow but a session's (not renewable) posts one
        self._client = login.connect(
            session=old.session, version=old.sf_version, parse_float=parse_float
        )
        return self._tried(what, request)

    def _tried(self, what: str, request: Callable[[], _T]) -> _T:
        """``request()`` under the retry policy, each try counted and its answer's usage read."""

        def sent() -> _T:
            self._check_usage(what)
            self._requests_made += 1
            answer = request()
            # simple-salesforce reads each answer's Sforce-Limit-Info header into
            # api_usage (REST API Developer Guide, "Limit Info Header").
            usage = getattr(self._client, "api_usage", {}).get("api-usage")
            if usage is not None:
                self._usage = (usage.used, usage.total)
            return answer

        try:
            return self._retry.call(what, sent)
        except SalesforceError as error:
            if error.error_code != _DAILY_LIMIT[0] or error.retryable:
                raise
            used, allowance = self._usage
            raise ApiBudgetExceededError(
                f"{what}: the org's daily API allowance is spent ({error}); the sync stopped"
                " here and the next goes on from its watermark once usage falls",
                used=used,
                allowance=allowance,
                share=None,
                status=error.status,
                error_code=error.error_code,
            ) from error

    def _check_usage(self, what: str) -> None:
        """Raise `ApiBudgetExceededError` when the last answer's usage passed the share.

        Checked before each request, so that no request is sent past the share (and no
        Convert Person is made only to be reported as failed). The usage is the one this
        source's own answers told, not the client's, and it is forgotten once it stopped
        a request: a client shared by several sources keeps the last usage it saw, and a
        source that trusted a usage once past the share would never send a request again
        to learn that it has fallen.
        """
        share = self._max_api_share
        used, allowance = self._usage
        if share is None or used is None or not allowance or used <= share * allowance:
            return
        self._usage = (None, None)
        raise ApiBudgetExceededError(
            f"{what}: the org has used {used:,} of its {allowance:,} daily API requests,"
            f" more than max_api_share={share:g}; the sync stopped here and the next goes on"
            " from its watermark",
            used=used,
            allowance=allowance,
            share=share,
        )

    # -- Reading -------------------------------------------------------------------------

    def field_names(self, object_type: ObjectType) -> tuple[str, ...]:
        """The fields of ``object_type`` this source reads, as describe spells them.

        Those configured (a compound as its components), or those described; system
        fields left out. Describe is read again when the last reading is older than
        ``describe_max_age``, so that access granted since is seen: the engine asks once
        per object at the start of each sync. Raises `UnreadableFieldError` for a
        configured field that describe does not list.
        """
        kind = parse_object_type(object_type)
        described_at = self._described_at.get(kind)
        if described_at is None or time.monotonic() - described_at >= self._describe_max_age:
            self._readings.pop(kind, None)
        return self._reading(kind)

    def formula_fields(self, object_type: ObjectType) -> tuple[str, ...]:
        """The fields of `field_names` that describe marks ``calculated``.

        Formula and roll-up summary fields: their values change without a new
        ``SystemModstamp``, so only a read of them (`read_formulas`) sees the change.
        """
        kind = parse_object_type(object_type)
        self._reading(kind)
        return self._formulas[kind]

    def soql(self, object_type: ObjectType, since: datetime | None) -> str:
        """The query that reads ``object_type`` changes stamped at or after ``since``."""
        return self._soql(parse_object_type(object_type), since=since)

    def _soql(
        self,
        kind: ObjectType,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        formulas: bool = False,
    ) -> str:
        fields = (
            ("Id", "SystemModstamp", *self.formula_fields(kind))
            if formulas
            else (*_SYSTEM_FIELDS[kind], *self._reading(kind))
        )
        return f"SELECT {', '.join(fields)} FROM {kind}{_window(since, until)}" + _ORDER

    def _reading(self, object_type: ObjectType) -> tuple[str, ...]:
        kind = parse_object_type(object_type)
        reading = self._readings.get(kind)
        if reading is None:
            answer = self._call(
                f"describe {kind}", lambda: self._client.restful(f"sobjects/{kind}/describe")
            )
            described = _described(kind, answer)
            self._typings[kind] = _bulk.CsvTyping(kind, answer or {})
            configured = self._configured.get(kind)
            reading = (
                _syncable(kind, described)
                if configured is None
                else _configured_reading(kind, configured, described)
            )
            calculated = {f["name"] for f in described if f.get("calculated") is True}
            self._formulas[kind] = tuple(name for name in reading if name in calculated)
            self._readings[kind] = reading
            self._described_at[kind] = time.monotonic()
        return reading

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """Pages of ``object_type`` records stamped at or after ``since`` (see `Source`).

        By Bulk when the source has ``bulk=True`` and the first REST page says that more
        than ``bulk_threshold`` records match; else by REST.

        The pages know how many records the query matched (``total``, as an export
        folder's do) once the first has been pulled: the first REST page's ``totalSize``.
        """
        _check_page_size(page_size)
        kind = parse_object_type(object_type)
        return _CountedRead(lambda read: self._read(kind, since, page_size, read, formulas=False))

    def read_all(self, object_type: ObjectType, *, page_size: int) -> Iterator[Sequence[Change]]:
        """Every record of the org, deleted ones in the recycle bin too (`CompleteSource`).

        By Bulk, as `read_changes` decides.
        """
        return self.read_changes(object_type, None, page_size=page_size)

    def read_formulas(
        self, object_type: ObjectType, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """The live records of ``object_type``, each with only its `formula_fields`
        (`FormulaSource`).

        Nothing, and no request past describe, when the object has none. By Bulk as
        `read_changes` decides.
        """
        _check_page_size(page_size)
        kind = parse_object_type(object_type)
        if not self.formula_fields(kind):
            return iter(())
        return _CountedRead(lambda read: self._read(kind, None, page_size, read, formulas=True))

    def take_warnings(self) -> tuple[str, ...]:
        """The warnings since the last call, forgotten once taken (`WarningSource`).

        A Bulk job that Salesforce refused or that failed, and so was read by REST.
        """
        warnings, self._warnings = tuple(self._warnings), []
        return warnings

    def _warn(self, message: str) -> None:
        _log.warning("%s", message)
        self._warnings.append(message)

    def _read(
        self,
        kind: ObjectType,
        since: datetime | None,
        page_size: int,
        counted: _CountedRead,
        *,
        formulas: bool,
    ) -> Iterator[Sequence[Change]]:
        """The pages of a read: by REST, or by Bulk when the first page counts enough.

        The first REST page is read either way: its ``totalSize`` counts the records the
        query matches (REST API Developer Guide, "Query"), so a read that REST serves in
        a page or a few costs no request more to decide, and a sync with nothing new
        costs one request per object.
        """
        deleted = not formulas  # changes by queryAll: deleted and merged rows too
        first = self._first_page(
            kind, lambda: self._soql(kind, since=since, formulas=formulas), page_size, deleted
        )
        total = first.get("totalSize")
        if isinstance(total, int):
            counted.total = total
        if self._bulk and isinstance(total, int) and total > self._bulk_threshold:
            yield from self._read_by_bulk(kind, since, first, page_size, formulas=formulas)
        else:
            yield from self._rest_pages(kind, first, page_size, deleted)

    def _first_page(
        self, kind: ObjectType, query: Callable[[], str], page_size: int, deleted: bool
    ) -> Any:
        """The answer to ``query()``'s first REST page.

        A query that fails with ``INVALID_FIELD`` names a field read before and no longer
        visible (access revoked since this source described the object): it is made
        again, once, after a new describe, as for a source that lives long.
        """
        headers = _batch_size(page_size)

        what = f"query {kind}"

        def sent() -> Any:
            soql = query()
            resource = "queryAll" if deleted else "query"
            path = f"{resource}/?{urlencode({'q': soql})}"
            if len(f"{self._client.base_url}{path}".encode()) > _URI_BYTES:
                return self._call(what, lambda: self._in_body(what, path, headers))
            return self._call(
                what, lambda: self._client.query(soql, include_deleted=deleted, headers=headers)
            )

        try:
            return sent()
        except SalesforceError as error:
            if error.error_code != "INVALID_FIELD":
                raise
            self._readings.pop(kind, None)
            return sent()

    def _in_body(self, what: str, path: str, headers: Mapping[str, str]) -> Any:
        """The answer to GET ``path`` (under the API's base URL), sent in the body of a
        Composite API request: a URI too long for Salesforce (see `_URI_BYTES`)."""
        request = {
            "method": "GET",
            "url": f"/services/data/v{self._client.sf_version}/{path}",
            "referenceId": "query",
            "httpHeaders": dict(headers),
        }
        answer = self._client.restful(
            "composite", method="POST", json={"compositeRequest": [request]}
        )
        entries = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
        if not isinstance(entries, list) or len(entries) != 1:
            raise SalesforceError(f"{what} failed: a Composite answer without its subrequest's")
        (entry,) = entries
        status = entry.get("httpStatusCode") if isinstance(entry, Mapping) else None
        if not isinstance(status, int):
            raise SalesforceError(f"{what} failed: a Composite answer without a status")
        if status >= 300:
            raise _answered(what, status, entry.get("body"))
        return entry.get("body")

    def _rest_pages(
        self, kind: ObjectType, result: Any, page_size: int, deleted: bool
    ) -> Iterator[Sequence[Change]]:
        """The records of ``result`` and of the pages after it, along ``nextRecordsUrl``."""
        headers = _batch_size(page_size)
        while True:
            records: list[RawRecord | Unreadable] = [
                RawRecord(object_type=kind, payload=r) for r in _records(result)
            ]
            for start in range(0, len(records), page_size):
                yield records[start : start + page_size]
            next_url = result.get("nextRecordsUrl")
            if result.get("done", True) or not next_url:
                return

            def more(url: str = next_url) -> Any:
                return self._client.query_more(
                    url, identifier_is_url=True, include_deleted=deleted, headers=headers
                )

            result = self._call(f"query {kind} (next page)", more)

    def _read_by_bulk(
        self,
        kind: ObjectType,
        since: datetime | None,
        first: Any,
        page_size: int,
        *,
        formulas: bool,
    ) -> Iterator[Sequence[Change]]:
        """The read as Bulk query jobs, one per window of `_windows`, in their order.

        A window whose job Salesforce refuses or fails is read by REST instead.
        """
        deleted = not formulas
        for lower, upper in self._windows(kind, since, first, deleted):
            query = partial(self._soql, kind, since=lower, until=upper, formulas=formulas)
            job_id = self._bulk_job(kind, query(), deleted)
            if job_id is None:
                result = self._first_page(kind, query, page_size, deleted)
                yield from self._rest_pages(kind, result, page_size, deleted)
            else:
                yield from self._job_results(kind, job_id, page_size)

    def _windows(
        self, kind: ObjectType, since: datetime | None, first: Any, deleted: bool
    ) -> list[tuple[datetime | None, datetime | None]]:
        """The ``SystemModstamp`` windows that split a read into jobs of at most
        ``bulk_job_records`` records each, in order: ``[lower, upper)``, None for open.

        Bulk API 2.0 splits a large query into chunks by primary key itself, but not one
        with ``ORDER BY``, which then may time out; Salesforce's remedy is more filter
        criteria (Bulk API 2.0 Developer Guide, "Troubleshooting Query Timeouts"). A
        window of stamps is such a filter that keeps the order rule R1 needs across jobs,
        which ID ranges would not: read one after the other, the windows' results are in
        ``SystemModstamp, Id`` order as one job's would be. The windows halve the span
        from the first stamp to the last while a half holds too many records, counted by
        a ``COUNT()`` query each; a second holding more than the limit is one job all the
        same. Neighbours are then joined while they fit in one job.
        """
        total, records = first.get("totalSize"), _records(first)
        limit = self._bulk_job_records
        if not isinstance(total, int) or total <= limit or not records:
            return [(since, None)]
        last = self._last(kind, since, deleted)
        if last is None:  # purged since the first page: nothing left to split
            return [(since, None)]
        start, end = _second(_stamp(records[0])), _second(_stamp(last)) + _SECOND
        leaves: list[tuple[datetime, datetime, int]] = []
        pending = [(start, end, total)]
        while pending:
            lower, upper, count = pending.pop()
            if count <= limit or upper - lower <= _SECOND:
                leaves.append((lower, upper, count))
                continue
            middle = _second(lower + (upper - lower) / 2)
            left = self._count(kind, lower, middle, deleted)
            pending.extend([(middle, upper, max(count - left, 0)), (lower, middle, left)])
        windows: list[tuple[datetime | None, datetime | None]] = []
        held = 0
        for lower, upper, count in leaves:
            if windows and held + count <= limit:
                windows[-1] = (windows[-1][0], upper)
                held += count
            else:
                windows.append((lower, upper))
                held = count
        # The read's own bounds: from its watermark, and open at the end for records
        # stamped since the last was seen.
        windows[0] = (since, windows[0][1])
        windows[-1] = (windows[-1][0], None)
        return windows

    def _last(self, kind: ObjectType, since: datetime | None, deleted: bool) -> Any:
        """The record of the read stamped last, or None when there is none."""
        query = f"SELECT SystemModstamp FROM {kind}{_window(since, None)}"
        query += " ORDER BY SystemModstamp DESC LIMIT 1"
        answer = self._call(
            f"query {kind} (last stamp)",
            lambda: self._client.query(query, include_deleted=deleted),
        )
        records = _records(answer)
        return records[0] if records else None

    def _count(self, kind: ObjectType, lower: datetime, upper: datetime, deleted: bool) -> int:
        query = f"SELECT COUNT() FROM {kind}{_window(lower, upper)}"
        answer = self._call(
            f"count {kind}", lambda: self._client.query(query, include_deleted=deleted)
        )
        total = answer.get("totalSize") if isinstance(answer, Mapping) else None
        if not isinstance(total, int):
            raise SalesforceError(f"count {kind}: an answer without a totalSize")
        return total

    def _job_results(
        self, kind: ObjectType, job_id: str, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """The job's result sets as pages, each set downloaded while the one before is read.

        The next set's request goes out as soon as its locator is known, from a thread of
        the read's own, so that the org's answer and the transfer overlap the engine's
        work on the set before, as a set held in memory already would. It is sent through
        `_call` as every request is (one at a time, see there), and its failure, a spent
        budget say, is raised where the set is asked for: after every page before it.
        """
        typing = self._typings[kind]  # the query was made from the describe

        def read(locator: str | None, number: int) -> _bulk.ResultSet:
            return self._call(
                f"Bulk query job {job_id} (result set {number})",
                lambda: _bulk.result_set(self._client, job_id, locator, self._bulk_set_size),
            )

        number = 1
        result = read(None, number)
        while True:
            locator = result.next_locator
            following = None if locator is None else _in_background(read, locator, number + 1)
            yield from typing.pages(result, f"Bulk query job {job_id} set {number}", page_size)
            if following is None:
                return
            result, number = following.result(), number + 1

    def _bulk_job(self, kind: ObjectType, query: str, deleted: bool) -> str | None:
        """The id of a completed job of ``query``; None (with a warning) when there is none.

        Polls wait as the retry policy's backoff does (its ``sleep``), from its initial
        wait, doubling up to its maximum.
        """
        operation = "queryAll" if deleted else "query"
        try:
            job_id = self._call(
                f"create a Bulk query job of {kind}",
                lambda: _bulk.create_job(self._client, query, operation),
            )
        except ApiBudgetExceededError:
            raise
        except SalesforceError as error:
            if error.retryable:
                raise
            # Refused as a whole (an object Bulk does not serve, a query it does not
            # take): REST serves the same query.
            self._warn(f"Bulk query of {kind} refused ({error}); read by REST instead")
            return None
        wait = self._retry.initial
        while True:
            state, message = self._call(
                f"Bulk query job {job_id}", lambda: _bulk.job_state(self._client, job_id)
            )
            if state == _bulk.COMPLETE:
                return job_id
            if state in _bulk.FAILED_STATES:
                self._warn(
                    f"Bulk query job {job_id} of {kind} ended {state} ({message});"
                    f" read by REST instead"
                )
                return None
            self._retry.sleep(wait)
            wait = min(wait * 2, self._retry.maximum)

    # -- Writing (Convert Person) --------------------------------------------------------

    def convert_person(self, request: ConversionRequest) -> Conversion:
        """Create the request's Account, Contact and Opportunity in one all-or-none call.

        Each is an upsert keyed by ``request.idempotency_key`` on the external ID field:
        repeating a request finds the records it created instead of creating more.
        """
        key = quote(request.idempotency_key, safe="")
        sobjects = f"/services/data/v{self._client.sf_version}/sobjects"

        def upsert(
            reference: str, sobject: str, fields: Mapping[str, FieldValue]
        ) -> dict[str, Any]:
            return {
                "method": "PATCH",
                "url": f"{sobjects}/{sobject}/{self._external_id_field}/{key}",
                "referenceId": reference,
                "body": {name: json_value(value) for name, value in fields.items()},
            }

        payload = {
            "allOrNone": True,
            "compositeRequest": [
                upsert("account", "Account", request.account_fields),
                upsert(
                    "contact",
                    "Contact",
                    {**request.contact_fields, "AccountId": "@{account.id}"},
                ),
                upsert(
                    "opportunity",
                    "Opportunity",
                    {**request.opportunity_fields, "AccountId": "@{account.id}"},
                ),
            ],
        }

        def convert() -> Conversion:
            # Inside the retry: a rolled-back request may fail for a reason that passes
            # (a locked row), and the upserts make a second try create nothing twice.
            ids = _composite_ids(self._client.restful("composite", method="POST", json=payload))
            try:
                return Conversion(
                    person_id=request.person_id,
                    account_id=normalize_id(ids["account"], prefix="001"),
                    contact_id=normalize_id(ids["contact"], prefix="003"),
                    opportunity_id=normalize_id(ids["opportunity"], prefix="006"),
                )
            except (KeyError, ValueError) as error:
                raise SalesforceError(f"Convert Person: an unexpected answer ({error})") from None

        return self._call("Convert Person", convert)


class _CountedRead(Iterator[Sequence[Change]]):
    """The pages of one read, and the records its query matched once its first page said
    (`CountedPages` in the command line's terms, for a progress bar's total and time left).
    """

    __slots__ = ("_pages", "total")

    def __init__(self, read: Callable[[_CountedRead], Iterator[Sequence[Change]]]) -> None:
        self.total: int | None = None
        self._pages = read(self)

    def __next__(self) -> Sequence[Change]:
        return next(self._pages)


def _in_background(call: Callable[..., _T], *args: Any) -> Future[_T]:
    """``call(*args)`` in a thread of its own: its result, or its error, when asked for.

    A daemon thread: a read stopped early (an error, a process ending) leaves the request
    to end by itself, never waited for.
    """
    future: Future[_T] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(call(*args))
        except BaseException as error:  # raised where the result is asked for
            future.set_exception(error)

    threading.Thread(target=run, name="acctsync-bulk-set", daemon=True).start()
    return future


def _records(result: object) -> list[Mapping[str, Any]]:
    records = result.get("records") if isinstance(result, Mapping) else None
    if not isinstance(records, list):
        raise SalesforceError("a query answer without a records list")
    return records


def _described(object_type: ObjectType, answer: object) -> tuple[Mapping[str, Any], ...]:
    """The field entries of a describe answer (REST API Developer Guide, "sObject Describe")."""
    fields = answer.get("fields") if isinstance(answer, Mapping) else None
    if not isinstance(fields, list):
        raise SalesforceError(f"describe {object_type}: an answer without a fields list")
    return tuple(f for f in fields if isinstance(f, Mapping) and isinstance(f.get("name"), str))


def _syncable(object_type: ObjectType, described: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    # A field other fields name as their compoundFieldName, and that cannot be written,
    # holds only what they hold (Contact's Name is Salutation, FirstName and LastName);
    # a writable one holds a value of its own (Account's Name, a compound in orgs with
    # person accounts, is the whole name of a business account).
    compounds = {
        f.get("compoundFieldName") for f in described if f.get("compoundFieldName") != f["name"]
    }
    return tuple(
        f["name"]
        for f in described
        if f["name"].lower() not in _NOT_READ[object_type]
        and f.get("type") not in _SKIPPED_TYPES
        and not (f["name"] in compounds and not f.get("createable") and not f.get("updateable"))
    )


def _configured_reading(
    object_type: ObjectType, configured: Sequence[str], described: Sequence[Mapping[str, Any]]
) -> tuple[str, ...]:
    """The fields ``configured`` names, in describe's spelling, a compound as its components.

    Components, not the compound: a compound that is null would read as a field of its own
    name, and Bulk queries refuse compounds (Bulk API 2.0 Developer Guide, "Query
    Considerations").
    """
    by_fold = {f["name"].lower(): f for f in described}
    unlisted: dict[str, tuple[str, ...]] = {}
    fields: dict[str, None] = {}  # by describe's spelling, once each
    for name in configured:
        entry = by_fold.get(name.lower())
        if entry is None:
            unlisted[name] = close_matches(name, (f["name"] for f in described))
        elif entry.get("type") in _COMPOUND_TYPES:
            compound = entry["name"]
            fields.update(
                (f["name"], None) for f in described if f.get("compoundFieldName") == compound
            )
        else:
            fields[entry["name"]] = None
    if unlisted:
        raise UnreadableFieldError(object_type, unlisted)
    return tuple(fields)


def _composite_ids(answer: object) -> dict[str, str]:
    """The IDs a composite answer gives by reference, or the error that rolled it back."""
    responses = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
    if not isinstance(responses, list) or not all(isinstance(r, Mapping) for r in responses):
        raise SalesforceError("Convert Person: an answer without compositeResponse")
    failures = [r for r in responses if r.get("httpStatusCode") not in range(200, 300)]
    if failures:
        # Under allOrNone, every other subrequest says PROCESSING_HALTED: report the cause.
        errors = [
            e
            for r in failures
            if isinstance(r.get("body"), list)
            for e in r["body"]
            if isinstance(e, Mapping)
        ]
        causes = [e for e in errors if e.get("errorCode") != "PROCESSING_HALTED"] or errors
        code = causes[0].get("errorCode") if causes else None
        message = causes[0].get("message") if causes else None
        status = failures[0].get("httpStatusCode")
        raise SalesforceError(
            f"Convert Person was rolled back: {code}: {message}",
            status=status if isinstance(status, int) else None,
            error_code=code,
            retryable=_retryable(code, message),
        )
    ids = {
        r.get("referenceId"): r["body"].get("id")
        for r in responses
        if isinstance(r.get("body"), Mapping)
    }
    return {k: v for k, v in ids.items() if isinstance(k, str) and isinstance(v, str)}
