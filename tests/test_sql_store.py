"""The SQL store on SQLite and PostgreSQL: the store protocol, orgs, locks, schema versions."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("sqlalchemy")

import sqlalchemy
from sqlalchemy import create_engine, inspect

from acctsync import (
    Account,
    AccountState,
    ActivityPolicy,
    Batch,
    ChangeDataValue,
    Checkpoint,
    ConfigurationError,
    Contact,
    Deletion,
    FieldName,
    FieldValue,
    LockLostError,
    LockTimeoutError,
    MoveContacts,
    Origin,
    SchemaVersionError,
    StoreError,
    SyncEngine,
    Watermark,
    make_converter,
)
from acctsync.stores.sql import SCHEMA_VERSION, SqlStore
from acctsync.stores.sql import _codec as sql_codec_module
from acctsync.stores.sql import _store as sql_store_module
from acctsync.stores.sql._codec import Codec, Rows
from acctsync.stores.sql._schema import Tables, current_version, migrate
from acctsync.stores.sql._store import engine_url
from acctsync.testing import InMemorySource, InMemoryStore, check_store, make_id
from acctsync.testing.strategies import (
    account_states,
    accounts,
    change_data_values,
    contacts,
    deletions,
    field_maps,
)
from sql_fixtures import StoreFactory

T0 = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
LATER = datetime(2030, 1, 1, tzinfo=UTC)
A1, A2 = make_id("001", 1), make_id("001", 2)
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))
HOSTILE = "x'); DROP TABLE accounts; --"


def account(account_id: str, seconds: int, **fields: object) -> Account:
    return Account(id=account_id, fields=fields, system_modstamp=T0 + timedelta(seconds=seconds))  # type: ignore[arg-type]


def contact(contact_id: str, account_id: str | None, seconds: int, **fields: object) -> Contact:
    return Contact(
        id=contact_id,
        account_id=account_id,
        fields=fields,  # type: ignore[arg-type]
        system_modstamp=T0 + timedelta(seconds=seconds),
    )


def log_entry() -> ChangeDataValue:
    return ChangeDataValue(
        id="entry-1",
        contact_id=C1,
        account_id=A1,
        field="Industry",
        old_value="Tech",
        new_value="Retail",
        origin=Origin.LOCAL,
        occurred_at=T0,
    )


def synced(store: SqlStore) -> tuple[InMemorySource, SyncEngine]:
    source = InMemorySource()
    source.upsert(account(A1, 0, Name="Acme", Industry="Tech"))
    source.upsert(contact(C1, A1, 0, LastName="One"))
    source.upsert(contact(C2, A1, 0, LastName="Two"))
    engine = SyncEngine(source=source, store=store, clock=lambda: LATER)
    engine.sync()
    return source, engine


# -- The store protocol -----------------------------------------------------------------


def test_conformance_checks_pass(make_store: StoreFactory) -> None:
    orgs = itertools.count()
    check_store(lambda: make_store(org=f"org-{next(orgs)}"))


def test_a_sync_into_sql_equals_a_sync_into_memory(make_store: StoreFactory) -> None:
    memory, sql = InMemoryStore(), make_store()
    source = InMemorySource()
    engines = [
        SyncEngine(source=source, store=store, page_size=2, clock=lambda: LATER)
        for store in (memory, sql)
    ]
    source.upsert(account(A1, 0, Name="Acme", Revenue=Decimal("1.50")))
    source.upsert(account(A2, 0, Name="Beta"))
    for n, contact_id in enumerate((C1, C2, C3)):
        source.upsert(contact(contact_id, A1 if n < 2 else A2, n))
    for engine in engines:
        engine.sync()
        engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    source.upsert(account(A1, 10, Name="Acme Corp", Revenue=Decimal("2.00")))
    source.delete(
        Deletion(
            object_type="Account",
            id=A2,
            deleted_at=T0 + timedelta(seconds=11),
            master_record_id=A1,
        )
    )
    reports = [engine.sync() for engine in engines]
    assert reports[0] == reports[1]
    assert list(sql.accounts()) == list(memory.accounts())
    assert sorted(sql.contacts(), key=lambda c: c.id) == sorted(
        memory.contacts(), key=lambda c: c.id
    )
    assert list(sql.activities()) == list(memory.activities())
    assert sql.account_states([A2]) == memory.account_states([A2])
    assert sql.watermark("Account") == memory.watermark("Account")


def test_hostile_values_stay_data(make_store: StoreFactory) -> None:
    # Names are API names (R10: a record cannot hold another), so SQL meets odd text only
    # in values.
    store = make_store()
    odd: dict[str, object] = {
        "Delete_From__c": "'; DELETE FROM acctsync_contacts; --",
        "Quote__c": "'\"\x00\u2603 ünïcode",
        "Amount": Decimal("12345678901234567890.123456789"),
        "Day": date(2024, 2, 29),
        "At": datetime(2024, 1, 1, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
        "Yes": True,
        "One": 1,
        "Huge": -(2**80) - 1,
        "Float": 0.1,
        "Nothing": None,
    }
    upstream = account(A1, 0, **odd)
    store.apply(Batch(accounts=[AccountState(upstream=upstream)]))
    stored = store.get_account(A1)
    assert stored == upstream
    assert stored is not None
    for name, value in odd.items():
        assert type(stored.fields[name]) is type(value)
    entry = ChangeDataValue(
        id=f"x:{HOSTILE}",
        contact_id=C1,
        account_id=A1,
        field=HOSTILE,
        old_value=odd["At"],  # type: ignore[arg-type]
        new_value=odd["Huge"],  # type: ignore[arg-type]
        origin=Origin.LOCAL,
        occurred_at=T0,
    )
    store.apply(Batch(activities=[entry]))
    assert list(store.activities()) == [entry]
    assert store.get_account(A1) == upstream


def test_a_failed_batch_writes_nothing(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    synced(store)
    # The watermark is written last; make it fail after the contact row went in.
    monkeypatch.setattr(
        store._statements,
        "upsert_watermark",
        sqlalchemy.text("INSERT INTO no_such_table VALUES (1)"),
    )
    with pytest.raises(StoreError, match="no_such_table"):
        store.apply(
            Batch(
                contacts=[contact(C3, A1, 5)],
                watermarks=[Watermark(stream="Account", system_modstamp=LATER)],
            )
        )
    assert store.get_contact(C3) is None
    assert store.watermark("Account") == T0


def test_sqlite_rows_are_made_before_the_write_lock_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runners of other orgs wait for SQLite's one write lock: a batch takes it to write,
    # not to turn records into rows.
    store = SqlStore.sqlite(tmp_path / "store.db")
    other = sqlite3.connect(tmp_path / "store.db", timeout=0, isolation_level=None)
    made = []
    contact_rows = store._rows.live_contacts

    def rows_while_unlocked(entries: list[Contact]) -> list[tuple[object, ...]] | None:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" while a write holds it
        other.execute("ROLLBACK")
        made.extend(entry.id for entry in entries)
        return contact_rows(entries)

    monkeypatch.setattr(store._rows, "live_contacts", rows_while_unlocked)
    store.apply(Batch(contacts=[contact(C1, None, 0), contact(C2, None, 0)]))
    assert made == [C1, C2]
    assert store.get_contact(C2) == contact(C2, None, 0)
    other.close()
    store.close()


@pytest.mark.parametrize(
    ("variables", "live", "rows_per_insert"),
    [(40, False, 4), (999, False, 64), (40, True, 8), (999, True, 128)],
)
def test_sqlite_rows_go_many_to_an_insert_within_the_databases_parameter_limit(
    tmp_path: Path, variables: int, live: bool, rows_per_insert: int
) -> None:
    # 40 parameters hold 5 rows of 8 values: statements of 4 (a power of two), then the
    # rest by halves. 999 is SQLite's limit before 3.32. Live contacts with no sequence
    # have the 3 values they share written into the statement, and bind 5: 8 fit in 40.
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")

    @sqlalchemy.event.listens_for(engine, "connect")
    def lower_the_limit(dbapi_connection: sqlite3.Connection, _: object) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)

    inserts: list[tuple[int, bool]] = []

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def count(*args: Any) -> None:
        _, _, statement, parameters, _, executemany = args
        if statement.startswith("INSERT INTO acctsync_contacts"):
            inserts.append((len(parameters), executemany))

    store = SqlStore(engine)
    contacts = [contact(make_id("003", n), A1, n % 7, N=n) for n in range(rows_per_insert * 3 + 7)]
    if not live:  # an event's versions, each with its sequence
        contacts = [attrs.evolve(c, sequence=(1, n)) for n, c in enumerate(contacts)]
    store.apply(Batch(contacts=contacts))
    assert [store.get_contact(c.id) for c in contacts] == contacts
    each = 5 if live else 8
    sizes = (rows_per_insert,) * 3 + (4, 2, 1)
    assert inserts == [(each * rows, False) for rows in sizes]
    store.close()
    engine.dispose()


@pytest.mark.skipif(
    sys.version_info >= (3, 14),
    reason="sqlite3 refuses numbered placeholders bound by a sequence from Python 3.14",
)
# From Python 3.12 sqlite3 warns of a sequence bound to ":1" placeholders, which is how
# SQLAlchemy's pysqlite binds them in this style: any statement of such an engine warns.
@pytest.mark.filterwarnings("ignore:Binding .* is a named parameter:DeprecationWarning")
def test_sqlite_rows_go_in_whatever_the_engines_placeholders(tmp_path: Path) -> None:
    # pysqlite also takes ":1" placeholders: those statements go row by row, as before.
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}", paramstyle="numeric")
    store = SqlStore(engine)
    contacts = [contact(make_id("003", n), A1, n) for n in range(3)]
    store.apply(Batch(contacts=contacts, activities=[log_entry()]))
    assert [store.get_contact(c.id) for c in contacts] == contacts
    assert list(store.activities()) == [log_entry()]
    store.close()
    engine.dispose()


def test_sqlite_rows_of_the_wrong_width_are_refused_not_shifted(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "store.db")
    rows = [store._rows.contact(contact(C1, A1, 0)), store._rows.contact(contact(C2, A1, 0))]
    # One value short, one too many: the same count flattened, each value a column off.
    rows = [rows[0][:-1], (*rows[1], None)]
    with store.engine.begin() as conn, pytest.raises(ValueError, match="8 values"):
        store._statements.upsert_contact.run(conn, rows)
    live = store._rows.live_contacts([contact(C1, A1, 0)])
    assert live is not None
    upsert = store._statements.upsert_contact
    with store.engine.begin() as conn, pytest.raises(ValueError, match="5 values"):
        upsert.run(conn, [live[0][:-1]], fixed=store._rows.live)
    with store.engine.begin() as conn, pytest.raises(ValueError, match="other keys"):
        upsert.run(conn, live, fixed={"colour": None})
    with store.engine.begin() as conn, pytest.raises(ValueError, match="a bool or None"):
        upsert.run(conn, [live[0][:-1]], fixed={**store._rows.live, "sequence": "x"})  # type: ignore[dict-item]
    assert store.contact_states([C1, C2]) == {}
    store.close()


def test_a_row_another_writer_adds_between_read_and_write_is_updated(
    make_store: StoreFactory,
) -> None:
    # On PostgreSQL a runner copies rows it read no entry of straight into the table;
    # one that a writer not holding the store added meanwhile makes it roll back and
    # upsert everything instead.
    store, other = make_store(), make_store()
    synced(store)
    entry = log_entry()
    with store.exclusive():
        assert store.contact_states([C1, C3]).keys() == {C1}
        other.apply(Batch(contacts=[contact(C3, None, 1, LastName="Theirs")]))
        store.apply(
            Batch(
                contacts=[
                    contact(C1, A1, 5, LastName="Uno"),
                    contact(C3, A1, 5, LastName="Mine"),
                ],
                activities=[entry],
            )
        )
    assert store.get_contact(C3) == contact(C3, A1, 5, LastName="Mine")
    assert store.get_contact(C1) == contact(C1, A1, 5, LastName="Uno")
    assert list(store.activities()) == [entry]
    assert store.contact_ids(A1) == sorted([C1, C2, C3])


def test_postgresql_remembers_unheld_ids_only_for_the_runner_holding_the_store(
    postgres_schema: tuple[str, str],
) -> None:
    # An app that looks up contacts it does not hold, for days, must not grow the store.
    url, schema = postgres_schema
    with SqlStore(url, schema=schema) as store:
        assert store.get_contact(C3) is None
        assert store._unheld == {}
        with store.exclusive():
            store.contact_states([C3])
            assert C3 in store._unheld[store._statements.upsert_contact]
        assert store._unheld == {}


def test_postgresql_errors_in_bulk_writes_are_store_errors(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    store = SqlStore(
        create_engine(url, connect_args={"options": "-c lock_timeout=200"}), schema=schema
    )
    admin = create_engine(url)
    with admin.begin() as conn:  # the bulk write waits for this, then gives up
        conn.exec_driver_sql(f'LOCK TABLE "{schema}".acctsync_contacts')
        with pytest.raises(StoreError, match="lock timeout"):
            store.apply(Batch(contacts=[contact(C1, None, 0)]))
    admin.dispose()
    assert store.get_contact(C1) is None
    store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert store.get_contact(C1) == contact(C1, None, 0)
    store.engine.dispose()


def test_postgresql_the_tables_found_by_the_search_path_take_the_same_lock(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    named = SqlStore(url, schema=schema, org="acme")
    found = SqlStore(
        create_engine(url, connect_args={"options": f"-c search_path={schema}"}),
        org="acme",
        lock_timeout=0,
    )
    with named.exclusive(), pytest.raises(LockTimeoutError, match="'acme'"), found.exclusive():
        pass
    with found.exclusive():  # and it is free again
        pass
    named.engine.dispose()
    found.engine.dispose()


def test_postgresql_a_batch_whose_statistics_refresh_fails_is_applied(
    postgres_schema: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # The store refreshes the statistics of tables it grew, after the batch commits; a
    # VACUUM holding the log's table makes that ANALYZE wait, then give up.
    url, schema = postgres_schema
    store = SqlStore(
        create_engine(url, connect_args={"options": "-c lock_timeout=200"}), schema=schema
    )
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(
            f'LOCK TABLE "{schema}".acctsync_activities IN SHARE UPDATE EXCLUSIVE MODE'
        )
        store.apply(Batch(contacts=[contact(f"003{n:012d}", None, 0) for n in range(1000)]))
    admin.dispose()
    assert store.counts().contacts == 1000
    assert "could not refresh the statistics" in caplog.text
    store.engine.dispose()


def test_postgresql_a_clash_on_another_key_fails_without_a_retry(
    postgres_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, schema = postgres_schema
    store = SqlStore(url, schema=schema)
    synced(store)
    table = f'"{schema}".acctsync_activities'
    with store.engine.begin() as conn:  # a row where the log's next seq will be
        conn.exec_driver_sql(
            f"INSERT INTO {table} (seq, org, id, contact_id, account_id, field, old_value,"
            f" new_value, origin, occurred_at) VALUES (nextval(pg_get_serial_sequence("
            f"'{table}', 'seq')) + 1, 'other', 'x', 'c', 'a', 'f', 'null', 'null', 'local', 0)"
        )
    writes = []
    write = store._write
    monkeypatch.setattr(store, "_write", lambda *args: writes.append(1) or write(*args))
    entry = log_entry()
    with pytest.raises(StoreError, match="activities_pkey"):
        store.apply(Batch(activities=[entry]))
    assert writes == [1]  # not taken for a row presumed new that was there
    store.close()


def test_activities_read_in_pages_and_by_account_contact_and_time(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    entries = [
        ChangeDataValue(
            id=f"e{n}",
            contact_id=C1 if n % 2 else C2,
            account_id=A1 if n % 3 else A2,
            field="Name",
            old_value=n,
            new_value=n + 1,
            origin=Origin.SALESFORCE,
            occurred_at=T0 + timedelta(seconds=n),
        )
        for n in range(4500)
    ]
    store.apply(Batch(activities=entries))
    store.apply(Batch(activities=entries[:10]))  # a replay: nothing twice
    assert list(store.activities()) == entries
    assert list(store.activities(account_id=A2)) == [e for e in entries if e.account_id == A2]
    assert list(store.activities(contact_id=C1, since=T0 + timedelta(seconds=4000))) == [
        e for e in entries if e.contact_id == C1 and e.occurred_at >= T0 + timedelta(seconds=4000)
    ]


# Any instant Python holds, in UTC (as decoded records hold them) or another offset.
instants = st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])
)


@settings(max_examples=200, deadline=None)
@given(
    maps=st.lists(
        field_maps() | st.dictionaries(st.sampled_from(["At", "Until"]), instants),
        min_size=1,
        max_size=4,
    ),
    dates=st.lists(st.dates(), max_size=4),
)
def test_field_maps_are_written_alike_whatever_dates_were_met_before(
    maps: list[dict[str, Any]], dates: list[date]
) -> None:
    # A codec keeps each date's written form, a few at most here (a small cache cleared
    # when full): what it writes is what a fresh codec writes, and reads back the same.
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(sql_codec_module, "_DATES_MAX", 2)
        seasoned = Codec()
        for day in dates:
            seasoned.fields({"Day": day})
        for fields in maps:
            written = seasoned.fields(fields)
            # As orjson writes the converter's tagged forms, made anew each time.
            tag = make_converter().get_unstructure_hook(FieldValue)
            plain = orjson.dumps(fields, default=tag, option=orjson.OPT_PASSTHROUGH_DATETIME)
            assert written == plain.decode()
            assert written == Codec().fields(fields) == seasoned.fields(fields)
            assert seasoned.read_fields(written) == fields
            assert len(seasoned._dates) <= 2


def _sequenced(records: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The records, some with an event's sequence (which may pass 64 bits)."""
    sequences = st.none() | st.tuples(st.integers(0, 2**70), st.integers(0, 9))
    return st.builds(attrs.evolve, records, sequence=sequences)


