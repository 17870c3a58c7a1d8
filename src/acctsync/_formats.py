"""Salesforce's wire formats: REST JSON records and Change Data Capture events (rule R8).

Both decode into the same records. Salesforce JSON has no date or decimal type, so a
string that has the exact shape of a Salesforce datetime (``2024-01-31T12:00:00.000+0000``)
or date (``2024-01-31``) decodes to `datetime` or `date`; numbers stay ``int`` and
``float`` (or `Decimal`, when the caller parsed the JSON with ``parse_float=Decimal``).
Audit fields (``LastModifiedDate`` and kin) are not account information and are dropped,
so that they neither sync nor log activities.

Anything malformed raises `InvalidRecordError`; no other exception leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from acctsync._errors import InvalidRecordError
from acctsync._ids import normalize_id
from acctsync._records import (
    OBJECT_PREFIXES,
    UNCHANGED,
    Account,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    PartialUpdate,
    Refetch,
    Unchanged,
    parse_object_type,
)

__all__ = [
    "AUDIT_FIELDS",
    "commit_time",
    "decode_change_event",
    "decode_record",
    "encode_record",
    "event_parts",
    "format_datetime",
    "is_gap",
    "json_value",
    "parse_datetime",
]

AUDIT_FIELDS: Final = frozenset(
    {
        "CreatedById",
        "CreatedDate",
        "LastActivityDate",
        "LastModifiedById",
        "LastModifiedDate",
        "LastReferencedDate",
        "LastViewedDate",
    }
)
"""Fields Salesforce maintains itself; the decoders drop them."""

_NOT_FIELDS: Final = frozenset(
    {"attributes", "Id", "AccountId", "SystemModstamp", "IsDeleted", "MasterRecordId"}
)
_DATETIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{4})")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CDC_RECORD_TYPES: Final = frozenset({"CREATE", "UNDELETE"})
_CDC_GAPS: Final = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"})


def parse_datetime(text: object, *, record_id: str | None = None, field: str) -> datetime:
    """Parse a Salesforce datetime (``2024-01-31T12:00:00.000+0000``, or with ``Z``)."""
    if not isinstance(text, str) or _DATETIME.fullmatch(text) is None:
        raise InvalidRecordError(
            f"{text!r} is not a Salesforce datetime with a time zone",
            record_id=record_id,
            field=field,
        )
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRecordError(
            f"{text!r} is not a valid datetime", record_id=record_id, field=field
        ) from None


def format_datetime(value: datetime) -> str:
    """Format a datetime the way the Salesforce REST API does, in UTC to the millisecond."""
    utc = value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}+0000"


def _value(raw: object, *, record_id: str, field: str) -> FieldValue:
    if raw is None or isinstance(raw, bool | int | float | Decimal):
        return raw
    if isinstance(raw, str):
        if _DATETIME.fullmatch(raw):
            try:
                return datetime.fromisoformat(raw).astimezone(UTC)
            except (ValueError, OverflowError):
                return raw
        if _DATE.fullmatch(raw):
            try:
                return date.fromisoformat(raw)
            except (ValueError, OverflowError):
                return raw
        return raw
    kind = "an object (a compound or relationship field)" if isinstance(raw, Mapping) else None
    raise InvalidRecordError(
        f"holds {kind or type(raw).__name__}; query scalar fields only",
        record_id=record_id,
        field=field,
    )


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRecordError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _record_id(payload: Mapping[str, Any], object_type: ObjectType) -> str:
    if "Id" not in payload or payload["Id"] is None:
        raise InvalidRecordError("missing Id")
    raw = payload["Id"]
    try:
        return normalize_id(raw, prefix=OBJECT_PREFIXES[object_type])
    except InvalidRecordError as error:
        raise InvalidRecordError(
            error.reason, record_id=raw if isinstance(raw, str) else None, field="Id"
        ) from None


def decode_record(object_type: str, payload: object) -> Account | Contact | Deletion:
    """Decode one REST JSON record of ``object_type`` (``"Account"`` or ``"Contact"``).

    A record with ``IsDeleted: true`` decodes to a `Deletion`, with its
    ``MasterRecordId`` when it lost a merge.
    """
    kind = parse_object_type(object_type)
    record = _mapping(payload, "a record")
    attributes = record.get("attributes")
    if attributes is not None:
        declared = _mapping(attributes, "attributes").get("type")
        if declared is not None and declared != kind:
            raise InvalidRecordError(f"attributes.type is {declared!r}, expected {kind!r}")
    record_id = _record_id(record, kind)
    if record.get("SystemModstamp") is None:
        raise InvalidRecordError("missing SystemModstamp", record_id=record_id)
    stamp = parse_datetime(record["SystemModstamp"], record_id=record_id, field="SystemModstamp")
    deleted = record.get("IsDeleted", False)
    if not isinstance(deleted, bool):
        raise InvalidRecordError("IsDeleted must be true or false", record_id=record_id)
    if deleted:
        return Deletion(
            object_type=kind,
            id=record_id,
            deleted_at=stamp,
            master_record_id=record.get("MasterRecordId"),
        )
    fields = {
        name: _value(raw, record_id=record_id, field=name)
        for name, raw in record.items()
        if name not in _NOT_FIELDS and name not in AUDIT_FIELDS
    }
    if kind == "Account":
        return Account(id=record_id, fields=fields, system_modstamp=stamp)
    return Contact(
        id=record_id,
        account_id=record.get("AccountId"),
        fields=fields,
        system_modstamp=stamp,
    )


def json_value(value: FieldValue) -> object:
    """A field value as REST JSON writes it (a `Decimal` becomes a JSON number)."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def encode_record(record: Account | Contact | Deletion) -> dict[str, Any]:
    """Encode a record as the REST API returns it (the inverse of `decode_record`).

    REST JSON has no decimal type: a `Decimal` becomes a JSON number.
    """
    if isinstance(record, Deletion):
        return {
            "attributes": {"type": record.object_type},
            "Id": record.id,
            "IsDeleted": True,
            "MasterRecordId": record.master_record_id,
            "SystemModstamp": format_datetime(record.deleted_at),
        }
    out: dict[str, Any] = {
        "attributes": {"type": "Account" if isinstance(record, Account) else "Contact"},
        "Id": record.id,
    }
    if isinstance(record, Contact):
        out["AccountId"] = record.account_id
    out.update((name, json_value(value)) for name, value in record.fields.items())
    out["SystemModstamp"] = format_datetime(record.system_modstamp)
    return out


