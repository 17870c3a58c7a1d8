"""The library's exceptions: one root, each also the built-in it semantically is."""

from __future__ import annotations

__all__ = [
    "AcctSyncError",
    "AlreadyAContactError",
    "ConfigurationError",
    "InvalidRecordError",
    "LockLostError",
    "LockTimeoutError",
    "NoAccountError",
    "ReplayUnavailableError",
    "SchemaVersionError",
    "SourceError",
    "StoreError",
    "UnknownContactError",
    "UnknownFieldError",
]


class AcctSyncError(Exception):
    """Root of every exception acctsync raises on purpose."""


class InvalidRecordError(AcctSyncError, ValueError):
    """A record, ID or field value breaks the rules of the data model.

    ``record_id`` and ``field`` name what was wrong where known; ``reason`` says why.
    """

    def __init__(self, reason: str, *, record_id: str | None = None, field: str | None = None):
        self.reason = reason
        self.record_id = record_id
        self.field = field
        where = []
        if record_id is not None:
            where.append(f"record {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class ConfigurationError(AcctSyncError, ValueError):
    """An engine, policy or adapter was given a setting it cannot work with."""


class UnknownContactError(AcctSyncError, LookupError):
    """A local edit named a contact the store does not hold."""

    def __init__(self, contact_id: str):
        self.contact_id = contact_id
        super().__init__(f"no contact {contact_id!r} in the store")


class UnknownFieldError(AcctSyncError, LookupError):
    """A local edit named a field the org's records do not have (rule R9).

    ``close_matches`` are the org's field names it may be a typo of, closest first.
    """

    def __init__(self, object_type: str, field: str, close_matches: tuple[str, ...] = ()):
        self.object_type = object_type
        self.field = field
        self.close_matches = close_matches
        hint = f"; did you mean {' or '.join(map(repr, close_matches))}?" if close_matches else ""
        super().__init__(
            f"{object_type} has no field {field!r}{hint}"
            " (allow_new_field=True adds it as a local field)"
        )


class NoAccountError(AcctSyncError, LookupError):
    """A local account edit for a contact that has no (synced) account (rule S5).

    Accounts are only ever created by a sync from Salesforce, so the edit is refused
    instead of creating one.
    """

    def __init__(self, contact_id: str, account_id: str | None):
        self.contact_id = contact_id
        self.account_id = account_id
        if account_id is None:
            msg = f"contact {contact_id!r} has no account"
        else:
            msg = f"account {account_id!r} of contact {contact_id!r} is not in the store"
        super().__init__(f"{msg}; accounts are created only by a sync from Salesforce")


class AlreadyAContactError(AcctSyncError, ValueError):
    """Convert Person (rule S6) was asked to convert a person that is already a contact."""

    def __init__(self, person_id: str, contact_id: str):
        self.person_id = person_id
        self.contact_id = contact_id
        super().__init__(f"person {person_id!r} is already contact {contact_id!r}")


class SourceError(AcctSyncError):
    """A source could not read or write Salesforce data.

    ``__cause__`` holds why, unless it would show a secret: the Salesforce sources put
    what their client's error said in the message, and chain nothing.

    ``retryable`` says whether trying again later may succeed (a limit, a timeout, an
    outage) or not (bad credentials, a malformed query). A sync that raised it stored the
    pages before the failure with their watermark, and nothing after.
    """

    def __init__(self, message: str, *, retryable: bool = False):
        self.retryable = retryable
        super().__init__(message)


class ReplayUnavailableError(SourceError):
    """The stream no longer holds the position asked for: past its retention, or invalid.

    ``position`` is the position asked for, where the stream knows it.
    `SyncEngine.follow` catches it and catches up by polling instead.
    """

    def __init__(
        self, message: str, *, position: bytes | None = None, retryable: bool = False
    ) -> None:
        self.position = position
        super().__init__(message, retryable=retryable)


class StoreError(AcctSyncError):
    """A store could not read or write; ``__cause__`` holds the database's own error.

    Nothing of the failed call was written: a store applies each batch whole or not at all.
    """


class LockTimeoutError(StoreError, TimeoutError):
    """Another runner held the org's store for longer than the lock timeout."""

    def __init__(self, org: str, timeout: float, holder: str | None = None):
        self.org = org
        self.timeout = timeout
        self.holder = holder
        held_by = f" (held by {holder})" if holder else ""
        super().__init__(
            f"another runner holds the store of org {org!r}{held_by};"
            f" gave up after waiting {timeout:g} s"
        )


class LockLostError(StoreError):
    """A runner's hold on an org's store ended (it expired and another runner took it).

    The batch that found out was not applied; nothing is lost, the next run resumes.
    """

    def __init__(self, org: str):
        self.org = org
        super().__init__(f"this runner no longer holds the store of org {org!r}")


class SchemaVersionError(StoreError):
    """The database was written by a newer acctsync, with a schema this one cannot read."""

    def __init__(self, found: int, supported: int):
        self.found = found
        self.supported = supported
        super().__init__(
            f"the database has schema version {found}, this acctsync reads up to"
            f" {supported}: upgrade acctsync"
        )
