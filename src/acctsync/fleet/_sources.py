"""How a worker makes an org's source: its kind's factory, given the org's credentials.

A *source kind* names a factory: ``salesforce`` (built in, `salesforce_source`), a name
that an installed package registers under the ``acctsync.fleet.sources`` entry point
group, or a ``module:attribute`` path to one. A factory is called with the registry's
`FleetOrg` and the org's credentials, and returns a new `Source` for one job.

Credentials are never stored: the registry keeps a *reference*, which a resolver (a
callable ``reference -> mapping``) turns into the secrets when a job starts. The default
resolver reads the environment (`environment_credentials`); a deployment that keeps its
secrets in a vault names its own resolver.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from acctsync._errors import ConfigurationError
from acctsync._protocols import Source
from acctsync.fleet._registry import FleetOrg

if TYPE_CHECKING:
    from acctsync.sources.salesforce import SalesforceLogin, SalesforceSource

__all__ = [
    "ENTRY_POINT_GROUP",
    "CredentialsError",
    "CredentialsResolver",
    "SourceFactory",
    "environment_credentials",
    "load",
    "salesforce_login",
    "salesforce_source",
    "source_factory",
]

ENTRY_POINT_GROUP: Final = "acctsync.fleet.sources"
"""The entry point group a package registers its source kinds under."""

_REFERENCE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CredentialsError(ConfigurationError):
    """An org's credentials reference resolves to no usable credentials.

    ``reference`` is the reference, never a secret.
    """

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        super().__init__(f"credentials {reference!r}: {reason}")


class SourceFactory(Protocol):
    """Makes an org's source for one job, from its registry entry and its credentials."""

    def __call__(self, org: FleetOrg, credentials: Mapping[str, str]) -> Source:
        """A new source of ``org``."""
        ...


CredentialsResolver = Callable[[str], Mapping[str, str]]
"""Turns a credentials reference into the credentials (raises `CredentialsError`)."""


def environment_credentials(
    reference: str, environ: Mapping[str, str] | None = None
) -> Mapping[str, str]:
    """The credentials in the environment variables named ``{reference}_*``, by the rest of
    their names in lower case.

    ``ACME_INSTANCE_URL`` and ``ACME_SESSION_ID`` are the credentials ``instance_url`` and
    ``session_id`` of the reference ``ACME``. Raises `CredentialsError` when the reference
    is no variable name or no variable starts with it.
    """
    if not _REFERENCE.match(reference):
        raise CredentialsError(reference, "not a name an environment variable can start with")
    found = os.environ if environ is None else environ
    prefix = f"{reference}_"
    credentials = {
        name.removeprefix(prefix).lower(): value
        for name, value in found.items()
        if name.startswith(prefix) and value
    }
    if not credentials:
        raise CredentialsError(reference, f"no environment variable {prefix}* is set")
    return credentials


def load(path: str) -> Any:
    """The object at ``module:attribute`` (attributes may be dotted)."""
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigurationError(f"{path!r} is no module:attribute path")
    try:
        found: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            found = getattr(found, name)
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"cannot load {path!r}: {error}") from None
    return found


def source_factory(kind: str) -> SourceFactory:
    """The factory of source kind ``kind``: built in, an entry point, or a path."""
    if kind == "salesforce":
        return salesforce_source
    if ":" in kind:
        factory = load(kind)
    else:
        found = entry_points(group=ENTRY_POINT_GROUP, name=kind)
        if not found:
            raise ConfigurationError(
                f"no source kind {kind!r}: give salesforce, a kind a package registers"
                f" under the entry point group {ENTRY_POINT_GROUP}, or a module:attribute"
            )
        try:
            factory = next(iter(found)).load()
        except (ImportError, AttributeError) as error:
            raise ConfigurationError(f"source kind {kind!r} cannot be loaded: {error}") from None
    if not callable(factory):
        raise ConfigurationError(f"source kind {kind!r} is not callable")
    return cast(SourceFactory, factory)


def salesforce_login(reference: str, credentials: Mapping[str, str]) -> SalesforceLogin:
    """The sign-in the credentials describe, by the keyword names of `SalesforceLogin`'s
    flows.

    The flow is the one whose secret is there: ``session_id`` (with ``instance_url``),
    ``private_key_file`` or ``private_key`` (the JWT bearer flow, with ``consumer_key``
    and ``username``), ``consumer_secret`` (client credentials, with ``consumer_key``
    and ``domain``) or ``password`` (with ``username``, and ``security_token``). Optional:
    ``domain``, ``my_domain``. Raises `CredentialsError`.
    """
    from acctsync.sources.salesforce import SalesforceLogin

    get = credentials.get
    try:
        if get("session_id"):
            return SalesforceLogin.session(
                instance_url=get("instance_url", ""), session_id=get("session_id", "")
            )
        if get("private_key_file") or get("private_key"):
            return SalesforceLogin.jwt(
                consumer_key=get("consumer_key", ""),
                username=get("username", ""),
                private_key_file=get("private_key_file") or None,
                private_key=get("private_key") or None,
                domain=get("domain") or "login",
                my_domain=get("my_domain") or None,
            )
        if get("consumer_secret"):
            return SalesforceLogin.client_credentials(
                consumer_key=get("consumer_key", ""),
                consumer_secret=get("consumer_secret", ""),
                domain=get("domain", ""),
            )
        if get("password"):
            return SalesforceLogin.password(
                username=get("username", ""),
                password=get("password", ""),
                security_token=get("security_token", ""),
                domain=get("domain") or "login",
            )
    except ConfigurationError as error:
        raise CredentialsError(reference, str(error)) from None
    raise CredentialsError(
        reference, "none of session_id, private_key_file, consumer_secret or password is set"
    )


_SALESFORCE_OPTIONS: Final = frozenset(
    {"fields", "max_api_share", "bulk", "bulk_threshold", "timeout", "api_version"}
)


def salesforce_source(org: FleetOrg, credentials: Mapping[str, str]) -> SalesforceSource:
    """The built-in kind ``salesforce``: a `SalesforceSource` signed in with the org's
    credentials (see `salesforce_login`), which signs in again once when its session
    expires.

    Options: ``fields`` (``{"Account": [...], "Contact": [...]}``), ``max_api_share``,
    ``bulk``, ``bulk_threshold``, ``timeout`` (seconds per request, 120 by default) and
    ``api_version``. A refused sign-in raises the source's `SalesforceError`.
    """
    from acctsync.sources._salesforce_login import timed_session
    from acctsync.sources.salesforce import SalesforceSource

    options = dict(org.options)
    unknown = sorted(set(options) - _SALESFORCE_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"the salesforce source kind has no option {', '.join(map(repr, unknown))}"
        )
    timeout = options.pop("timeout", 120.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigurationError(f"timeout must be a number of seconds > 0: {timeout!r}")
    version = options.pop("api_version", None)
    login = salesforce_login(org.credentials, credentials)
    client = login.connect(
        session=timed_session(float(timeout)),
        version=None if version is None else str(version),
        parse_float=Decimal,
    )
    return SalesforceSource(client, login=login, **options)
