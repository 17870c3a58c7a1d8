"""The sync engine: every rule of the specification, and no I/O of its own.

Theory of operation
-------------------
A sync reads two streams from the source, accounts first, then contacts, each from its
stored watermark minus a lookback window (rule R1). Every page becomes one `Batch` that
the store applies atomically together with the stream's new watermark (R2).

Each record version is placed by its *version key*, ``(SystemModstamp, is_deletion)``:
a version applies only if its key is greater than the stored one. Re-reading the same
version (the lookback does, on purpose) is therefore a no-op, an older one is stale (R3),
and on a tie a deletion wins. Deleted records stay as tombstones so that late copies
cannot bring them back; a newer version can (undelete, R4).

An account is stored as its upstream record plus an overlay of local edits. A local edit
(S2) writes the overlay, which every contact of the account sees; a newer upstream
version replaces the record and drops the whole overlay (S3). The Change Data Value
entries of a change (S7) go to the contacts the store holds for the account at that
moment, after asking the policy with a count, so an account over the threshold (S8) is
never loaded contact by contact.

Merging or deleting an account acts on all its contacts at once (`MoveContacts`,
`DeleteContacts`); the engine hands such an operation to the store straight away, so
that later changes in the same page see the contacts where they now are. Those early
batches carry no watermark; re-applying them after a crash is a no-op by the version key.

The clock is read only for the time of a local edit, and can be replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
from attrs import define, field

from acctsync._activity import ActivityPolicy, ChangeDataValue, Origin, activity_id_prefix
from acctsync._errors import (
    AcctSyncError,
    AlreadyAContactError,
    ConfigurationError,
    InvalidRecordError,
    NoAccountError,
    UnknownContactError,
)
from acctsync._formats import decode_change_event, decode_record
from acctsync._ids import CONTACT_PREFIX, normalize_id
from acctsync._protocols import LoggingPolicy, Source, Store, WritableSource
from acctsync._records import (
    UNCHANGED,
    Account,
    Change,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    PartialUpdate,
    Person,
    RawChangeEvent,
    RawRecord,
    Refetch,
    check_field,
    same_value,
)
from acctsync._report import EditResult, Rejection, Suppression, SyncReport
from acctsync._state import (
    AccountState,
    Batch,
    Conversion,
    ConversionRequest,
    DeleteContacts,
    MoveContacts,
    StoredAccount,
    StoredContact,
    Watermark,
)

__all__ = ["CONVERSION_FIELD_MAP", "SyncEngine"]

STREAMS: Final[tuple[ObjectType, ...]] = ("Account", "Contact")

CONVERSION_FIELD_MAP: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "Company": (("Account", "Name"),),
    "Website": (("Account", "Website"),),
    "Industry": (("Account", "Industry"),),
    "AnnualRevenue": (("Account", "AnnualRevenue"),),
    "NumberOfEmployees": (("Account", "NumberOfEmployees"),),
    "Salutation": (("Contact", "Salutation"),),
    "FirstName": (("Contact", "FirstName"),),
    "LastName": (("Contact", "LastName"),),
    "Title": (("Contact", "Title"),),
    "Email": (("Contact", "Email"),),
    "Phone": (("Contact", "Phone"), ("Account", "Phone")),
    "MobilePhone": (("Contact", "MobilePhone"),),
    "LeadSource": (("Contact", "LeadSource"), ("Opportunity", "LeadSource")),
    "Street": (("Account", "BillingStreet"), ("Contact", "MailingStreet")),
    "City": (("Account", "BillingCity"), ("Contact", "MailingCity")),
    "State": (("Account", "BillingState"), ("Contact", "MailingState")),
    "PostalCode": (("Account", "BillingPostalCode"), ("Contact", "MailingPostalCode")),
    "Country": (("Account", "BillingCountry"), ("Contact", "MailingCountry")),
}
"""Where Convert Person puts a person's fields, as Salesforce's standard lead conversion does.

Fields not named here are not sent; pass them explicitly to `SyncEngine.convert_person`.
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _version(
    record: Account | Contact | Deletion | PartialUpdate | AccountState,
) -> tuple[datetime, bool]:
    return (record.system_modstamp, isinstance(record, Deletion))


