"""The engine held against a plain model of the rules, by a hypothesis state machine.

The machine plays a small Salesforce org (an `InMemorySource`) through random changes:
account and contact upserts, reparentings, contacts whose account does not exist yet
(R5), deletes, merges, undeletes, late commits inside the lookback window (R1), local
edits (S2, S3, S5), syncs with small pages, replays and crashed syncs resumed (R2). Next
to it the test keeps two plain models written from the specification, in dictionaries:

- the *org*: what Salesforce holds, changed as Salesforce changes it (a deletion deletes
  the account's contacts, a merge moves them to the winner without touching their
  ``SystemModstamp``, an undelete restores what the deletion took);
- the *store*: what the local copy must hold after each step, and the activity log it
  must have, entry by entry (S7, S8).

After every step the real store must equal the modelled one; after every sync its
Salesforce values must also equal the org's (nothing missed, nothing extra).

The model restates the rules (`docs/decisions.md`) and shares no code with the engine:

- A sync reads the accounts and the contacts, each from its watermark minus five
  minutes, inclusively, and applies them in one order: by ``SystemModstamp``; on equal
  stamps upserts before deletions and accounts before contacts, then by ID. A version applies only
  when newer than the stored one: a later stamp; on the same stamp (two saves in one
  second) a deletion over a live record, or a live record with other values (R3).
- Field names are case-insensitive (R9): each has the spelling a sync first read it in
  (by stamp, then ID, each object on its own), or the standard Account field's that a
  local edit named first. A record Salesforce could not send (a name that is no API name,
  a string that is not Unicode) is rejected and changes nothing (R10).
- A newer account version replaces the upstream fields and drops every local edit. Each
  field whose value the contacts saw (upstream plus local edits) changes logs one entry
  per contact the account has at that point of the order; none when the account has more
  contacts than the policy allows, and none for a first appearance or an undelete.
- An account deletion tombstones its contacts; a merge moves them to the winner (and on
  along the winner's own later merges). A contact read from the source belongs to the
  account it names: the source shows it as it is now, after any merge.
- A local edit through a contact changes the account's field and logs one entry per
  contact of the account, under the same policy.

The org makes only histories Salesforce can make and a sync can see: a late commit names
an account as it was when the contact was written, and a merge loser is undeleted only
after a sync has read its merge (a source shows latest versions only, so a merge undone
before any sync read it is invisible; see `docs/decisions.md`).

At the end, histories the machine found are replayed step by step, as plain tests.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from acctsync import (
    Account,
    AccountState,
    ActivityPolicy,
    ChangeDataValue,
    Contact,
    Deletion,
    FieldValue,
    NoAccountError,
    ObjectType,
    Origin,
    SyncEngine,
    SyncReport,
    UnknownContactError,
    UnknownFieldError,
)
from acctsync.testing import InMemorySource, InMemoryStore, make_id
from crashes import CrashError, crashing
from plain_rules import same

T = TypeVar("T")

MAX_CONTACTS = 3
LOOKBACK = timedelta(minutes=5)
# SystemModstamp is kept to the second (R3): the org stamps in whole seconds.
SECOND = timedelta(seconds=1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)

ACCOUNT_IDS = [make_id("001", n) for n in range(6)]
CONTACT_IDS = [make_id("003", n) for n in range(9)]
FIELD_NAMES = ["Name", "Industry", "Rating"]  # standard Account fields
STANDARD = {name.lower(): name for name in FIELD_NAMES}
TYPO = "Indsutry"
# The names as sources write them: Salesforce's spelling, or an older Data Loader's (R9).
SPELLINGS = [*FIELD_NAMES, "NAME", "industry", "INDUSTRY", "rating"]
# Few values, chosen so that equal-looking ones meet: 1, 1.0 and Decimal("1.00") are the
# same number, True is not 1, a date is not a datetime.
VALUES: list[FieldValue] = [
    "Acme",
    "Globex",
    1,
    1.0,
    Decimal("1.00"),
    2,
    True,
    False,
    None,
    date(2024, 1, 1),
    datetime(2024, 1, 1, tzinfo=UTC),
]

field_maps = st.lists(
    st.tuples(st.sampled_from(SPELLINGS), st.sampled_from(VALUES)),
    max_size=3,
    unique_by=lambda entry: entry[0].lower(),
).map(dict)
steps = st.sampled_from(
    [timedelta(0), SECOND, timedelta(seconds=2), timedelta(seconds=30), timedelta(minutes=7)]
)
# How far before the watermark a late commit is stamped: at most the lookback window.
late_by = st.sampled_from([timedelta(0), SECOND, 2 * SECOND, LOOKBACK - SECOND, LOOKBACK])
page_sizes = st.sampled_from([1, 3, 1000])
# What no real org sends: a sync rejects the record, whatever store it writes to (R10).
UNSENDABLE: dict[str, dict[str, FieldValue]] = {
    "a lone surrogate": {"Name": "Acme \ud83d"},
    "a NUL in a name": {"Na\x00me": "Acme"},
    "a name too long": {"N" * 256: "Acme"},
    "a space in a name": {"Annual Revenue": 1},
}


# -- Plain rules ----------------------------------------------------------------------------


def token(value: FieldValue) -> tuple[str, Any]:
    """A value with its type, so that ``1``, ``1.0`` and ``True`` stay apart."""
    return (type(value).__name__, value)


def tokens(fields: Mapping[str, FieldValue]) -> dict[str, tuple[str, Any]]:
    return {name: token(value) for name, value in fields.items()}


def stamp_of(record: Account | Contact | Deletion) -> datetime:
    return record.deleted_at if isinstance(record, Deletion) else record.system_modstamp


def version_of(record: Account | Contact | Deletion) -> tuple[datetime, bool]:
    return (stamp_of(record), isinstance(record, Deletion))


def same_fields(a: Mapping[str, FieldValue], b: Mapping[str, FieldValue]) -> bool:
    """Whether two records hold the same values; a field one lacks holds nothing."""
    return all(same(a.get(name), b.get(name)) for name in a.keys() | b.keys())


def place(
    incoming: tuple[datetime, bool], stored: tuple[datetime, bool], other_values: bool
) -> str:
    """R3: ``"newer"``, ``"same"`` or ``"stale"``; ``other_values`` when both are live and
    the incoming one's values differ from the stored one's."""
    (stamp, deleted), (stored_stamp, stored_deleted) = incoming, stored
    if stamp != stored_stamp:
        return "newer" if stamp > stored_stamp else "stale"
    if deleted != stored_deleted:
        return "newer" if deleted else "stale"
    return "newer" if not deleted and other_values else "same"


Entry = tuple[str, str, str, tuple[str, Any], tuple[str, Any], Origin, datetime]


def entry_key(entry: ChangeDataValue) -> Entry:
    return (
        entry.contact_id,
        entry.account_id,
        entry.field,
        token(entry.old_value),
        token(entry.new_value),
        entry.origin,
        entry.occurred_at,
    )


@dataclass
class ModelAccount:
    stamp: datetime
    deleted: bool
    master: str | None = None
    upstream: dict[str, FieldValue] = field(default_factory=dict)
    edits: dict[str, FieldValue] = field(default_factory=dict)

    @property
    def version(self) -> tuple[datetime, bool]:
        return (self.stamp, self.deleted)

    def effective(self) -> dict[str, FieldValue]:
        return {**self.upstream, **self.edits}


@dataclass
class ModelContact:
    stamp: datetime
    deleted: bool
    account_id: str | None = None
    fields: dict[str, FieldValue] = field(default_factory=dict)

    @property
    def version(self) -> tuple[datetime, bool]:
        return (self.stamp, self.deleted)


@dataclass
class ModelSync:
    """What one sync must do, counted as `SyncReport` counts it."""

    entries: Counter[Entry] = field(default_factory=Counter)
    suppressed: Counter[tuple[str, int, int, Origin]] = field(default_factory=Counter)
    accounts_upserted: int = 0
    accounts_deleted: int = 0
    contacts_upserted: int = 0
    contacts_deleted: int = 0
    already_applied: int = 0
    stale: int = 0
    local_edits_discarded: int = 0
    rejected: list[str] = field(default_factory=list)


def note(what: str) -> None:
    """Count ``what`` in hypothesis's statistics (outside a hypothesis test: do nothing)."""
    if currently_in_test_context():
        event(what)


