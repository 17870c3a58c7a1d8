"""The SQL store's compiled statements, and the fast paths for a batch's many rows.

`Statements` builds every frequent statement once per store, in its dialect's own form:
the reads by ID and account, and the upserts a batch applies. Rows go in as tuples in
their table's column order: on SQLite through `Prepared.run` (many to an INSERT), on
PostgreSQL through `CopyBulk` (``COPY``, straight into the table for new rows). Apart
from the store because this is how the store talks fast to each database, not what it
does: the store decides which statement to run, this module how to run it cheaply.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from contextlib import ExitStack
from itertools import chain
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    CursorResult,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from acctsync._state import DeleteContacts, MoveContacts
from acctsync.stores.sql._schema import Tables

__all__ = ["CopyBulk", "NotNewError", "Prepared", "Statements"]


class Prepared:
    """A statement compiled once, run straight through the driver.

    SQLAlchemy builds it in the dialect's own form; parameters skip its per-row
    processing, which for these column types (text, integers, booleans) does nothing but
    costs more than the database's own work on the store's small, frequent statements.
    """

    def __init__(self, statement: Any, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self._sql = str(compiled)
        self._keys = tuple(keys)
        self._positional = bool(compiled.positional)
        if self._positional and tuple(compiled.positiontup or ()) != self._keys:
            raise AssertionError(f"unexpected parameter order in {self._sql}")
        # An INSERT of one row of qmark values: `run` repeats the row's placeholders.
        self._row = f"({', '.join(['?'] * len(keys))})"
        head, values, self._tail = self._sql.partition(f" VALUES {self._row}")
        self._head = head + " VALUES " if values and self._row not in self._tail else None
        self._inserts: dict[tuple[int, str], str] = {}

    def run(
        self,
        conn: Connection,
        rows: Iterable[tuple[object, ...]],
        *,
        new: Container[str] = frozenset(),
        fixed: Mapping[str, bool | None] | None = None,
    ) -> None:
        """Insert the rows, if any, in their order; each holds the values of ``keys``,
        but for those ``fixed`` gives (the same in every row: a bool or null).

        For SQLite's INSERTs, whose parameters are positional (PostgreSQL's many rows go
        by `CopyBulk`). ``new`` is there to match `CopyBulk.run`: SQLite's upsert of a new
        row costs what its plain insert does.

        Rows go many to a statement (``VALUES (...), (...), ...``), as many as SQLite's
        limit on a statement's parameters allows, up to `_ROWS_MAX`: the driver's
        ``executemany`` steps and resets the statement once per row, and in a first load
        took half as long again as the same rows in statements of hundreds. Statements
        hold a power of two of rows, so that a store prepares a few of each, whatever the
        sizes of its batches: SQLite's statement cache keeps them. A ``fixed`` value is
        written into the statement (``0``, ``NULL``), not bound: the driver binds each
        parameter by itself, and in plain `sqlite3` rows of five parameters instead of
        eight went in in two thirds of the time.
        """
        if not self._positional:
            raise AssertionError("run() takes positional rows")
        listed = rows if isinstance(rows, list) else list(rows)
        if not listed:
            return
        fixed = fixed or {}
        if not fixed.keys() < set(self._keys):
            raise ValueError(f"fixed names other keys than {self._keys}: {sorted(fixed)}")
        if any(value not in (None, False, True) for value in fixed.values()):
            raise ValueError(f"fixed values are written as SQL: a bool or None, {fixed}")
        width = len(self._keys) - len(fixed)
        if set(map(len, listed)) != {width}:  # flattened, rows would shift
            raise ValueError(f"each row takes {width} values, for {self._keys}")
        if fixed and self._head is None:
            listed, fixed, width = self._whole(listed, fixed), {}, len(self._keys)
        if self._head is None:  # placeholders of another style (pysqlite's "numeric")
            conn.exec_driver_sql(self._sql, listed)
            return
        variables = _VARIABLES_MIN
        limit = getattr(conn.connection.driver_connection, "getlimit", None)
        if limit is not None:  # sqlite3's, from Python 3.11
            # Imported here: a PostgreSQL store needs no sqlite3, which a Python may lack.
            from sqlite3 import SQLITE_LIMIT_VARIABLE_NUMBER

            # https://www.sqlite.org/limits.html#max_variable_number: 32,766 from SQLite
            # 3.32, 999 before, and lower where an application set it so.
            variables = limit(SQLITE_LIMIT_VARIABLE_NUMBER)
        row = f"({', '.join(_literal(fixed[key]) if key in fixed else '?' for key in self._keys)})"
        fits = max(1, variables // width)
        size = min(_ROWS_MAX, 1 << (fits.bit_length() - 1))
        at, total = 0, len(listed)
        while at < total:
            while size > total - at:
                size >>= 1
            values = tuple(chain.from_iterable(listed[at : at + size]))
            conn.exec_driver_sql(self._insert(size, row), values)
            at += size

    def _whole(
        self, rows: list[tuple[object, ...]], fixed: Mapping[str, bool | None]
    ) -> list[tuple[object, ...]]:
        """``rows`` with the ``fixed`` values in their places."""
        whole = []
        for row in rows:
            values = iter(row)
            whole.append(tuple(fixed[key] if key in fixed else next(values) for key in self._keys))
        return whole

    def _insert(self, size: int, row: str) -> str:
        """The statement with ``size`` rows of values, each as ``row`` gives them."""
        sql = self._inserts.get((size, row))
        if sql is None:
            sql = f"{self._head}{', '.join([row] * size)}{self._tail}"
            self._inserts[size, row] = sql
        return sql

    def execute(self, conn: Connection, **params: object) -> CursorResult[Any]:
        """Execute once with ``params``, one per key."""
        values = tuple(params[key] for key in self._keys) if self._positional else params
        return conn.exec_driver_sql(self._sql, values)


def _literal(value: bool | None) -> str:
    """``value`` as SQL writes it: SQLite keeps a bool as 0 or 1, as the driver binds it."""
    return "NULL" if value is None else str(int(value))


# Rows in one of `Prepared.run`'s statements: in plain sqlite3, statements of 500 and
# 1,000 rows were the quickest measured, of 2,000 slower.
_ROWS_MAX = 512
_VARIABLES_MIN = 999  # parameters any SQLite takes in one statement


class NotNewError(Exception):
    """A row `CopyBulk.run` was told is new was in the table: the transaction failed."""


class CopyBulk:
    """PostgreSQL's fast path for many rows, in the caller's transaction: ``COPY``
    straight into the table for rows presumed new; for the others ``COPY`` into a
    temporary table, then one ``INSERT ... SELECT ... ON CONFLICT`` from it.

    Rows are tuples in the table's column order, as for `Prepared.run`. Those presumed
    new go first; within each part rows keep their order (the activity log's order,
    which is kept whole when all or none are presumed new).
    """

    def __init__(self, table: Table, keys: Sequence[str], *, update: bool) -> None:
        from psycopg.errors import UniqueViolation  # only PostgreSQL stores get here

        self._conflict = UniqueViolation
        self._key = _constraint_on(table, keys)
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        names = [c.name for c in table.c if c is not table.autoincrement_column]
        stage = Table(
            f"{table.name}_stage",
            MetaData(),
            Column("n", BigInteger),
            *(Column(name, table.c[name].type) for name in names),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DELETE ROWS",
        )
        self._create = str(CreateTable(stage, if_not_exists=True).compile(dialect=dialect))
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in names)
        self._copy = f"COPY {quote(stage.name)} (n, {columns}) FROM STDIN"
        target = dialect.identifier_preparer.format_table(table)
        self._copy_in = f"COPY {target} ({columns}) FROM STDIN"
        insert = postgresql.insert(table).from_select(
            names, select(*(stage.c[name] for name in names)).order_by(stage.c.n)
        )
        if update:
            insert = insert.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: insert.excluded[name] for name in names if name not in keys},
            )
        else:
            insert = insert.on_conflict_do_nothing(index_elements=list(keys))
        self._insert = str(insert.compile(dialect=dialect))

    def run(
        self,
        conn: Connection,
        rows: Iterable[tuple[object, ...]],
        *,
        new: Container[str] = frozenset(),
    ) -> None:
        """Write ``rows`` to the table.

        Rows whose ID (their second value) is in ``new``, which the caller expects the
        table not to hold (it read none of them), are copied straight into it: half the
        work of an upsert. Should one be there after all, `NotNewError` says so; the
        transaction is then lost, and the caller runs it again without ``new``.
        """
        rest: list[tuple[object, ...]] = []
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            try:
                # One pass, the COPY opened at the first new row: rows made as they are
                # iterated (see `SqlStore.apply`) are made while the server takes in
                # those sent before.
                with ExitStack() as copying:
                    copy = None
                    for row in rows:
                        if row[1] not in new:
                            rest.append(row)
                            continue
                        if copy is None:
                            copy = copying.enter_context(cursor.copy(self._copy_in))
                        copy.write_row(row)
            except self._conflict as error:
                if error.diag.constraint_name != self._key:
                    raise
                raise NotNewError from error
            if rest:
                self._upsert(cursor, rest)

    def _upsert(self, cursor: Any, rows: Iterable[tuple[object, ...]]) -> None:
        cursor.execute(self._create)
        with cursor.copy(self._copy) as copy:
            for n, row in enumerate(rows):
                copy.write_row((n, *row))
        cursor.execute(self._insert)


def _constraint_on(table: Table, keys: Sequence[str]) -> str:
    """The name PostgreSQL gives ``table``'s primary key or unique constraint on ``keys``."""
    if [column.name for column in table.primary_key.columns] == list(keys):
        return str(table.primary_key.name or f"{table.name}_pkey")  # PostgreSQL's default
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and constraint.columns.keys() == list(keys):
            return str(constraint.name)
    raise AssertionError(f"{table.name} has no unique constraint on {keys}")


