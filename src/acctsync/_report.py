"""What a sync or a local edit did, as values a caller can inspect or log."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import attrs
from attrs import field, frozen

from acctsync._activity import ChangeDataValue, Origin
from acctsync._records import FieldValue, Refetch
from acctsync._state import Checkpoint

__all__ = ["EditResult", "Rejection", "Suppression", "SyncReport"]


@frozen(kw_only=True)
class Rejection:
    """A record the sync could not apply, and why (rule R7).

    ``origin`` is where the source read it (a file and line, say), when it said.
    """

    object_type: str
    record_id: str | None
    reason: str
    field: str | None = None
    origin: str | None = None


@frozen(kw_only=True)
class Suppression:
    """A change whose per-contact activity entries the policy did not log (rule S8)."""

    account_id: str
    contact_count: int
    entries_skipped: int
    origin: Origin


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@frozen(kw_only=True, repr=False)
class SyncReport:
    """What one `SyncEngine.sync`, `SyncEngine.reconcile` or `SyncEngine.refresh_formulas`
    did, or one batch of events that `SyncEngine.follow` applied.

    Counts are of records applied; ``already_applied`` counts versions read again (the
    lookback window re-reads some on purpose) and ``stale`` versions older than the stored
    one, neither applied. ``local_edits_discarded`` counts accounts whose local edits a
    newer Salesforce version overwrote (rule S3). ``refreshed`` counts records whose
    values changed without a new ``SystemModstamp`` (formula fields: read again by a
    sync's lookback window, by `SyncEngine.reconcile` or by
    `SyncEngine.refresh_formulas`); they are among the upserted. ``missing_fields``
    names, per object, the fields the store holds that the source no longer reads (rule
    R9: a field the integration user lost access to); their stored values are as last
    read. ``api_requests`` counts the requests the run sent to
    Salesforce (each retry too), when its source counts them (`MeteredSource`); 0
    otherwise. ``warnings`` are what the source said it did in a lesser way without
    failing (`WarningSource`), such as reading by REST when a Bulk API job failed; they do
    not make the report less `ok`. ``events`` counts the events of a followed stream's
    batch, and ``checkpoint`` is the stream position stored with it; both are None for a
    run that read no stream (a sync, and the catch-up of a follow).
    """

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
    rejected: tuple[Rejection, ...] = ()
    suppressed: tuple[Suppression, ...] = ()
    activities: tuple[ChangeDataValue, ...] = ()
    refetch: tuple[Refetch, ...] = ()
    missing_fields: Mapping[str, tuple[str, ...]] = field(factory=dict, converter=_frozen)
    watermarks: Mapping[str, datetime] = field(factory=dict, converter=_frozen)
    warnings: tuple[str, ...] = ()
    events: int | None = None
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        """True when nothing was rejected and nothing needs fetching again."""
        return not self.rejected and not self.refetch

    def __repr__(self) -> str:
        return (
            f"<SyncReport pages={self.pages} accounts_upserted={self.accounts_upserted}"
            f" accounts_deleted={self.accounts_deleted}"
            f" contacts_upserted={self.contacts_upserted}"
            f" contacts_deleted={self.contacts_deleted} already_applied={self.already_applied}"
            f" stale={self.stale} local_edits_discarded={self.local_edits_discarded}"
            f" refreshed={self.refreshed} api_requests={self.api_requests}"
            f" rejected={len(self.rejected)} suppressed={len(self.suppressed)}"
            f" activities={len(self.activities)} refetch={len(self.refetch)}"
            f" warnings={len(self.warnings)}>"
        )


# The report's fields that count from 0, for whatever copies them to or from a report
# (``events`` is not one: a sync has no events to count).
COUNTS: Final = tuple(f.name for f in attrs.fields(SyncReport) if type(f.default) is int)


@frozen(kw_only=True, repr=False)
class EditResult:
    """What one `SyncEngine.edit_account_field` did.

    ``changed`` is False when the field already had the value; then nothing was written.
    ``suppressed`` holds the `Suppression` when the policy logged no entries.
    """

    contact_id: str
    account_id: str
    field: str
    old_value: FieldValue
    new_value: FieldValue
    changed: bool
    contact_count: int
    activities: tuple[ChangeDataValue, ...] = ()
    suppressed: Suppression | None = None

    def __repr__(self) -> str:
        return (
            f"<EditResult account_id={self.account_id!r} field={self.field!r}"
            f" changed={self.changed} contact_count={self.contact_count}"
            f" activities={len(self.activities)} suppressed={self.suppressed is not None}>"
        )