# Integers beyond 64 bits among the values, which orjson refuses and the codec still writes.
_ANY_VALUES = field_maps(values=st.integers() | st.datetimes(timezones=st.just(UTC)) | st.text())


@settings(max_examples=200, deadline=None)
@given(
    account_entries=st.lists(
        st.one_of(
            account_states(upstreams=_sequenced(accounts())),
            account_states(upstreams=accounts(fields=_ANY_VALUES)),
            deletions(object_types=st.just("Account")),
        ),
        max_size=6,
    ),
    contact_entries=st.lists(
        st.one_of(
            _sequenced(contacts()),
            contacts(fields=_ANY_VALUES),
            deletions(object_types=st.just("Contact")),
        ),
        max_size=6,
    ),
)
def test_a_batch_s_rows_made_at_once_are_those_made_one_by_one(
    account_entries: list[AccountState | Deletion], contact_entries: list[Contact | Deletion]
) -> None:
    # Made at once where all are live records with no sequence, without the columns they
    # share (`Rows.live`): with those put back, the rows made one by one.
    rows, tables = Rows("org"), Tables.define("", None)

    def whole(keys: list[str], made: tuple[object, ...]) -> tuple[object, ...]:
        values = iter(made)
        return tuple(rows.live[key] if key in rows.live else next(values) for key in keys)

    for entries, upstreams, made, row, table in (
        (
            account_entries,
            [e.upstream if isinstance(e, AccountState) else e for e in account_entries],
            rows.live_accounts(account_entries),
            rows.account,
            tables.accounts,
        ),
        (
            contact_entries,
            contact_entries,
            rows.live_contacts(contact_entries),
            rows.contact,
            tables.contacts,
        ),
    ):
        live = all(not isinstance(u, Deletion) and u.sequence is None for u in upstreams)
        assert (made is not None) == (bool(entries) and live)
        if made is not None:
            keys = [column.name for column in table.c]
            assert [whole(keys, each) for each in made] == list(map(row, entries))


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(change_data_values(), max_size=30, unique_by=lambda e: e.id))
def test_logged_entries_read_back_as_they_were_logged(
    tmp_path: Path, entries: list[ChangeDataValue]
) -> None:
    # Values of every kind: quotes, backslashes, non-ASCII text, tagged numbers and times.
    with SqlStore.sqlite(tmp_path / f"log-{next(_DATABASES)}.db") as store:
        store.apply(Batch(activities=entries))
        assert list(store.activities()) == entries


