"""``acctsync edit``: a local edit of an account field, through a contact (rules S2, S3)."""

from __future__ import annotations

import click
from rich.markup import escape

from acctsync._engine import SyncEngine
from acctsync._errors import InvalidRecordError
from acctsync._ids import CONTACT_PREFIX
from acctsync._records import FieldValue, check_field, field_name_problem
from acctsync.cli._command import (
    existing,
    held,
    lock_timeout,
    open_store,
    reporting,
    store_options,
)
from acctsync.cli._exits import ExitCode
from acctsync.cli._output import Output, edit_document, shown_value
from acctsync.cli._params import Database, RecordId, parse_json_value
from acctsync.cli._sources import NoReads

__all__ = ["edit"]


@click.command(short_help="Edit an account field locally, through a contact.")
@store_options
@click.option(
    "--contact",
    type=RecordId(CONTACT_PREFIX, "a contact"),
    required=True,
    help="The contact to edit the account field through.",
)
@click.option(
    "--field", metavar="NAME", required=True, help="The account field, by API name, in any case."
)
@click.option("--value", "text", metavar="TEXT", help="The new value, as text.")
@click.option(
    "--json-value",
    metavar="JSON",
    help='The new value as JSON: 42, 1.50, true, null, "text", {"$date": "2024-01-31"}.',
)
@click.option(
    "--allow-new-field",
    is_flag=True,
    help="Add the field locally when the org's accounts have not got it (else: exit 4).",
)
@lock_timeout
@reporting
def edit(
    out: Output,
    *,
    database: Database,
    org: str,
    as_json: bool,
    contact: str,
    field: str,
    text: str | None,
    json_value: str | None,
    allow_new_field: bool,
    lock_timeout: float,
) -> ExitCode:
    """Edit an account field locally, through one of its contacts (rules S2, S3).

    Every contact of the account sees the new value; Salesforce does not, and the next
    Salesforce update of the account overwrites it. A field the org's accounts have not
    got (a typo) is refused, naming close matches, unless --allow-new-field.
    """
    if (text is None) == (json_value is None):
        raise click.UsageError("give the new value: --value TEXT or --json-value JSON")
    value: FieldValue
    try:
        value = text if text is not None else parse_json_value(str(json_value))
    except InvalidRecordError as error:
        raise click.BadParameter(error.reason, param_hint="'--json-value'") from None
    # The library's own checks, made before the database is opened: the name's first, so
    # that each problem is blamed on the option that gave it.
    problem = field_name_problem(field)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="'--field'")
    try:
        check_field(field, value)
    except InvalidRecordError as error:
        hint = "'--value'" if text is not None else "'--json-value'"
        raise click.BadParameter(error.reason, param_hint=hint) from None
    existing(database)
    with open_store(database, org=org, lock_timeout=lock_timeout) as store:
        held(store, database)
        engine = SyncEngine(source=NoReads(), store=store)
        result = engine.edit_account_field(
            contact_id=contact, field=field, value=value, allow_new_field=allow_new_field
        )
    if out.json:
        out.document(edit_document(result, org))
        return ExitCode.OK
    console = out.console
    # The org's spelling of the field, which the edit took (rule R9), not the one typed.
    what = f"account {result.account_id} field {escape(result.field)}"
    if not result.changed:
        console.print(f"{what} is already {escape(shown_value(value))}: nothing written")
        return ExitCode.OK
    console.print(
        f"{what}: {escape(shown_value(result.old_value))} -> {escape(shown_value(value))}"
        " (a local edit: not sent to Salesforce)"
    )
    seen = f"  seen by every contact of the account ({result.contact_count:,});"
    if result.suppressed is not None:
        console.print(
            f"{seen} no activities logged: the account has more contacts than the activity"
            " policy allows"
        )
    else:
        console.print(f"{seen} {len(result.activities):,} Change Data Value entries logged")
    return ExitCode.OK
