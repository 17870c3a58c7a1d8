"""The stateful model test of `test_stateful`, run against the SQL store on SQLite.

Same machine, same plain model of the rules; only the store differs, so any difference
between the SQL store and the rules (a lost tombstone, a move that missed a contact, an
activity entry written twice) fails here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest.importorskip("sqlalchemy")

from acctsync.stores.sql import SqlStore
from test_stateful import AccountSync


class SqlAccountSync(AccountSync):
    def new_store(self) -> SqlStore:
        self.directory = Path(tempfile.mkdtemp(prefix="acctsync-"))
        self.sql_store = SqlStore.sqlite(self.directory / "acctsync.db")
        return self.sql_store

    def teardown(self) -> None:
        self.sql_store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


SqlAccountSync.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_sql_account_sync = SqlAccountSync.TestCase
