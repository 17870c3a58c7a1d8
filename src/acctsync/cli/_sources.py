"""The sources a command reads: an export folder, or a live org named by the environment.

Each is given as a factory that makes a new source for each sync (see `Runner`), checked
once up front by making the first. Salesforce credentials come from the environment
only: an argument would show in the process list and in shell history.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from acctsync._errors import ConfigurationError
from acctsync._records import Change, ObjectType
from acctsync.cli._params import SettingError, missing_extra

if TYPE_CHECKING:
    from simple_salesforce.api import Salesforce

    from acctsync.sources.files import ExportFolder
    from acctsync.sources.pubsub import PubSubStream
    from acctsync.sources.salesforce import SalesforceLogin, SalesforceSource

__all__ = [
    "NoReads",
    "budget_exceeded",
    "export_folder",
    "pubsub_stream",
    "salesforce",
    "sign_in",
]


def budget_exceeded(error: BaseException) -> bool:
    """Whether ``error`` is the Salesforce source's `ApiBudgetExceededError`.

    Without importing the source's module, which needs the salesforce extra: an error of
    its class exists only once the module has been imported.
    """
    module = sys.modules.get("acctsync.sources.salesforce")
    return module is not None and isinstance(error, module.ApiBudgetExceededError)


def export_folder(
    path: Path, types: Sequence[str], delimiter: str, encoding: str = "utf-8"
) -> Callable[[], ExportFolder]:
    """What makes the folder's source; ``types`` are ``COLUMN=TYPE`` texts."""
    from acctsync.sources.files import ExportFileError, ExportFolder

    typed: dict[str, str] = {}
    for entry in types:
        column, equals, kind = entry.partition("=")
        if not equals or not column.strip() or not kind.strip():
            raise click.BadParameter(f"{entry!r} is not COLUMN=TYPE", param_hint="'--type'")
        typed[column.strip()] = kind.strip()

    def source() -> ExportFolder:
        return ExportFolder(path, types=typed, delimiter=delimiter, encoding=encoding)

    try:
        made = source()
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    try:
        made.check()
    except ConfigurationError as error:
        raise SettingError(str(error)) from None
    except ExportFileError as error:
        if error.delimiter is None:
            raise
        hint = f"try --delimiter {_shell_char(error.delimiter)}"
        raise SettingError(f"{error}: {hint}") from None
    return source


def _shell_char(char: str) -> str:
    """``char`` as a shell argument: a tab as bash writes one, ``$'\\t'``."""
    return "$'\\t'" if char == "\t" else shlex.quote(char)


def _field_list(entries: Sequence[str]) -> list[str]:
    return [name.strip() for entry in entries for name in entry.split(",") if name.strip()]


def salesforce(
    environ: Mapping[str, str],
    *,
    fields_account: Sequence[str],
    fields_contact: Sequence[str],
    timeout: float,
    max_api_share: float | None = None,
    bulk: bool = True,
    bulk_threshold: int | None = None,
    external_id_field: str | None = None,
) -> tuple[Callable[[], SalesforceSource], str]:
    """What gives the source over the org the environment names, and how to name it.

    The client, its sign-in and the source are made once, so that the syncs of a
    ``--every`` loop share what the source keeps: its describe, for its
    ``describe_max_age``, and the org's API usage. The source signs in again, once, when
    Salesforce says the session expired. The flow is the first of these whose settings
    are set (see `sign_in`). A sign-in Salesforce refuses raises `SalesforceError`.
    ``external_id_field`` is where Convert Person writes its idempotency key (the
    source's own default when None).
    """
    try:
        from acctsync.sources.salesforce import SalesforceSource
    except ImportError as error:
        raise missing_extra("salesforce", error, needs="--salesforce") from None

    login = sign_in(environ)
    client = _connect(login, environ, timeout=timeout, parse_float=Decimal)
    fields = {
        kind: _field_list(entries)
        for kind, entries in (("Account", fields_account), ("Contact", fields_contact))
        if entries
    }

    options: dict[str, Any] = {"max_api_share": max_api_share, "bulk": bulk}
    if bulk_threshold is not None:
        options["bulk_threshold"] = bulk_threshold
    if external_id_field is not None:
        options["external_id_field"] = external_id_field
    try:
        # Checks the field names, and reads nothing yet.
        made = SalesforceSource(client, fields=fields, login=login, **options)
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    return (lambda: made), f"salesforce https://{client.sf_instance}"