_DATABASES = itertools.count()


def test_activities_by_time_in_windows_pages_and_either_direction(
    make_store: StoreFactory,
) -> None:
    store = make_store()

    def logged(n: int, second: int) -> ChangeDataValue:
        return ChangeDataValue(
            id=f"e{n}",
            contact_id=C1 if n % 2 else C2,
            account_id=A1,
            field="Name",
            old_value=None,
            new_value=n,
            origin=Origin.SALESFORCE,
            occurred_at=T0 + timedelta(seconds=second),
        )

    # Logged out of time order (a late commit, R1), several to a second, over two pages.
    entries = [logged(n, (n * 7919) % 1500) for n in range(4500)]
    store.apply(Batch(activities=entries))
    by_time = sorted(entries, key=lambda e: e.occurred_at)  # stable: as logged within a second
    assert list(store.activities()) == entries
    assert list(store.activities(by_time=True)) == by_time
    assert list(store.activities(by_time=True, newest_first=True)) == by_time[::-1]
    assert list(store.activities(newest_first=True, limit=3)) == entries[::-1][:3]
    since, until = T0 + timedelta(seconds=100), T0 + timedelta(seconds=1400)
    window = [e for e in by_time if since <= e.occurred_at < until]
    assert list(store.activities(since=since, until=until, by_time=True)) == window
    assert (
        list(store.activities(since=since, until=until, by_time=True, limit=2001))
        == (window[:2001])
    )
    assert store.count_activities(since=since, until=until) == len(window)
    assert store.count_activities(contact_id=C1) == sum(e.contact_id == C1 for e in entries)
    assert list(store.activities(limit=0)) == []
    with pytest.raises(ConfigurationError, match="limit"):
        list(store.activities(limit=-1))


