"""Store adapters shipped with acctsync, each behind its own optional extra.

- `acctsync.stores.sql`: SQLite and PostgreSQL through SQLAlchemy (extras ``sql``,
  ``postgres``).
"""
