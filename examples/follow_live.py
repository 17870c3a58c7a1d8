"""Following an org live: its change events over the Pub/Sub API, applied as they come.

`SyncEngine.follow` subscribes to the org's Change Data Capture events through a
`PubSubStream`, catches up by a sync of what changed before, and then applies each batch
of events as it arrives, storing the stream's position with it. Here the org is
`FakeSalesforce`, which acctsync.testing serves on 127.0.0.1 with its Pub/Sub API, so the
example runs anywhere, with no org and no credentials. Against a real org, sign in with
a `SalesforceLogin` and leave out ``target`` and ``insecure``.

Needs ``pip install "acctsync[salesforce,sql,pubsub]"``. Run it with

    python examples/follow_live.py

The SQLite file is written to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import tempfile
import threading
from decimal import Decimal
from pathlib import Path

from acctsync import Account, Contact, SyncEngine
from acctsync.sources.pubsub import PubSubStream
from acctsync.sources.salesforce import SalesforceSource
from acctsync.stores.sql import SqlStore
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce

ACME, ANA, BEN = make_id("001", 1), make_id("003", 1), make_id("003", 2)
FIELDS = {"Account": ["Name", "Industry"], "Contact": ["LastName"]}


def main() -> None:
    with (
        FakeSalesforce(pubsub=True, keepalive=0.2) as org,
        tempfile.TemporaryDirectory() as folder,
        SqlStore.sqlite(Path(folder) / "acctsync.db") as store,
    ):
        now = org.now
        org.put(
            Account(id=ACME, fields={"Name": "Acme", "Industry": "Retail"}, system_modstamp=now),
            Contact(id=ANA, account_id=ACME, fields={"LastName": "Ng"}, system_modstamp=now),
            Contact(id=BEN, account_id=ACME, fields={"LastName": "Ito"}, system_modstamp=now),
        )
        source = SalesforceSource(org.client(parse_float=Decimal), fields=FIELDS)
        stream = PubSubStream(org.client(), target=org.pubsub_target, insecure=True, heartbeat=0.2)
        engine = SyncEngine(source=source, store=store)
        stop = threading.Event()  # in a service, set it from a signal handler
        last = None
        for report in engine.follow(stream, stop=stop):
            if report.events is None:
                print(f"caught up: {report.accounts_upserted} account,"
                      f" {report.contacts_upserted} contacts")  # fmt: skip
                # Salesforce saves an account: its event reaches the follower in moments.
                org.put(
                    Account(
                        id=ACME,
                        fields={"Name": "Acme Corp", "Industry": "Retail"},
                        system_modstamp=org.now,
                    )
                )
                last = org.change_events()[-1].replay_id
                continue
            print(f"{report.events} event(s): {report.accounts_upserted} account updated")
            for entry in report.activities:
                print(f"  Change Data Value for {entry.contact_id}: {entry.field}"
                      f" {entry.old_value!r} -> {entry.new_value!r}")  # fmt: skip
            if report.checkpoint is not None and report.checkpoint.position == last:
                stop.set()  # the next follow resumes after this position
        account = store.get_account(ACME)
        assert account is not None
        print(f"stored: {account.fields['Name']}; the next follow resumes after its event:"
              f" {store.checkpoint(stream.name) == last}")  # fmt: skip


if __name__ == "__main__":
    main()