def test_a_hold_whose_release_fails_in_the_driver_ends_without_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's BEGIN goes to the driver itself, so its error is the driver's, not
    # SQLAlchemy's; the lease then lapses as it does when its process is gone.
    store = SqlStore.sqlite(tmp_path / "held.db")

    def release(conn: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store._lock, "release", release)
    with store.exclusive():
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert store.get_contact(C1) == contact(C1, None, 0)


# -- Orgs --------------------------------------------------------------------------------


def test_orgs_share_a_database_and_nothing_else(make_store: StoreFactory) -> None:
    acme, beta = make_store(org="acme"), make_store(org="beta")
    synced(acme)
    assert acme.get_account(A1) is not None
    assert beta.get_account(A1) is None
    assert beta.watermark("Account") is None
    assert beta.count_contacts(A1) == 0
    assert list(beta.activities()) == []
    source = InMemorySource()
    source.upsert(account(A1, 50, Name="Beta's own"))
    SyncEngine(source=source, store=beta, clock=lambda: LATER).sync()
    assert acme.get_account(A1).fields["Name"] == "Acme"  # type: ignore[union-attr]
    assert beta.get_account(A1).fields["Name"] == "Beta's own"  # type: ignore[union-attr]


# -- Group commits -----------------------------------------------------------------------


def fail_watermarks(monkeypatch: pytest.MonkeyPatch, store: SqlStore, sql: str) -> None:
    """Make ``store``'s watermark write, the last of a batch's, run ``sql`` instead."""
    monkeypatch.setattr(store._statements, "upsert_watermark", sqlalchemy.text(sql))


@pytest.fixture
def each_batch_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups due at once: the store's thread commits each batch of a group as soon as it
    is applied (`committed` waits for it)."""
    monkeypatch.setattr("acctsync.stores.sql._store._GROUP_SECONDS", 0.0)


def test_group_commits_commit_on_the_way_out(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    mark = Watermark(stream="Contact", system_modstamp=T0)

    def apply_then_stop() -> None:
        with store.group_commits():
            store.apply(Batch(contacts=[contact(C1, None, 0)], watermarks=[mark]))
            store.apply(Batch(contacts=[contact(C3, None, 2)]))
            # The store reads what it applied; another connection only what is
            # committed: on SQLite nothing yet, on PostgreSQL each batch as applied.
            assert store.contact_states([C1, C3]).keys() == {C1, C3}
            seen = other.contact_states([C1, C3]).keys()
            assert seen == (set() if store.engine.dialect.name == "sqlite" else {C1, C3})
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply_then_stop()
    assert other.contact_states([C1, C3]).keys() == {C1, C3}
    assert other.watermark("Contact") == T0


def test_sqlite_a_batch_failing_in_a_group_takes_the_uncommitted_ones_and_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")
    mark = Watermark(stream="Contact", system_modstamp=T0)
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)], watermarks=[mark]))
        with monkeypatch.context() as patched:
            fail_watermarks(patched, store, "INSERT INTO no_such_table VALUES (1)")
            with pytest.raises(StoreError, match="no_such_table"):
                store.apply(Batch(contacts=[contact(C2, None, 1)], watermarks=[mark]))
        # C1 went with it, watermark and all: a later batch's watermark would pass it.
        assert store.contact_states([C1, C2]) == {}
        assert store.watermark("Contact") is None
        with pytest.raises(StoreError, match="end the run"):
            store.apply(Batch(contacts=[contact(C3, None, 2)]))
    assert store.contact_states([C1, C2, C3]) == {}
    with store.group_commits():  # the next run starts afresh
        store.apply(Batch(contacts=[contact(C3, None, 2)]))
    assert store.get_contact(C3) is not None


def asked_for(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The IDs of each lookup ``store`` asks its database for, from now on."""
    asked: list[set[str]] = []
    for query in (store._statements.accounts_of, store._statements.contacts_of):
        execute = query.execute

        def counted(conn: sqlalchemy.Connection, execute: Any = execute, **params: Any) -> Any:
            asked.append(set(json.loads(params["ids"])))
            return execute(conn, **params)

        monkeypatch.setattr(query, "execute", counted)
    return asked


def test_sqlite_a_group_on_an_org_without_rows_asks_only_for_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first load's pages are new records: their lookups cost no query, and what the
    # group wrote is found. (An unwritten ID shares a written one's slot, and is asked
    # for, once in millions here.)
    store = SqlStore.sqlite(tmp_path / "s.db")
    asked = asked_for(store, monkeypatch)
    with store.group_commits():
        assert store.account_states([A1]) == {}
        assert store.contact_states([C1, C2]) == {}
        assert asked == []
        store.apply(
            Batch(accounts=[AccountState(upstream=account(A1, 0))], contacts=[contact(C1, A1, 0)])
        )
        assert store.contact_states([C1, C2]).keys() == {C1}
        assert store.account_states([A1, A2]).keys() == {A1}
        assert asked == [{C1}, {A1}]
    assert store.contact_states([C2]) == {}  # the group is over: asked as ever
    with store.group_commits():  # the org has rows now
        assert store.contact_states([C2, C3]) == {}
    assert asked[2:] == [{C2}, {C2, C3}]


def test_sqlite_a_group_on_an_org_without_rows_asks_for_all_once_another_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store's apply outside the org's hold writes through a connection of its own: the
    # group then asks for every ID again, and finds the row.
    store, other = SqlStore.sqlite(tmp_path / "s.db"), SqlStore.sqlite(tmp_path / "s.db")
    edited = AccountState(upstream=account(A1, 0, Name="Acme"), local_edits={"Name": "Ours"})
    asked = asked_for(store, monkeypatch)
    with store.group_commits():
        assert store.account_states([A1]) == {}
        other.apply(Batch(accounts=[edited]))
        assert store.account_states([A1, A2]) == {A1: edited}
    assert asked == [{A1, A2}]


def test_sqlite_a_group_that_fails_to_begin_leaves_the_connection_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")

    def failing(self: SqlStore) -> None:
        raise StoreError("the database failed: disk I/O error")

    monkeypatch.setattr(SqlStore, "_fresh_tables", failing)
    with pytest.raises(StoreError, match="disk I/O error"), store.group_commits():
        pass
    with store.engine.connect() as conn:  # the pool's connection: checkpoints on
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() != 0


def test_sqlite_a_group_on_an_org_without_rows_finds_what_shares_a_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slot for all: whatever was written, every ID is asked for.
    monkeypatch.setattr(sql_store_module._Fresh, "_MASK", 0)
    store = SqlStore.sqlite(tmp_path / "s.db")
    asked = asked_for(store, monkeypatch)
    with store.group_commits():
        assert store.contact_states([C1, C2]) == {}
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
        assert store.contact_states([C1, C2]).keys() == {C1}
    assert asked == [{C1, C2}]


