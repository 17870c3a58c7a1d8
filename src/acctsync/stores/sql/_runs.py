"""`SyncRun`: one sync as the SQL store keeps it, for a later look at what happened."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

import attrs
from attrs import field, frozen

from acctsync._errors import ConfigurationError
from acctsync._report import COUNTS, Rejection, Suppression, SyncReport, _frozen

__all__ = ["OUTCOMES", "StoreCounts", "SyncRun"]

OUTCOMES: Final = ("ok", "rejected", "failed", "interrupted")
"""How a run can end: done, done with rejections, stopped by an error, stopped on request."""


def _outcome(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in OUTCOMES:
        raise ConfigurationError(f"outcome must be one of {', '.join(OUTCOMES)}: {value!r}")


def _aware(instance: object, attribute: attrs.Attribute[datetime], value: datetime) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigurationError(f"{attribute.name} must be a timezone-aware datetime")


@frozen(kw_only=True, repr=False)
class SyncRun:
    """One sync run: when it ran, how it ended (``outcome``) and what it did.

    ``outcome`` is one of `OUTCOMES`. The counts are those of the run's `SyncReport`;
    ``activities`` is the number of entries it logged (the entries are in the log).
    A run that did not finish returned no report: its counts are 0 except ``pages``,
    those read before it stopped, and ``api_requests``, those sent before it stopped (when
    its recorder knew them), and ``error`` says why it stopped. The batches it
    applied before that stay applied, with their watermark.

    ``missing_fields`` are the report's: per object, fields the source no longer reads.
    ``rejected`` and ``suppressed`` may hold fewer items than ``rejected_count`` and
    ``suppressed_count`` say: a store keeps the first of each, not thousands. ``id`` is
    the store's number of the run, None until recorded.
    """

    started_at: datetime = field(validator=_aware)
    finished_at: datetime = field(validator=_aware)
    outcome: str = field(validator=_outcome)
    source: str | None = None
    error: str | None = None
    pages: int = 0
    accounts_upserted: int = 0
    accounts_deleted: int = 0
    contacts_upserted: int = 0
    contacts_deleted: int = 0
    already_applied: int = 0
    stale: int = 0
    local_edits_discarded: int = 0
    refreshed: int = 0
    api_requests: int = 0
    activities: int = 0
    rejected: tuple[Rejection, ...] = ()
    rejected_count: int = 0
    suppressed: tuple[Suppression, ...] = ()
    suppressed_count: int = 0
    refetch_count: int = 0
    missing_fields: Mapping[str, tuple[str, ...]] = field(factory=dict, converter=_frozen)
    watermarks: Mapping[str, datetime] = field(factory=dict, converter=_frozen)
    id: int | None = None

    @classmethod
    def from_report(
        cls,
        report: SyncReport,
        *,
        started_at: datetime,
        finished_at: datetime,
        source: str | None = None,
    ) -> SyncRun:
        """The run that returned ``report``: ``ok``, or ``rejected`` when it is not `ok`."""
        return cls(
            started_at=started_at,
            finished_at=finished_at,
            outcome="ok" if report.ok else "rejected",
            source=source,
            **{name: getattr(report, name) for name in COUNTS},
            activities=len(report.activities),
            rejected=report.rejected,
            rejected_count=len(report.rejected),
            suppressed=report.suppressed,
            suppressed_count=len(report.suppressed),
            refetch_count=len(report.refetch),
            missing_fields=report.missing_fields,
            watermarks=report.watermarks,
        )

    @property
    def duration(self) -> timedelta:
        """How long the run took."""
        return self.finished_at - self.started_at

    def __repr__(self) -> str:
        return (
            f"<SyncRun id={self.id} outcome={self.outcome!r}"
            f" started_at={self.started_at.isoformat()} pages={self.pages}"
            f" rejected={self.rejected_count} suppressed={self.suppressed_count}>"
        )


@frozen(kw_only=True)
class StoreCounts:
    """What a store holds for its org: live accounts and contacts, and activity entries."""

    accounts: int
    contacts: int
    activities: int
