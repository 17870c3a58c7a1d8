"""Test helpers for acctsync and for code built on it.

In-memory fakes of the source, store and event stream protocols, hypothesis strategies
for valid records (`acctsync.testing.strategies`, needs the ``testing`` extra), and
conformance checks an integrator runs against their own source or store. Nothing here
needs pytest.
"""

from acctsync.testing._conformance import ConformanceError, check_source, check_store
from acctsync.testing._fakes import InMemoryEventStream, InMemorySource, InMemoryStore, make_id

__all__ = [
    "ConformanceError",
    "InMemoryEventStream",
    "InMemorySource",
    "InMemoryStore",
    "check_source",
    "check_store",
    "make_id",
]
