import os
import uuid
from collections.abc import Iterator

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
