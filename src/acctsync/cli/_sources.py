"""The sources a command reads: an export folder, or a live org named by the environment.

Each is given as a factory that makes a new source for each sync (see `Runner`), checked
once up front by making the first. Salesforce credentials come from the environment
only: an argument would show in the process list and in shell history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from acctsync._errors import ConfigurationError
from acctsync._records import Change, ObjectType

if TYPE_CHECKING:
    from acctsync.sources.files import ExportFolder
    from acctsync.sources.salesforce import SalesforceSource

__all__ = ["NoReads", "export_folder", "salesforce"]


def export_folder(path: Path, types: Sequence[str], delimiter: str) -> Callable[[], ExportFolder]:
    """What makes the folder's source; ``types`` are ``COLUMN=TYPE`` texts."""
    from acctsync.sources.files import ExportFolder

    typed: dict[str, str] = {}
    for entry in types:
        column, equals, kind = entry.partition("=")
        if not equals or not column.strip() or not kind.strip():
            raise click.BadParameter(f"{entry!r} is not COLUMN=TYPE", param_hint="'--type'")
        typed[column.strip()] = kind.strip()

    def source() -> ExportFolder:
        return ExportFolder(path, types=typed, delimiter=delimiter)

    try:
        source()
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    return source


def _field_list(entries: Sequence[str]) -> list[str]:
    return [name.strip() for entry in entries for name in entry.split(",") if name.strip()]


def salesforce(
    environ: Mapping[str, str],
    *,
    fields_account: Sequence[str],
    fields_contact: Sequence[str],
    timeout: float,
) -> tuple[Callable[[], SalesforceSource], str]:
    """What makes a source over the org the environment names, and how to name it.

    The client, and its login, is made once; each source made reads describe afresh.

    A session (``SALESFORCE_INSTANCE_URL`` and ``SALESFORCE_SESSION_ID``) wins over a
    login (``SALESFORCE_USERNAME``, ``SALESFORCE_PASSWORD``, ``SALESFORCE_SECURITY_TOKEN``
    and ``SALESFORCE_DOMAIN``). A login that fails raises `SalesforceError`.
    """
    try:
        import requests
        from simple_salesforce.api import Salesforce
        from simple_salesforce.exceptions import SalesforceAuthenticationFailed

        from acctsync.sources.salesforce import SalesforceError, SalesforceSource
    except ImportError as error:
        raise click.UsageError(
            f"--salesforce needs the salesforce extra ({error.name} is missing):"
            " pip install 'acctsync[salesforce]'"
        ) from None

    class TimedSession(requests.Session):
        """simple-salesforce sets no timeout: without one a lost connection hangs a sync."""

        def request(  # type: ignore[override]
            self, method: str, url: str, *args: Any, **kwargs: Any
        ) -> requests.Response:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(method, url, *args, **kwargs)

    def get(name: str) -> str | None:
        return environ.get(name) or None

    options: dict[str, Any] = {"session": TimedSession(), "parse_float": Decimal}
    if get("SALESFORCE_API_VERSION"):
        options["version"] = get("SALESFORCE_API_VERSION")
    instance_url, session_id = get("SALESFORCE_INSTANCE_URL"), get("SALESFORCE_SESSION_ID")
    username, password = get("SALESFORCE_USERNAME"), get("SALESFORCE_PASSWORD")
    if instance_url and session_id:
        options.update(instance_url=instance_url, session_id=session_id)
    elif username and password:
        options.update(
            username=username,
            password=password,
            security_token=get("SALESFORCE_SECURITY_TOKEN") or "",
            domain=get("SALESFORCE_DOMAIN"),
        )
    else:
        raise click.UsageError(
            "--salesforce reads its credentials from the environment: set"
            " SALESFORCE_INSTANCE_URL and SALESFORCE_SESSION_ID, or SALESFORCE_USERNAME,"
            " SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN"
        )
    try:
        client = Salesforce(**options)
    except SalesforceAuthenticationFailed as error:
        raise SalesforceError(f"the Salesforce login failed: {error.message}") from error
    except requests.RequestException as error:
        raise SalesforceError(
            f"the Salesforce login failed: no answer ({type(error).__name__})", retryable=True
        ) from error
    fields = {
        kind: _field_list(entries)
        for kind, entries in (("Account", fields_account), ("Contact", fields_contact))
        if entries
    }

    def source() -> SalesforceSource:
        return SalesforceSource(client, fields=fields)

    try:
        source()  # checks the field names, and reads nothing yet
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    return source, f"salesforce https://{client.sf_instance}"


class NoReads:
    """A source that reads nothing: a local edit needs a source, and never reads one."""

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterable[Sequence[Change]]:
        """Refuse: an edit that read from Salesforce would be a bug."""
        raise ConfigurationError("a local edit reads nothing from Salesforce")
