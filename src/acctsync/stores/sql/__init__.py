"""A durable store in SQLite (the embedded default) or PostgreSQL, on SQLAlchemy Core.

Needs the ``sql`` extra (``pip install 'acctsync[sql]'``), and ``postgres`` for
PostgreSQL through psycopg 3::

    from acctsync.stores.sql import SqlStore

    store = SqlStore.sqlite("acctsync.db")                        # a file, WAL mode
    store = SqlStore("postgresql+psycopg://user@host/db", org="acme")
    store = SqlStore(my_engine, schema="sync", table_prefix="sf_")  # in an app's database

Besides the store protocol it keeps a history of sync runs (`SqlStore.record_run`,
`SqlStore.last_run`), which ``acctsync status`` shows.
"""

from acctsync.stores.sql._runs import OUTCOMES, StoreCounts, SyncRun
from acctsync.stores.sql._schema import SCHEMA_VERSION
from acctsync.stores.sql._store import SqlStore

__all__ = ["OUTCOMES", "SCHEMA_VERSION", "SqlStore", "StoreCounts", "SyncRun"]
