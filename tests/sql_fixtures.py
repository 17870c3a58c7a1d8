"""Fixtures of the tests that run child processes on a SQL store: a fresh database each.

They need the module's own ``children`` fixture (a pool of `sql_child.Child` processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # sql_child needs SQLAlchemy, which the tests using these skip without
    from sql_child import Children, Database

__all__ = ["database", "postgresql_db", "sqlite_db"]


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
