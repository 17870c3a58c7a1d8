"""What the tests of the live source share: the loopback org's clock, an engine on it, and a
store that ends the org's sessions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from acctsync import Batch, SyncEngine
from acctsync.sources.salesforce import RetryPolicy, SalesforceSource
from acctsync.testing import InMemoryStore
from acctsync.testing.salesforce import FakeSalesforce

__all__ = ["CLOCK", "T0", "ExpiringStore", "at", "engine_of", "no_wait"]

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CLOCK = datetime(2024, 6, 1, tzinfo=UTC)  # the org's clock, and the engine's: after T0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def no_wait(waits: list[float] | None = None) -> RetryPolicy:
    """Retries that record their waits in ``waits`` instead of sleeping."""
    return RetryPolicy(
        attempts=3, initial=0.5, maximum=2.0, sleep=(waits if waits is not None else []).append
    )


def engine_of(
    org: FakeSalesforce,
    store: object,
    *,
    fields: Mapping[str, Sequence[str]],
    waits: list[float] | None = None,
    page_size: int = 200,
    **options: object,
) -> SyncEngine:
    """An engine syncing ``fields`` of ``org`` through a real client into ``store``."""
    source = SalesforceSource(
        org.client(parse_float=Decimal),
        fields=fields,
        retry=no_wait(waits),
        **options,  # type: ignore[arg-type]
    )
    return SyncEngine(
        source=source,
        store=store,  # type: ignore[arg-type]
        page_size=page_size,
        clock=lambda: CLOCK,
    )


class ExpiringStore(InMemoryStore):
    """A store that ends ``org``'s sessions once it has applied its first batch: the next
    request with one is ``INVALID_SESSION_ID``, mid-sync."""

    def __init__(self, org: FakeSalesforce) -> None:
        super().__init__()
        self.org = org
        self.expired = False

    def apply(self, batch: Batch) -> None:
        super().apply(batch)
        if not self.expired:
            self.expired = True
            self.org.expire_sessions()
