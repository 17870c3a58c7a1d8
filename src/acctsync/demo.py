"""A tour of acctsync on the in-memory fakes: ``python -m acctsync.demo``.

It syncs a small org, shows the Change Data Value log, the 5,000-contact threshold, a local
edit reaching every contact and then being overwritten by Salesforce, and Convert Person.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from acctsync import Account, Contact, Person, SyncEngine, SyncReport
from acctsync.testing import InMemorySource, InMemoryStore, make_id

__all__ = ["main"]

T0 = datetime(2024, 1, 31, 9, 0, tzinfo=UTC)


def _heading(text: str) -> None:
    print(f"\n== {text}")


def _summary(report: SyncReport, *, rejections: bool = False) -> None:
    print(
        f"   applied: {report.accounts_upserted} accounts, {report.contacts_upserted} contacts"
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


def _value(store: InMemoryStore, account_id: str, field: str) -> object:
    account = store.get_account(account_id)
    return None if account is None else account.fields.get(field)


def main() -> None:
    """Run the tour and print what happens."""
    source, store = InMemorySource(), InMemoryStore()
    engine = SyncEngine(source=source, store=store, clock=lambda: T0 + timedelta(hours=1))
    acme, globex = make_id("001", 1), make_id("001", 2)
    ana, ben = make_id("003", 1), make_id("003", 2)

    _heading("1. First sync: two accounts, 5,003 contacts, one malformed record")
    source.upsert(
        Account(id=acme, fields={"Name": "Acme", "Industry": "Tech"}, system_modstamp=T0)
    )
    source.upsert(Account(id=globex, fields={"Name": "Globex"}, system_modstamp=T0))
    source.upsert(
        Contact(id=ana, account_id=acme, fields={"Email": "ana@acme.test"}, system_modstamp=T0)
    )
    source.upsert(
        Contact(id=ben, account_id=acme, fields={"Email": "ben@acme.test"}, system_modstamp=T0)
    )
    for number in range(5_001):
        source.upsert(
            Contact(
                id=make_id("003", 1_000 + number),
                account_id=globex,
                fields={"Email": f"person{number}@globex.test"},
                system_modstamp=T0,
            )
        )
    source.add_raw("Account", {"attributes": {"type": "Account"}, "Id": "not-an-id"})
    _summary(engine.sync(), rejections=True)
    print("   (a first appearance logs no Change Data Value)")

    _heading("2. Salesforce changes Acme's Industry: one entry per contact")
    source.upsert(
        Account(
            id=acme,
            fields={"Name": "Acme", "Industry": "Retail"},
            system_modstamp=T0 + timedelta(minutes=10),
        )
    )
    _summary(engine.sync())
    for entry in store.activities():
        print(
            f"   Change Data Value: contact {entry.contact_id} {entry.field}:"
            f" {entry.old_value!r} -> {entry.new_value!r} ({entry.origin.value})"
        )

    _heading("3. Salesforce renames Globex (5,001 contacts): synced, not logged")
    source.upsert(
        Account(
            id=globex, fields={"Name": "Globex Corp"}, system_modstamp=T0 + timedelta(minutes=20)
        )
    )
    _summary(engine.sync())
    print(f"   Globex is now named {_value(store, globex, 'Name')!r}")

    _heading("4. A local edit through Ana reaches Ben too, and is not pushed")
    result = engine.edit_account_field(contact_id=ana, field="Industry", value="Finance")
    print(f"   {result.contact_count} contacts, {len(result.activities)} local entries logged")
    print(f"   Acme's Industry, as every contact sees it: {_value(store, acme, 'Industry')!r}")
    print(f"   writes sent to Salesforce: {len(source.writes())}")
    _summary(engine.sync())
    print(f"   a sync with no newer Acme version keeps it: {_value(store, acme, 'Industry')!r}")

    _heading("5. Salesforce updates Acme's Name: all local edits are overwritten")
    source.upsert(
        Account(
            id=acme,
            fields={"Name": "Acme Inc", "Industry": "Retail"},
            system_modstamp=T0 + timedelta(minutes=30),
        )
    )
    _summary(engine.sync())
    acme_now = store.get_account(acme)
    print(f"   Acme now: {dict(acme_now.fields) if acme_now else None}")

    _heading("6. Convert Person creates Contact, Account and Opportunity in Salesforce")
    conversion = engine.convert_person(
        Person(id="lead-42", fields={"LastName": "Doe", "Company": "Initech"})
    )
    again = engine.convert_person(
        Person(id="lead-42", fields={"LastName": "Doe", "Company": "Initech"})
    )
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
    print(f"\n{store!r}")


if __name__ == "__main__":
    main()
