"""The SQL store's record of sync runs (schema version 3), its counts and its org list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

pytest.importorskip("sqlalchemy")

from sqlalchemy import create_engine

from acctsync import (
    Account,
    ConfigurationError,
    Contact,
    Deletion,
    Origin,
    Rejection,
    Suppression,
    SyncEngine,
)
from acctsync.stores.sql import SCHEMA_VERSION, SqlStore, StoreCounts, SyncRun
from acctsync.stores.sql._schema import Tables, current_version, migrate
from acctsync.testing import InMemorySource, make_id
from sql_fixtures import StoreFactory

T0 = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
LATER = datetime(2030, 1, 1, tzinfo=UTC)
A1, A2 = make_id("001", 1), make_id("001", 2)
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))
_1s = timedelta(seconds=1)


def org_with_a_bad_record() -> InMemorySource:
    source = InMemorySource()
    source.upsert(Account(id=A1, fields={"Name": "Acme"}, system_modstamp=T0))
    source.upsert(Contact(id=C1, account_id=A1, fields={}, system_modstamp=T0))
    source.upsert(Contact(id=C2, account_id=A1, fields={}, system_modstamp=T0))
    source.add_raw("Account", {"attributes": {"type": "Account"}, "Id": "not-an-id"})
    return source


def run_at(seconds: int, **fields: object) -> SyncRun:
    start = T0 + timedelta(seconds=seconds)
    return SyncRun(
        started_at=start,
        finished_at=start + timedelta(seconds=1),
        **{"outcome": "ok", **fields},  # type: ignore[arg-type]
    )


def test_a_recorded_run_reads_back_whole(make_store: StoreFactory) -> None:
    store = make_store()
    report = SyncEngine(source=org_with_a_bad_record(), store=store, clock=lambda: LATER).sync()
    run = SyncRun.from_report(
        report, started_at=T0, finished_at=T0 + timedelta(seconds=2), source="a test org"
    )
    assert run.outcome == "rejected"
    assert run.rejected_count == 1
    assert run.accounts_upserted == 1
    assert run.contacts_upserted == 2
    recorded = store.record_run(run)
    assert recorded.id is not None
    again = make_store().last_run()
    assert again == recorded
    assert again.rejected == report.rejected
    assert again.watermarks == {"Account": T0, "Contact": T0}
    assert again.duration == timedelta(seconds=2)


def test_a_run_of_every_outcome_keeps_its_fields(make_store: StoreFactory) -> None:
    store = make_store()
    suppression = Suppression(
        account_id=A1, contact_count=5001, entries_skipped=5001, origin=Origin.LOCAL
    )
    for number, outcome in enumerate(("ok", "rejected", "failed", "interrupted")):
        run = run_at(
            number,
            outcome=outcome,
            error=None if outcome in ("ok", "rejected") else f"{outcome}: 'quoted' \"text\" ü",
            pages=number,
            suppressed=(suppression,),
            suppressed_count=1,
            watermarks={"Account": T0 + timedelta(microseconds=number)},
        )
        assert store.record_run(run) == attrs.evolve(run, id=number + 1)
    assert [run.outcome for run in store.runs()] == ["interrupted", "failed", "rejected", "ok"]
    assert store.runs(limit=2)[0].suppressed == (suppression,)


def test_runs_are_newest_first_and_limited(make_store: StoreFactory) -> None:
    store = make_store()
    ids = [store.record_run(run_at(n, pages=n)).id for n in range(5)]
    assert ids == sorted(ids)
    assert [run.pages for run in store.runs(limit=3)] == [4, 3, 2]
    assert store.last_run().pages == 4  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError):
        store.runs(limit=0)


def test_an_org_keeps_its_latest_100_runs_and_the_first_1000_rejections(
    make_store: StoreFactory,
) -> None:
    store, other = make_store(org="acme"), make_store(org="globex")
    other.record_run(run_at(0))
    for n in range(103):
        store.record_run(run_at(n, pages=n))
    kept = store.runs(limit=1000)
    assert len(kept) == 100
    assert [run.pages for run in kept][-1] == 3
    assert len(other.runs(limit=1000)) == 1
    many = tuple(
        Rejection(object_type="Contact", record_id=None, reason=f"row {n}") for n in range(1500)
    )
    stored = store.record_run(run_at(200, outcome="rejected", rejected=many))
    assert stored.rejected == many[:1000]
    assert stored.rejected_count == 1500
    assert store.last_run() == stored


def test_runs_belong_to_their_org(make_store: StoreFactory) -> None:
    acme, globex = make_store(org="acme"), make_store(org="globex")
    assert acme.last_run() is None
    assert acme.orgs() == []
    globex.record_run(run_at(0))
    assert acme.last_run() is None
    assert globex.last_run() is not None
    SyncEngine(source=org_with_a_bad_record(), store=make_store(org="initech")).sync()
    assert acme.orgs() == ["globex", "initech"]


def test_counts_are_of_live_records_and_the_log(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.counts() == StoreCounts(accounts=0, contacts=0, activities=0)
    source = org_with_a_bad_record()
    source.upsert(Account(id=A2, fields={"Name": "Globex"}, system_modstamp=T0))
    source.upsert(Contact(id=C3, account_id=A2, fields={}, system_modstamp=T0))
    engine = SyncEngine(source=source, store=store, clock=lambda: LATER)
    engine.sync()
    source.upsert(Account(id=A1, fields={"Name": "Acme Inc"}, system_modstamp=T0 + _1s))
    source.delete(Deletion(object_type="Account", id=A2, deleted_at=T0 + _1s))
    engine.sync()
    # Acme's rename logs one entry per contact; Globex and its contact are tombstones.
    assert store.counts() == StoreCounts(accounts=1, contacts=2, activities=2)
    assert make_store(org="other").counts() == StoreCounts(accounts=0, contacts=0, activities=0)


def test_a_version_2_database_gains_the_runs_table_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    tables = Tables.define("acctsync_", None)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        migrate(conn, tables, 0, target=2)
        conn.execute(
            tables.watermarks.insert().values(org="default", stream="Account", system_modstamp=7)
        )
    store = SqlStore.sqlite(path)
    with store.engine.connect() as conn:
        assert current_version(conn, tables) == SCHEMA_VERSION
    assert store.watermark("Account") == datetime(1970, 1, 1, 0, 0, 0, 7, tzinfo=UTC)
    assert store.last_run() is None
    store.record_run(run_at(0))
    assert store.orgs() == ["default"]
    store.close()
    engine.dispose()


def test_a_run_checks_its_values() -> None:
    with pytest.raises(ConfigurationError, match="outcome"):
        run_at(0, outcome="fine")
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        SyncRun(started_at=datetime(2024, 1, 1), finished_at=T0, outcome="ok")
    assert "outcome='ok'" in repr(run_at(0))


def test_a_run_quoting_text_that_is_not_unicode_is_recorded(make_store: StoreFactory) -> None:
    # A rejection may quote the record it rejected: a raw Id with half a surrogate pair.
    store = make_store()
    rejected = Rejection(
        object_type="Account", record_id="001\ud83d", reason="not an ID", origin="a\ud83d.csv:2"
    )
    run = store.record_run(run_at(0, outcome="rejected", rejected=(rejected,), rejected_count=1))
    assert store.last_run() == run