def eventually(done: Callable[[], bool], what: str) -> None:
    """Wait up to five seconds for ``done()``, a thread of the store's being at work."""
    deadline = time.monotonic() + 5
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def committed(store: SqlStore) -> None:
    """Wait until the store's thread has committed the due group (`each_batch_commits`):
    it holds the store's turn for the whole commit."""

    def done() -> bool:
        with store._turn:
            return store._group is None

    eventually(done, "the due group was not committed")


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_group_commits_once_its_time_is_up(tmp_path: Path) -> None:
    store, other = SqlStore.sqlite(tmp_path / "s.db"), SqlStore.sqlite(tmp_path / "s.db")
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
        eventually(lambda: other.get_contact(C1) is not None, "the due group was not committed")


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_due_group_commits_while_its_runner_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite writes a commit's pages without holding Python's lock: the runner decodes
    # its next page meanwhile, and its next statement waits for the commit.
    store, other = SqlStore.sqlite(tmp_path / "s.db"), SqlStore.sqlite(tmp_path / "s.db")
    committing, release = threading.Event(), threading.Event()
    commit = sqlalchemy.engine.RootTransaction.commit

    def held_commit(transaction: sqlalchemy.engine.RootTransaction) -> None:
        if threading.current_thread().name == "acctsync-group":  # the store's thread
            committing.set()
            release.wait(5)
        commit(transaction)

    monkeypatch.setattr(sqlalchemy.engine.RootTransaction, "commit", held_commit)
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)]))  # back before the commit ends
        assert committing.wait(5)
        assert other.get_contact(C1) is None
        threading.Timer(0.2, release.set).start()
        assert store.contact_states([C1]).keys() == {C1}  # in its turn, after the commit
        assert release.is_set()
        assert other.get_contact(C1) is not None


def pinned_pragma(store: SqlStore, name: str) -> object:
    """The value of pragma ``name`` on the connection ``store`` holds (`exclusive`)."""
    with store._turn:
        return store._pinned_driver().execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_group_checkpoints_its_commits_beside_its_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")
    # At each checkpoint: whether the runner could write meanwhile, and whether it was
    # on a connection other than the runner's.
    beside: list[tuple[bool, bool]] = []
    checkpoint = SqlStore._checkpoint

    def spied(self: SqlStore, conn: sqlite3.Connection, wal_frames: int) -> int | None:
        def runner() -> None:
            took = self._turn.acquire(timeout=1)
            beside.append((took, conn is not driver))
            if took:
                self._turn.release()

        writes = threading.Thread(target=runner)
        writes.start()
        writes.join()
        return checkpoint(self, conn, wal_frames)

    monkeypatch.setattr(SqlStore, "_checkpoint", spied)
    with store.group_commits():
        driver = store._pinned_driver()
        assert pinned_pragma(store, "wal_autocheckpoint") == 0  # left to the group's thread
        store.apply(Batch(contacts=[contact(C1, None, 0, LastName="One")]))
        eventually(lambda: bool(beside), "no checkpoint after the commit")
    assert beside == [(True, True)]
    # The connection goes back to the pool as every connection of the store is.
    assert driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 16_384
    assert store.get_contact(C1) is not None


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_long_group_writes_its_wal_from_the_start_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite writes the WAL from its start again only for a transaction that begins on a
    # WAL copied whole: never one that begins beside a checkpoint, as each of a load's
    # next batches does. Without a checkpoint in the runner's turn now and then, the WAL
    # would hold the whole load.
    monkeypatch.setattr("acctsync.stores.sql._store._WAL_PAGES", 8)
    store = SqlStore.sqlite(tmp_path / "s.db")
    applied = [0]  # batches
    checkpoint = SqlStore._checkpoint

    def after_the_next_batch(
        self: SqlStore, conn: sqlite3.Connection, wal_frames: int
    ) -> int | None:
        if conn is not pinned:  # beside the runner: let its next batch begin first
            seen, deadline = applied[0], time.monotonic() + 1
            while applied[0] == seen and time.monotonic() < deadline:
                time.sleep(0.005)
        return checkpoint(self, conn, wal_frames)

    monkeypatch.setattr(SqlStore, "_checkpoint", after_the_next_batch)
    with store.group_commits():
        pinned = store._pinned_driver()
        for n in range(60):
            ids = [make_id("003", 100 * n + k) for k in range(10)]
            store.apply(Batch(contacts=[contact(c, None, n, Notes="x" * 2000) for c in ids]))
            applied[0] += 1
            committed(store)
        wal = (tmp_path / "s.db-wal").stat().st_size
        applied[0] += 1  # no batch follows the last
    database = (tmp_path / "s.db").stat().st_size
    assert store.contact_states([make_id("003", 5909)]) != {}
    # 600 contacts of 2 KB: a WAL of a few batches, not of the load.
    assert wal < 400_000 < 1_200_000 < database, (wal, database)


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_checkpoint_that_fails_leaves_checkpoints_to_sqlite_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")
    checkpointer = SqlStore._checkpointer

    def broken(self: SqlStore) -> sqlite3.Connection | None:
        found = checkpointer(self)
        assert found is not None
        found.close()
        return found

    monkeypatch.setattr(SqlStore, "_checkpointer", broken)
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
        eventually(
            lambda: pinned_pragma(store, "wal_autocheckpoint") == 16_384,
            "the store left automatic checkpoints off",
        )
        store.apply(Batch(contacts=[contact(C2, None, 1)]))
    assert store.contact_states([C1, C2]).keys() == {C1, C2}


def test_sqlite_a_group_that_cannot_begin_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")

    def failing(_: sqlite3.Connection) -> str:
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr("acctsync.stores.sql._store._main_file", failing)
        with pytest.raises(StoreError, match="disk I/O error"), store.group_commits():
            pytest.fail("the group began")
    with store.group_commits():  # a group of its own, holding the store
        assert pinned_pragma(store, "wal_autocheckpoint") == 0
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert store.get_contact(C1) is not None


def test_sqlite_a_database_without_a_wal_is_not_checkpointed_by_the_group() -> None:
    store = SqlStore("sqlite://")
    with store.group_commits():
        assert pinned_pragma(store, "journal_mode") == "memory"
        assert pinned_pragma(store, "wal_autocheckpoint") == 16_384
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert store.get_contact(C1) is not None


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_store_in_memory_commits_its_due_groups_itself() -> None:
    # sqlite3 lets only its own thread use a database in memory: the group's thread may
    # not commit there, and a sync of over a second failed.
    store = SqlStore("sqlite://")
    mark = Watermark(stream="Contact", system_modstamp=T0)
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)], watermarks=[mark]))
        time.sleep(0.05)  # where the group's thread committed, it has by now
        store.apply(Batch(contacts=[contact(C2, None, 1)]))
    assert [store.get_contact(c) for c in (C1, C2)] == [contact(C1, None, 0), contact(C2, None, 1)]
    assert store.watermark("Contact") == T0


