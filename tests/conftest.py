import functools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

pytest_plugins = ["sql_fixtures"]

POSTGRES_URL = os.environ.get(
    "ACCTSYNC_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_or_skip() -> str:
    """The test server's URL; skip when there is none, unless CI requires it."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.OperationalError as error:
        if os.environ.get("ACCTSYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"ACCTSYNC_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable: {error}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    return POSTGRES_URL


_TESTS = str(Path(__file__).parent) + os.sep


@pytest.fixture(autouse=True)
def close_the_tests_stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close, after each test, every `SqlStore` the test's own code opened.

    A store left open keeps its engine's connections until the collector finds it, and
    from Python 3.13 sqlite3 warns of each connection collected unclosed, in whatever
    test is running then. Only stores opened by code here are closed: one the library
    opens (the CLI's, a fleet worker's) is its own to close. Engines a test makes and
    gives a store are still the test's to dispose.
    """
    try:
        from acctsync.stores.sql import SqlStore
    except ImportError:  # no SQLAlchemy
        yield
        return
    package = os.path.dirname(sys.modules[SqlStore.__module__].__file__ or "") + os.sep
    opened: list[SqlStore] = []
    init = SqlStore.__init__

    @functools.wraps(init)
    def recording_init(self: SqlStore, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        frame = sys._getframe(1)  # the store's caller, past SqlStore.sqlite and the like
        while frame.f_code.co_filename.startswith(package) and frame.f_back is not None:
            frame = frame.f_back
        if frame.f_code.co_filename.startswith(_TESTS):
            opened.append(self)

    monkeypatch.setattr(SqlStore, "__init__", recording_init)
    yield
    for store in opened:
        store.close()


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh, empty PostgreSQL schema for one test: (URL, schema name), dropped after."""
    url = postgres_or_skip()
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        yield url, name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        engine.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[object]:
    """A fresh, empty store of each kind in turn: in memory, SQLite and PostgreSQL.

    For tests of a rule that must hold the same on every store.
    """
    from acctsync.testing import InMemoryStore

    if request.param == "memory":
        yield InMemoryStore()
        return
    pytest.importorskip("sqlalchemy")
    from acctsync.stores.sql import SqlStore

    if request.param == "sqlite":
        store = SqlStore.sqlite(os.path.join(str(tmp_path), "any.db"))
    else:
        url, schema = request.getfixturevalue("postgres_schema")
        store = SqlStore(url, schema=schema)
    try:
        yield store
    finally:
        store.close()
