"""Fixtures of the SQL store's tests: stores on a fresh database, and child processes.

``make_store`` opens stores on one database per test, on SQLite and on PostgreSQL. The
others run child processes and need the module's own ``children`` fixture (a pool of
`sql_child.Child` processes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import pytest

if TYPE_CHECKING:  # sql_child needs SQLAlchemy, which the tests using these skip without
    from acctsync.stores.sql import SqlStore
    from sql_child import Children, Database

__all__ = ["StoreFactory", "database", "make_store", "postgresql_db", "sqlite_db"]

StoreFactory: TypeAlias = "Callable[..., SqlStore]"


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Stores on one database: each call opens another store on it (``org=`` and so on)."""
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import create_engine

    from acctsync.stores.sql import SqlStore

    opened: list[SqlStore] = []
    if request.param == "sqlite":
        path = tmp_path / "acctsync.db"

        def open_store(**options: object) -> SqlStore:
            opened.append(SqlStore.sqlite(path, **options))  # type: ignore[arg-type]
            return opened[-1]

        yield open_store
    else:
        url, schema = request.getfixturevalue("postgres_schema")
        engine = create_engine(url)

        def open_store(**options: object) -> SqlStore:
            opened.append(SqlStore(engine, schema=schema, **options))  # type: ignore[arg-type]
            return opened[-1]

        yield open_store
        engine.dispose()
    for store in opened:
        store.close()


@pytest.fixture
def sqlite_db(tmp_path: Path, children: Children) -> Iterator[Database]:
    """A fresh SQLite file."""
    from sql_child import Database

    yield Database(f"sqlite:///{tmp_path / 'acctsync.db'}", None, children)
    children.stop()


@pytest.fixture
def postgresql_db(postgres_schema: tuple[str, str], children: Children) -> Iterator[Database]:
    """A fresh PostgreSQL schema."""
    from sql_child import Database

    url, schema = postgres_schema
    yield Database(url, schema, children)
    children.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    """Each backend in turn."""
    db: Database = request.getfixturevalue(f"{request.param}_db")
    return db
