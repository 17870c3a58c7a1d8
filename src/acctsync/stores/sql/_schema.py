"""The SQL store's tables and the steps that build them, one schema version each.

Every table is keyed by the org key first, so one database holds many orgs. Salesforce
field names and values are data: each record's fields are one JSON text column in the
library's lossless form (`acctsync.make_converter`), never a column or SQL of their own.
Timestamps are integers, microseconds since the Unix epoch in UTC: exact, ordered, and
the same on every database.

The schema grows by steps, never by editing one: step ``n`` takes a database from
version ``n - 1`` to ``n``. A new database runs every step; an older one runs those it
lacks. `Tables` describes the newest version, so a step that changes an existing table
states its own DDL. (Alembic would keep its own version table, which would clash with the caller's
own Alembic history when our tables live in their database.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from attrs import frozen
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
)

__all__ = ["SCHEMA_VERSION", "Tables", "current_version", "migrate"]

_ID = String(18)
_ORG = String(255)
# SQLite makes an INTEGER PRIMARY KEY the rowid, which counts up by itself.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


@frozen
class Tables:
    """The store's tables, named with a prefix, in an optional schema."""

    metadata: MetaData
    meta: Table
    accounts: Table
    contacts: Table
    activities: Table
    watermarks: Table
    conversions: Table
    locks: Table
    runs: Table
    field_names: Table
    checkpoints: Table

    @classmethod
    def define(cls, prefix: str, schema: str | None) -> Tables:
        """The tables, as the newest schema version has them."""
        metadata = MetaData(schema=schema)
        meta = Table(
            f"{prefix}meta",
            metadata,
            Column("name", String(64), primary_key=True),
            Column("value", Integer, nullable=False),
        )
        accounts = Table(
            f"{prefix}accounts",
            metadata,
            Column("org", _ORG, nullable=False),
            Column("id", _ID, nullable=False),
            Column("deleted", Boolean, nullable=False),
            Column("system_modstamp", BigInteger, nullable=False),
            Column("master_record_id", _ID),
            Column("fields", Text, nullable=False),
            Column("local_edits", Text, nullable=False),
            Column("local_revision", Integer, nullable=False),
            # The version's order within its stamp, where the source knew it (JSON).
            Column("sequence", Text),
            PrimaryKeyConstraint("org", "id"),
        )
        contacts = Table(
            f"{prefix}contacts",
            metadata,
            Column("org", _ORG, nullable=False),
            Column("id", _ID, nullable=False),
            Column("deleted", Boolean, nullable=False),
            Column("system_modstamp", BigInteger, nullable=False),
            Column("master_record_id", _ID),
            # NULL for tombstones, so that the index holds live contacts only.
            Column("account_id", _ID),
            Column("fields", Text, nullable=False),
            Column("sequence", Text),
            PrimaryKeyConstraint("org", "id"),
            # Covers count_contacts and contact_ids: an account's contacts, by ID.
            Index(f"{prefix}contacts_by_account", "org", "account_id", "id"),
        )
        activities = Table(
            f"{prefix}activities",
            metadata,
            Column("seq", _SEQ, primary_key=True, autoincrement=True),
            Column("org", _ORG, nullable=False),
            Column("id", Text, nullable=False),
            Column("contact_id", _ID, nullable=False),
            Column("account_id", _ID, nullable=False),
            Column("field", Text, nullable=False),
            Column("old_value", Text, nullable=False),
            Column("new_value", Text, nullable=False),
            Column("origin", String(16), nullable=False),
            Column("occurred_at", BigInteger, nullable=False),
            UniqueConstraint("org", "id", name=f"{prefix}activities_id"),
            # The log is read by time, whole or of one account or contact: each page of
            # it one range of an index (`SqlStore.activities`' keyset paging).
            Index(f"{prefix}activities_by_time", "org", "occurred_at", "seq"),
            Index(f"{prefix}activities_by_account", "org", "account_id", "occurred_at", "seq"),
            Index(f"{prefix}activities_by_contact", "org", "contact_id", "occurred_at", "seq"),
        )
        watermarks = Table(
            f"{prefix}watermarks",
            metadata,
            Column("org", _ORG, nullable=False),
            Column("stream", String(64), nullable=False),
            Column("system_modstamp", BigInteger, nullable=False),
            PrimaryKeyConstraint("org", "stream"),
        )
        conversions = Table(
            f"{prefix}conversions",
            metadata,
            Column("org", _ORG, nullable=False),
            Column("person_id", Text, nullable=False),
            Column("account_id", _ID, nullable=False),
            Column("contact_id", _ID, nullable=False),
            Column("opportunity_id", _ID, nullable=False),
            PrimaryKeyConstraint("org", "person_id"),
        )
        locks = Table(
            f"{prefix}locks",
            metadata,
            Column("org", _ORG, primary_key=True),
            Column("token", String(64), nullable=False),
            Column("holder", Text, nullable=False),
            Column("host", Text, nullable=False),
            Column("pid", Integer, nullable=False),
            Column("expires_at", BigInteger, nullable=False),
        )
        runs = Table(
            f"{prefix}runs",
            metadata,
            Column("seq", _SEQ, primary_key=True, autoincrement=True),
            Column("org", _ORG, nullable=False),
            Column("started_at", BigInteger, nullable=False),
            Column("outcome", String(16), nullable=False),
            # The rest of the `SyncRun` (counts, rejections...) as JSON: it grows without
            # a schema step.
            Column("summary", Text, nullable=False),
            # The last run of an org is its row with the highest seq.
            Index(f"{prefix}runs_by_org", "org", "seq"),
        )
        field_names = Table(
            f"{prefix}field_names",
            metadata,
            Column("org", _ORG, nullable=False),
            Column("object_type", String(16), nullable=False),
            # The name in lower case: one row per name whatever its case (rule R9).
            Column("folded", String(255), nullable=False),
            Column("name", String(255), nullable=False),
            PrimaryKeyConstraint("org", "object_type", "folded"),
        )
        checkpoints = Table(
            f"{prefix}checkpoints",
            metadata,
            Column("org", _ORG, nullable=False),
            Column("name", String(255), nullable=False),
            # Opaque: a Pub/Sub replay id, say.
            Column("position", LargeBinary, nullable=False),
            PrimaryKeyConstraint("org", "name"),
        )
        return cls(
            metadata,
            meta,
            accounts,
            contacts,
            activities,
            watermarks,
            conversions,
            locks,
            runs,
            field_names,
            checkpoints,
        )


