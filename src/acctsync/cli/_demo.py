"""``acctsync demo``: a synthetic org synced into a real database, every rule at work.

The org is an `InMemorySource` built the same way on every run (a seeded generator, a
fixed clock): accounts of every size, from none to 5,000 contacts, and Globex with
5,001. The first run on a database syncs it, changes it in Salesforce, edits it locally
and syncs again, printing what each step did. A later run on the same database rebuilds
the org, adds one change after the stored watermark and syncs: it reads only that
change (and the lookback window), not the whole org again.

Each sync is recorded as a run, so ``acctsync status`` shows the last one.
"""

from __future__ import annotations

import random
import shlex
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from rich.markup import escape
from rich.table import Table

from acctsync import Account, Contact, Person, SyncEngine, SyncReport
from acctsync.cli._output import Output, run_document, shown_value
from acctsync.cli._params import Database
from acctsync.stores.sql import SqlStore, SyncRun
from acctsync.testing import InMemorySource, make_id

__all__ = ["ORG_HISTORY", "run_demo"]

T0: Final = datetime(2024, 1, 31, 9, 0, tzinfo=UTC)
ACME, GLOBEX = make_id("001", 1), make_id("001", 2)
ANA, BEN = make_id("003", 1), make_id("003", 2)
BIG: Final = 5_001
# Most accounts are small, a few are large; one sits exactly at the 5,000 threshold.
SIZES: Final = (0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 10, 12, 15, 18, 25, 30, 40, 55, 75)
SIZES_LARGE: Final = (100, 150, 250, 400, 650, 1_000, 5_000)
# The accounts whose Rating Salesforce changes in step 3: one of each order of size.
RATED: Final = (0, 1, 10, 100, 1_000, 5_000)
_SEED: Final = 20240131


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_WORDS: Final = _words(
    "Blue Cedar Delta Ember Fjord Granite Harbor Iris Juniper Kestrel Lumen Meridian Nimbus"
    " Orchid Pioneer Quartz Riverbend Summit Tidewater Umber Vantage Willow Yarrow Zephyr"
    " Alder Beacon Copper Driftwood"
)
_KINDS: Final = _words("Labs Logistics Health Foods Energy Robotics Media Bank Outfitters Systems")
_INDUSTRIES: Final = _words(
    "Technology Retail Healthcare Manufacturing Finance Energy Media Transportation"
)
_COUNTRIES: Final = _words("US DE NL FR GB JP BR CA")
_FIRST: Final = _words("Ada Bo Chen Dara Eli Farah Gus Hana Ivo Jun Kai Lea Milo Nia Omar Pia")
_LAST: Final = _words("Ng Okafor Silva Jansen Muller Tanaka Dubois Rossi Kowalski Haddad Lund")


def _sized_accounts() -> list[tuple[Account, int]]:
    """The accounts of every size, with how many contacts each has, always the same."""
    rng = random.Random(_SEED)
    accounts = []
    for number, size in enumerate(SIZES + SIZES_LARGE):
        employees = max(size * rng.randint(3, 12), rng.randint(2, 40))
        accounts.append(
            (
                Account(
                    id=make_id("001", 100 + number),
                    fields={
                        "Name": f"{_WORDS[number % len(_WORDS)]} {rng.choice(_KINDS)}",
                        "Industry": rng.choice(_INDUSTRIES),
                        "Type": "Customer - Direct" if size else "Prospect",
                        "BillingCountry": rng.choice(_COUNTRIES),
                        "NumberOfEmployees": employees,
                        "AnnualRevenue": Decimal(employees * rng.randint(80, 400)) * 1000,
                        "Rating": "Warm",
                    },
                    # Older than the tour's changes: created over the days before.
                    system_modstamp=T0 - timedelta(hours=number + 1),
                ),
                size,
            )
        )
    return accounts


def _rated() -> list[tuple[Account, int]]:
    """The first account of each size in `RATED`: those step 3 changes."""
    rated: dict[int, Account] = {}
    for account, size in _sized_accounts():
        if size in RATED:
            rated.setdefault(size, account)
    return [(account, size) for size, account in rated.items()]


def _contacts_of(account: Account, size: int, first: int) -> list[Contact]:
    domain = str(account.fields["Name"]).lower().replace(" ", "")
    return [
        Contact(
            id=make_id("003", first + n),
            account_id=account.id,
            fields={
                "FirstName": _FIRST[n % len(_FIRST)],
                "LastName": _LAST[(n // len(_FIRST)) % len(_LAST)],
                "Email": f"contact{n}@{domain}.example",
            },
            system_modstamp=T0 - timedelta(minutes=first + n),
        )
        for n in range(size)
    ]


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
                system_modstamp=T0 - timedelta(minutes=number + 1),
            )
        )
    first = 10_000
    for account, size in _sized_accounts():
        source.upsert(account)
        for contact in _contacts_of(account, size, first):
            source.upsert(contact)
        first += size
    source.add_raw("Account", {"attributes": {"type": "Account"}, "Id": "not-an-id"})


