"""The conformance checks pass on the fakes, and catch stores and sources that break a duty."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime

import attrs
import pytest

from acctsync import (
    Account,
    AcctSyncError,
    Batch,
    Change,
    Contact,
    DeleteContacts,
    Deletion,
    ObjectType,
    StoredContact,
)
from acctsync.testing import (
    ConformanceError,
    InMemorySource,
    InMemoryStore,
    check_source,
    check_store,
)


def source_of(records: Sequence[Account | Contact | Deletion]) -> InMemorySource:
    source = InMemorySource()
    for record in records:
        if isinstance(record, Deletion):
            source.delete(record)
        else:
            source.upsert(record)
    return source


def test_in_memory_store_conforms() -> None:
    check_store(InMemoryStore)


def test_in_memory_source_conforms() -> None:
    check_source(source_of)


def test_conformance_error_is_a_library_error_and_an_assertion() -> None:
    assert issubclass(ConformanceError, AcctSyncError)
    assert issubclass(ConformanceError, AssertionError)


class StoreWithDuplicateLog(InMemoryStore):
    """Appends activity entries even when their id is logged already."""

    def apply(self, batch: Batch) -> None:
        super().apply(attrs.evolve(batch, activities=()))
        self._log.update({f"{e.id}#{len(self._log)}": e for e in batch.activities})


class StoreThatLoadsWhenCounting(InMemoryStore):
    """Counts every contact of every account: the wrong number."""

    def count_contacts(self, account_id: str) -> int:
        return len(self.contacts())


class StoreThatDropsTombstones(InMemoryStore):
    def contact_states(self, ids: Collection[str]) -> Mapping[str, StoredContact]:
        states = super().contact_states(ids)
        return {i: s for i, s in states.items() if not isinstance(s, Deletion)}


class StoreThatRestampsCascades(InMemoryStore):
    """Tombstones an account's contacts with the time the batch ran, not their own stamps."""

    def apply(self, batch: Batch) -> None:
        ops = [op for op in batch.contact_ops if isinstance(op, DeleteContacts)]
        doomed = [c for op in ops for c in self.contact_ids(op.account_id)]
        super().apply(batch)
        for contact_id in doomed:
            self._contacts[contact_id] = Deletion(
                object_type="Contact", id=contact_id, deleted_at=datetime.now().astimezone()
            )


class StoreThatIsNotAtomic(InMemoryStore):
    """Applies a batch entry by entry and stops at the first bad one."""

    def apply(self, batch: Batch) -> None:
        super().apply(attrs.evolve(batch, activities=(), watermarks=()))
        super().apply(Batch(activities=batch.activities, watermarks=batch.watermarks))


@pytest.mark.parametrize(
    "broken",
    [
        StoreWithDuplicateLog,
        StoreThatLoadsWhenCounting,
        StoreThatDropsTombstones,
        StoreThatRestampsCascades,
        StoreThatIsNotAtomic,
    ],
)
def test_check_store_catches_a_broken_store(broken: type[InMemoryStore]) -> None:
    with pytest.raises(ConformanceError):
        check_store(broken)


class SourceWithStrictSince(InMemorySource):
    """The classic mistake of R1: a strict ``>`` cursor."""

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        for page in super().read_changes(object_type, since, page_size=page_size):
            kept = [
                c for c in page if since is None or getattr(c, "system_modstamp", since) > since
            ]
            if kept:
                yield kept


class SourceOrderedByIdOnly(InMemorySource):
    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        items = [
            c for page in super().read_changes(object_type, since, page_size=10**9) for c in page
        ]
        items.sort(key=lambda c: getattr(c, "id", ""))
        for start in range(0, len(items), page_size):
            yield items[start : start + page_size]


class SourceIgnoringPageSize(InMemorySource):
    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        return super().read_changes(object_type, since, page_size=page_size + 1)


@pytest.mark.parametrize(
    "broken", [SourceWithStrictSince, SourceOrderedByIdOnly, SourceIgnoringPageSize]
)
def test_check_source_catches_a_broken_source(broken: type[InMemorySource]) -> None:
    def make(records: Sequence[Account | Contact | Deletion]) -> InMemorySource:
        source = broken()
        for record in records:
            if isinstance(record, Deletion):
                source.delete(record)
            else:
                source.upsert(record)
        return source

    with pytest.raises(ConformanceError):
        check_source(make)
