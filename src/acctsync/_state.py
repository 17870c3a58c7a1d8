"""What a store keeps, and the batches in which the engine hands it changes.

The engine decides every change; a store only carries out a `Batch`. Account state is
the upstream record plus an overlay of local edits (rules S2 and S3); a deleted record is
kept as its `Deletion`, a tombstone, so that an older copy arriving late cannot bring it
back (rule R3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TypeAlias

from attrs import field, frozen

from acctsync._activity import ChangeDataValue
from acctsync._errors import InvalidRecordError
from acctsync._records import (
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    field_name_problem,
    fields_attribute,
    parse_object_type,
)

__all__ = [
    "AccountState",
    "Batch",
    "Checkpoint",
    "ContactOp",
    "Conversion",
    "ConversionRequest",
    "DeleteContacts",
    "FieldName",
    "MoveContacts",
    "StoredAccount",
    "StoredContact",
    "Watermark",
]


@frozen(kw_only=True)
class AccountState:
    """A synced account: its ``upstream`` Salesforce record and the local edits over it.

    ``local_revision`` counts the changes made under this upstream ``SystemModstamp``: local
    edits, and later saves in the same second (rule R3). With the stamp it gives each
    change's activity entries their own identity.
    """

    upstream: Account
    local_edits: Mapping[str, FieldValue] = fields_attribute()
    local_revision: int = 0

    @property
    def id(self) -> str:
        """The account's ID."""
        return self.upstream.id

    @property
    def system_modstamp(self) -> datetime:
        """The ``SystemModstamp`` of the upstream version."""
        return self.upstream.system_modstamp

    def value(self, name: str) -> FieldValue:
        """The field's effective value: the local edit if there is one, else upstream."""
        if name in self.local_edits:
            return self.local_edits[name]
        return self.upstream.fields.get(name)

    def effective(self) -> Account:
        """The account as contacts see it locally: upstream values with local edits on top."""
        if not self.local_edits:
            return self.upstream
        return Account(
            id=self.upstream.id,
            fields={**self.upstream.fields, **self.local_edits},
            system_modstamp=self.upstream.system_modstamp,
            sequence=self.upstream.sequence,
        )


StoredAccount: TypeAlias = AccountState | Deletion
"""A store's account entry: a live account or its tombstone."""

StoredContact: TypeAlias = Contact | Deletion
"""A store's contact entry: a live contact or its tombstone."""


@frozen(kw_only=True)
class MoveContacts:
    """Give every contact of ``from_account_id`` the account ``to_account_id`` (a merge, R4).

    The contacts keep their ``SystemModstamp``: Salesforce moves them without touching it.
    """

    from_account_id: str
    to_account_id: str


@frozen(kw_only=True)
class DeleteContacts:
    """Delete every contact of ``account_id`` with it (an account deletion, R4).

    Each contact becomes a tombstone stamped with its *own* ``SystemModstamp``, so a
    newer version of the contact (a move that happened before the delete, an undelete)
    still applies, and a re-read of the same version does not.
    """

    account_id: str


ContactOp: TypeAlias = MoveContacts | DeleteContacts
"""An operation on all contacts of one account."""


@frozen(kw_only=True)
class Watermark:
    """How far a stream (an object type) has been read: the newest ``SystemModstamp`` seen."""

    stream: str
    system_modstamp: datetime


@frozen(kw_only=True)
class Checkpoint:
    """Where a stream of events was read up to: stored with the batch its events made.

    ``name`` is the stream's (`EventStream.name`); ``position`` is opaque to acctsync (a
    Pub/Sub API replay id): the stream is resumed after it.
    """

    name: str = field()
    position: bytes = field()

    @name.validator
    def _check_name(self, _: object, name: object) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidRecordError(f"a checkpoint's name is a non-empty str, not {name!r}")

    @position.validator
    def _check_position(self, _: object, position: object) -> None:
        if not isinstance(position, bytes):
            raise InvalidRecordError(
                f"a checkpoint's position is bytes, not {type(position).__name__}"
            )


