"""The conformance checks pass on the fakes, and catch stores and sources that break a duty."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import attrs
import pytest

from acctsync import (
    Account,
    AccountState,
    AcctSyncError,
    Batch,
    Change,
    Checkpoint,
    CheckpointStore,
    Contact,
    DeleteContacts,
    Deletion,
    MoveContacts,
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

S = TypeVar("S", bound=InMemorySource)


def filled(source: S, records: Sequence[Account | Contact | Deletion]) -> S:
    for record in records:
        if isinstance(record, Deletion):
            source.delete(record)
        else:
            source.upsert(record)
    return source


def source_of(records: Sequence[Account | Contact | Deletion]) -> InMemorySource:
    return filled(InMemorySource(), records)


def test_in_memory_store_conforms() -> None:
    assert isinstance(InMemoryStore(), CheckpointStore)
    check_store(InMemoryStore)


def test_check_store_leaves_checkpoints_to_a_checkpoint_store() -> None:
    class NoCheckpoints(InMemoryStore):
        checkpoint = None  # type: ignore[assignment]

    assert not isinstance(NoCheckpoints(), CheckpointStore)
    check_store(NoCheckpoints)


# The SQL store's run of the checks is in test_sql_store.py.


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


class StoreThatSkipsCheckpointOnlyBatches(InMemoryStore):
    """Writes nothing for a batch that holds no records: a keepalive's position is lost."""

    def apply(self, batch: Batch) -> None:
        if batch.accounts or batch.contacts or batch.activities:
            super().apply(batch)


class StoreThatStoresCheckpointsFirst(InMemoryStore):
    """Stores a batch's checkpoints before it checks the rest."""

    def apply(self, batch: Batch) -> None:
        for checkpoint in batch.checkpoints:
            if isinstance(checkpoint, Checkpoint):
                self._checkpoints[checkpoint.name] = checkpoint.position
        super().apply(batch)


class StoreThatReadsCheckpointsAsMemoryviews(InMemoryStore):
    """Returns a buffer, as a database driver may hand a binary column over."""

    def checkpoint(self, name: str) -> bytes | None:
        position = super().checkpoint(name)
        return None if position is None else memoryview(position)  # type: ignore[return-value]


class StoreThatFoldsCheckpointNames(InMemoryStore):
    def checkpoint(self, name: str) -> bytes | None:
        found = {k.lower(): v for k, v in self._checkpoints.items()}
        return found.get(name.lower())


@pytest.mark.parametrize(
    "broken",
    [
        StoreWithDuplicateLog,
        StoreThatLoadsWhenCounting,
        StoreThatDropsTombstones,
        StoreThatRestampsCascades,
        StoreThatIsNotAtomic,
        StoreThatSkipsCheckpointOnlyBatches,
        StoreThatStoresCheckpointsFirst,
        StoreThatReadsCheckpointsAsMemoryviews,
        StoreThatFoldsCheckpointNames,
    ],
)
def test_check_store_catches_a_broken_store(broken: type[InMemoryStore]) -> None:
    with pytest.raises(ConformanceError):
        check_store(broken)


def unsequenced(entry: AccountState) -> AccountState:
    return attrs.evolve(entry, upstream=attrs.evolve(entry.upstream, sequence=None))


class StoreThatDropsSequences(InMemoryStore):
    """Keeps live records without the order of their versions within one stamp."""

    def apply(self, batch: Batch) -> None:
        super().apply(
            attrs.evolve(
                batch,
                accounts=[
                    unsequenced(a) if isinstance(a, AccountState) else a for a in batch.accounts
                ],
                contacts=[
                    attrs.evolve(c, sequence=None) if isinstance(c, Contact) else c
                    for c in batch.contacts
                ],
            )
        )


class StoreThatDropsTombstoneSequences(InMemoryStore):
    def apply(self, batch: Batch) -> None:
        super().apply(
            attrs.evolve(
                batch,
                accounts=[
                    attrs.evolve(a, sequence=None) if isinstance(a, Deletion) else a
                    for a in batch.accounts
                ],
                contacts=[
                    attrs.evolve(c, sequence=None) if isinstance(c, Deletion) else c
                    for c in batch.contacts
                ],
            )
        )


class StoreWith64BitSequences(InMemoryStore):
    """Keeps each number of a sequence in a signed 64-bit column, which wraps."""

    def apply(self, batch: Batch) -> None:
        def wrapped(contact: StoredContact) -> StoredContact:
            if contact.sequence is None:
                return contact
            numbers = tuple((n + 2**63) % 2**64 - 2**63 for n in contact.sequence)
            return attrs.evolve(contact, sequence=numbers)

        super().apply(attrs.evolve(batch, contacts=[wrapped(c) for c in batch.contacts]))


class StoreThatDropsCascadeSequences(InMemoryStore):
    """Tombstones an account's contacts with their own stamps, but not their sequences."""

    def apply(self, batch: Batch) -> None:
        ops = [op for op in batch.contact_ops if isinstance(op, DeleteContacts)]
        doomed = [c for op in ops for c in self.contact_ids(op.account_id)]
        super().apply(batch)
        for contact_id in doomed:
            self._contacts[contact_id] = attrs.evolve(self._contacts[contact_id], sequence=None)


class StoreThatDropsSequencesOfMoves(InMemoryStore):
    def apply(self, batch: Batch) -> None:
        ops = [op for op in batch.contact_ops if isinstance(op, MoveContacts)]
        moved = [c for op in ops for c in self.contact_ids(op.from_account_id)]
        super().apply(batch)
        for contact_id in moved:
            self._contacts[contact_id] = attrs.evolve(self._contacts[contact_id], sequence=None)