def _micros(stamp: datetime) -> str:
    delta = stamp - datetime(1970, 1, 1, tzinfo=UTC)
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _diff(
    before: AccountState, after: Mapping[str, FieldValue]
) -> list[tuple[str, FieldValue, FieldValue]]:
    """The fields whose value contacts see changes, with old and new value."""
    old = before.upstream.fields
    if before.local_edits:
        old = {**old, **before.local_edits}
    changes = [
        (name, old.get(name), value)
        for name, value in after.items()
        if not same_value(old.get(name), value)
    ]
    changes.extend((name, value, None) for name, value in old.items() if name not in after)
    return [change for change in changes if not same_value(change[1], change[2])]


@define(slots=True)
class _Tally:
    """The mutable counts behind a `SyncReport`."""

    pages: int = 0
    accounts_upserted: int = 0
    accounts_deleted: int = 0
    contacts_upserted: int = 0
    contacts_deleted: int = 0
    already_applied: int = 0
    stale: int = 0
    local_edits_discarded: int = 0
    rejected: list[Rejection] = field(factory=list)
    suppressed: list[Suppression] = field(factory=list)
    activities: list[ChangeDataValue] = field(factory=list)
    refetch: list[Refetch] = field(factory=list)
    watermarks: dict[str, datetime] = field(factory=dict)

    def skipped(self, incoming: tuple[datetime, bool], stored: tuple[datetime, bool]) -> None:
        if incoming == stored:
            self.already_applied += 1
        else:
            self.stale += 1

    def report(self) -> SyncReport:
        return SyncReport(
            pages=self.pages,
            accounts_upserted=self.accounts_upserted,
            accounts_deleted=self.accounts_deleted,
            contacts_upserted=self.contacts_upserted,
            contacts_deleted=self.contacts_deleted,
            already_applied=self.already_applied,
            stale=self.stale,
            local_edits_discarded=self.local_edits_discarded,
            rejected=tuple(self.rejected),
            suppressed=tuple(self.suppressed),
            activities=tuple(self.activities),
            refetch=tuple(self.refetch),
            watermarks=dict(self.watermarks),
        )


@define(slots=True)
class _Pending:
    """A batch being assembled."""

    accounts: list[StoredAccount] = field(factory=list)
    contact_ops: list[MoveContacts | DeleteContacts] = field(factory=list)
    contacts: list[StoredContact] = field(factory=list)
    activities: list[ChangeDataValue] = field(factory=list)

    def take(self, watermark: Watermark | None = None) -> Batch:
        batch = Batch(
            accounts=self.accounts,
            contact_ops=self.contact_ops,
            contacts=self.contacts,
            activities=self.activities,
            watermark=watermark,
        )
        self.accounts, self.contact_ops, self.contacts, self.activities = [], [], [], []
        return batch


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{attribute.name.lstrip('_')} must be an int >= 1: {value!r}")