def test_sqlite_the_callers_own_transactions_on_a_shared_engine_stay_whole(
    tmp_path: Path,
) -> None:
    # The engine of the caller's app, given to the store: its connections run without
    # pysqlite's own transactions, and a transaction of the caller's must still begin.
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    store = SqlStore(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ledger (id INTEGER, amount INTEGER)")
    with contextlib.suppress(RuntimeError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO ledger VALUES (1, 50)")
        raise RuntimeError("the transfer failed half-way")
    with engine.connect() as conn:
        conn.exec_driver_sql("INSERT INTO ledger VALUES (2, 5)")
        conn.rollback()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("INSERT INTO ledger VALUES (3, 5)")  # asked for no transaction
    store.apply(Batch(contacts=[contact(C1, None, 0)]))

    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id FROM ledger").all() == [(3,)]
    assert store.get_contact(C1) is not None
    store.close()
    engine.dispose()


def test_sqlite_an_engine_whose_url_is_not_its_database_is_left_to_sqlite(
    tmp_path: Path,
) -> None:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "s.db", check_same_thread=False)

    # The URL says "in memory"; the connections are of the file.
    engine = create_engine("sqlite://", creator=connect)
    store = SqlStore(engine)
    with store.group_commits():
        assert pinned_pragma(store, "journal_mode") == "wal"
        assert pinned_pragma(store, "wal_autocheckpoint") == 16_384
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert SqlStore.sqlite(tmp_path / "s.db").get_contact(C1) is not None
    engine.dispose()


def test_sqlite_an_engine_of_one_connection_still_checkpoints_beside_its_runner(
    tmp_path: Path,
) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 's.db'}", pool_size=1, max_overflow=0, pool_timeout=30
    )
    store = SqlStore(engine)
    started = time.monotonic()
    with store.group_commits():
        assert time.monotonic() - started < 10  # no wait for a second connection
        assert pinned_pragma(store, "wal_autocheckpoint") == 0
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert store.get_contact(C1) is not None
    engine.dispose()


def test_sqlite_a_group_whose_last_commit_fails_says_so_on_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("acctsync.stores.sql._store._GROUP_SECONDS", 0.0)
    store = SqlStore.sqlite(tmp_path / "s.db")
    mark = Watermark(stream="Contact", system_modstamp=T0)

    tried = threading.Event()

    def failing_commit(_: sqlalchemy.engine.RootTransaction) -> None:
        tried.set()
        raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    applied = threading.Event()

    def apply_then_end() -> None:
        with store.group_commits(), monkeypatch.context() as patched:
            patched.setattr(sqlalchemy.engine.RootTransaction, "commit", failing_commit)
            store.apply(Batch(contacts=[contact(C1, None, 0)], watermarks=[mark]))
            applied.set()
            assert tried.wait(5)  # by the store's thread, with no write after it to say so

    with pytest.raises(StoreError, match="disk I/O error"):
        apply_then_end()
    assert applied.is_set()  # raised on the way out, not by the batch
    # Rolled back with its watermark, as a crash would have it: the next run reads it again.
    assert store.contact_states([C1]) == {}
    assert store.watermark("Contact") is None


def test_sqlite_another_writer_waits_for_a_group_and_no_longer(tmp_path: Path) -> None:
    alpha = SqlStore.sqlite(tmp_path / "s.db", org="alpha")
    beta = SqlStore.sqlite(tmp_path / "s.db", org="beta")
    written = threading.Event()

    def write() -> None:
        beta.apply(Batch(contacts=[contact(C1, None, 0)]))
        written.set()

    with alpha.group_commits():
        alpha.apply(Batch(contacts=[contact(C1, None, 0)]))
        writer = threading.Thread(target=write)
        writer.start()
        assert not written.wait(0.3)  # SQLite's one write lock is the group's
    writer.join(5)
    assert written.is_set()
    assert beta.get_contact(C1) is not None


def test_sqlite_a_runner_that_may_not_wait_sees_the_lease_of_a_group_at_once(
    tmp_path: Path,
) -> None:
    first = SqlStore.sqlite(tmp_path / "s.db", org="acme")
    second = SqlStore.sqlite(tmp_path / "s.db", org="acme", lock_timeout=0)
    with first.group_commits():
        first.apply(Batch(contacts=[contact(C1, None, 0)]))
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="'acme'"), second.exclusive():
            pass
        # Not after SQLite's busy timeout (5 s) for the group's write lock.
        assert time.monotonic() - started < 1.0


def test_sqlite_a_group_commits_while_its_runner_waits_for_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Bulk job's polls or a retry's backoff come between two batches: the database's
    # write lock is not held through them.
    monkeypatch.setattr("acctsync.stores.sql._store._GROUP_SECONDS", 0.2)
    store = SqlStore.sqlite(tmp_path / "s.db", org="alpha")
    other = SqlStore.sqlite(tmp_path / "s.db", org="beta", lock_timeout=0)
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
        reader = SqlStore.sqlite(tmp_path / "s.db", org="alpha")
        eventually(lambda: reader.get_contact(C1) is not None, "not committed while idle")
        other.apply(Batch(contacts=[contact(C2, None, 0)]))  # not waiting for the group
        store.apply(Batch(contacts=[contact(C3, None, 0)]))
    assert store.contact_states([C1, C3]).keys() == {C1, C3}
    assert other.get_contact(C2) is not None


def test_sqlite_a_read_that_ends_the_transaction_ends_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite rolls the whole transaction back on some errors (a full disk, say), reads'
    # too: the group's batches are gone, and a later one must not commit past them.
    store = SqlStore.sqlite(tmp_path / "s.db")
    mark = Watermark(stream="Contact", system_modstamp=T0)

    class Failing:
        def execute(self, conn: sqlalchemy.Connection, **_: object) -> object:
            conn.exec_driver_sql("ROLLBACK")
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("disk I/O error"))

    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, None, 0)], watermarks=[mark]))
        with monkeypatch.context() as patched:
            patched.setattr(store._statements, "watermark", Failing())
            with pytest.raises(StoreError, match="disk I/O error"):
                store.watermark("Contact")
        with pytest.raises(StoreError, match="end the run"):
            store.apply(Batch(contacts=[contact(C2, None, 1)]))
    assert store.contact_states([C1, C2]) == {}
    assert store.watermark("Contact") is None


def indexes(store: SqlStore) -> set[str]:
    """The names of the indexes ``store``'s SQLite file has, as another connection sees
    them."""
    path = store.engine.url.database
    assert path is not None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {name for (name,) in rows}


BY_ACCOUNT = "acctsync_contacts_by_account"


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_first_load_builds_the_by_account_index_at_its_end(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, A1, 0), contact(C2, A2, 0)]))
        committed(store)
        assert BY_ACCOUNT not in indexes(store)
        store.apply(Batch(contacts=[contact(C3, A1, 1)]))
    assert BY_ACCOUNT in indexes(store)
    assert store.contact_ids(A1) == [C1, C3]
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM acctsync_contacts WHERE org = 'default'"
            f" AND account_id = '{A1}'"
        )
        assert BY_ACCOUNT in str(plan.all())


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_group_that_needs_the_index_builds_it_at_once(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, A1, 0), contact(C2, A1, 0)]))
        committed(store)
        assert BY_ACCOUNT not in indexes(store)
        assert store.count_contacts(A1) == 2
        committed(store)
        assert BY_ACCOUNT in indexes(store)
    with store.group_commits():  # the database holds contacts: the index stays
        store.apply(Batch(contacts=[contact(C3, A2, 0)]))
        assert BY_ACCOUNT in indexes(store)
    assert store.contact_ids_of([A1, A2], up_to=10) == {A1: [C1, C2], A2: [C3]}


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_a_move_of_contacts_in_a_first_load_builds_the_index_first(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "s.db")
    with store.group_commits():
        store.apply(Batch(contacts=[contact(C1, A1, 0), contact(C2, A1, 0)]))
        store.apply(Batch(contact_ops=[MoveContacts(from_account_id=A1, to_account_id=A2)]))
        committed(store)
        assert BY_ACCOUNT in indexes(store)
    assert store.contact_ids(A2) == [C1, C2]


