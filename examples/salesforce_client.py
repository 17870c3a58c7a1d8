"""Syncing a Salesforce org through a simple-salesforce client into SQLite.

`SalesforceSource` reads an org through your own ``simple_salesforce.Salesforce``
client. Here that client talks HTTP to `FakeSalesforce`, a small org that
acctsync.testing serves on 127.0.0.1, so the example runs anywhere, with no org and no
credentials. It seeds the org and syncs it into SQLite, converts a person (rule S6: the
records are created in Salesforce and reach the local copy with the next sync), and then
runs ``engine.reconcile()``, which finds what an incremental sync cannot see: a formula
value that changed without a new SystemModstamp on a record last saved long ago, and an
account purged from the recycle bin.

Needs ``pip install "acctsync[salesforce,sql]"``. Run it with

    python examples/salesforce_client.py

The SQLite file is written to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from acctsync import Account, Contact, Person, SyncEngine, SyncReport
from acctsync.sources.salesforce import SalesforceSource
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce

ACME, GLOBEX = make_id("001", 1), make_id("001", 2)
ANA, BEN, CHO = make_id("003", 1), make_id("003", 2), make_id("003", 3)
# The fields to sync; without this, every field each object's describe lists.
FIELDS = {"Account": ["Name", "Industry", "Tier__c"], "Contact": ["LastName"]}
# The seeded records were last saved an hour before the org's clock, as most records of a
# real org were: before the lookback window that every sync reads again (5 minutes by
# default). That matters in step 3. A record read again in the window with other values
# under its old stamp is taken for a second save in that second and applied (rule R3), so
# a formula change on a record saved minutes ago reaches the store with the next sync
# anyway; on a record saved before the window, only a reconciliation sees it.
LAST_SAVED = timedelta(hours=1)


def seed(org: FakeSalesforce) -> None:
    """Two accounts and their contacts. Tier__c is a formula field in the fake's describe."""
    saved = org.now - LAST_SAVED
    acme = {"Name": "Acme", "Industry": "Tech", "Tier__c": "Gold"}
    globex = {"Name": "Globex", "Industry": "Energy", "Tier__c": "Silver"}
    org.put(
        Account(id=ACME, fields=acme, system_modstamp=saved),
        Account(id=GLOBEX, fields=globex, system_modstamp=saved),
        Contact(id=ANA, account_id=ACME, fields={"LastName": "Ng"}, system_modstamp=saved),
        Contact(id=BEN, account_id=ACME, fields={"LastName": "Ito"}, system_modstamp=saved),
        Contact(id=CHO, account_id=GLOBEX, fields={"LastName": "Cho"}, system_modstamp=saved),
    )


def last_name(store: SqlStore, contact_id: str) -> object:
    """The contact's LastName in the local copy."""
    contact = store.get_contact(contact_id)
    return contact.fields["LastName"] if contact else contact_id


def show_accounts(store: SqlStore) -> None:
    """Print the local copy: each account with its contacts."""
    for account in store.accounts():
        names = [last_name(store, c) for c in store.contact_ids(account.id)]
        print(f"  {account.fields['Name']} (Tier__c {account.fields['Tier__c']!r}): {names}")


def show(what: str, report: SyncReport, store: SqlStore) -> None:
    """Print what a sync or a reconciliation did."""
    print(
        f"  {what:<9} applied: accounts {report.accounts_upserted},"
        f" contacts {report.contacts_upserted} | accounts deleted: {report.accounts_deleted}"
        f" | refreshed: {report.refreshed} | ok: {report.ok}"
    )
    for entry in report.activities:
        print(
            f"  Change Data Value for {last_name(store, entry.contact_id)}:"
            f" {entry.field} {entry.old_value!r} -> {entry.new_value!r}"
        )


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as scratch,
        FakeSalesforce() as org,
        SqlStore.sqlite(Path(scratch, "acctsync.db")) as store,
    ):
        seed(org)
        # For a real org, build the client from your credentials instead, for example
        #
        #     from simple_salesforce import Salesforce
        #
        #     client = Salesforce(
        #         username=os.environ["SALESFORCE_USERNAME"],
        #         password=os.environ["SALESFORCE_PASSWORD"],
        #         security_token=os.environ["SALESFORCE_SECURITY_TOKEN"],
        #         domain="test",  # a sandbox; leave it out for production
        #         parse_float=Decimal,
        #     )
        #
        # and leave out external_id_field once the org has the default, Acctsync_Key__c:
        # an External ID and Unique field on Account, Contact and Opportunity, which makes
        # Convert Person safe to retry (the fake org's is External_Id__c). The calls on
        # `org` below arrange the fake; in a real org, people make those changes.
        client = org.client(parse_float=Decimal)  # Decimal: currency values stay exact
        source = SalesforceSource(client, fields=FIELDS, external_id_field="External_Id__c")
        engine = SyncEngine(source=source, store=store)

        print("1. First sync of the org:")
        show("sync", engine.sync(), store)
        show_accounts(store)

        print("2. Convert Person creates a Contact, an Account and an Opportunity in Salesforce:")
        lead = Person(id="lead-42", fields={"LastName": "Doe", "Company": "Initech"})
        conversion = engine.convert_person(lead)
        print(f"  a retry returns the same records: {engine.convert_person(lead) == conversion}")
        print(f"  opportunities in the org: {[o.fields['Name'] for o in org.opportunities()]}")
        print(f"  locally, before the next sync: {store.get_account(conversion.account_id)}")
        show("sync", engine.sync(), store)
        show_accounts(store)

        print("3. Acme's formula Tier__c changes; SystemModstamp does not move:")
        org.set_formula("Account", ACME, Tier__c="Platinum")
        show("sync", engine.sync(), store)
        show("reconcile", engine.reconcile(), store)
        show_accounts(store)

        print("4. Globex is deleted and emptied from the recycle bin between two syncs:")
        org.purge("Account", GLOBEX)  # takes its contact along, as Salesforce does
        show("sync", engine.sync(), store)
        show("reconcile", engine.reconcile(), store)
        show_accounts(store)


if __name__ == "__main__":
    main()