@frozen(kw_only=True)
class FieldName:
    """A field of ``object_type`` records, in the org's one spelling of it (rule R9)."""

    object_type: ObjectType = field(converter=parse_object_type)
    name: str = field()

    @name.validator
    def _check(self, _: object, name: object) -> None:
        problem = field_name_problem(name)
        if problem is not None:
            raise InvalidRecordError(problem, field=name if isinstance(name, str) else None)


@frozen(kw_only=True)
class Conversion:
    """The records Convert Person created in Salesforce for a person (rule S6)."""

    person_id: str
    account_id: str
    contact_id: str
    opportunity_id: str


@frozen(kw_only=True)
class ConversionRequest:
    """What the engine asks a source's write side to create for Convert Person.

    A source must create all three records or none, and must answer a repeated
    ``idempotency_key`` with the records it created the first time.
    """

    person_id: str
    idempotency_key: str
    account_fields: Mapping[str, FieldValue] = fields_attribute()
    contact_fields: Mapping[str, FieldValue] = fields_attribute()
    opportunity_fields: Mapping[str, FieldValue] = fields_attribute()


@frozen(kw_only=True)
class Batch:
    """Changes a store must apply in one atomic step, in this order.

    1. ``accounts``: each replaces the stored entry with the same ID.
    2. ``contacts``: each replaces the stored entry with the same ID.
    3. ``contact_ops``: in sequence, on the contacts as step 2 left them.
    4. ``activities``: appended to the log; an entry whose ``id`` is already logged is
       skipped, never duplicated.
    5. ``conversions``: recorded by person ID.
    6. ``field_names``: each recorded unless the store has the name already, in any
       case (only a `FieldNameStore` keeps them; another store may ignore them).
    7. ``watermarks``: each stored for its stream.
    8. ``checkpoints``: each stored by its name, replacing the one stored before (only a
       `CheckpointStore` keeps them; another store may ignore them).
    """

    accounts: Sequence[StoredAccount] = ()
    contacts: Sequence[StoredContact] = ()
    contact_ops: Sequence[ContactOp] = ()
    activities: Sequence[ChangeDataValue] = ()
    conversions: Sequence[Conversion] = ()
    field_names: Sequence[FieldName] = ()
    watermarks: Sequence[Watermark] = ()
    checkpoints: Sequence[Checkpoint] = ()

    def check(self) -> None:
        """Raise `InvalidRecordError` unless each entry is of the kind its place holds.

        A store calls it before changing anything, so that a bad batch fails whole.
        """
        expected: tuple[tuple[Sequence[object], tuple[type, ...]], ...] = (
            (self.accounts, (AccountState, Deletion)),
            (self.contacts, (Contact, Deletion)),
            (self.contact_ops, (MoveContacts, DeleteContacts)),
            (self.activities, (ChangeDataValue,)),
            (self.conversions, (Conversion,)),
            (self.field_names, (FieldName,)),
            (self.watermarks, (Watermark,)),
            (self.checkpoints, (Checkpoint,)),
        )
        for entries, types in expected:
            for entry in entries:
                if not isinstance(entry, types):
                    raise InvalidRecordError(f"a batch cannot hold {entry!r} there")
        for stored, object_type in ((self.accounts, "Account"), (self.contacts, "Contact")):
            for entry in stored:
                if isinstance(entry, Deletion) and entry.object_type != object_type:
                    raise InvalidRecordError(
                        f"a {entry.object_type} deletion among {object_type.lower()}s",
                        record_id=entry.id,
                    )

    def __bool__(self) -> bool:
        return bool(
            self.accounts
            or self.contacts
            or self.contact_ops
            or self.activities
            or self.conversions
            or self.field_names
            or self.watermarks
            or self.checkpoints
        )