class StoreThatForgetsFieldNames(InMemoryStore):
    def apply(self, batch: Batch) -> None:
        super().apply(attrs.evolve(batch, field_names=()))


class StoreWithOneListOfFieldNames(InMemoryStore):
    """Answers every object type's names for each."""

    def field_names(self, object_type: ObjectType) -> list[str]:
        return [*super().field_names("Account"), *super().field_names("Contact")]


class StoreThatKeepsEverySpelling(InMemoryStore):
    def apply(self, batch: Batch) -> None:
        super().apply(attrs.evolve(batch, field_names=()))
        for entry in batch.field_names:
            self._field_names[entry.object_type].setdefault(entry.name, entry.name)


class StoreThatKeepsTheLastSpelling(InMemoryStore):
    def apply(self, batch: Batch) -> None:
        super().apply(attrs.evolve(batch, field_names=()))
        for entry in batch.field_names:
            self._field_names[entry.object_type][entry.name.lower()] = entry.name


class StoreThatFoldsNamesAcrossObjects(InMemoryStore):
    """Skips a name that any object type has, in any case."""

    def apply(self, batch: Batch) -> None:
        super().apply(attrs.evolve(batch, field_names=()))
        for entry in batch.field_names:
            if not any(entry.name.lower() in names for names in self._field_names.values()):
                self._field_names[entry.object_type][entry.name.lower()] = entry.name


class StoreThatKeepsNamesOfFailedBatches(InMemoryStore):
    """Records a batch's field names before it applies the rest, which may fail."""

    def apply(self, batch: Batch) -> None:
        super().apply(Batch(field_names=batch.field_names))
        super().apply(attrs.evolve(batch, field_names=()))


@pytest.mark.parametrize(
    ("broken", "duty"),
    [
        (StoreThatDropsSequences, "an account's sequence reads back"),
        (StoreThatDropsTombstoneSequences, "a contact tombstone's sequence"),
        (StoreWith64BitSequences, "a contact's and a contact tombstone's sequence"),
        (StoreThatDropsCascadeSequences, "DeleteContacts leaves tombstones with each contact's"),
        (StoreThatDropsSequencesOfMoves, "MoveContacts keeps each contact's SystemModstamp"),
        (StoreThatForgetsFieldNames, "field names from batches are kept"),
        (StoreWithOneListOfFieldNames, "field names from batches are kept, by object type"),
        (StoreThatKeepsEverySpelling, "is not added again"),
        (StoreThatKeepsTheLastSpelling, "the first spelling stays"),
        (StoreThatFoldsNamesAcrossObjects, "each object type has its own field names"),
        (StoreThatKeepsNamesOfFailedBatches, "a batch that fails records none of its field names"),
    ],
)
def test_check_store_names_the_duty_a_store_breaks(broken: type[InMemoryStore], duty: str) -> None:
    with pytest.raises(ConformanceError, match=re.escape(duty)):
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
    with pytest.raises(ConformanceError):
        check_source(lambda records: filled(broken(), records))


class DescribedInMemorySource(InMemorySource):
    """Describes exactly the fields of the records it holds (a `DescribedSource`)."""

    def field_names(self, object_type: ObjectType) -> list[str]:
        return sorted(
            {
                name
                for page in self.read_changes(object_type, None, page_size=1000)
                for record in page
                if isinstance(record, Account | Contact)
                for name in record.fields
            }
        )


class SourceDescribingTheId(DescribedInMemorySource):
    def field_names(self, object_type: ObjectType) -> list[str]:
        return [*super().field_names(object_type), "ID"]


class SourceDescribingANameWithASpace(DescribedInMemorySource):
    def field_names(self, object_type: ObjectType) -> list[str]:
        return [*super().field_names(object_type), "Billing Code"]


class SourceDescribingAFieldTwice(DescribedInMemorySource):
    def field_names(self, object_type: ObjectType) -> list[str]:
        names = super().field_names(object_type)
        return [*names, names[0].upper()]


class SourceReadingFieldsItDoesNotDescribe(DescribedInMemorySource):
    def field_names(self, object_type: ObjectType) -> list[str]:
        return ["Industry"]


def test_a_described_source_conforms() -> None:
    check_source(lambda records: filled(DescribedInMemorySource(), records))


def test_a_described_source_may_read_a_field_in_another_case() -> None:
    class SourceDescribingInUpperCase(DescribedInMemorySource):
        def field_names(self, object_type: ObjectType) -> list[str]:
            return [name.upper() for name in super().field_names(object_type)]

    check_source(lambda records: filled(SourceDescribingInUpperCase(), records))


@pytest.mark.parametrize(
    ("broken", "duty"),
    [
        (SourceDescribingTheId, "field_names leaves out the record attributes"),
        (SourceDescribingANameWithASpace, "field_names gives API names; 'Billing Code'"),
        (SourceDescribingAFieldTwice, "field_names gives each field once, in one case"),
        (SourceReadingFieldsItDoesNotDescribe, "records read hold only fields that field_names"),
    ],
)
def test_check_source_names_the_duty_a_described_source_breaks(
    broken: type[DescribedInMemorySource], duty: str
) -> None:
    with pytest.raises(ConformanceError, match=re.escape(duty)):
        check_source(lambda records: filled(broken(), records))