def pubsub_stream(environ: Mapping[str, str], *, topic: str, timeout: float) -> PubSubStream:
    """The org's change events on ``topic``, over the Pub/Sub API, for ``sync --follow``.

    Signed in as the Salesforce source is, by the same settings, each sign-in's request
    given ``timeout`` seconds. The endpoint is
    Salesforce's unless ``SALESFORCE_PUBSUB_TARGET`` names another (``host:port``);
    ``SALESFORCE_PUBSUB_INSECURE=1`` speaks to it without TLS, which the stream allows
    on a loopback address only: a test server's.
    """
    try:
        from acctsync.sources.pubsub import PubSubStream
    except ImportError as error:
        raise missing_extra("pubsub", error, needs="--follow") from None
    login = sign_in(environ)
    client = _connect(login, environ, timeout=timeout)
    try:
        return PubSubStream(
            client,
            topic=topic,
            target=environ.get("SALESFORCE_PUBSUB_TARGET") or "api.pubsub.salesforce.com:7443",
            insecure=environ.get("SALESFORCE_PUBSUB_INSECURE") == "1",
            login=login,
        )
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None


def _connect(
    login: SalesforceLogin,
    environ: Mapping[str, str],
    *,
    timeout: float,
    parse_float: Callable[[str], Any] | None = None,
) -> Salesforce:
    """A client signed in by ``login``, each request of it given ``timeout`` seconds."""
    from acctsync.sources._salesforce_login import timed_session

    try:
        return login.connect(
            session=timed_session(timeout),
            version=environ.get("SALESFORCE_API_VERSION") or None,
            parse_float=parse_float,
        )
    except ConfigurationError as error:  # a private key file that cannot be read, say
        raise click.UsageError(str(error)) from None


# The settings of each flow, in the order they are looked for: (flow, required, optional).
_FLOWS: Final = (
    ("a session", ("SALESFORCE_INSTANCE_URL", "SALESFORCE_SESSION_ID"), ()),
    (
        "the JWT bearer flow",
        ("SALESFORCE_CONSUMER_KEY", "SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE"),
        ("SALESFORCE_DOMAIN", "SALESFORCE_MY_DOMAIN"),
    ),
    (
        "the client credentials flow",
        ("SALESFORCE_CONSUMER_KEY", "SALESFORCE_CONSUMER_SECRET", "SALESFORCE_DOMAIN"),
        (),
    ),
    (
        "a username-password login",
        ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD"),
        ("SALESFORCE_SECURITY_TOKEN", "SALESFORCE_DOMAIN"),
    ),
)


def sign_in(environ: Mapping[str, str]) -> SalesforceLogin:
    """The `SalesforceLogin` the environment's ``SALESFORCE_*`` settings describe.

    The first flow of `_FLOWS` whose required settings are all set is used; when none is
    complete, the usage error names what the closest one lacks, and never a value.
    """
    from acctsync.sources.salesforce import SalesforceLogin

    def get(name: str) -> str:
        return environ.get(name) or ""

    complete = next((flow for flow in _FLOWS if all(get(n) for n in flow[1])), None)
    if complete is None:
        started = [flow for flow in _FLOWS if any(get(n) for n in flow[1])]
        if not started:
            raise click.UsageError(
                "--salesforce reads its credentials from the environment: set "
                + "; or ".join(" and ".join(required) for _, required, _ in _FLOWS)
                + " (see docs/cli.md)"
            )
        needs = "; or ".join(
            f"with {name}, " + " and ".join(n for n in required if not get(n))
            for name, required, _ in started
        )
        raise click.UsageError(f"--salesforce needs more settings: {needs}")
    name = complete[0]
    try:
        if name == "a session":
            return SalesforceLogin.session(
                instance_url=get("SALESFORCE_INSTANCE_URL"),
                session_id=get("SALESFORCE_SESSION_ID"),
            )
        if name == "the JWT bearer flow":
            return SalesforceLogin.jwt(
                consumer_key=get("SALESFORCE_CONSUMER_KEY"),
                username=get("SALESFORCE_USERNAME"),
                private_key_file=get("SALESFORCE_PRIVATE_KEY_FILE"),
                domain=get("SALESFORCE_DOMAIN") or "login",
                my_domain=get("SALESFORCE_MY_DOMAIN") or None,
            )
        if name == "the client credentials flow":
            return SalesforceLogin.client_credentials(
                consumer_key=get("SALESFORCE_CONSUMER_KEY"),
                consumer_secret=get("SALESFORCE_CONSUMER_SECRET"),
                domain=get("SALESFORCE_DOMAIN"),
            )
        return SalesforceLogin.password(
            username=get("SALESFORCE_USERNAME"),
            password=get("SALESFORCE_PASSWORD"),
            security_token=get("SALESFORCE_SECURITY_TOKEN"),
            domain=get("SALESFORCE_DOMAIN") or "login",
        )
    except ConfigurationError as error:
        raise click.UsageError(f"--salesforce with {name}: {error}") from None


class NoReads:
    """A source that reads nothing: a local edit needs a source, and never reads one."""

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterable[Sequence[Change]]:
        """Refuse: an edit that read from Salesforce would be a bug."""
        raise ConfigurationError("a local edit reads nothing from Salesforce")