def pick(data: st.DataObject, likely: Sequence[T], possible: Sequence[T]) -> T:
    """One of ``possible``, drawn from ``likely`` half of the time when there are any."""
    if likely:
        return data.draw(st.one_of(st.sampled_from(likely), st.sampled_from(possible)))
    return data.draw(st.sampled_from(possible))


class AccountSync(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.source = InMemorySource()
        self.store = self.new_store()
        self.policy = ActivityPolicy(max_contacts_per_account=MAX_CONTACTS)
        self.edit_time = datetime(2030, 1, 1, tzinfo=UTC)
        self.engine = self.make_engine(page_size=3)
        self.now = T0
        # The org, as Salesforce holds it.
        self.org_accounts: dict[str, Account | Deletion] = {}
        self.org_contacts: dict[str, Contact | Deletion] = {}
        self.recycle_bin: dict[str, Account | Contact] = {}
        self.deleted_with: dict[str, list[str]] = {}
        self.undeleted: set[str] = set()
        self.lifecycle: dict[str, datetime] = {}  # when each account was last (un)deleted
        self.purged: set[str] = set()  # gone beyond the recycle bin; IDs are never reused
        # The local copy, as the rules say it must be.
        self.accounts: dict[str, ModelAccount] = {}
        self.contacts: dict[str, ModelContact] = {}
        self.marks: dict[str, datetime] = {}
        self.log: Counter[Entry] = Counter()
        self.spelling: dict[str, dict[str, str]] = {"Account": {}, "Contact": {}}
        # Records Salesforce could not have sent, each rejected by every sync that reads it.
        self.bad: list[tuple[str, datetime, str]] = []

    def new_store(self) -> Any:
        """The store under test: a fresh one per run of the machine."""
        return InMemoryStore()

    def make_engine(self, *, page_size: int, **options: Any) -> SyncEngine:
        return SyncEngine(
            source=self.source,
            store=self.store,
            policy=self.policy,
            page_size=page_size,
            clock=lambda: self.edit_time,
            **options,
        )

    # -- The org ---------------------------------------------------------------------------

    @initialize(
        account_fields=st.lists(field_maps, min_size=2, max_size=4),
        contacts=st.lists(
            st.tuples(st.integers(0, 5), field_maps), min_size=4, max_size=len(CONTACT_IDS)
        ),
    )
    def populate(
        self,
        account_fields: list[dict[str, FieldValue]],
        contacts: list[tuple[int, dict[str, FieldValue]]],
    ) -> None:
        """Start from a synced org, so that changes meet accounts that have contacts."""
        for account_id, fields in zip(ACCOUNT_IDS, account_fields, strict=False):
            self.put_account(Account(id=account_id, fields=fields, system_modstamp=self.now))
        targets = [*self.live_accounts(), None]
        for contact_id, (target, fields) in zip(CONTACT_IDS, contacts, strict=False):
            self.now += SECOND
            self.put_contact(
                Contact(
                    id=contact_id,
                    account_id=targets[target % len(targets)],
                    fields=fields,
                    system_modstamp=self.now,
                )
            )
        self.sync(page_size=3)

    def next_stamp(
        self, step: timedelta, current: Account | Contact | Deletion | None
    ) -> datetime:
        stamp = self.now + step
        if current is not None and stamp <= stamp_of(current):
            stamp = stamp_of(current) + SECOND
        self.now = max(self.now, stamp)
        return stamp

    def live_accounts(self) -> list[str]:
        return [a for a in ACCOUNT_IDS if isinstance(self.org_accounts.get(a), Account)]

    def unborn_accounts(self) -> list[str]:
        return [a for a in ACCOUNT_IDS if a not in self.org_accounts and a not in self.purged]

    def writable(self, records: Mapping[str, object], pool: Sequence[str]) -> list[str]:
        """IDs that may be upserted: live records and new ones (a deleted ID stays deleted)."""
        return [
            i for i in pool if not isinstance(records.get(i), Deletion) and i not in self.purged
        ]

    def account_targets(self) -> list[str | None]:
        # A contact points at a live account, at one that does not exist yet (R5), or at
        # none; never at a deleted one, which Salesforce would refuse.
        return [*self.live_accounts(), None, *self.unborn_accounts()]

    def put_account(self, record: Account | Deletion) -> None:
        self.org_accounts[record.id] = record
        if isinstance(record, Account):
            self.source.upsert(record)
        else:
            self.lifecycle[record.id] = record.deleted_at
            self.source.delete(record)

    def put_contact(self, record: Contact | Deletion) -> None:
        self.org_contacts[record.id] = record
        if isinstance(record, Contact):
            self.source.upsert(record)
        else:
            self.source.delete(record)

    def org_members(self, account_id: str) -> list[Contact]:
        return [
            c
            for c in self.org_contacts.values()
            if isinstance(c, Contact) and c.account_id == account_id
        ]

    @precondition(lambda self: self.writable(self.org_accounts, ACCOUNT_IDS))
    @rule(data=st.data(), fields=field_maps, keep=st.booleans(), step=steps)
    def upsert_account(
        self, data: st.DataObject, fields: dict[str, FieldValue], keep: bool, step: timedelta
    ) -> None:
        account_id = pick(
            data, self.live_accounts(), self.writable(self.org_accounts, ACCOUNT_IDS)
        )
        current = self.org_accounts.get(account_id)
        if keep and isinstance(current, Account):
            fields = dict(current.fields)  # a newer version that changes no field
        stamp = self.next_stamp(step, current)
        self.put_account(Account(id=account_id, fields=fields, system_modstamp=stamp))

    @precondition(lambda self: self.writable(self.org_contacts, CONTACT_IDS))
    @rule(data=st.data(), fields=field_maps, keep=st.booleans(), step=steps)
    def upsert_contact(
        self, data: st.DataObject, fields: dict[str, FieldValue], keep: bool, step: timedelta
    ) -> None:
        contact_id = data.draw(st.sampled_from(self.writable(self.org_contacts, CONTACT_IDS)))
        account_id = pick(data, self.live_accounts(), self.account_targets())
        current = self.org_contacts.get(contact_id)
        if keep and isinstance(current, Contact):
            fields = dict(current.fields)  # a pure reparenting (S4)
        stamp = self.next_stamp(step, current)
        self.put_contact(
            Contact(id=contact_id, account_id=account_id, fields=fields, system_modstamp=stamp)
        )

    def in_window(self, stream: str, record: Account | Contact | Deletion) -> bool:
        """Whether the next sync reads ``record``'s stamp: a second save in its second can
        still come (later ones are long past)."""
        mark = self.marks.get(stream)
        return mark is None or stamp_of(record) >= mark - LOOKBACK

    def settled(self, stamp: datetime) -> list[str | None]:
        """Accounts a contact saved at ``stamp`` may name: what they are now they were then
        (not deleted, merged or brought back since), as in a history Salesforce makes."""
        return [
            a
            for a in self.account_targets()
            if a is None or a not in self.lifecycle or self.lifecycle[a] < stamp
        ]

    @rule(data=st.data(), fields=field_maps)
    def save_account_again_in_its_second(
        self, data: st.DataObject, fields: dict[str, FieldValue]
    ) -> None:
        """A second save in the same second: Salesforce stamps it the same (R3)."""
        eligible = [
            a for a in self.live_accounts() if self.in_window("Account", self.org_accounts[a])
        ]
        if not eligible:
            return
        account_id = data.draw(st.sampled_from(eligible))
        current = self.org_accounts[account_id]
        assert isinstance(current, Account)
        self.put_account(
            Account(id=account_id, fields=fields, system_modstamp=current.system_modstamp)
        )

    @rule(data=st.data(), fields=field_maps)
    def save_contact_again_in_its_second(
        self, data: st.DataObject, fields: dict[str, FieldValue]
    ) -> None:
        """A contact saved twice in one second, the second time maybe to another account."""
        eligible = []
        for contact_id, record in self.org_contacts.items():
            if isinstance(record, Contact) and self.in_window("Contact", record):
                targets = self.settled(record.system_modstamp)
                if record.account_id in targets:
                    eligible.append(contact_id)
        if not eligible:
            return
        contact_id = data.draw(st.sampled_from(sorted(eligible)))
        current = self.org_contacts[contact_id]
        assert isinstance(current, Contact)
        account_id = data.draw(st.sampled_from(self.settled(current.system_modstamp)))
        self.put_contact(
            Contact(
                id=contact_id,
                account_id=account_id,
                fields=fields,
                system_modstamp=current.system_modstamp,
            )
        )

    @rule(
        kind=st.sampled_from(["Account", "Contact"]), problem=st.sampled_from(sorted(UNSENDABLE))
    )
    def send_what_salesforce_could_not(self, kind: str, problem: str) -> None:
        """A record with a name that is no API name, or text that is not Unicode (R10)."""
        record_id = make_id("001" if kind == "Account" else "003", 100 + len(self.bad))
        at = self.now
        payload = {
            "attributes": {"type": kind},
            "Id": record_id,
            "SystemModstamp": f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}+0000",
            **UNSENDABLE[problem],
        }
        self.source.add_raw(kind, payload)
        self.bad.append((kind, at, record_id))

    @precondition(lambda self: "Account" in self.marks)
    @rule(data=st.data(), fields=field_maps, late=late_by)
    def late_account_commit(
        self, data: st.DataObject, fields: dict[str, FieldValue], late: timedelta
    ) -> None:
        """An account committed after a later stamp was read, inside the lookback (R1)."""
        stamp = self.marks["Account"] - late
        eligible = [
            a
            for a in self.writable(self.org_accounts, ACCOUNT_IDS)
            if a not in self.org_accounts or stamp_of(self.org_accounts[a]) < stamp
        ]
        if not eligible:
            return
        account_id = data.draw(st.sampled_from(eligible))
        self.put_account(Account(id=account_id, fields=fields, system_modstamp=stamp))

    @precondition(lambda self: "Contact" in self.marks)
    @rule(data=st.data(), fields=field_maps, late=late_by)
    def late_contact_commit(
        self, data: st.DataObject, fields: dict[str, FieldValue], late: timedelta
    ) -> None:
        """A contact committed after a later stamp was read, inside the lookback (R1)."""
        stamp = self.marks["Contact"] - late
        eligible = [
            c
            for c in self.writable(self.org_contacts, CONTACT_IDS)
            if c not in self.org_contacts or stamp_of(self.org_contacts[c]) < stamp
        ]
        if not eligible:
            return
        contact_id = data.draw(st.sampled_from(eligible))
        settled = self.settled(stamp)
        # Undeleted accounts are where stale merge tombstones bite.
        likely = [a for a in settled if a in self.undeleted] or [a for a in settled if a]
        account_id = pick(data, likely, settled)
        self.put_contact(
            Contact(id=contact_id, account_id=account_id, fields=fields, system_modstamp=stamp)
        )

    @precondition(lambda self: self.live_accounts())
    @rule(data=st.data(), step=steps)
    def delete_account(self, data: st.DataObject, step: timedelta) -> None:
        account_id = data.draw(st.sampled_from(self.live_accounts()))
        current = self.org_accounts[account_id]
        assert isinstance(current, Account)
        deletion = Deletion(
            object_type="Account", id=account_id, deleted_at=self.next_stamp(step, current)
        )
        # Salesforce deletes the account's contacts with it, into the recycle bin.
        self.recycle_bin[account_id] = current
        members = self.org_members(account_id)
        self.deleted_with[account_id] = [c.id for c in members]
        for contact in members:
            self.recycle_bin[contact.id] = contact
            self.org_contacts[contact.id] = Deletion(
                object_type="Contact", id=contact.id, deleted_at=deletion.deleted_at
            )
        self.put_account(deletion)

    @precondition(lambda self: len(self.live_accounts()) >= 2)
    @rule(data=st.data(), step=steps)
    def merge_accounts(self, data: st.DataObject, step: timedelta) -> None:
        live = self.live_accounts()
        # Merging into an undeleted account is where stale merge tombstones bite.
        winner = pick(data, [a for a in live if a in self.undeleted], live)
        loser = data.draw(st.sampled_from([a for a in live if a != winner]))
        current = self.org_accounts[loser]
        assert isinstance(current, Account)
        deletion = Deletion(
            object_type="Account",
            id=loser,
            deleted_at=self.next_stamp(step, current),
            master_record_id=winner,
        )
        # Salesforce moves the loser's contacts to the winner, keeping their stamps (R4).
        self.recycle_bin[loser] = current
        for contact in self.org_members(loser):
            self.org_contacts[contact.id] = attrs.evolve(contact, account_id=winner)
        self.put_account(deletion)

    @rule(data=st.data(), step=steps, merge=st.booleans())
    def delete_contact(self, data: st.DataObject, step: timedelta, merge: bool) -> None:
        live = [c for c in CONTACT_IDS if isinstance(self.org_contacts.get(c), Contact)]
        if not live:
            return
        contact_id = data.draw(st.sampled_from(live))
        others = [c for c in live if c != contact_id]
        master = data.draw(st.sampled_from(others)) if merge and others else None
        current = self.org_contacts[contact_id]
        assert isinstance(current, Contact)
        self.recycle_bin[contact_id] = current
        self.put_contact(
            Deletion(
                object_type="Contact",
                id=contact_id,
                deleted_at=self.next_stamp(step, current),
                master_record_id=master,
            )
        )

    def undeletable(self) -> list[str]:
        waiting = {c for contacts in self.deleted_with.values() for c in contacts}
        out = []
        for record_id, record in self.recycle_bin.items():
            if isinstance(record, Account):
                if self.merge_seen(record_id):
                    out.append(record_id)
            elif record_id not in waiting and not isinstance(
                self.org_accounts.get(record.account_id or ""), Deletion
            ):
                # A contact comes back on its own only to a live account (or none); one
                # deleted with its account comes back with the account.
                out.append(record_id)
        return sorted(out)

    def merge_seen(self, account_id: str) -> bool:
        """Whether an undelete of ``account_id`` leaves its merge, if any, visible to a sync.

        A source shows each record's latest version only: a merge loser undeleted before a
        sync read its merge looks never merged, and the contacts Salesforce moved without
        a new stamp stay behind locally. No engine can see that, so the org does not do it.
        """
        deletion = self.org_accounts[account_id]
        assert isinstance(deletion, Deletion)
        if deletion.master_record_id is None:
            return True
        stored = self.accounts.get(account_id)
        return stored is not None and stored.version == version_of(deletion)

    @precondition(lambda self: self.undeletable())
    @rule(data=st.data(), step=steps)
    def undelete(self, data: st.DataObject, step: timedelta) -> None:
        record_id = data.draw(st.sampled_from(self.undeletable()))
        buried = self.recycle_bin.pop(record_id)
        if isinstance(buried, Account):
            at = self.next_stamp(step, self.org_accounts[record_id])
            self.org_accounts[record_id] = attrs.evolve(buried, system_modstamp=at)
            self.source.undelete("Account", record_id, at=at)
            self.undeleted.add(record_id)
            self.lifecycle[record_id] = at
            for contact_id in self.deleted_with.pop(record_id, []):
                contact = self.recycle_bin.pop(contact_id)
                assert isinstance(contact, Contact)
                self.org_contacts[contact_id] = attrs.evolve(contact, system_modstamp=at)
        else:
            at = self.next_stamp(step, self.org_contacts[record_id])
            self.org_contacts[record_id] = attrs.evolve(buried, system_modstamp=at)
            self.source.undelete("Contact", record_id, at=at)

    def purgeable(self) -> list[str]:
        """Records a purge may take here, alone: contacts not waiting for their account's
        undelete, and accounts no contact names or waits for."""
        named = {
            record.account_id
            for record in [*self.org_contacts.values(), *self.recycle_bin.values()]
            if isinstance(record, Contact)
        }
        waiting = {c for contacts in self.deleted_with.values() for c in contacts}
        accounts = [
            a for a in self.org_accounts if a not in named and not self.deleted_with.get(a)
        ]
        return sorted([*accounts, *(c for c in self.org_contacts if c not in waiting)])

    # A read that rejected anything purges nothing: records Salesforce could not send stay.
    @precondition(lambda self: self.purgeable() and not self.bad)
    @rule(data=st.data(), page_size=page_sizes)
    def purge_and_reconcile(self, data: st.DataObject, page_size: int) -> None:
        """A record deleted beyond the recycle bin: no sync reads that, a reconciliation
        deletes it as of its own time; on a synced store it changes nothing else."""
        self.sync(page_size)
        record_id = data.draw(st.sampled_from(self.purgeable()))
        kind: ObjectType = "Account" if record_id in ACCOUNT_IDS else "Contact"
        self.source.purge(kind, record_id)
        (self.org_accounts if kind == "Account" else self.org_contacts).pop(record_id)
        self.recycle_bin.pop(record_id, None)
        self.deleted_with.pop(record_id, None)
        self.purged.add(record_id)
        self.edit_time += timedelta(seconds=1)  # the reconciliation's clock
        report = self.make_engine(page_size=page_size).reconcile()
        local: Mapping[str, ModelAccount | ModelContact] = (
            self.accounts if kind == "Account" else self.contacts
        )
        was_live = record_id in local and not local[record_id].deleted
        if kind == "Account" and was_live:
            self.accounts[record_id] = ModelAccount(stamp=self.edit_time, deleted=True)
        elif was_live:
            self.contacts[record_id] = ModelContact(stamp=self.edit_time, deleted=True)
        note(f"reconcile: purged a live {kind.lower()}={was_live}")
        deleted = (int(was_live and kind == "Account"), int(was_live and kind == "Contact"))
        assert (report.accounts_deleted, report.contacts_deleted) == deleted
        assert report.accounts_upserted == report.contacts_upserted == 0
        assert report.activities == report.suppressed == report.rejected == ()
        assert report.refreshed == report.stale == report.local_edits_discarded == 0
        assert dict(report.watermarks) == self.marks
        self.check_against_org()

    # -- The local copy, as the rules say ------------------------------------------------

    def read(self) -> list[Account | Contact | Deletion]:
        """What a sync reads and in which order it applies it.

        Each stream from its watermark minus the lookback, inclusive; both merged by
        stamp; on equal stamps upserts before deletions and accounts before contacts, then
        by ID (a contact moved off an account in the second it was deleted stays).
        """
        records: list[Account | Contact | Deletion] = []
        for stream, org in (("Account", self.org_accounts), ("Contact", self.org_contacts)):
            mark = self.marks.get(stream)
            since = None if mark is None else mark - LOOKBACK
            read = [r for r in org.values() if since is None or stamp_of(r) >= since]
            if read:
                newest = max(stamp_of(r) for r in read)
                self.marks[stream] = newest if mark is None else max(mark, newest)
            records.extend(read)
        return sorted(
            records,
            key=lambda r: (
                stamp_of(r),
                isinstance(r, Deletion),
                isinstance(r, Contact) or (isinstance(r, Deletion) and r.object_type == "Contact"),
                r.id,
            ),
        )

    def members(self, account_id: str) -> list[str]:
        return [
            c
            for c, state in self.contacts.items()
            if not state.deleted and state.account_id == account_id
        ]

    def winner(self, account_id: str, merged_at: datetime) -> str:
        """Where a merge at ``merged_at`` into ``account_id`` puts the loser's contacts (R4).

        They follow the winner's own merge, and so on, if it came later. A merge stamped
        before ``merged_at`` cannot have moved them: Salesforce merges into live accounts
        only, so that tombstone is stale (the account was brought back since, in a version
        this sync reads later), and the contacts stay with the account named.
        """
        seen = {account_id}
        while True:
            state = self.accounts.get(account_id)
            if state is None or not state.deleted or state.master is None:
                return account_id
            if state.stamp < merged_at or state.master in seen:
                return account_id
            account_id, merged_at = state.master, state.stamp
            seen.add(account_id)

    def fan_out(
        self,
        account_id: str,
        changes: Sequence[tuple[str, FieldValue, FieldValue]],
        origin: Origin,
        at: datetime,
        into: ModelSync,
    ) -> None:
        members = self.members(account_id)
        if not members:
            return
        if len(members) > MAX_CONTACTS:
            into.suppressed[(account_id, len(members), len(members) * len(changes), origin)] += 1
            return
        for contact_id in members:
            for name, old, new in changes:
                into.entries[
                    (contact_id, account_id, name, token(old), token(new), origin, at)
                ] += 1

    @staticmethod
    def skip(where: str, into: ModelSync) -> None:
        if where == "same":
            into.already_applied += 1
        else:
            into.stale += 1

    def spelled(self, object_type: str, fields: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
        names = self.spelling[object_type]
        return {names[name.lower()]: value for name, value in fields.items()}

    def model_sync(self) -> ModelSync:
        out = ModelSync()
        for stream, stamp, record_id in self.bad:
            mark = self.marks.get(stream)
            if mark is None or stamp >= mark - LOOKBACK:
                out.rejected.append(record_id)
        read = self.read()
        # Each object's names take the spelling of the first record read with them.
        for record in sorted(read, key=lambda r: (stamp_of(r), r.id)):
            if not isinstance(record, Deletion):
                kind = "Account" if isinstance(record, Account) else "Contact"
                for name in record.fields:
                    self.spelling[kind].setdefault(name.lower(), name)
        for record in read:
            if isinstance(record, Account) or (
                isinstance(record, Deletion) and record.object_type == "Account"
            ):
                self.apply_account(record, out)
            else:
                self.apply_contact(record, out)
        self.log.update(out.entries)
        return out

    def apply_account(self, record: Account | Deletion, out: ModelSync) -> None:
        stored = self.accounts.get(record.id)
        if stored is not None:
            other_values = isinstance(record, Account) and not same_fields(
                self.spelled("Account", record.fields), stored.upstream
            )
            where = place(version_of(record), stored.version, other_values)
            if where != "newer":
                self.skip(where, out)
                return
        if isinstance(record, Deletion):
            out.accounts_deleted += 1
            members = self.members(record.id)
            self.accounts[record.id] = ModelAccount(
                stamp=record.deleted_at, deleted=True, master=record.master_record_id
            )
            if record.master_record_id is None:
                for contact_id in members:
                    self.contacts[contact_id].deleted = True
            else:
                winner = self.winner(record.master_record_id, record.deleted_at)
                for contact_id in members:
                    self.contacts[contact_id].account_id = winner
            return
        new = self.spelled("Account", record.fields)
        if stored is not None and not stored.deleted:
            if stored.edits:
                out.local_edits_discarded += 1
            old = stored.effective()
            changes = [
                (name, old.get(name), new.get(name))
                for name in sorted(old.keys() | new.keys())
                if not same(old.get(name), new.get(name))
            ]
            if changes:
                self.fan_out(record.id, changes, Origin.SALESFORCE, record.system_modstamp, out)
        out.accounts_upserted += 1
        self.accounts[record.id] = ModelAccount(
            stamp=record.system_modstamp, deleted=False, upstream=new
        )

    def apply_contact(self, record: Contact | Deletion, out: ModelSync) -> None:
        stored = self.contacts.get(record.id)
        if stored is not None:
            other_values = isinstance(record, Contact) and (
                record.account_id != stored.account_id
                or not same_fields(self.spelled("Contact", record.fields), stored.fields)
            )
            where = place(version_of(record), stored.version, other_values)
            if where != "newer":
                self.skip(where, out)
                return
        if isinstance(record, Deletion):
            out.contacts_deleted += 1
            self.contacts[record.id] = ModelContact(stamp=record.deleted_at, deleted=True)
            return
        out.contacts_upserted += 1
        # A source shows a contact as it is now, merges included: the account it names is
        # its account, even where the store still holds a merge tombstone for it (a stale
        # one: the account was brought back since, in a version this sync reads later).
        self.contacts[record.id] = ModelContact(
            stamp=record.system_modstamp,
            deleted=False,
            account_id=record.account_id,
            fields=self.spelled("Contact", record.fields),
        )

    # -- Driving the engine ------------------------------------------------------------------

    def check_report(self, report: SyncReport, expected: ModelSync) -> None:
        ids = [entry.id for entry in report.activities]
        assert len(ids) == len(set(ids)), "a sync logged one entry id twice"
        assert Counter(map(entry_key, report.activities)) == expected.entries
        assert (
            Counter(
                (s.account_id, s.contact_count, s.entries_skipped, s.origin)
                for s in report.suppressed
            )
            == expected.suppressed
        )
        counts = (
            "accounts_upserted",
            "accounts_deleted",
            "contacts_upserted",
            "contacts_deleted",
            "already_applied",
            "stale",
            "local_edits_discarded",
        )
        assert {c: getattr(report, c) for c in counts} == {c: getattr(expected, c) for c in counts}
        assert sorted(r.record_id or "" for r in report.rejected) == sorted(expected.rejected)
        assert dict(report.watermarks) == self.marks

    def check_against_org(self) -> None:
        """After a sync the local copy holds exactly Salesforce's records (R1, R4, R5)."""
        for account_id in ACCOUNT_IDS:
            org = self.org_accounts.get(account_id)
            state = self.store.account_states([account_id]).get(account_id)
            if isinstance(org, Account):
                assert isinstance(state, AccountState), f"account {account_id} missing"
                # Equal values, not equal types: a save in the second of the stored version
                # with the same values (1.0 for 1) is that version (R3).
                assert same_fields(state.upstream.fields, self.spelled("Account", org.fields))
                assert state.upstream.system_modstamp == org.system_modstamp
            else:
                assert self.store.get_account(account_id) is None
        for contact_id in CONTACT_IDS:
            org_contact = self.org_contacts.get(contact_id)
            got = self.store.get_contact(contact_id)
            if isinstance(org_contact, Contact):
                assert got is not None, f"contact {contact_id} missing"
                assert got.account_id == org_contact.account_id
                assert same_fields(got.fields, self.spelled("Contact", org_contact.fields))
                assert got.system_modstamp == org_contact.system_modstamp
            else:
                assert got is None, f"contact {contact_id} should be deleted"

    def snapshot(self) -> tuple[object, ...]:
        return (
            sorted((a.id, tuple(tokens(a.fields).items())) for a in self.store.accounts()),
            sorted(
                (c.id, c.account_id, tuple(tokens(c.fields).items()), c.system_modstamp)
                for c in self.store.contacts()
            ),
            [entry.id for entry in self.store.activities()],
            self.store.watermark("Account"),
            self.store.watermark("Contact"),
        )

    @rule(page_size=page_sizes)
    def sync(self, page_size: int) -> None:
        report = self.make_engine(page_size=page_size).sync()
        expected = self.model_sync()
        note(f"sync: activities={bool(report.activities)} suppressed={bool(report.suppressed)}")
        note(f"sync: stale={bool(report.stale)} discarded={bool(report.local_edits_discarded)}")
        self.check_report(report, expected)
        self.check_against_org()

    @rule(page_size=page_sizes)
    def sync_and_replay(self, page_size: int) -> None:
        """Syncing again, from a fresh engine, or re-reading everything changes nothing (R2)."""
        self.sync(page_size)
        before = self.snapshot()
        engines: list[Callable[[], SyncEngine]] = [
            lambda: self.engine,
            lambda: self.make_engine(page_size=1),
            lambda: self.make_engine(page_size=page_size, lookback=timedelta(days=3650)),
        ]
        for make in engines:
            report = make().sync()
            assert report.activities == ()
            assert report.suppressed == ()
            assert report.accounts_upserted == report.accounts_deleted == 0
            assert report.contacts_upserted == report.contacts_deleted == 0
            assert report.stale == report.local_edits_discarded == 0
            assert self.snapshot() == before

    @rule(page_size=page_sizes, crash_at=st.integers(1, 6))
    def crash_and_resume(self, page_size: int, crash_at: int) -> None:
        """A sync that dies part way, then runs again, ends as one clean sync would (R2)."""
        with crashing(self.store, crash_at) as crash, contextlib.suppress(CrashError):
            self.make_engine(page_size=page_size).sync()
        note(f"crashed: {crash.crashed}")
        self.make_engine(page_size=page_size).sync()
        self.model_sync()
        self.check_against_org()

    @rule(
        data=st.data(),
        name=st.sampled_from([*SPELLINGS, TYPO]),
        value=st.sampled_from(VALUES),
        short_id=st.booleans(),
    )
    def edit(self, data: st.DataObject, name: str, value: FieldValue, short_id: bool) -> None:
        """A local edit through a contact (S2), refused without a synced account (S5) or
        for a field the org has not got (R9); the name in any case."""
        live = [c for c in CONTACT_IDS if c in self.contacts and not self.contacts[c].deleted]
        contact_id = pick(data, live, CONTACT_IDS)
        self.edit_time += timedelta(seconds=1)
        given = contact_id[:15] if short_id else contact_id
        contact = self.contacts.get(contact_id)
        if contact is None or contact.deleted:
            with pytest.raises(UnknownContactError):
                self.engine.edit_account_field(contact_id=given, field=name, value=value)
            return
        account = None if contact.account_id is None else self.accounts.get(contact.account_id)
        if account is None or account.deleted:
            with pytest.raises(NoAccountError):
                self.engine.edit_account_field(contact_id=given, field=name, value=value)
            return
        assert contact.account_id is not None
        if name == TYPO:
            with pytest.raises(UnknownFieldError) as refused:
                self.engine.edit_account_field(contact_id=given, field=name, value=value)
            assert refused.value.close_matches[0].lower() == "industry"
            return
        name = self.spelling["Account"].get(name.lower()) or STANDARD[name.lower()]
        result = self.engine.edit_account_field(contact_id=given, field=name.upper(), value=value)
        assert result.field == name
        old = account.effective().get(name)
        assert result.account_id == contact.account_id
        assert token(result.old_value) == token(old)
        expected = ModelSync()
        if same(old, value):
            assert not result.changed
        else:
            assert result.changed
            account.edits[name] = value
            self.fan_out(
                contact.account_id, [(name, old, value)], Origin.LOCAL, self.edit_time, expected
            )
        note(f"edit: changed={result.changed} entries={bool(result.activities)}")
        assert Counter(map(entry_key, result.activities)) == expected.entries
        assert (result.suppressed is not None) == bool(expected.suppressed)
        self.log.update(expected.entries)

    # -- What must hold after every step -----------------------------------------------------

    @invariant()
    def local_copy_matches_the_model(self) -> None:
        for account_id in ACCOUNT_IDS:
            model = self.accounts.get(account_id)
            got = self.store.get_account(account_id)
            if model is None or model.deleted:
                assert got is None
            else:
                assert got is not None, f"account {account_id} missing"
                assert tokens(got.fields) == tokens(model.effective())
                assert got.system_modstamp == model.stamp
            assert set(self.store.contact_ids(account_id)) == set(self.members(account_id))
        for contact_id in CONTACT_IDS:
            model_contact = self.contacts.get(contact_id)
            got_contact = self.store.get_contact(contact_id)
            if model_contact is None or model_contact.deleted:
                assert got_contact is None
            else:
                assert got_contact is not None, f"contact {contact_id} missing"
                assert got_contact.account_id == model_contact.account_id
                assert tokens(got_contact.fields) == tokens(model_contact.fields)
        for stream in ("Account", "Contact"):
            assert self.store.watermark(stream) == self.marks.get(stream)

    @invariant()
    def activity_log_matches_the_model(self) -> None:
        log = list(self.store.activities())
        ids = [entry.id for entry in log]
        assert len(ids) == len(set(ids)), "duplicate activity ids"
        assert Counter(map(entry_key, log)) == self.log


AccountSync.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_account_sync = AccountSync.TestCase


# -- Histories the machine found, replayed step by step --------------------------------------


class Script:
    """Stands in for hypothesis's ``data``: each draw returns the next value given."""

    def __init__(self, *values: object) -> None:
        self._values = list(values)

    def draw(self, strategy: object) -> Any:
        return self._values.pop(0)


def replay(machine: AccountSync, *steps: Callable[[AccountSync], None]) -> None:
    """Run ``steps`` on ``machine``, checking after each what the machine checks."""
    for step in steps:
        step(machine)
        machine.local_copy_matches_the_model()
        machine.activity_log_matches_the_model()


def test_r4_a_contact_merged_into_an_undeleted_account_stays_with_it() -> None:
    """A merged into B, synced; A undeleted; D (with a late-committed contact) merged into A.

    Salesforce moves the contact from D to A without a new stamp, so the sync reads it,
    stamped before A's old merge, naming A; A's undelete comes later in the same sync. The
    contact belongs to A, not to B.
    """
    a, b, d = ACCOUNT_IDS[:3]
    first, late = CONTACT_IDS[:2]
    machine = AccountSync()
    replay(
        machine,
        lambda m: m.populate(account_fields=[{}, {}, {}], contacts=[(1, {})]),
        lambda m: m.merge_accounts(Script(b, a), step=timedelta(0)),
        lambda m: m.sync(page_size=1000),
        lambda m: m.late_contact_commit(Script(late, d), fields={}, late=timedelta(seconds=1)),
        lambda m: m.undelete(Script(a), step=timedelta(seconds=1)),
        lambda m: m.merge_accounts(Script(a, d), step=timedelta(seconds=1)),
        lambda m: m.sync(page_size=1000),
    )
    assert machine.store.get_contact(late) is not None
    assert machine.store.get_contact(first) is not None


def test_s7_equal_stamps_apply_in_one_order_whatever_the_page_size() -> None:
    """A merged into W and W changed in the same millisecond: one order, any page size.

    On equal stamps deletions apply last, so W's change is logged for the contacts W had
    before the merge (none); a page boundary between the two must not change that.
    """
    loser, winner = ACCOUNT_IDS[:2]
    machine = AccountSync()
    replay(
        machine,
        lambda m: m.populate(account_fields=[{}, {}], contacts=[(0, {}), (0, {})]),
        lambda m: m.merge_accounts(Script(winner, loser), step=timedelta(seconds=1)),
        lambda m: m.upsert_account(
            Script(winner), fields={"Name": "Acme"}, keep=False, step=timedelta(0)
        ),
        lambda m: m.sync(page_size=1),
    )
