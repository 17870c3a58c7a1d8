"""The activity log: Change Data Value entries and the policy that decides when to log them.

Rules S7 and S8. An entry's ``id`` is deterministic: it is built from what the entry
records (origin, account, account version, contact, field; see `activity_id_prefix`), so
replaying a batch produces the same ids and a store keyed by them never holds a duplicate
(rule R2).
"""

from __future__ import annotations

import enum
from datetime import datetime

from attrs import field, frozen

from acctsync._errors import ConfigurationError
from acctsync._records import FieldValue

__all__ = ["ActivityPolicy", "ChangeDataValue", "Origin", "activity_id_prefix"]


class Origin(enum.Enum):
    """Where a change came from."""

    SALESFORCE = "salesforce"
    LOCAL = "local"


@frozen(kw_only=True)
class ChangeDataValue:
    """One *Change Data Value* activity: a contact saw an account field change."""

    id: str
    contact_id: str
    account_id: str
    field: str
    old_value: FieldValue
    new_value: FieldValue
    origin: Origin
    occurred_at: datetime


def activity_id_prefix(origin: Origin, account_id: str, version: str) -> str:
    """The start of the ids of every entry that one account version causes.

    An entry's id is this prefix followed by ``{contact_id}:{field}``. ``version`` is the
    ``SystemModstamp`` in microseconds for a Salesforce change, followed by ``u{n}`` for a
    later save in the same second (the stamp's n-th change); for a local edit, the stamp
    of the upstream version it edits followed by ``r{n}``, the stamp's n-th change.
    IDs and versions contain no ``:``, so the field name can come last and every id stays
    unique.
    """
    return f"{origin.value}:{account_id}:{version}:"


# Rule S8's default threshold: an account of more contacts logs no entries.
MAX_CONTACTS = 5000


def _non_negative(instance: object, attribute: object, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"max_contacts_per_account must be an int >= 0, not {value!r}")


@frozen(kw_only=True)
class ActivityPolicy:
    """The default activity policy: log per-contact entries unless the account is too big.

    An account with more than ``max_contacts_per_account`` contacts (5,001 and up by
    default) still syncs, but its field changes log no per-contact entries (rule S8).
    """

    max_contacts_per_account: int = field(default=MAX_CONTACTS, validator=_non_negative)

    def logs_activities(self, *, account_id: str, contact_count: int, origin: Origin) -> bool:
        """Whether to log one entry per contact for a change to this account."""
        return contact_count <= self.max_contacts_per_account
