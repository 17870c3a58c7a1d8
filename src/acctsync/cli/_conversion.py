"""``acctsync convert``: Convert Person (rule S6), the one way to create an account from the
local side.

The engine creates the Contact, Account and Opportunity in Salesforce, in one all-or-none
request keyed by the person's ID, and records the conversion in the database; the records
themselves arrive with the next sync. Converting the same person again answers with the
recorded conversion and creates nothing; when the record of it was lost, the request's
key makes Salesforce create nothing twice.
"""

from __future__ import annotations

import logging
import os
from typing import IO, Any

import click
from rich.markup import escape

from acctsync._engine import SyncEngine
from acctsync._errors import InvalidRecordError
from acctsync._records import FieldValue, Person
from acctsync._state import Conversion
from acctsync.cli._command import (
    existing,
    held,
    lock_timeout,
    open_store,
    reporting,
    store_options,
)
from acctsync.cli._exits import ExitCode
from acctsync.cli._output import Output
from acctsync.cli._params import Database, Seconds, field_value, parse_json
from acctsync.cli._sources import salesforce

__all__ = ["convert"]

_log = logging.getLogger("acctsync.cli")


@click.command(short_help="Convert Person: a new Contact, Account and Opportunity in Salesforce.")
@store_options
@click.option(
    "--person",
    "person_id",
    metavar="ID",
    help="The person's ID (a lead's, say): a retry with it creates nothing twice.",
)
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="NAME=VALUE",
    help="A field of the person, as text: LastName=Doe, Company=Acme; repeatable.",
)
@click.option(
    "--from-json",
    "from_json",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE",
    help='The person as JSON, - for stdin: {"id": ..., "fields": {...}}; --person and --field'
    " add to it.",
)
@click.option(
    "--external-id-field",
    default="Acctsync_Key__c",
    show_default=True,
    metavar="FIELD",
    help="The External ID field on Account, Contact and Opportunity that keeps the"
    " conversion's key.",
)
@click.option(
    "--timeout",
    type=Seconds(open=True),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="How long one Salesforce request may take.",
)
@lock_timeout
@reporting
def convert(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    person_id: str | None,
    fields: tuple[str, ...],
    from_json: IO[str] | None,
    external_id_field: str,
    timeout: float,
    lock_timeout: float,
) -> ExitCode:
    """Convert a person (a Marketo lead, say) into a new Contact, Account and Opportunity
    in Salesforce (rule S6), and print their IDs.

    The person needs LastName and Company. Its fields map as Salesforce's lead
    conversion maps them; the records reach the database with the next sync. Converting
    the same person again prints the same IDs and creates nothing. Credentials come from
    SALESFORCE_* variables, as for sync --salesforce.
    """
    person = _person(person_id, fields, from_json)
    existing(database)
    with open_store(database, org=org, lock_timeout=lock_timeout) as store:
        held(store, database)
        recorded = store.conversion(person.id)
        if recorded is None:
            make_source, label = salesforce(
                os.environ,
                fields_account=(),
                fields_contact=(),
                timeout=timeout,
                external_id_field=external_id_field,
            )
            _log.info("converting person %r in %s", person.id, label)
            engine = SyncEngine(source=make_source(), store=store)
            conversion = engine.convert_person(person)
        else:
            conversion = recorded
    _print(out, org, conversion, before=recorded is not None)
    return ExitCode.OK


def _person(person_id: str | None, fields: tuple[str, ...], from_json: IO[str] | None) -> Person:
    """The person the options give, checked as the library checks one."""
    document: dict[str, Any] = {}
    if from_json is not None:
        try:
            read = parse_json(from_json.read())
        except InvalidRecordError as error:
            raise click.BadParameter(error.reason, param_hint="'--from-json'") from None
        except UnicodeDecodeError:
            raise click.BadParameter("not UTF-8 text", param_hint="'--from-json'") from None
        if not isinstance(read, dict) or not set(read) <= {"id", "fields", "contact_id"}:
            raise click.BadParameter(
                'a person is {"id": ..., "fields": {...}}, optionally with "contact_id"',
                param_hint="'--from-json'",
            )
        document = read
    values: dict[str, FieldValue] = {}
    raw_fields = document.get("fields", {})
    if not isinstance(raw_fields, dict):
        raise click.BadParameter('"fields" must be an object', param_hint="'--from-json'")
    for name, raw in raw_fields.items():
        try:
            values[name] = field_value(raw)
        except InvalidRecordError as error:
            raise click.BadParameter(
                f"{name}: {error.reason}", param_hint="'--from-json'"
            ) from None
    for entry in fields:
        name, equals, text = entry.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{entry!r} is not NAME=VALUE", param_hint="'--field'")
        values[name.strip()] = text
    given_id = person_id if person_id is not None else document.get("id")
    if given_id is None:
        raise click.UsageError("give the person's ID: --person ID, or an id in --from-json")
    try:
        return Person(id=given_id, fields=values, contact_id=document.get("contact_id"))
    except InvalidRecordError as error:
        raise click.UsageError(f"not a person: {error}") from None


def _print(out: Output, org: str, conversion: Conversion, *, before: bool) -> None:
    if out.json:
        out.document(
            {
                "org": org,
                "person_id": conversion.person_id,
                "account_id": conversion.account_id,
                "contact_id": conversion.contact_id,
                "opportunity_id": conversion.opportunity_id,
                "converted_before": before,
            }
        )
        return
    console = out.console
    person = escape(repr(conversion.person_id))
    if before:
        console.print(f"person {person} was converted before; nothing was created:")
    else:
        console.print(f"person {person} converted in Salesforce:")
    console.print(f"  account      {conversion.account_id}")
    console.print(f"  contact      {conversion.contact_id}")
    console.print(f"  opportunity  {conversion.opportunity_id}")
    if not before:
        console.print("They reach the database with the next sync.")