def _create_core(conn: Connection, tables: Tables) -> None:
    for table in (
        tables.meta,
        tables.accounts,
        tables.contacts,
        tables.activities,
        tables.watermarks,
        tables.conversions,
    ):
        table.create(conn)  # with its indexes


def _create_locks(conn: Connection, tables: Tables) -> None:
    tables.locks.create(conn)


def _create_runs(conn: Connection, tables: Tables) -> None:
    tables.runs.create(conn)  # with its index


def _add_versions_and_field_names(conn: Connection, tables: Tables) -> None:
    # Step 1 builds the records' tables as they are now, sequence included: only a
    # database made before this step lacks the column.
    for table in (tables.accounts, tables.contacts):
        columns = {c["name"] for c in inspect(conn).get_columns(table.name, table.schema)}
        if "sequence" not in columns:
            name = conn.dialect.identifier_preparer.format_table(table)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN sequence TEXT")
    tables.field_names.create(conn)
    _name_stored_fields(conn, tables)


def _name_stored_fields(conn: Connection, tables: Tables) -> None:
    """Record the names the stored records use, each once in any case (the first met).

    Else an older database's first sync would take the spelling of whatever record came
    first, an upper-case export's say, beside the one its records have (R9).
    """
    quote = conn.dialect.identifier_preparer.format_table
    target = quote(tables.field_names)
    for table, object_type in ((tables.accounts, "Account"), (tables.contacts, "Contact")):
        if conn.dialect.name == "sqlite":
            keys = f"FROM {quote(table)} AS r, json_each(r.fields) AS k"
            name, insert = "k.key", "INSERT OR IGNORE INTO"
            conflict = ""
        else:
            keys = f"FROM {quote(table)} AS r, json_object_keys(r.fields::json) AS k(name)"
            name, insert = "k.name", "INSERT INTO"
            conflict = " ON CONFLICT DO NOTHING"
        # Names longer than the column were never Salesforce's (R10): left out.
        conn.exec_driver_sql(
            f"{insert} {target} (org, object_type, folded, name)"
            f" SELECT DISTINCT r.org, '{object_type}', lower({name}), {name} {keys}"
            f" WHERE NOT r.deleted AND length({name}) <= 255{conflict}"
        )


def _create_checkpoints(conn: Connection, tables: Tables) -> None:
    tables.checkpoints.create(conn)


def _index_activity_log(conn: Connection, tables: Tables) -> None:
    # Step 1 makes a new database's log with these indexes already.
    for index in tables.activities.indexes:
        index.create(conn, checkfirst=True)


_STEPS: Final[Sequence[Callable[[Connection, Tables], None]]] = (
    _create_core,  # 1: records, activity log, watermarks, conversions
    _create_locks,  # 2: the runner lease that SQLite needs (PostgreSQL uses advisory locks)
    _create_runs,  # 3: the sync runs, for a later look at what the last one did
    _add_versions_and_field_names,  # 4: same-second versions (R3), field spellings (R9)
    _create_checkpoints,  # 5: where each followed event stream was applied up to
    _index_activity_log,  # 6: the activity log read by time, of an org, account or contact
)

SCHEMA_VERSION: Final = len(_STEPS)
"""The schema version this acctsync writes, and the newest it reads."""

_VERSION_ROW = "schema_version"


def current_version(conn: Connection, tables: Tables) -> int:
    """The database's schema version: 0 where the store's tables do not exist yet."""
    if not conn.dialect.has_table(conn, tables.meta.name, schema=tables.metadata.schema):
        return 0
    value = conn.scalar(select(tables.meta.c.value).where(tables.meta.c.name == _VERSION_ROW))
    return 0 if value is None else int(value)


def migrate(conn: Connection, tables: Tables, found: int, target: int = SCHEMA_VERSION) -> None:
    """Run the steps from version ``found`` to ``target`` in the caller's transaction."""
    for version in range(found + 1, target + 1):
        _STEPS[version - 1](conn, tables)
        if version == 1:
            conn.execute(tables.meta.insert().values(name=_VERSION_ROW, value=version))
        else:
            conn.execute(
                tables.meta.update()
                .where(tables.meta.c.name == _VERSION_ROW)
                .values(value=version)
            )