def _acme_to_retail(source: InMemorySource) -> None:
    source.upsert(
        Account(
            id=ACME,
            fields={"Name": "Acme", "Industry": "Retail"},
            system_modstamp=T0 + timedelta(minutes=10),
        )
    )


def _ratings_changed(source: InMemorySource) -> None:
    stamp = T0 + timedelta(minutes=20)
    source.upsert(Account(id=GLOBEX, fields={"Name": "Globex Corp"}, system_modstamp=stamp))
    for account, _ in _rated():
        fields = {**account.fields, "Rating": "Hot"}
        source.upsert(Account(id=account.id, fields=fields, system_modstamp=stamp))


def _acme_renamed(source: InMemorySource) -> None:
    source.upsert(
        Account(
            id=ACME,
            fields={"Name": "Acme Inc", "Industry": "Retail"},
            system_modstamp=T0 + timedelta(minutes=30),
        )
    )


ORG_HISTORY: Final[Sequence[Callable[[InMemorySource], None]]] = (
    _first_org,
    _acme_to_retail,
    _ratings_changed,
    _acme_renamed,
)
"""What Salesforce does during the tour, in order."""


class _Tour:
    """Prints the tour for people, or gathers it into one JSON document."""

    def __init__(self, out: Output, store: SqlStore) -> None:
        self._out = out
        self.store = store
        self.steps: list[dict[str, Any]] = []

    def heading(self, title: str) -> None:
        self.steps.append({"title": title, "runs": []})
        if not self._out.json:
            self._out.console.print(f"\n[bold]== {escape(title)}[/]")

    def say(self, text: str) -> None:
        if not self._out.json:
            self._out.console.print(f"   {escape(text)}")

    def show(self, table: Table) -> None:
        if not self._out.json:
            self._out.console.print(table)

    def sync(self, engine: SyncEngine, *, rejections: bool = False) -> SyncReport:
        started = datetime.now(UTC)
        report = engine.sync()
        run = self.store.record_run(
            SyncRun.from_report(
                report, started_at=started, finished_at=datetime.now(UTC), source="demo org"
            )
        )
        self.steps[-1]["runs"].append(run_document(run, self.store.org))
        self.say(
            f"pages: {report.pages:,} | applied: accounts {report.accounts_upserted:,},"
            f" contacts {report.contacts_upserted:,}"
            f" | already applied: {report.already_applied:,}"
            f" | activities logged: {len(report.activities):,}"
            f" | local edits overwritten: {report.local_edits_discarded:,}"
        )
        for suppression in report.suppressed:
            self.say(
                f"suppressed: account {suppression.account_id} has"
                f" {suppression.contact_count:,} contacts (> 5,000):"
                f" {suppression.entries_skipped:,} entries not logged"
            )
        for rejection in report.rejected if rejections else ():
            self.say(
                f"rejected: {rejection.object_type} {rejection.record_id}: {rejection.reason}"
            )
        return report

    def value(self, account_id: str, field: str) -> object:
        account = self.store.get_account(account_id)
        return None if account is None else account.fields.get(field)


def _size_table(accounts: Sequence[tuple[str, int]]) -> Table:
    table = Table("contacts per account", "accounts", "contacts", title="The org by size")
    bands = ((0, 0), (1, 9), (10, 99), (100, 999), (1_000, 5_000), (5_001, None))
    for low, high in bands:
        sizes = [size for _, size in accounts if size >= low and (high is None or size <= high)]
        label = f"{low:,}" if low == high else f"{low:,}+" if high is None else f"{low:,}-{high:,}"
        table.add_row(label, f"{len(sizes):,}", f"{sum(sizes):,}")
    return table


