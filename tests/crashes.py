"""A store that crashes in the middle of a sync, for the tests of rule R2 (resuming)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from acctsync import Batch

__all__ = ["Crash", "CrashError", "crashing"]


class CrashError(Exception):
    """The store went away in the middle of a sync."""


class Crash:
    """Whether a store's `apply` failed inside `crashing`."""

    crashed = False


@contextmanager
def crashing(store: Any, crash_at: int) -> Iterator[Crash]:
    """``store``, whose ``crash_at``-th `apply` inside the context fails before it writes
    anything.

    The store itself, its class's `apply` replaced for the context (for this store only),
    rather than a wrapper that passes the rest on through ``__getattr__``: from Python
    3.12, ``isinstance`` with a runtime protocol does not see such attributes, and the
    engine took the wrapper for a store that keeps no field names (`FieldNameStore`).
    """
    crash, left = Crash(), [crash_at]
    kind = type(store)
    apply = kind.apply

    def failing(self: Any, batch: Batch) -> None:
        if self is store:
            left[0] -= 1
            if left[0] == 0:
                crash.crashed = True
                raise CrashError(f"crash at apply #{crash_at}")
        apply(self, batch)

    with mock.patch.object(kind, "apply", failing):
        yield crash