class Statements:
    """The store's frequent statements, built once, upserts in the dialect's own form."""

    def __init__(self, tables: Tables, dialect: Dialect) -> None:
        self._tables = tables
        self._insert = sqlite.insert if dialect.name == "sqlite" else postgresql.insert
        self.upsert_account: Prepared | CopyBulk
        self.upsert_contact: Prepared | CopyBulk
        self.insert_activity: Prepared | CopyBulk
        if dialect.name == "postgresql":
            self.upsert_account = CopyBulk(tables.accounts, ("org", "id"), update=True)
            self.upsert_contact = CopyBulk(tables.contacts, ("org", "id"), update=True)
            self.insert_activity = CopyBulk(tables.activities, ("org", "id"), update=False)
        else:
            self.upsert_account = self._bulk(self._upsert(tables.accounts, ("org", "id")), dialect)
            self.upsert_contact = self._bulk(self._upsert(tables.contacts, ("org", "id")), dialect)
            self.insert_activity = self._bulk(
                self._insert(tables.activities).on_conflict_do_nothing(
                    index_elements=["org", "id"]
                ),
                dialect,
            )
        self.upsert_conversion = self._upsert(tables.conversions, ("org", "person_id"))
        # The first spelling of a name stays (rule R9).
        self.insert_field_name = self._insert(tables.field_names).on_conflict_do_nothing(
            index_elements=["org", "object_type", "folded"]
        )
        self.upsert_watermark = self._upsert(tables.watermarks, ("org", "stream"))
        self.upsert_checkpoint = self._upsert(tables.checkpoints, ("org", "name"))

        org = bindparam("org", type_=String)
        account_id = bindparam("account_id", type_=String)
        contacts, marks = tables.contacts, tables.watermarks
        self.watermark = Prepared(
            select(marks.c.system_modstamp).where(
                marks.c.org == org, marks.c.stream == bindparam("stream")
            ),
            dialect,
            ("org", "stream"),
        )
        names = tables.field_names
        self.field_names = Prepared(
            select(names.c.name)
            .where(names.c.org == org, names.c.object_type == bindparam("object_type"))
            .order_by(names.c.folded),
            dialect,
            ("org", "object_type"),
        )
        points = tables.checkpoints
        self.checkpoint = Prepared(
            select(points.c.position).where(
                points.c.org == org, points.c.name == bindparam("name")
            ),
            dialect,
            ("org", "name"),
        )
        live = (contacts.c.org == org, contacts.c.account_id == account_id)
        self.count_contacts = Prepared(
            select(func.count()).where(*live), dialect, ("org", "account_id")
        )
        self.contact_ids = Prepared(
            select(contacts.c.id).where(*live).order_by(contacts.c.id),
            dialect,
            ("org", "account_id"),
        )
        account_is_one_of = self._one_of(contacts.c.account_id, dialect)
        self.contact_counts_of = Prepared(
            select(contacts.c.account_id, func.count())
            .where(contacts.c.org == org, account_is_one_of)
            .group_by(contacts.c.account_id),
            dialect,
            ("org", "ids"),
        )
        self.contacts_of_accounts = Prepared(
            select(contacts.c.account_id, contacts.c.id)
            .where(contacts.c.org == org, account_is_one_of)
            .order_by(contacts.c.account_id, contacts.c.id),
            dialect,
            ("org", "ids"),
        )
        self.accounts_of, self.contacts_of = (
            Prepared(
                select(table).where(table.c.org == org, self._one_of(table.c.id, dialect)),
                dialect,
                ("org", "ids"),
            )
            for table in (tables.accounts, tables.contacts)
        )

    @staticmethod
    def _one_of(column: Any, dialect: Dialect) -> Any:
        """``column`` is one of the parameter ``ids``, a JSON array: one parameter for
        thousands of IDs, written by C code (psycopg writes an array's items in Python)."""
        ids = bindparam("ids", type_=String)
        if dialect.name == "sqlite":
            return column.in_(select(func.json_each(ids).table_valued("value").c.value))
        # A set, not ``= ANY(array)``: PostgreSQL can hash it or probe the index with it.
        return column.in_(select(func.json_array_elements_text(cast(ids, postgresql.JSON))))

    @staticmethod
    def _bulk(statement: Any, dialect: Dialect) -> Prepared:
        table = statement.table
        # Only the columns rows give: not an autoincrementing key.
        keys = [c.name for c in table.c if c is not table.autoincrement_column]
        return Prepared(statement, dialect, keys)

    def _upsert(self, table: Table, keys: Sequence[str]) -> Any:
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: statement.excluded[c.name] for c in table.c if c.name not in keys},
        )

    def contact_op(self, org: str, op: MoveContacts | DeleteContacts) -> Any:
        """The statement that carries out a `MoveContacts` or `DeleteContacts`."""
        table = self._tables.contacts
        if isinstance(op, MoveContacts):
            return (
                update(table)
                .where(table.c.org == org, table.c.account_id == op.from_account_id)
                .values(account_id=op.to_account_id)
            )
        # A deleted account's contacts become tombstones with their own stamps.
        return (
            update(table)
            .where(table.c.org == org, table.c.account_id == op.account_id)
            .values(deleted=True, account_id=None, master_record_id=None, fields="{}")
        )
