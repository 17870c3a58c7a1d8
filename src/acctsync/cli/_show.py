"""``acctsync show account ID`` and ``acctsync show contact ID``: one stored record.

An account is shown with its effective values (what its contacts see: Salesforce's, with
the local edits on top, each marked), its contacts counted and the first few listed, and
the last entries of its activity log; a contact with its values, its account and the
last entries of its log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import click
from rich.markup import escape
from rich.table import Table

from acctsync._activity import ChangeDataValue
from acctsync._convert import make_converter
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX
from acctsync._records import Account, Contact, Deletion, FieldValue
from acctsync._state import AccountState
from acctsync.cli._command import (
    UnknownRecordError,
    existing,
    held,
    open_store,
    reporting,
    store_options,
)
from acctsync.cli._exits import ExitCode
from acctsync.cli._logs import logging_options
from acctsync.cli._output import (
    Output,
    activity_document,
    activity_table,
    iso,
    shown_value,
    when,
)
from acctsync.cli._params import Database, RecordId

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore

__all__ = ["show"]

_UNSTRUCTURE_VALUE: Final = make_converter().get_unstructure_hook(FieldValue)
# The fields that name a contact in a listing, when it has them.
_CONTACT_NAME: Final = ("Salutation", "FirstName", "LastName")


@click.group(short_help="Show one stored account or contact, with its contacts and log.")
@logging_options
def show() -> None:
    """Show one stored account or contact: its values, its contacts or account, and the
    last entries of its activity log."""


def _log_limit(function: Any) -> Any:
    return click.option(
        "--activities",
        "entry_count",
        type=click.IntRange(min=0),
        default=10,
        show_default=True,
        metavar="N",
        help="Show the last N entries of its activity log.",
    )(function)


@show.command("account", short_help="An account: its values, contacts and activity log.")
@store_options
@click.argument("account_id", metavar="ID", type=RecordId(ACCOUNT_PREFIX, "an account"))
@click.option(
    "--contacts",
    "contact_count",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    metavar="N",
    help="List the first N of its contacts (by ID).",
)
@_log_limit
@reporting
def show_account(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    account_id: str,
    contact_count: int,
    entry_count: int,
) -> ExitCode:
    """Show the account ID as stored: its values (local edits marked), its contacts
    (counted, the first N listed) and the last entries of its activity log."""
    existing(database)
    with open_store(database, org=org) as store:
        held(store, database)
        state = store.account_states([account_id]).get(account_id)
        if not isinstance(state, AccountState):
            raise _unknown("Account", account_id, state)
        total = store.count_contacts(account_id)
        first = list(store.contact_ids(account_id)[:contact_count])
        listed = store.contact_states(first)
        contacts = [c for i in first if isinstance(c := listed.get(i), Contact)]
        entries, logged = _last(store, entry_count, account_id=account_id, contact_id=None)
    if out.json:
        out.document(
            {
                "org": org,
                "account": _account_document(state),
                "contacts": {
                    "count": total,
                    "first": [_contact_document(contact) for contact in contacts],
                },
                "activities": _log_document(entries, logged),
            }
        )
        return ExitCode.OK
    console = out.console
    upstream = state.upstream
    console.print(
        f"[bold]account {upstream.id}[/] of org {escape(repr(org))},"
        f" SystemModstamp {when(upstream.system_modstamp)}"
    )
    console.print(_fields_table(upstream.fields, state.local_edits))
    console.print(f"contacts: {total:,}")
    for contact in contacts:
        console.print(f"  {contact.id}  {escape(_named(contact))}")
    if total > len(contacts):
        console.print(f"  ... and {total - len(contacts):,} more (--contacts N)")
    _print_log(out, entries, logged)
    return ExitCode.OK


@show.command("contact", short_help="A contact: its values, its account and activity log.")
@store_options
@click.argument("contact_id", metavar="ID", type=RecordId(CONTACT_PREFIX, "a contact"))
@_log_limit
@reporting
def show_contact(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    contact_id: str,
    entry_count: int,
) -> ExitCode:
    """Show the contact ID as stored: its values, its account (with the values it sees of
    it, local edits marked) and the last entries of its activity log."""
    existing(database)
    with open_store(database, org=org) as store:
        held(store, database)
        contact = store.contact_states([contact_id]).get(contact_id)
        if not isinstance(contact, Contact):
            raise _unknown("Contact", contact_id, contact)
        account, contact_total = None, 0
        if contact.account_id is not None:
            stored = store.account_states([contact.account_id]).get(contact.account_id)
            account = stored if isinstance(stored, AccountState) else None
            contact_total = store.count_contacts(contact.account_id)
        entries, logged = _last(store, entry_count, account_id=None, contact_id=contact_id)
    if out.json:
        out.document(
            {
                "org": org,
                "contact": _contact_document(contact),
                "account": None if account is None else _account_document(account),
                "activities": _log_document(entries, logged),
            }
        )
        return ExitCode.OK
    console = out.console
    console.print(
        f"[bold]contact {contact.id}[/] of org {escape(repr(org))},"
        f" SystemModstamp {when(contact.system_modstamp)}"
    )
    console.print(_fields_table(contact.fields, {}))
    if contact.account_id is None:
        console.print("no account")
    elif account is None:
        console.print(f"account {contact.account_id}, which the database does not hold")
    else:
        name = account.value("Name")
        named = f" {escape(shown_value(name))}" if name is not None else ""
        console.print(
            f"account {contact.account_id}{named}, with {contact_total:,} contacts;"
            " the values every contact of it sees:"
        )
        console.print(_fields_table(account.upstream.fields, account.local_edits))
    _print_log(out, entries, logged)
    return ExitCode.OK


def _unknown(
    object_type: str, record_id: str, stored: AccountState | Contact | Deletion | None
) -> UnknownRecordError:
    if isinstance(stored, Deletion):
        return UnknownRecordError(
            object_type,
            record_id,
            deleted_at=stored.deleted_at,
            master_record_id=stored.master_record_id,
        )
    return UnknownRecordError(object_type, record_id)


def _last(
    store: SqlStore, count: int, *, account_id: str | None, contact_id: str | None
) -> tuple[Sequence[ChangeDataValue], int]:
    """The last ``count`` entries of a record's log, oldest first, and how many it holds."""
    newest = list(
        store.activities(
            account_id=account_id,
            contact_id=contact_id,
            limit=count,
            by_time=True,
            newest_first=True,
        )
    )
    logged = store.count_activities(account_id=account_id, contact_id=contact_id)
    return newest[::-1], logged


