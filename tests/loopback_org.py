"""What the tests of the live source share: the loopback org's clock, and an engine on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from acctsync import SyncEngine
from acctsync.sources.salesforce import RetryPolicy, SalesforceSource
from acctsync.testing.salesforce import FakeSalesforce

__all__ = ["CLOCK", "T0", "at", "engine_of", "no_wait"]

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
