"""Testing your own code on acctsync with its fakes, strategies and conformance checks.

`acctsync.testing` gives a test suite everything it needs without Salesforce or a
database: `InMemorySource` (a small fake org), `InMemoryStore`, hypothesis strategies
for valid records, and `check_store` / `check_source`, the checks to run against a
store or source of your own. Each test below is a plain function, as in your suite.

Needs hypothesis: ``pip install "acctsync[testing]"``. Run it either way:

    python examples/testing_with_fakes.py    # runs each test, prints what it checked
    pytest examples/testing_with_fakes.py    # the same tests, collected by pytest
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from acctsync import Account, Contact, Deletion, SyncEngine, SyncReport
from acctsync.testing import InMemorySource, InMemoryStore, check_source, check_store, make_id
from acctsync.testing import strategies as acctsync_st

T0 = datetime(2024, 1, 31, 9, 0, tzinfo=UTC)
ACME, ANA, BEN = make_id("001", 1), make_id("003", 1), make_id("003", 2)


# -- The code under test: yours -----------------------------------------------------------


def contacts_to_notify(store: InMemoryStore, report: SyncReport, field: str) -> list[str]:
    """The emails of the contacts whose account's ``field`` changed in Salesforce."""
    emails = set()
    for entry in report.activities:
        contact = store.get_contact(entry.contact_id)
        if entry.field == field and contact is not None:
            emails.add(str(contact.fields["Email"]))
    return sorted(emails)


# -- An example-based test on the fakes ---------------------------------------------------


def test_an_industry_change_notifies_every_contact_of_the_account() -> None:
    """A Salesforce change of Industry notifies each contact of the account once."""
    source, store = InMemorySource(), InMemoryStore()
    engine = SyncEngine(source=source, store=store)
    source.upsert(Account(id=ACME, fields={"Industry": "Tech"}, system_modstamp=T0))
    for contact_id, email in ((ANA, "ana@acme.test"), (BEN, "ben@acme.test")):
        source.upsert(
            Contact(id=contact_id, account_id=ACME, fields={"Email": email}, system_modstamp=T0)
        )
    # A first appearance logs no Change Data Value: nobody to notify yet.
    assert contacts_to_notify(store, engine.sync(), "Industry") == []

    later = T0 + timedelta(hours=1)
    source.upsert(Account(id=ACME, fields={"Industry": "Retail"}, system_modstamp=later))
    assert contacts_to_notify(store, engine.sync(), "Industry") == [
        "ana@acme.test",
        "ben@acme.test",
    ]


# -- A property, on records drawn by acctsync's strategies --------------------------------

# Small pools of IDs and field names, so that drawn records update one another and
# accounts gain contacts: that is when Change Data Value entries are logged.
ACCOUNT_IDS = [make_id("001", n) for n in range(3)]
CONTACT_IDS = [make_id("003", n) for n in range(4)]
FIELDS = acctsync_st.field_maps(names=st.sampled_from(["Name", "Industry", "Rating"]))


def changes_on(day: int) -> st.SearchStrategy[list[Account | Contact]]:
    """Accounts and contacts that Salesforce changes on ``day``, in any order."""
    stamps = acctsync_st.timestamps(
        min_value=T0 + timedelta(days=day), max_value=T0 + timedelta(days=day, hours=23)
    )
    accounts = acctsync_st.accounts(ids=st.sampled_from(ACCOUNT_IDS), fields=FIELDS, stamps=stamps)
    contacts = acctsync_st.contacts(
        ids=st.sampled_from(CONTACT_IDS), account_ids=st.sampled_from(ACCOUNT_IDS), stamps=stamps
    )
    return st.lists(st.one_of(accounts, contacts), max_size=6)


# A sync's duration varies on a busy machine: a deadline would make this test flaky.
@settings(max_examples=50, deadline=None)
@given(days=st.tuples(changes_on(0), changes_on(1), changes_on(2)))
def test_replaying_every_change_logs_nothing_twice(
    days: Sequence[list[Account | Contact]],
) -> None:
    """A replay of every change already synced changes nothing and logs nothing again."""
    source, store = InMemorySource(), InMemoryStore()
    engine = SyncEngine(source=source, store=store)
    for changes in days:
        for record in changes:
            source.upsert(record)
        engine.sync()
    accounts, contacts, log = store.accounts(), store.contacts(), store.activities()
    assert len({entry.id for entry in log}) == len(log)

    # A lookback longer than the whole history reads every record again from the start.
    replay = SyncEngine(source=source, store=store, lookback=timedelta(days=30)).sync()

    assert replay.already_applied == len({record.id for changes in days for record in changes})
    assert replay.activities == ()
    assert (replay.accounts_upserted, replay.contacts_upserted) == (0, 0)
    assert (store.accounts(), store.contacts(), store.activities()) == (accounts, contacts, log)


# -- The conformance checks, as you would run them on your own store or source -------------


def test_my_store_conforms() -> None:
    """check_store: every duty of the Store protocol, and the rules run over the store."""
    # check_store calls the factory once per duty, so that each starts empty. With your
    # own store: check_store(lambda: MyStore(a_new_empty_database())).
    check_store(InMemoryStore)


def test_my_source_conforms() -> None:
    """check_source: order by (SystemModstamp, Id), paging, and the inclusive since."""

    def fake_org_holding(records: Sequence[Account | Contact | Deletion]) -> InMemorySource:
        source = InMemorySource()
        for record in records:
            if isinstance(record, Deletion):
                source.delete(record)
            else:
                source.upsert(record)
        return source

    check_source(fake_org_holding)


def main() -> None:
    """Run each test, as pytest would, and say what it checked."""
    tests = [
        test_an_industry_change_notifies_every_contact_of_the_account,
        test_replaying_every_change_logs_nothing_twice,
        test_my_store_conforms,
        test_my_source_conforms,
    ]
    with tempfile.TemporaryDirectory() as scratch:
        # Hypothesis keeps its files in .hypothesis/ of the working directory; a script
        # that only shows something keeps them in a temporary folder instead.
        set_hypothesis_home_dir(scratch)
        for test in tests:
            test()  # raises AssertionError (ConformanceError for the checks) on a failure
            print(f"ok  {test.__name__}: {(test.__doc__ or '').strip()}")
    print(f"{len(tests)} tests passed")


if __name__ == "__main__":
    main()