def _named(contact: Contact) -> str:
    """A contact as a listing names it: its name and email, where it has them."""
    fields = contact.fields
    parts = [str(fields[name]) for name in _CONTACT_NAME if fields.get(name) is not None]
    email = fields.get("Email")
    if email is not None:
        parts.append(f"<{email}>")
    return " ".join(parts)


def _fields_table(upstream: Mapping[str, FieldValue], edits: Mapping[str, FieldValue]) -> Table:
    """Field values as their records show them: a local edit in place of Salesforce's
    value, marked, with Salesforce's beside it."""
    table = Table("field", "value", "", box=None, show_header=False, pad_edge=False)
    for name in sorted({*upstream, *edits}, key=str.casefold):
        if name in edits:
            before = shown_value(upstream.get(name))
            note = f"[yellow]local edit[/] (Salesforce: {escape(before)})"
            table.add_row(f"  {escape(name)}", escape(shown_value(edits[name])), note)
        else:
            table.add_row(f"  {escape(name)}", escape(shown_value(upstream[name])), "")
    return table


def _print_log(out: Output, entries: Sequence[ChangeDataValue], logged: int) -> None:
    console = out.console
    if not logged:
        console.print("activity log: no entries")
        return
    if not entries:
        console.print(f"activity log: {logged:,} entries (--activities N shows the last N)")
        return
    console.print(f"activity log: the last {len(entries):,} of {logged:,} entries")
    console.print(activity_table(entries))


def _values(fields: Mapping[str, FieldValue]) -> dict[str, Any]:
    return {name: _UNSTRUCTURE_VALUE(value) for name, value in fields.items()}


def _account_document(state: AccountState) -> dict[str, Any]:
    upstream = state.upstream
    effective: Account = state.effective()
    return {
        "id": upstream.id,
        "system_modstamp": iso(upstream.system_modstamp),
        "fields": _values(effective.fields),
        "local_edits": _values(state.local_edits),
        "salesforce_values": _values(
            {name: upstream.fields.get(name) for name in state.local_edits}
        ),
    }


def _contact_document(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "account_id": contact.account_id,
        "system_modstamp": iso(contact.system_modstamp),
        "fields": _values(contact.fields),
    }


def _log_document(entries: Sequence[ChangeDataValue], logged: int) -> dict[str, Any]:
    return {"count": logged, "last": [activity_document(entry) for entry in entries]}
