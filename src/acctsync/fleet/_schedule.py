"""When an org's jobs run: what comes due, and how long a failed org waits.

Theory of operation: every org has three jobs, each with its own due time: the sync
(every few minutes), the formula refresh and the reconciliation (less often, or never).
The scheduler claims an org whose job is due and hands it to one worker; the worker runs
the job and, from how it ended, sets the job's next due time. Nothing here does I/O: the
decisions are values that the registry writes.

A failure is one of three kinds. A failure that a person must fix (Salesforce refused the
credentials, the credentials are missing, a setting is wrong) pauses the org with the
reason, and it stays paused until resumed. An exhausted API allowance waits for usage to
fall, which takes hours, since the allowance is over a rolling 24 hours. Anything else
(an outage, a timeout, a database that failed) is tried again after a wait that doubles
with each failure in a row, from the org's own interval up to a ceiling. A failing org
only ever delays itself.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Final, Literal, TypeAlias

from attrs import field, frozen

from acctsync._errors import ConfigurationError, SourceError

__all__ = ["JOBS", "Backoff", "Job", "Pause", "Retry", "auth_failure", "budget_exceeded"]

Job: TypeAlias = Literal["sync", "reconcile", "refresh"]
"""The name of one of an org's jobs: ``sync``, ``reconcile`` or ``refresh``."""
JOBS: Final[tuple[Job, ...]] = ("sync", "reconcile", "refresh")
"""The jobs a worker runs for an org: `SyncEngine.sync`, `SyncEngine.reconcile` and
`SyncEngine.refresh_formulas`."""

# A 401 answer means the session or token expired or is invalid (REST API Developer Guide,
# "Status Codes and Error Responses"); a refused sign-in answers INVALID_LOGIN (SOAP
# login()) or an OAuth error (Salesforce Help, "OAuth 2.0 Authorization Errors"; RFC
# 6749, section 5.2).
_AUTH_CODES: Final = frozenset(
    {
        "INVALID_SESSION_ID",
        "INVALID_AUTH_HEADER",
        "INVALID_LOGIN",
        "invalid_grant",
        "invalid_client",
        "invalid_client_id",
        "unauthorized_client",
    }
)

# A 403 with these codes: the integration user may not use the API ("API Enabled" is off
# in its profile and permission sets), or the org's edition has no API. Only an
# administrator changes that (REST API Developer Guide, "Status Codes and Error
# Responses": 403, "verify that the logged-in user has appropriate permissions"; Marketo
# Sales Connect, "Salesforce Diagnostics": API_CURRENTLY_DISABLED).
_NO_API_ACCESS: Final = frozenset({"API_CURRENTLY_DISABLED", "API_DISABLED_FOR_ORG"})


def _salesforce_error(error: BaseException, name: str) -> bool:
    """Whether ``error`` is the Salesforce source's error class ``name``.

    Without importing the source's module, which needs the salesforce extra: an error of
    its classes exists only once the module has been imported.
    """
    module = sys.modules.get("acctsync.sources.salesforce")
    return module is not None and isinstance(error, getattr(module, name))


def budget_exceeded(error: BaseException) -> bool:
    """Whether ``error`` says the org's API allowance (or the source's share of it) is used."""
    return _salesforce_error(error, "ApiBudgetExceededError")


def auth_failure(error: BaseException) -> bool:
    """Whether ``error`` is Salesforce refusing the org's credentials or session."""
    if not isinstance(error, SourceError):
        return False
    status, code = getattr(error, "status", None), getattr(error, "error_code", None)
    return status == 401 or code in _AUTH_CODES


def _needs_a_person(error: BaseException) -> bool:
    """A failure that no retry mends: credentials refused or missing, a user without API
    access, a bad setting, or a configured field the integration user may not read."""
    return (
        auth_failure(error)
        or (
            isinstance(error, SourceError) and getattr(error, "error_code", None) in _NO_API_ACCESS
        )
        or isinstance(error, ConfigurationError)
        or _salesforce_error(error, "UnreadableFieldError")
    )


@frozen(kw_only=True)
class Pause:
    """Pause the org until a person resumes it; ``reason`` says what to fix."""

    reason: str


def _aware(instance: object, attribute: object, value: datetime) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigurationError(f"a retry's time must be a timezone-aware datetime: {value!r}")


@frozen(kw_only=True)
class Retry:
    """Run the failed job again at ``at`` (a timezone-aware datetime)."""

    at: datetime = field(validator=_aware)


def _duration(instance: object, attribute: object, value: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigurationError(f"a backoff duration must be a timedelta > 0: {value!r}")


@frozen(kw_only=True)
class Backoff:
    """How long an org waits after a failed job, and which failures pause it.

    After the ``n``-th failure in a row the job runs again after the org's interval times
    ``2 ** (n - 1)``, at most ``maximum``; after an exhausted API allowance, after at
    least ``budget``. Refused credentials, missing credentials, a user without API access
    and settings the source refuses pause the org instead.
    """

    maximum: timedelta = field(default=timedelta(hours=1), validator=_duration)
    budget: timedelta = field(default=timedelta(hours=1), validator=_duration)

    def after(
        self, error: BaseException, *, every: timedelta, failures: int, now: datetime
    ) -> Pause | Retry:
        """What to do after ``error`` ended a job of an org synced ``every`` so long, which
        had failed ``failures`` times in a row before (this failure not counted)."""
        if _needs_a_person(error):
            return Pause(reason=f"{type(error).__name__}: {error}")
        ceiling = max(self.maximum, every).total_seconds()
        wait = timedelta(seconds=min(every.total_seconds() * 2.0 ** min(failures, 64), ceiling))
        if budget_exceeded(error):
            wait = max(wait, self.budget)
        return Retry(at=now + wait)