@pytest.mark.usefixtures("each_batch_commits")
def test_sqlite_two_first_loads_at_once_both_put_the_index_off(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    alpha = SqlStore.sqlite(path, org="alpha")
    beta = SqlStore.sqlite(path, org="beta")
    with alpha.group_commits(), beta.group_commits():
        # Accounts first: neither load has written a contact when the other begins.
        alpha.apply(Batch(accounts=[AccountState(upstream=account(A1, 0))]))
        beta.apply(Batch(accounts=[AccountState(upstream=account(A1, 0))]))
        beta.apply(Batch(contacts=[contact(C1, A1, 0)]))
        alpha.apply(Batch(contacts=[contact(C2, A1, 0)]))
    assert BY_ACCOUNT in indexes(alpha)
    assert alpha.contact_ids(A1) == [C2]
    assert beta.contact_ids(A1) == [C1]


def test_sqlite_an_index_a_killed_load_left_off_is_built_when_the_store_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    SqlStore.sqlite(path).apply(Batch(contacts=[contact(C1, A1, 0)]))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"DROP INDEX {BY_ACCOUNT}")
    store = SqlStore.sqlite(path)
    assert BY_ACCOUNT in indexes(store)
    assert store.contact_ids(A1) == [C1]


def test_the_engine_groups_the_commits_of_its_runs_of_pages_only() -> None:
    class Grouping(InMemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.grouped = False
            self.applies: list[bool] = []

        @contextlib.contextmanager
        def group_commits(self) -> Iterator[None]:
            self.grouped = True
            try:
                yield
            finally:
                self.grouped = False

        def apply(self, batch: Batch) -> None:
            self.applies.append(self.grouped)
            super().apply(batch)

    source, store = InMemorySource(), Grouping()
    source.upsert(account(A1, 0, Name="Acme"))
    source.upsert(contact(C1, A1, 0))
    engine = SyncEngine(source=source, store=store, clock=lambda: LATER)
    engine.sync()
    engine.reconcile()
    engine.refresh_formulas()
    assert store.applies
    assert all(store.applies)
    store.applies.clear()
    engine.edit_account_field(contact_id=C1, field="Industry", value="Retail")
    assert store.applies == [False]


# -- One runner per org ------------------------------------------------------------------


def test_a_second_runner_on_an_org_waits_then_fails_clearly(make_store: StoreFactory) -> None:
    first, second = make_store(org="acme"), make_store(org="acme", lock_timeout=0.3)
    other_org = make_store(org="beta", lock_timeout=0.3)
    with first.exclusive():
        with pytest.raises(LockTimeoutError, match="'acme'") as raised:
            synced(second)
        assert raised.value.org == "acme"
        synced(other_org)  # another org does not wait
        with first.exclusive():  # the holder may enter again
            first.apply(Batch(watermarks=[Watermark(stream="Account", system_modstamp=T0)]))
    synced(second)  # free again
    assert second.get_account(A1) is not None


def test_a_runner_waits_for_the_holder_to_finish(make_store: StoreFactory) -> None:
    first, second = make_store(org="acme"), make_store(org="acme", lock_timeout=10)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.exclusive():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    threading.Timer(0.2, release.set).start()
    synced(second)
    holder.join()
    assert second.get_account(A1) is not None


def test_sqlite_a_runner_whose_lease_lapsed_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "acctsync.db"
    slow = SqlStore.sqlite(path, lease=0)  # a lease that lapses at once
    fast = SqlStore.sqlite(path)
    with slow.exclusive():
        # The lease lapsed: another runner may take it, and the slow one must stop.
        with fast.exclusive():
            pass
        with pytest.raises(LockLostError):
            slow.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert fast.get_contact(C1) is None


# -- Schema versions ---------------------------------------------------------------------


def test_an_older_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    tables = Tables.define("acctsync_", None)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        migrate(conn, tables, 0, target=1)
        conn.execute(
            tables.watermarks.insert().values(org="default", stream="Account", system_modstamp=7)
        )
    engine.dispose()
    store = SqlStore.sqlite(path)
    with store.engine.connect() as conn:
        assert current_version(conn, tables) == SCHEMA_VERSION
    assert store.watermark("Account") == datetime(1970, 1, 1, 0, 0, 0, 7, tzinfo=UTC)
    synced(store)  # the upgraded store works, runner lock included
    store.close()


def test_a_version_3_database_gains_record_sequences_and_field_names(
    make_store: StoreFactory,
) -> None:
    # A database of version 3 has neither, nor what came after: take them out of a new one.
    store = make_store()
    synced(store)
    tables = store._tables
    with store.engine.begin() as conn:
        for table in (tables.accounts, tables.contacts):
            name = conn.dialect.identifier_preparer.format_table(table)
            conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN sequence")
        tables.field_names.drop(conn)
        tables.checkpoints.drop(conn)
        conn.execute(tables.meta.update().values(value=3))

    upgraded = make_store()
    assert upgraded.get_account(A1) is not None  # the old rows read, with no sequence
    later = Account(
        id=A1, fields={"Name": "B"}, system_modstamp=T0 + timedelta(seconds=9), sequence=(7, 1)
    )
    upgraded.apply(
        Batch(
            accounts=[AccountState(upstream=later)],
            field_names=[FieldName(object_type="Account", name="Name")],
        )
    )
    assert upgraded.account_states([A1])[A1] == AccountState(upstream=later)
    # The names the stored records used are the org's: an export in upper case that
    # comes next takes them (R9).
    assert upgraded.field_names("Account") == ["Industry", "Name"]
    assert upgraded.field_names("Contact") == ["LastName"]
    with upgraded.engine.connect() as conn:
        assert current_version(conn, tables) == SCHEMA_VERSION


def test_a_version_4_database_gains_checkpoints(make_store: StoreFactory) -> None:
    store = make_store()
    synced(store)
    tables = store._tables
    with store.engine.begin() as conn:
        tables.checkpoints.drop(conn)
        conn.execute(tables.meta.update().values(value=4))

    upgraded = make_store()
    assert upgraded.get_account(A1) is not None
    assert upgraded.checkpoint("pubsub /data/ChangeEvents") is None
    upgraded.apply(
        Batch(checkpoints=[Checkpoint(name="pubsub /data/ChangeEvents", position=b"\0\1")])
    )
    assert make_store().checkpoint("pubsub /data/ChangeEvents") == b"\0\1"
    with upgraded.engine.connect() as conn:
        assert current_version(conn, tables) == SCHEMA_VERSION


def test_a_version_5_database_gains_the_activity_logs_indexes(make_store: StoreFactory) -> None:
    store = make_store()
    synced(store)
    tables = store._tables
    with store.engine.begin() as conn:
        for index in tables.activities.indexes:
            index.drop(conn)
        conn.execute(tables.meta.update().values(value=5))
    wanted = {index.name for index in tables.activities.indexes}

    def indexed(engine: sqlalchemy.Engine) -> set[str | None]:
        with engine.connect() as conn:
            found = inspect(conn).get_indexes(tables.activities.name, tables.activities.schema)
        return {index["name"] for index in found} & wanted

    assert len(wanted) == 3
    assert not indexed(store.engine)
    upgraded = make_store()
    assert upgraded.get_account(A1) is not None
    assert indexed(upgraded.engine) == wanted
    with upgraded.engine.connect() as conn:
        assert current_version(conn, tables) == SCHEMA_VERSION == 6


def test_a_newer_schema_is_refused(make_store: StoreFactory) -> None:
    store = make_store()
    tables = Tables.define("acctsync_", store._tables.metadata.schema)
    with store.engine.begin() as conn:
        conn.execute(tables.meta.update().values(value=SCHEMA_VERSION + 1))
    with pytest.raises(SchemaVersionError, match="upgrade acctsync") as raised:
        make_store()
    assert raised.value.found == SCHEMA_VERSION + 1


def test_a_store_that_cannot_open_releases_the_engine_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "newer.db"
    first = SqlStore.sqlite(path)
    tables = Tables.define("acctsync_", None)
    with first.engine.begin() as conn:
        conn.execute(tables.meta.update().values(value=SCHEMA_VERSION + 1))
    first.close()
    made: list[sqlalchemy.Engine] = []

    def recorded(*args: Any, **kwargs: Any) -> sqlalchemy.Engine:
        made.append(create_engine(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sql_store_module, "create_engine", recorded)
    with pytest.raises(SchemaVersionError):
        SqlStore.sqlite(path)
    assert made[0].pool.checkedin() == 0  # disposed: nothing left for the collector


def test_activities_refuse_a_naive_time(make_store: StoreFactory) -> None:
    store = make_store()
    synced(store)
    for moment in (datetime(2024, 1, 1), "2024-01-01"):
        with pytest.raises(ConfigurationError, match="since must be a timezone-aware"):
            list(store.activities(since=moment))  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="until must be a timezone-aware"):
            store.count_activities(until=moment)  # type: ignore[arg-type]


def test_opening_again_keeps_everything(make_store: StoreFactory) -> None:
    synced(make_store())
    again = make_store()
    assert again.get_account(A1) is not None
    assert again.count_contacts(A1) == 2


def test_tables_take_a_prefix(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "app.db", table_prefix="sf_")
    synced(store)
    names = sqlalchemy.inspect(store.engine).get_table_names()
    assert "sf_accounts" in names
    assert not any(name.startswith("acctsync_") for name in names)
    store.close()


# -- Bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"org": ""}, "org"),
        ({"table_prefix": "x; DROP TABLE y"}, "table_prefix"),
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"lock_timeout": float("nan")}, "lock_timeout"),
        ({"lease": float("inf")}, "lease"),
        ({"lease": "long"}, "lease"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SqlStore.sqlite(tmp_path / "x.db", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for" * 100)
    with pytest.raises(StoreError, match="database"):
        SqlStore.sqlite(path)


def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "acctsync.db"
    SqlStore.sqlite(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_store_suppression_counts_in_the_database(make_store: StoreFactory) -> None:
    store = make_store()
    source, _ = synced(store)
    engine = SyncEngine(
        source=source,
        store=store,
        policy=ActivityPolicy(max_contacts_per_account=1),
        clock=lambda: LATER,
    )
    source.upsert(account(A1, 30, Name="Acme", Industry="Retail"))
    report = engine.sync()
    assert report.activities == ()
    assert [(s.account_id, s.contact_count) for s in report.suppressed] == [(A1, 2)]


def test_postgresql_a_runner_whose_session_ended_cannot_write(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    store = SqlStore(url, schema=schema, org="acme")
    with store.exclusive():
        assert store._pinned is not None
        # The server ends the session (a restart, a network cut): the lock goes with it.
        pid = store._pinned.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        store._pinned.rollback()
        admin = create_engine(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        admin.dispose()
        with pytest.raises(StoreError):
            store.apply(Batch(contacts=[contact(C1, None, 0)]))
        with pytest.raises(LockLostError):
            store.apply(Batch(contacts=[contact(C1, None, 0)]))
    assert store.get_contact(C1) is None
    store.close()


def test_contact_ids_after_a_count_see_writes_made_in_between(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    synced(store)
    with store.exclusive():
        assert store.count_contacts(A1) == 2
        store.apply(Batch(contacts=[contact(C3, A1, 5)]))
        assert store.contact_ids(A1) == sorted([C1, C2, C3])
    # Not holding the store, another runner may write between the two calls.
    assert store.count_contacts(A1) == 3
    other.apply(Batch(contacts=[Deletion(object_type="Contact", id=C3, deleted_at=LATER)]))
    assert store.contact_ids(A1) == sorted([C1, C2])


def test_contacts_of_many_accounts_leave_a_large_one_to_a_count(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    contacts = [contact(make_id("003", 100 + n), A1, 1) for n in range(5001)]
    contacts.append(contact(C1, A2, 1))
    accounts = [AccountState(upstream=account(a, 0)) for a in (A1, A2)]
    store.apply(Batch(accounts=accounts, contacts=contacts))
    unknown = make_id("001", 3)
    assert store.contact_ids_of([A1, A2, unknown], up_to=5000) == {A2: [C1], unknown: []}
    assert store.count_contacts(A1) == 5001
    assert len(store.contact_ids_of([A1], up_to=5001)[A1]) == 5001


def test_engine_url_names_psycopg_3_for_a_plain_postgresql_url() -> None:
    # SQLAlchemy 2.0 reads a plain postgresql:// as psycopg2's; the CLI's reads use it too.
    assert engine_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert engine_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert engine_url("sqlite:///x.db").drivername == "sqlite"
    # As hosting providers hand URLs out.
    assert engine_url("postgres://u@h/db").drivername == "postgresql+psycopg"


def test_a_store_repr_shows_no_password_in_the_url_or_its_query(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    plain = sqlalchemy.make_url(url).set(drivername="postgres")
    secret_urls = (plain.set(password="secret"), plain.update_query_dict({"password": "secret"}))
    for secret_url in secret_urls:
        with SqlStore(secret_url.render_as_string(hide_password=False), schema=schema) as store:
            assert "secret" not in repr(store)
            assert repr(store).startswith("<SqlStore postgresql+psycopg://")


def test_a_postgresql_url_without_a_driver_means_psycopg_3(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    plain = sqlalchemy.make_url(url).set(drivername="postgresql")
    with SqlStore(plain.render_as_string(hide_password=False), schema=schema) as store:
        assert store.engine.dialect.driver == "psycopg"
        store.apply(Batch(contacts=[contact(C1, None, 0)]))
        assert store.get_contact(C1) == contact(C1, None, 0)


def test_postgresql_through_another_driver_is_a_configuration_error() -> None:
    # pg8000 is not installed: SQLAlchemy takes a stand-in for its module.
    stand_in = types.SimpleNamespace(paramstyle="format", __version__="1.31.2", Error=Exception)
    engine = create_engine("postgresql+pg8000://u@127.0.0.1/db", module=stand_in)
    with pytest.raises(ConfigurationError, match=r"psycopg 3 \(postgresql\+psycopg://\)"):
        SqlStore(engine)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://u:secret@127.0.0.1/db",
        "nosuchdb://u:secret@h/db",
        "::",
        "postgresql://u:secret@127.0.0.1:notaport/db",
    ],
)
def test_a_url_without_its_driver_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SqlStore(url)
    assert "secret" not in str(raised.value)