def _non_negative_delta(
    instance: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ConfigurationError(f"lookback must be a timedelta >= 0: {value!r}")


@define(repr=False)
class SyncEngine:
    """Applies Salesforce changes and local edits to a store, following every rule.

    ``policy`` decides when activity entries are logged (`ActivityPolicy()` by default);
    ``page_size`` bounds how many records are held at once; ``lookback`` is how far before
    the watermark each sync reads again, for records committed late (R1); ``clock`` gives
    the time of local edits.
    """

    _source: Source = field(kw_only=True)
    _store: Store = field(kw_only=True)
    _policy: LoggingPolicy = field(factory=ActivityPolicy, kw_only=True)
    _page_size: int = field(default=2000, kw_only=True, validator=_positive)
    _lookback: timedelta = field(
        default=timedelta(minutes=5), kw_only=True, validator=_non_negative_delta
    )
    _clock: Callable[[], datetime] = field(default=_utc_now, kw_only=True)

    def __repr__(self) -> str:
        return (
            f"<SyncEngine source={type(self._source).__name__}"
            f" store={type(self._store).__name__} policy={self._policy!r}>"
        )

    # -- Salesforce to local -------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Pull every change since the stored watermarks and apply it, page by page."""
        tally = _Tally()
        for stream in STREAMS:
            committed = mark = self._store.watermark(stream)
            since = None if mark is None else mark - self._lookback
            for page in self._source.read_changes(stream, since, page_size=self._page_size):
                tally.pages += 1
                changes = self._decode(stream, page, tally)
                for change in changes:
                    if mark is None or change.system_modstamp > mark:
                        mark = change.system_modstamp
                watermark = None
                if mark is not None and mark != committed:
                    watermark = Watermark(stream=stream, system_modstamp=mark)
                    committed = mark
                if stream == "Account":
                    self._apply_accounts(changes, watermark, tally)
                else:
                    self._apply_contacts(changes, watermark, tally)
            if mark is not None:
                tally.watermarks[stream] = mark
        return tally.report()

    def _commit(self, batch: Batch) -> None:
        # A page that only re-read known versions changes nothing: no need for a write.
        if batch:
            self._store.apply(batch)

    def _decode(
        self, stream: ObjectType, page: Iterable[Change], tally: _Tally
    ) -> list[Account | Contact | Deletion | PartialUpdate]:
        changes: list[Account | Contact | Deletion | PartialUpdate] = []
        for item in page:
            decoded: Sequence[Change]
            if isinstance(item, RawRecord | RawChangeEvent):
                try:
                    if isinstance(item, RawRecord):
                        decoded = [decode_record(item.object_type, item.payload)]
                    else:
                        decoded = decode_change_event(item.payload)
                except InvalidRecordError as error:
                    tally.rejected.append(_rejection(stream, item, error))
                    continue
            else:
                decoded = [item]
            for change in decoded:
                if isinstance(change, Refetch):
                    tally.refetch.append(change)
                elif _object_type(change) != stream:
                    tally.rejected.append(
                        Rejection(
                            object_type=_object_type(change),
                            record_id=getattr(change, "id", None),
                            reason=f"a {_object_type(change)} record in the {stream} stream",
                        )
                    )
                else:
                    changes.append(change)  # type: ignore[arg-type]
        changes.sort(key=lambda change: (change.system_modstamp, change.id))
        return changes

    def _apply_accounts(
        self,
        changes: Sequence[Account | Contact | Deletion | PartialUpdate],
        watermark: Watermark | None,
        tally: _Tally,
    ) -> None:
        states = dict(self._store.account_states({change.id for change in changes}))
        pending = _Pending()
        for change in changes:
            stored = states.get(change.id)
            if stored is not None and _version(change) <= _version(stored):
                tally.skipped(_version(change), _version(stored))
                continue
            if isinstance(change, Deletion):
                states[change.id] = change
                pending.accounts.append(change)
                tally.accounts_deleted += 1
                if change.master_record_id is None:
                    pending.contact_ops.append(DeleteContacts(account_id=change.id))
                else:
                    winner = self._winner(change.master_record_id, states)
                    pending.contact_ops.append(
                        MoveContacts(from_account_id=change.id, to_account_id=winner)
                    )
                self._commit(pending.take())
                continue
            upstream = self._upstream_account(change, stored, tally)
            if upstream is None:
                continue
            state = AccountState(upstream=upstream)
            if isinstance(stored, AccountState):
                if stored.local_edits:
                    tally.local_edits_discarded += 1
                changes_seen = _diff(stored, upstream.fields)
                if changes_seen:
                    entries = self._fan_out(
                        upstream.id,
                        changes_seen,
                        Origin.SALESFORCE,
                        _micros(upstream.system_modstamp),
                        upstream.system_modstamp,
                        tally.suppressed,
                    )
                    pending.activities.extend(entries)
                    tally.activities.extend(entries)
            states[upstream.id] = state
            pending.accounts.append(state)
            tally.accounts_upserted += 1
        self._commit(pending.take(watermark))

    def _upstream_account(
        self,
        change: Account | Contact | PartialUpdate,
        stored: StoredAccount | None,
        tally: _Tally,
    ) -> Account | None:
        if isinstance(change, Account):
            return change
        if isinstance(change, PartialUpdate) and isinstance(stored, AccountState):
            return Account(
                id=change.id,
                fields={**stored.upstream.fields, **change.fields},
                system_modstamp=change.system_modstamp,
            )
        # An update that carries only some fields of an account we do not hold cannot be
        # applied: the rest of the account must be read again.
        tally.refetch.append(
            Refetch(object_type="Account", ids=(change.id,), reason="update of unknown record")
        )
        return None

    def _apply_contacts(
        self,
        changes: Sequence[Account | Contact | Deletion | PartialUpdate],
        watermark: Watermark | None,
        tally: _Tally,
    ) -> None:
        states = dict(self._store.contact_states({change.id for change in changes}))
        accounts: dict[str, StoredAccount] = {}
        contacts: list[StoredContact] = []
        for change in changes:
            stored = states.get(change.id)
            if stored is not None and _version(change) <= _version(stored):
                tally.skipped(_version(change), _version(stored))
                continue
            new: StoredContact
            if isinstance(change, Deletion):
                new = change
                tally.contacts_deleted += 1
            else:
                contact = self._upstream_contact(change, stored, tally)
                if contact is None:
                    continue
                if contact.account_id is not None:
                    winner = self._winner(contact.account_id, accounts)
                    if winner != contact.account_id:
                        contact = attrs.evolve(contact, account_id=winner)
                new = contact
                tally.contacts_upserted += 1
            states[change.id] = new
            contacts.append(new)
        self._commit(Batch(contacts=contacts, watermark=watermark))

    def _upstream_contact(
        self,
        change: Account | Contact | PartialUpdate,
        stored: StoredContact | None,
        tally: _Tally,
    ) -> Contact | None:
        if isinstance(change, Contact):
            return change
        if isinstance(change, PartialUpdate) and isinstance(stored, Contact):
            account_id = stored.account_id if change.account_id is UNCHANGED else change.account_id
            return Contact(
                id=change.id,
                account_id=account_id,
                fields={**stored.fields, **change.fields},
                system_modstamp=change.system_modstamp,
            )
        tally.refetch.append(
            Refetch(object_type="Contact", ids=(change.id,), reason="update of unknown record")
        )
        return None

    def _winner(self, account_id: str, known: dict[str, StoredAccount]) -> str:
        """Follow merges from ``account_id`` to the account that survived them (R4)."""
        seen = {account_id}
        while True:
            if account_id not in known:
                known.update(self._store.account_states([account_id]))
            stored = known.get(account_id)
            if not isinstance(stored, Deletion) or stored.master_record_id is None:
                return account_id
            account_id = stored.master_record_id
            if account_id in seen:
                raise AcctSyncError(f"merges of account {account_id!r} form a cycle")
            seen.add(account_id)

    # -- Activities ---------------------------------------------------------------------

    def _fan_out(
        self,
        account_id: str,
        changes: Sequence[tuple[str, FieldValue, FieldValue]],
        origin: Origin,
        version: str,
        occurred_at: datetime,
        suppressed: list[Suppression],
    ) -> list[ChangeDataValue]:
        """One entry per contact and changed field, unless the policy says otherwise (S7, S8)."""
        count = self._store.count_contacts(account_id)
        if count == 0:
            return []
        if not self._policy.logs_activities(
            account_id=account_id, contact_count=count, origin=origin
        ):
            suppressed.append(
                Suppression(
                    account_id=account_id,
                    contact_count=count,
                    entries_skipped=count * len(changes),
                    origin=origin,
                )
            )
            return []
        # The hot path of a large account: the id prefix is built once, not per entry.
        prefix = activity_id_prefix(origin, account_id, version)
        return [
            ChangeDataValue(
                id=f"{prefix}{contact_id}:{name}",
                contact_id=contact_id,
                account_id=account_id,
                field=name,
                old_value=old,
                new_value=new,
                origin=origin,
                occurred_at=occurred_at,
            )
            for contact_id in self._store.contact_ids(account_id)
            for name, old, new in changes
        ]

    # -- Local edits --------------------------------------------------------------------

    def edit_account_field(self, *, contact_id: str, field: str, value: FieldValue) -> EditResult:
        """Set an account field locally through one of the account's contacts (S2, S3).

        Every contact of the account sees the new value; Salesforce does not (S1), and the
        next newer Salesforce version of the account overwrites it. Raises
        `UnknownContactError` for a contact the store does not hold and `NoAccountError`
        for a contact without a synced account: no account is created locally (S5).
        """
        contact_id = normalize_id(contact_id, prefix=CONTACT_PREFIX)
        check_field(field, value, record_id=contact_id)
        contact = self._store.contact_states([contact_id]).get(contact_id)
        if not isinstance(contact, Contact):
            raise UnknownContactError(contact_id)
        account_id = contact.account_id
        state = (
            None
            if account_id is None
            else self._store.account_states([account_id]).get(account_id)
        )
        if account_id is None or not isinstance(state, AccountState):
            raise NoAccountError(contact_id, account_id)
        old = state.value(field)
        if same_value(old, value):
            return EditResult(
                contact_id=contact_id,
                account_id=account_id,
                field=field,
                old_value=old,
                new_value=value,
                changed=False,
                contact_count=self._store.count_contacts(account_id),
            )
        revision = state.local_revision + 1
        new_state = AccountState(
            upstream=state.upstream,
            local_edits={**state.local_edits, field: value},
            local_revision=revision,
        )
        suppressed: list[Suppression] = []
        entries = self._fan_out(
            account_id,
            [(field, old, value)],
            Origin.LOCAL,
            f"{_micros(state.system_modstamp)}r{revision}",
            self._clock(),
            suppressed,
        )
        self._store.apply(Batch(accounts=[new_state], activities=entries))
        return EditResult(
            contact_id=contact_id,
            account_id=account_id,
            field=field,
            old_value=old,
            new_value=value,
            changed=True,
            contact_count=self._store.count_contacts(account_id),
            activities=tuple(entries),
            suppressed=suppressed[0] if suppressed else None,
        )

    # -- Convert Person -----------------------------------------------------------------

    def convert_person(
        self,
        person: Person,
        *,
        account_fields: Mapping[str, FieldValue] | None = None,
        contact_fields: Mapping[str, FieldValue] | None = None,
        opportunity_fields: Mapping[str, FieldValue] | None = None,
    ) -> Conversion:
        """Create a Contact, Account and Opportunity for ``person`` in Salesforce (S6).

        The records reach the local store with the next sync, like any Salesforce change;
        nothing is written locally but the record of the conversion. Converting the same
        person again returns the first conversion and creates nothing. Raises
        `AlreadyAContactError` for a person that is already a contact, and
        `InvalidRecordError` when the person lacks ``LastName`` or ``Company``.

        Person fields map as `CONVERSION_FIELD_MAP` says; the ``*_fields`` arguments add
        to or override what each record gets.
        """
        done = self._store.conversion(person.id)
        if done is not None:
            return done
        existing = person.contact_id or _contact_id_or_none(person.id)
        if existing is not None:
            raise AlreadyAContactError(person.id, existing)
        if not isinstance(self._source, WritableSource):
            raise ConfigurationError(
                f"{type(self._source).__name__} has no write side: it cannot convert a person"
            )
        for required in ("LastName", "Company"):
            value = person.fields.get(required)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRecordError(
                    "Convert Person needs a non-empty value", record_id=person.id, field=required
                )
        mapped: dict[str, dict[str, FieldValue]] = {
            "Account": {},
            "Contact": {},
            "Opportunity": {},
        }
        for name, value in person.fields.items():
            for object_type, target in CONVERSION_FIELD_MAP.get(name, ()):
                mapped[object_type][target] = value
        company = person.fields["Company"]
        opportunity: dict[str, FieldValue] = {
            "Name": company,
            "StageName": "Prospecting",
            "CloseDate": self._clock().date(),
            **mapped["Opportunity"],
        }
        request = ConversionRequest(
            person_id=person.id,
            idempotency_key=f"acctsync-convert-person:{person.id}",
            account_fields={**mapped["Account"], **(account_fields or {})},
            contact_fields={**mapped["Contact"], **(contact_fields or {})},
            opportunity_fields={**opportunity, **(opportunity_fields or {})},
        )
        for fields in (request.account_fields, request.contact_fields, request.opportunity_fields):
            for name, value in fields.items():
                check_field(name, value, record_id=person.id)
        conversion = self._source.convert_person(request)
        self._store.apply(Batch(conversions=[conversion]))
        return conversion


def _contact_id_or_none(value: str) -> str | None:
    try:
        return normalize_id(value, prefix=CONTACT_PREFIX)
    except InvalidRecordError:
        return None


def _object_type(change: Change) -> str:
    if isinstance(change, Account):
        return "Account"
    if isinstance(change, Contact):
        return "Contact"
    if isinstance(change, RawRecord):
        return change.object_type
    if isinstance(change, RawChangeEvent):
        return "ChangeEvent"
    return change.object_type


def _rejection(
    stream: str, item: RawRecord | RawChangeEvent, error: InvalidRecordError
) -> Rejection:
    record_id = error.record_id
    if record_id is None and isinstance(item, RawRecord):
        raw_id = item.payload.get("Id") if isinstance(item.payload, Mapping) else None
        record_id = raw_id if isinstance(raw_id, str) else None
    object_type = item.object_type if isinstance(item, RawRecord) else stream
    return Rejection(
        object_type=object_type, record_id=record_id, reason=error.reason, field=error.field
    )