def tour(tour: _Tour) -> None:
    """The first run: every rule on a fresh store."""
    store = tour.store
    source = InMemorySource()
    engine = SyncEngine(source=source, store=store, clock=lambda: T0 + timedelta(hours=1))
    sized = [(account.id, size) for account, size in _sized_accounts()]
    everyone = [(ACME, 2), (GLOBEX, BIG), *sized]
    contacts = sum(size for _, size in everyone)

    tour.heading(
        f"1. First sync: {len(everyone)} accounts of every size, {contacts:,} contacts,"
        " one malformed record"
    )
    _first_org(source)
    tour.show(_size_table(everyone))
    tour.sync(engine, rejections=True)
    tour.say("(a first appearance logs no Change Data Value)")

    tour.heading("2. Salesforce changes Acme's Industry: one entry per contact")
    _acme_to_retail(source)
    tour.sync(engine)
    for entry in store.activities():
        tour.say(
            f"Change Data Value: contact {entry.contact_id} {entry.field}:"
            f" {entry.old_value!r} -> {entry.new_value!r} ({entry.origin.value})"
        )

    tour.heading("3. Salesforce changes one account of each size: logged up to 5,000 contacts")
    _ratings_changed(source)
    report = tour.sync(engine)
    logged = Counter(entry.account_id for entry in report.activities)
    skipped = {s.account_id: s.entries_skipped for s in report.suppressed}
    table = Table("account", "contacts", "entries logged", "entries not logged")
    changed = [(account.id, size) for account, size in _rated()] + [(GLOBEX, BIG)]
    for account_id, size in changed:
        table.add_row(
            shown_value(str(tour.value(account_id, "Name"))),
            f"{size:,}",
            f"{logged[account_id]:,}",
            f"{skipped.get(account_id, 0):,}",
        )
    tour.show(table)
    tour.say(f"Globex is now named {tour.value(GLOBEX, 'Name')!r}: the change synced all the same")

    tour.heading("4. A local edit through Ana reaches Ben too, and is not pushed")
    result = engine.edit_account_field(contact_id=ANA, field="Industry", value="Finance")
    tour.say(f"{result.contact_count} contacts, {len(result.activities)} local entries logged")
    tour.say(f"Acme's Industry, as every contact sees it: {tour.value(ACME, 'Industry')!r}")
    tour.say(f"writes sent to Salesforce: {len(source.writes())}")
    tour.sync(engine)
    tour.say(f"a sync with no newer Acme version keeps it: {tour.value(ACME, 'Industry')!r}")

    tour.heading("5. Salesforce updates Acme's Name: all local edits are overwritten")
    _acme_renamed(source)
    tour.sync(engine)
    acme = store.get_account(ACME)
    tour.say(f"Acme now: {dict(acme.fields) if acme else None}")

    tour.heading("6. Convert Person creates Contact, Account and Opportunity in Salesforce")
    lead = Person(id="lead-42", fields={"LastName": "Doe", "Company": "Initech"})
    conversion = engine.convert_person(lead)
    again = engine.convert_person(lead)
    tour.say(f"created account {conversion.account_id}, contact {conversion.contact_id},")
    tour.say(
        f"opportunity {conversion.opportunity_id}; a retry gave the same: {again == conversion}"
    )
    tour.say(
        f"in the local store before the next sync: {store.get_account(conversion.account_id)}"
    )
    tour.sync(engine)
    initech = store.get_account(conversion.account_id)
    tour.say(f"after it: {dict(initech.fields) if initech else None}")


def resume(tour: _Tour, watermark: datetime) -> None:
    """A later run: the org as the tour left it, plus one change after the watermark."""
    store = tour.store
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
    tour.heading(f"Resuming from the stored watermark {watermark.isoformat()}")
    tour.say("Salesforce changed Acme's Phone since; the rest of the org is not read again")
    tour.sync(engine)
    for entry in list(store.activities(account_id=ACME))[-2:]:
        tour.say(
            f"Change Data Value: contact {entry.contact_id} {entry.field}:"
            f" {entry.old_value!r} -> {entry.new_value!r}"
        )


DEMO_ORG: Final = "demo"
"""The demo's org key: the demo never writes to another org's data in the database."""


def run_demo(out: Output, database: Database) -> None:
    """Run the tour into ``database`` (or resume there), and show what happens."""
    with SqlStore(database.url, org=DEMO_ORG) as store:
        tour_ = _Tour(out, store)
        watermark = store.watermark("Account")
        if watermark is None:
            if not out.json:
                out.console.print(f"A new local copy in {escape(database.shown)}")
            tour(tour_)
        else:
            if not out.json:
                out.console.print(
                    f"The local copy in {escape(database.shown)} already holds a sync"
                )
            resume(tour_, watermark)
        counts = store.counts()
    if out.json:
        out.document(
            {
                "database": database.shown,
                "resumed": watermark is not None,
                "steps": tour_.steps,
                "holds": {
                    "accounts": counts.accounts,
                    "contacts": counts.contacts,
                    "activities": counts.activities,
                },
            }
        )
        return
    out.console.print(
        f"\n{escape(database.shown)} holds {counts.accounts} accounts, {counts.contacts:,}"
        f" contacts and {counts.activities:,} Change Data Value entries."
        " Run again to resume; delete the file to start over."
    )
    # The demo's data is under its own org key: without --org the commands would read
    # the default org's.
    where = f"--db {shlex.quote(database.shown)} --org {DEMO_ORG}"
    out.console.print(f"See the last run: acctsync status {escape(where)}")
    out.console.print(f"The activity log: acctsync activities {escape(where)}")
    out.console.print(f"One account: acctsync show account {ACME} {escape(where)}")
