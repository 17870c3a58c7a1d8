"""Syncing a folder of Data Loader CSV exports into a SQLite file.

It writes a first export of Accounts and Contacts, syncs it with `ExportFolder` into
`SqlStore.sqlite`, edits an account field locally through a contact, then writes a
newer export and syncs again. It prints what each step did: the newer Salesforce
version overwrites the local edit (rule S3), each contact of the account gets a Change
Data Value entry (S7), and a bad row is rejected with its file and line while the rest
of the export applies (R7).

Needs the SQL store: ``pip install "acctsync[sql]"``. Run it with

    python examples/sqlite_from_exports.py

Everything is written to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from acctsync import SyncEngine, SyncReport
from acctsync.sources.files import ExportFolder
from acctsync.stores.sql import SqlStore

ACME, GLOBEX = "001Ak00000AcmeQIAR", "001Ak00000GlobXIAR"
ANA = "003Ak00000AnaLvIAJ"

# As Data Loader's "Export All" writes them: every value quoted, IsDeleted selected so
# that deleted records arrive too, and SystemModstamp, which acctsync needs.
FIRST_ACCOUNTS = """\
"Id","Name","Industry","NumberOfEmployees","SystemModstamp","IsDeleted"
"001Ak00000AcmeQIAR","Acme","Tech","120","2024-01-31T12:00:00.000Z","false"
"001Ak00000GlobXIAR","Globex","Energy","4000","2024-01-31T12:00:00.000Z","false"
"""
FIRST_CONTACTS = """\
"Id","AccountId","LastName","Email","SystemModstamp","IsDeleted"
"003Ak00000AnaLvIAJ","001Ak00000AcmeQIAR","Ng","ana@acme.example","2024-01-31T12:00:00.000Z","false"
"003Ak00000BenLvIAJ","001Ak00000AcmeQIAR","Ito","ben@acme.example","2024-01-31T12:00:00.000Z","false"
"003Ak00000ChoLvIAJ","001Ak00000GlobXIAR","Cho","cho@globex.example","2024-01-31T12:00:00.000Z","false"
"""
# The next day's export: Acme has grown; Globex's row has a value that is not a number.
NEXT_ACCOUNTS = """\
"Id","Name","Industry","NumberOfEmployees","SystemModstamp","IsDeleted"
"001Ak00000AcmeQIAR","Acme","Tech","150","2024-02-01T08:00:00.000Z","false"
"001Ak00000GlobXIAR","Globex","Energy","twelve","2024-02-01T08:00:00.000Z","false"
"""


def show(report: SyncReport) -> None:
    """Print what a sync applied, logged and rejected."""
    print(
        f"  applied: accounts {report.accounts_upserted}, contacts {report.contacts_upserted};"
        f" Change Data Values logged: {len(report.activities)};"
        f" local edits overwritten: {report.local_edits_discarded}"
    )
    for rejection in report.rejected:
        print(
            f"  rejected {rejection.origin}: {rejection.record_id}"
            f" {rejection.field}: {rejection.reason}"
        )


def fields_of(store: SqlStore, account_id: str) -> dict[str, object]:
    """The account's values, as every one of its contacts sees them."""
    account = store.get_account(account_id)
    return dict(account.fields) if account else {}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        exports = Path(scratch, "exports")
        exports.mkdir()
        (exports / "Account.csv").write_text(FIRST_ACCOUNTS, encoding="utf-8")
        (exports / "Contact.csv").write_text(FIRST_CONTACTS, encoding="utf-8")

        # CSV carries no types: without this, NumberOfEmployees would be read as text.
        source = ExportFolder(exports, types={"NumberOfEmployees": "int"})
        with SqlStore.sqlite(Path(scratch, "accounts.db")) as store:
            engine = SyncEngine(source=source, store=store)

            print("First sync, of Account.csv and Contact.csv:")
            show(engine.sync())

            print("Local edit of Acme's Industry, through its contact Ng:")
            edit = engine.edit_account_field(contact_id=ANA, field="Industry", value="Retail")
            print(f"  seen by all {edit.contact_count} contacts of Acme, not sent to Salesforce")
            print("A sync with no newer version of Acme keeps the edit:")
            show(engine.sync())
            print(f"  Acme: {fields_of(store, ACME)}")

            # Old exports may stay in the folder: each record's latest version counts.
            (exports / "Account_2024-02-01.csv").write_text(NEXT_ACCOUNTS, encoding="utf-8")
            print("Sync of the newer export, Account_2024-02-01.csv:")
            show(engine.sync())
            print(f"  Acme: {fields_of(store, ACME)}")
            print(f"  Globex keeps its last good version: {fields_of(store, GLOBEX)}")

            print("The activity log:")
            for entry in store.activities():
                contact = store.get_contact(entry.contact_id)
                name = contact.fields["LastName"] if contact else entry.contact_id
                print(
                    f"  {entry.origin.value:<10} {name:<4} {entry.field}:"
                    f" {entry.old_value!r} -> {entry.new_value!r}"
                )


if __name__ == "__main__":
    main()
