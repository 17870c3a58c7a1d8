"""A tour of acctsync, synced into a SQLite file: ``python -m acctsync.demo [--db PATH]``.

The org is an in-memory fake of Salesforce; the local copy is a real SQLite database. The
first run syncs a small org and shows the Change Data Value log, the 5,000-contact
threshold, a local edit reaching every contact and then being overwritten by Salesforce,
and Convert Person. A later run on the same file resumes from the stored watermarks: it
reads only what changed since (and the lookback window), not the whole org again.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from acctsync import Account, Contact, Person, SyncEngine, SyncReport
from acctsync.testing import InMemorySource, make_id

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore

__all__ = ["main"]

T0 = datetime(2024, 1, 31, 9, 0, tzinfo=UTC)
ACME, GLOBEX = make_id("001", 1), make_id("001", 2)
ANA, BEN = make_id("003", 1), make_id("003", 2)
BIG = 5_001


def _heading(text: str) -> None:
    print(f"\n== {text}")


def _summary(report: SyncReport, *, rejections: bool = False) -> None:
    print(
        f"   pages: {report.pages} | applied: accounts {report.accounts_upserted},"
        f" contacts {report.contacts_upserted} | already applied: {report.already_applied}"
        f" | activities logged: {len(report.activities)}"
        f" | local edits overwritten: {report.local_edits_discarded}"
    )
    for suppression in report.suppressed:
        print(
            f"   suppressed: account {suppression.account_id} has"
            f" {suppression.contact_count:,} contacts (> 5,000):"
            f" {suppression.entries_skipped:,} entries not logged"
        )
    for rejection in report.rejected if rejections else ():
        print(f"   rejected: {rejection.object_type} {rejection.record_id}: {rejection.reason}")


def _first_org(source: InMemorySource) -> None:
    source.upsert(
        Account(id=ACME, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0)
    )
    source.upsert(Account(id=GLOBEX, fields={"Name": "Globex"}, system_modstamp=T0))
    for contact_id, email in ((ANA, "ana@acme.test"), (BEN, "ben@acme.test")):
        source.upsert(
            Contact(id=contact_id, account_id=ACME, fields={"Email": email}, system_modstamp=T0)
        )
    for number in range(BIG):
        source.upsert(
            Contact(
                id=make_id("003", 1_000 + number),
                account_id=GLOBEX,
                fields={"Email": f"person{number}@globex.test"},
                system_modstamp=T0,
            )
        )
    source.add_raw("Account", {"attributes": {"type": "Account"}, "Id": "not-an-id"})


def _acme_to_retail(source: InMemorySource) -> None:
    source.upsert(
        Account(
            id=ACME,
            fields={"Name": "Acme", "Industry": "Retail"},
            system_modstamp=T0 + timedelta(minutes=10),
        )
    )


def _globex_renamed(source: InMemorySource) -> None:
    source.upsert(
        Account(
            id=GLOBEX, fields={"Name": "Globex Corp"}, system_modstamp=T0 + timedelta(minutes=20)
        )
    )


def _acme_renamed(source: InMemorySource) -> None:
    source.upsert(
        Account(
            id=ACME,
            fields={"Name": "Acme Inc", "Industry": "Retail"},
            system_modstamp=T0 + timedelta(minutes=30),
        )
    )


ORG_HISTORY: Sequence[Callable[[InMemorySource], None]] = (
    _first_org,
    _acme_to_retail,
    _globex_renamed,
    _acme_renamed,
)
"""What Salesforce does during the tour, in order."""


def tour(store: SqlStore) -> None:
    """The first run: every rule on a fresh store."""
    source = InMemorySource()
    engine = SyncEngine(source=source, store=store, clock=lambda: T0 + timedelta(hours=1))

    def value(account_id: str, field: str) -> object:
        account = store.get_account(account_id)
        return None if account is None else account.fields.get(field)

    _heading("1. First sync: two accounts, 5,003 contacts, one malformed record")
    _first_org(source)
    _summary(engine.sync(), rejections=True)
    print("   (a first appearance logs no Change Data Value)")

    _heading("2. Salesforce changes Acme's Industry: one entry per contact")
    _acme_to_retail(source)
    _summary(engine.sync())
    for entry in store.activities():
        print(
            f"   Change Data Value: contact {entry.contact_id} {entry.field}:"
            f" {entry.old_value!r} -> {entry.new_value!r} ({entry.origin.value})"
        )

    _heading("3. Salesforce renames Globex (5,001 contacts): synced, not logged")
    _globex_renamed(source)
    _summary(engine.sync())
    print(f"   Globex is now named {value(GLOBEX, 'Name')!r}")

    _heading("4. A local edit through Ana reaches Ben too, and is not pushed")
    result = engine.edit_account_field(contact_id=ANA, field="Industry", value="Finance")
    print(f"   {result.contact_count} contacts, {len(result.activities)} local entries logged")
    print(f"   Acme's Industry, as every contact sees it: {value(ACME, 'Industry')!r}")
    print(f"   writes sent to Salesforce: {len(source.writes())}")
    _summary(engine.sync())
    print(f"   a sync with no newer Acme version keeps it: {value(ACME, 'Industry')!r}")

    _heading("5. Salesforce updates Acme's Name: all local edits are overwritten")
    _acme_renamed(source)
    _summary(engine.sync())
    acme = store.get_account(ACME)
    print(f"   Acme now: {dict(acme.fields) if acme else None}")

    _heading("6. Convert Person creates Contact, Account and Opportunity in Salesforce")
    lead = Person(id="lead-42", fields={"LastName": "Doe", "Company": "Initech"})
    conversion = engine.convert_person(lead)
    again = engine.convert_person(lead)
    print(f"   created account {conversion.account_id}, contact {conversion.contact_id},")
    print(
        f"   opportunity {conversion.opportunity_id}; a retry gave the same: {again == conversion}"
    )
    print(
        f"   in the local store before the next sync: {store.get_account(conversion.account_id)}"
    )
    _summary(engine.sync())
    initech = store.get_account(conversion.account_id)
    print(f"   after it: {dict(initech.fields) if initech else None}")


def resume(store: SqlStore, watermark: datetime) -> None:
    """A later run: the org as the tour left it, plus one change after the watermark."""
    source = InMemorySource()
    for change in ORG_HISTORY:
        change(source)
    stamp = watermark + timedelta(minutes=1)
    current = store.get_account(ACME)
    phone = int(str((current.fields if current else {}).get("Phone", "5550100"))) + 1
    source.upsert(
        Account(
            id=ACME,
            fields={"Name": "Acme Inc", "Industry": "Retail", "Phone": str(phone)},
            system_modstamp=stamp,
        )
    )
    engine = SyncEngine(source=source, store=store, clock=lambda: stamp + timedelta(hours=1))
    _heading(f"Resuming from the stored watermark {watermark.isoformat()}")
    print("   Salesforce changed Acme's Phone since; the org's 5,003 others are not read again")
    _summary(engine.sync())
    for entry in list(store.activities(account_id=ACME))[-2:]:
        print(
            f"   Change Data Value: contact {entry.contact_id} {entry.field}:"
            f" {entry.old_value!r} -> {entry.new_value!r}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the tour into ``--db`` (or resume there), and print what happens."""
    parser = argparse.ArgumentParser(prog="python -m acctsync.demo", description=__doc__)
    parser.add_argument(
        "--db", default="acctsync-demo.db", help="the SQLite file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        from acctsync.stores.sql import SqlStore
    except ImportError:
        parser.exit(2, "the demo needs the SQL store: pip install 'acctsync[sql]'\n")
    with SqlStore.sqlite(args.db) as store:
        watermark = store.watermark("Account")
        if watermark is None:
            print(f"A new local copy in {args.db}")
            tour(store)
        else:
            print(f"The local copy in {args.db} already holds a sync")
            resume(store, watermark)
        accounts = sum(1 for _ in store.accounts())
        contacts = sum(1 for _ in store.contacts())
        activities = sum(1 for _ in store.activities())
        print(
            f"\n{args.db} holds {accounts} accounts, {contacts:,} contacts and {activities}"
            f" Change Data Value entries. Run again to resume; delete the file to start over."
        )


if __name__ == "__main__":
    main()