def _string_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidRecordError(f"{what} must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise InvalidRecordError(f"{what} must be a list of strings")
    return list(value)


def commit_time(header: Mapping[str, Any]) -> datetime:
    """The ``commitTimestamp`` of a change event header, as a UTC datetime."""
    millis = header.get("commitTimestamp")
    if isinstance(millis, str) and millis.isascii() and millis.isdigit() and len(millis) < 20:
        millis = int(millis)
    if not isinstance(millis, int) or isinstance(millis, bool) or millis < 0:
        raise InvalidRecordError("ChangeEventHeader.commitTimestamp must be epoch milliseconds")
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise InvalidRecordError(f"commitTimestamp {millis} is out of range") from None


def _flat_name(compound: str, component: str) -> str:
    # Compound fields arrive nested in change events: BillingAddress.City is BillingCity,
    # Name.FirstName is FirstName.
    if compound.endswith("Address"):
        return compound[: -len("Address")] + component
    return component


def _event_fields(
    body: Mapping[str, Any], names: Sequence[str] | None, nulled: Sequence[str], record_id: str
) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {}
    if names is None:  # CREATE / UNDELETE: every field in the body
        if not all(isinstance(name, str) for name in body):
            raise InvalidRecordError("field names must be strings", record_id=record_id)
        items = [(name, body[name]) for name in body if name != "ChangeEventHeader"]
    else:
        items = []
        for name in names:
            compound, _, component = name.partition(".")
            if component:
                parent = body.get(compound)
                raw = parent.get(component) if isinstance(parent, Mapping) else None
                items.append((f"{compound}.{component}", raw))
            else:
                items.append((name, body.get(name)))
    for name, raw in items:
        if name in _NOT_FIELDS or name in AUDIT_FIELDS:
            continue
        if isinstance(raw, Mapping) and names is None:
            for component, inner in raw.items():
                flat = _flat_name(name, str(component))
                fields[flat] = _value(inner, record_id=record_id, field=flat)
            continue
        compound, _, component = name.partition(".")
        flat = _flat_name(compound, component) if component else name
        fields[flat] = _value(raw, record_id=record_id, field=flat)
    for name in nulled:
        compound, _, component = name.partition(".")
        flat = _flat_name(compound, component) if component else name
        if flat not in _NOT_FIELDS and flat not in AUDIT_FIELDS:
            fields[flat] = None
    return fields


def is_gap(change_type: str | None, record_ids: Sequence[str]) -> bool:
    """Whether a change event says changes were lost: a gap type or a wildcard record ID.

    `decode_change_event` turns such an event into a `Refetch`.
    """
    gap = change_type == "GAP_OVERFLOW" or change_type in _CDC_GAPS
    return gap or any(i.endswith("*") for i in record_ids)


def event_parts(event: object) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The payload of a change event message and its ``ChangeEventHeader``."""
    body = _mapping(event, "a change event")
    if "ChangeEventHeader" not in body:
        if isinstance(body.get("data"), Mapping):
            body = _mapping(body["data"], "data")
        if "payload" in body:
            body = _mapping(body["payload"], "payload")
    return body, _mapping(body.get("ChangeEventHeader"), "ChangeEventHeader")


def decode_change_event(
    event: object,
) -> list[Account | Contact | Deletion | PartialUpdate | Refetch]:
    """Decode a Change Data Capture event into one change per record it names.

    ``event`` is the event payload (the object holding ``ChangeEventHeader``), or a
    message wrapping it under ``payload`` or ``data.payload``. CREATE and UNDELETE give
    full records, UPDATE a `PartialUpdate` of the changed fields, DELETE a `Deletion`;
    gap events (and a wildcard record ID) give a `Refetch`, since their changes are lost.
    """
    body, header = event_parts(event)
    kind = parse_object_type(header.get("entityName"))
    change_type = header.get("changeType")
    if not isinstance(change_type, str):
        raise InvalidRecordError("ChangeEventHeader.changeType must be a string")
    record_ids = _string_list(header.get("recordIds"), "ChangeEventHeader.recordIds")
    if change_type == "GAP_OVERFLOW" or any(i.endswith("*") for i in record_ids):
        return [Refetch(object_type=kind, ids=(), reason=change_type)]
    ids = [normalize_id(i, prefix=OBJECT_PREFIXES[kind]) for i in record_ids]
    if not ids:
        raise InvalidRecordError("ChangeEventHeader.recordIds is empty")
    if change_type in _CDC_GAPS:
        return [Refetch(object_type=kind, ids=tuple(ids), reason=change_type)]
    stamp = commit_time(header)
    if change_type == "DELETE":
        master = body.get("MasterRecordId")
        return [
            Deletion(object_type=kind, id=i, deleted_at=stamp, master_record_id=master)
            for i in ids
        ]
    nulled = _string_list(header.get("nulledFields"), "ChangeEventHeader.nulledFields")
    if change_type in _CDC_RECORD_TYPES:
        fields = _event_fields(body, None, nulled, ids[0])
        if kind == "Account":
            return [Account(id=i, fields=fields, system_modstamp=stamp) for i in ids]
        account_id = body.get("AccountId")
        return [
            Contact(id=i, account_id=account_id, fields=fields, system_modstamp=stamp) for i in ids
        ]
    if change_type != "UPDATE":
        raise InvalidRecordError(f"unknown changeType {change_type!r}", record_id=ids[0])
    changed = _string_list(header.get("changedFields"), "ChangeEventHeader.changedFields")
    diffed = _string_list(header.get("diffFields"), "ChangeEventHeader.diffFields")
    names = [n for n in changed if n not in diffed and n not in nulled]
    fields = _event_fields(body, names, nulled, ids[0])
    new_account: str | Unchanged | None = UNCHANGED
    if kind == "Contact" and ("AccountId" in changed or "AccountId" in nulled):
        new_account = body.get("AccountId")
    out: list[Account | Contact | Deletion | PartialUpdate | Refetch] = [
        PartialUpdate(
            object_type=kind,
            id=i,
            fields=fields,
            account_id=new_account,
            system_modstamp=stamp,
        )
        for i in ids
    ]
    if diffed:
        out.append(
            Refetch(object_type=kind, ids=tuple(ids), reason="diffFields: " + ", ".join(diffed))
        )
    return out
