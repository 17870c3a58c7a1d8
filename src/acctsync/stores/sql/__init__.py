"""A durable store in SQLite (the embedded default) or PostgreSQL, on SQLAlchemy Core.

Needs the ``sql`` extra (``pip install 'acctsync[sql]'``), and ``postgres`` for
PostgreSQL through psycopg 3::

    from acctsync.stores.sql import SqlStore

    store = SqlStore.sqlite("acctsync.db")                        # a file, WAL mode
    store = SqlStore("postgresql+psycopg://user@host/db", org="acme")
    store = SqlStore(my_engine, schema="sync", table_prefix="sf_")  # in an app's database
"""

from acctsync.stores.sql._schema import SCHEMA_VERSION
from acctsync.stores.sql._store import SqlStore

__all__ = ["SCHEMA_VERSION", "SqlStore"]
