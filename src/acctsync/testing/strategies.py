"""Hypothesis strategies for valid acctsync records.

Every strategy here draws values that construct without error: IDs with a correct
checksum, aware timestamps, field names that are not record attributes, field values of
the supported types. Arguments are keyword-only strategies, so a test narrows one part
(``accounts(ids=st.sampled_from(pool))``) and keeps the rest.

This module needs hypothesis (the ``testing`` extra). ``acctsync.testing`` does not
import it; import it yourself::

    from acctsync.testing import strategies as acctsync_st
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final, Literal

from hypothesis import strategies as st

from acctsync._activity import ChangeDataValue, Origin
from acctsync._formats import AUDIT_FIELDS
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX, normalize_id
from acctsync._records import (
    OBJECT_PREFIXES,
    RESERVED_FIELDS,
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    Person,
)
from acctsync._state import AccountState

__all__ = [
    "account_states",
    "accounts",
    "change_data_values",
    "contacts",
    "deletions",
    "field_maps",
    "field_names",
    "field_values",
    "persons",
    "salesforce_ids",
    "timestamps",
]

_ALNUM: Final = string.ascii_letters + string.digits
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Salesforce accepts dates and datetimes from 1700 to 4000; values outside that range are
# valid Python but never come out of Salesforce.
_FIRST_DAY: Final = date(1700, 1, 1)
_LAST_DAY: Final = date(4000, 12, 31)
_FIRST_INSTANT: Final = datetime(1700, 1, 1, tzinfo=UTC)
_LAST_INSTANT: Final = datetime(4000, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_STAMPS_FROM: Final = datetime(2000, 1, 1, tzinfo=UTC)
_STAMPS_UNTIL: Final = datetime(2100, 1, 1, tzinfo=UTC)
# In any case: field names are case-insensitive (rule R9).
_UNUSABLE_NAMES: Final = frozenset(name.lower() for name in RESERVED_FIELDS | AUDIT_FIELDS)


def _millis(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(milliseconds=1)


def salesforce_ids(prefix: str, *, length: Literal[15, 18] = 18) -> st.SearchStrategy[str]:
    """IDs of the object with key ``prefix`` (``"001"``): 18 characters, or 15 if asked."""
    normalize_id(prefix + "0" * 12)  # fail at once on a prefix no ID can start with
    body = st.text(alphabet=_ALNUM, min_size=12, max_size=12)
    ids = body.map(lambda rest: normalize_id(prefix + rest))
    if length == 15:
        return ids.map(lambda value: value[:15])
    return ids


def field_names() -> st.SearchStrategy[str]:
    """Salesforce-style API field names, never a record attribute or an audit field.

    Audit fields (``LastModifiedDate`` and kin) are left out because the decoders drop
    them: a record with one would not survive a trip through REST JSON.
    """
    first = st.sampled_from(string.ascii_letters)
    rest = st.text(alphabet=_ALNUM + "_", max_size=20)
    standard = st.builds(str.__add__, first, rest)
    custom = standard.map(lambda name: name + "__c")
    return st.one_of(standard, custom).filter(lambda name: name.lower() not in _UNUSABLE_NAMES)


def timestamps(
    *, min_value: datetime = _STAMPS_FROM, max_value: datetime = _STAMPS_UNTIL
) -> st.SearchStrategy[datetime]:
    """UTC datetimes to the millisecond, as Salesforce stamps records."""
    return st.integers(_millis(min_value), _millis(max_value)).map(
        lambda millis: _EPOCH + timedelta(milliseconds=millis)
    )


def _aware_datetimes() -> st.SearchStrategy[datetime]:
    offsets = st.integers(-14 * 4, 14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
    instants = timestamps(min_value=_FIRST_INSTANT, max_value=_LAST_INSTANT)
    return st.builds(lambda instant, zone: instant.astimezone(zone), instants, offsets)


def field_values(
    *, strings: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[FieldValue]:
    """Values a field may hold: text, numbers, booleans, dates, aware datetimes, None.

    Numbers are finite ``int``, ``float`` and `Decimal`; dates and datetimes lie in the
    range Salesforce accepts, datetimes to the millisecond in any UTC offset. ``strings``
    replaces the text values.
    """
    return st.one_of(
        st.none(),
        st.booleans(),
        strings if strings is not None else st.text(max_size=40),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False, places=None),
        st.dates(min_value=_FIRST_DAY, max_value=_LAST_DAY),
        _aware_datetimes(),
    )


def field_maps(
    *,
    names: st.SearchStrategy[str] | None = None,
    values: st.SearchStrategy[FieldValue] | None = None,
    max_size: int = 6,
) -> st.SearchStrategy[dict[str, FieldValue]]:
    """Field mappings of up to ``max_size`` entries, no two names one name in another case."""
    entries = st.lists(
        st.tuples(
            names if names is not None else field_names(),
            values if values is not None else field_values(),
        ),
        max_size=max_size,
        unique_by=lambda entry: entry[0].lower(),
    )
    return entries.map(dict)


def accounts(
    *,
    ids: st.SearchStrategy[str] | None = None,
    fields: st.SearchStrategy[dict[str, FieldValue]] | None = None,
    stamps: st.SearchStrategy[datetime] | None = None,
) -> st.SearchStrategy[Account]:
    """Valid `Account` records."""
    return st.builds(
        Account,
        id=ids if ids is not None else salesforce_ids(ACCOUNT_PREFIX),
        fields=fields if fields is not None else field_maps(),
        system_modstamp=stamps if stamps is not None else timestamps(),
    )


def contacts(
    *,
    ids: st.SearchStrategy[str] | None = None,
    account_ids: st.SearchStrategy[str | None] | None = None,
    fields: st.SearchStrategy[dict[str, FieldValue]] | None = None,
    stamps: st.SearchStrategy[datetime] | None = None,
) -> st.SearchStrategy[Contact]:
    """Valid `Contact` records; by default some have no account."""
    return st.builds(
        Contact,
        id=ids if ids is not None else salesforce_ids(CONTACT_PREFIX),
        account_id=(
            account_ids
            if account_ids is not None
            else st.one_of(st.none(), salesforce_ids(ACCOUNT_PREFIX))
        ),
        fields=fields if fields is not None else field_maps(),
        system_modstamp=stamps if stamps is not None else timestamps(),
    )


def deletions(
    *,
    object_types: st.SearchStrategy[ObjectType] | None = None,
    ids: st.SearchStrategy[str] | None = None,
    stamps: st.SearchStrategy[datetime] | None = None,
    master_record_ids: st.SearchStrategy[str | None] | None = None,
) -> st.SearchStrategy[Deletion]:
    """Valid `Deletion` records, some of them merge losers (with ``master_record_id``).

    ``ids`` and ``master_record_ids`` must draw IDs of the drawn object type; by default
    they do. A master equal to the deleted ID is dropped (a record cannot win its own
    merge).
    """
    kinds: st.SearchStrategy[ObjectType] = (
        object_types if object_types is not None else st.sampled_from(["Account", "Contact"])
    )

    @st.composite
    def build(draw: st.DrawFn) -> Deletion:
        kind = draw(kinds)
        prefix = OBJECT_PREFIXES[kind]
        record_id = draw(ids if ids is not None else salesforce_ids(prefix))
        masters = (
            master_record_ids
            if master_record_ids is not None
            else st.one_of(st.none(), salesforce_ids(prefix))
        )
        master = draw(masters)
        if master is not None and normalize_id(master) == normalize_id(record_id):
            master = None
        return Deletion(
            object_type=kind,
            id=record_id,
            deleted_at=draw(stamps if stamps is not None else timestamps()),
            master_record_id=master,
        )

    return build()


def persons(
    *,
    ids: st.SearchStrategy[str] | None = None,
    fields: st.SearchStrategy[dict[str, FieldValue]] | None = None,
    contact_ids: st.SearchStrategy[str | None] | None = None,
) -> st.SearchStrategy[Person]:
    """Valid `Person` records; by default none is already a contact."""
    return st.builds(
        Person,
        id=ids if ids is not None else st.text(min_size=1, max_size=20).filter(str.strip),
        fields=fields if fields is not None else field_maps(),
        contact_id=contact_ids if contact_ids is not None else st.none(),
    )


def account_states(
    *,
    upstreams: st.SearchStrategy[Account] | None = None,
    local_edits: st.SearchStrategy[dict[str, FieldValue]] | None = None,
    local_revisions: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[AccountState]:
    """Stored accounts: an upstream `Account` with local edits over it."""
    return st.builds(
        AccountState,
        upstream=upstreams if upstreams is not None else accounts(),
        local_edits=local_edits if local_edits is not None else field_maps(max_size=3),
        local_revision=(
            local_revisions if local_revisions is not None else st.integers(0, 2**31 - 1)
        ),
    )


def change_data_values(
    *,
    ids: st.SearchStrategy[str] | None = None,
    contact_ids: st.SearchStrategy[str] | None = None,
    account_ids: st.SearchStrategy[str] | None = None,
    fields: st.SearchStrategy[str] | None = None,
    values: st.SearchStrategy[FieldValue] | None = None,
    origins: st.SearchStrategy[Origin] | None = None,
    stamps: st.SearchStrategy[datetime] | None = None,
) -> st.SearchStrategy[ChangeDataValue]:
    """Activity log entries. ``values`` draws both the old and the new value."""
    value_strategy = values if values is not None else field_values()
    return st.builds(
        ChangeDataValue,
        id=ids if ids is not None else st.text(alphabet=_ALNUM + ":_", min_size=1, max_size=80),
        contact_id=contact_ids if contact_ids is not None else salesforce_ids(CONTACT_PREFIX),
        account_id=account_ids if account_ids is not None else salesforce_ids(ACCOUNT_PREFIX),
        field=fields if fields is not None else field_names(),
        old_value=value_strategy,
        new_value=value_strategy,
        origin=origins if origins is not None else st.sampled_from(Origin),
        occurred_at=stamps if stamps is not None else timestamps(),
    )
