"""Field names as the org spells them: one spelling per name, whatever the case (rule R9).

Theory of operation
-------------------
Salesforce field names are case-insensitive: ``Industry``, ``industry`` and ``INDUSTRY``
name one field. Sources write them their own way (REST and describe as Salesforce spells
them, older Data Loaders in upper case), so the engine maps every incoming name to the
org's one spelling before a record is compared with what the store holds. Otherwise an
upper-case export would replace ``Industry`` with ``INDUSTRY`` and log both as changed.

The org's spelling of a name is the first one it was seen in: a describe's, when the
source has one (`DescribedSource`), else the first record's. A `FieldNameStore` keeps the
spellings between syncs; new ones go to it with the next batch, so a record is never
stored under a name the store does not know. Names are API names, which are ASCII (see
`field_name_problem`): ``str.lower`` folds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from typing import Final, TypeAlias

import attrs

from acctsync._errors import InvalidRecordError
from acctsync._formats import AUDIT_FIELDS
from acctsync._records import (
    Account,
    Contact,
    FieldValue,
    ObjectType,
    PartialUpdate,
    field_name_problem,
)
from acctsync._state import FieldName

__all__ = ["STANDARD_ACCOUNT_FIELDS", "Spellings", "close_matches"]

STANDARD_ACCOUNT_FIELDS: Final = frozenset(
    [
        "AccountNumber",
        "AccountSource",
        "AnnualRevenue",
        "BillingCity",
        "BillingCountry",
        "BillingCountryCode",
        "BillingGeocodeAccuracy",
        "BillingLatitude",
        "BillingLongitude",
        "BillingPostalCode",
        "BillingState",
        "BillingStateCode",
        "BillingStreet",
        "ChannelProgramLevelName",
        "ChannelProgramName",
        "CleanStatus",
        "CurrencyIsoCode",
        "DandbCompanyId",
        "Description",
        "DunsNumber",
        "Fax",
        "Industry",
        "IsCustomerPortal",
        "IsPartner",
        "Jigsaw",
        "JigsawCompanyId",
        "NaicsCode",
        "NaicsDesc",
        "Name",
        "NumberOfEmployees",
        "OperatingHoursId",
        "OwnerId",
        "Ownership",
        "ParentId",
        "Phone",
        "PhotoUrl",
        "Rating",
        "RecordTypeId",
        "ShippingCity",
        "ShippingCountry",
        "ShippingCountryCode",
        "ShippingGeocodeAccuracy",
        "ShippingLatitude",
        "ShippingLongitude",
        "ShippingPostalCode",
        "ShippingState",
        "ShippingStateCode",
        "ShippingStreet",
        "Sic",
        "SicDesc",
        "Site",
        "TickerSymbol",
        "Tradestyle",
        "Type",
        "Website",
        "YearStarted",
    ]
)
"""The Account fields every org has (Object Reference for the Salesforce Platform,
"Account"; as a real org's describe lists them), audit and system fields left out.

A local edit may name them before any record or describe did (rule R9)."""

_Named: TypeAlias = Account | Contact | PartialUpdate
_AUDIT_FOLDED: Final = frozenset(name.lower() for name in AUDIT_FIELDS)


class Spellings:
    """The spellings of one object's field names in one org, during one sync.

    ``known`` are the spellings the store keeps; each name first seen here is appended to
    ``added``, for the store to keep with the next batch.
    """

    def __init__(self, object_type: ObjectType, known: Iterable[str], added: list[FieldName]):
        self._object_type = object_type
        self._folded: dict[str, str] = {}
        for name in known:
            self._folded.setdefault(name.lower(), name)
        self._spelled = set(self._folded.values())
        self._added = added

    def __repr__(self) -> str:
        return f"<Spellings {self._object_type} names={len(self._folded)}>"

    def missing_from(self, names: Collection[str]) -> tuple[str, ...]:
        """The known names that ``names`` lacks, in any case, sorted."""
        present = {name.lower() for name in names}
        return tuple(sorted(n for f, n in self._folded.items() if f not in present))

    def learn(self, names: Iterable[str]) -> None:
        """Take ``names`` (a describe's) as the spelling of those not known yet.

        Names that are no field of a record (``Id``, ``SystemModstamp``, audit fields, as a
        describe lists them too) are passed over.
        """
        for name in names:
            if field_name_problem(name) is None and name.lower() not in _AUDIT_FOLDED:
                self._spelling(name)

    def spells(self, names: Iterable[str]) -> bool:
        """Whether `spelled` gives back as it is each record whose field names are among
        ``names``: all are spelled so already."""
        return self._spelled.issuperset(names)

    def spelled(self, record: _Named) -> _Named:
        """``record`` with its field names in the org's spelling.

        Raises `InvalidRecordError` when two of its names are one name in two cases.
        """
        if record.fields.keys() <= self._spelled:  # the common case: nothing to do
            return record
        fields: dict[str, FieldValue] = {}
        seen: set[str] = set()
        for name, value in record.fields.items():
            folded = name.lower()
            spelling = self._folded.get(folded, name)
            if folded in seen:
                raise InvalidRecordError(
                    f"names field {spelling!r} twice, in different case",
                    record_id=record.id,
                    field=name,
                )
            seen.add(folded)
            fields[spelling] = value
        for name in fields:  # only once the record is known to be good
            self._spelling(name)
        if list(fields) == list(record.fields):
            return record
        return attrs.evolve(record, fields=fields)

    def _spelling(self, name: str) -> str:
        folded = name.lower()
        spelling = self._folded.get(folded)
        if spelling is None:
            spelling = self._folded[folded] = name
            self._spelled.add(name)
            self._added.append(FieldName(object_type=self._object_type, name=name))
        return spelling


def close_matches(name: str, names: Iterable[str]) -> tuple[str, ...]:
    """Up to three of ``names`` that ``name`` is likely a typo of, closest first."""
    by_fold = {n.lower(): n for n in names}
    found = difflib.get_close_matches(name.lower(), list(by_fold), n=3, cutoff=0.6)
    return tuple(by_fold[match] for match in found)
