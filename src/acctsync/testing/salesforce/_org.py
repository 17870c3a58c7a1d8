"""The rows of `FakeSalesforce`'s org, and the REST API's writes to them.

`Org` holds the rows of each object type and the org's clock: the state a request
stages on a copy and then commits or throws away. `write` is one create (POST) or upsert
by external ID (PATCH) of a record, checked as Salesforce checks it: fields in the
describe and writable, required fields present, references to live records. It stamps
the record with the clock to the second, as Salesforce stamps ``SystemModstamp``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote

from attrs import Factory, define

from acctsync._errors import InvalidRecordError
from acctsync._ids import normalize_id
from acctsync._records import FieldValue
from acctsync.testing.salesforce._describe import (
    ID_TYPES,
    KEY_PREFIXES,
    ApiError,
    Described,
    Row,
    by_name,
    dumps,
    modstamp,
    object_type_named,
    typed,
)

VERSION: Final = r"/services/data/v(?P<version>\d+\.\d)"
# A record's URL, by Id or, with ``field`` and ``value``, by an external ID: the one
# resource `write` serves, alone or as a subrequest of a composite request.
SOBJECT: Final = re.compile(
    VERSION + r"/sobjects/(?P<object>\w+)(?:/(?P<field>\w+)/(?P<value>[^/]+))?/?"
)


@define
class Org:
    """The state a composite request stages and then commits or throws away."""

    rows: dict[str, dict[str, Row]]
    now: datetime
    created: int = 0
    written: list[tuple[str, str]] = Factory(list)
    """The (object type, Id) of each record written since the copy was made, in order."""

    def copy(self) -> Org:
        return Org({kind: dict(rows) for kind, rows in self.rows.items()}, self.now, self.created)

    def new_id(self, object_type: str) -> str:
        while True:
            self.created += 1
            record_id = normalize_id(f"{KEY_PREFIXES[object_type]}Re{self.created:010d}")
            if record_id not in self.rows[object_type]:
                return record_id

    def live(self, object_type: str, record_id: str) -> Row | None:
        row = self.rows[object_type].get(record_id)
        return None if row is None or row["IsDeleted"] else row


def write(
    org: Org, describe: dict[str, list[Described]], method: str, match: re.Match[str], body: Any
) -> tuple[int, Any, dict[str, str]]:
    """Create (POST) or upsert by external ID (PATCH) one record in ``org``."""
    try:
        object_type = object_type_named(describe, match["object"])
    except ApiError:
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    described = by_name(describe[object_type])
    given: dict[str, tuple[Described, Any]] = {}
    for name, raw in body.items():
        if name == "attributes":
            continue
        entry = described.get(name.lower())
        if entry is None:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {object_type}",
            )
        given[entry["name"]] = (entry, raw)
    if (method == "PATCH") != (match["field"] is not None):
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
    existing, external = None, None
    if match["field"] is not None:
        existing, external = _find_external(org, describe, object_type, match)
    allowed = "createable" if existing is None else "updateable"
    refused = [name for name, (entry, _) in given.items() if not entry[allowed]]
    if refused:
        raise ApiError(
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(refused)}. Please check the"
            " security settings of this field and verify that it is read/write for your"
            " profile or permission set.",
            fields=refused,
        )
    values = {name: _field_value(org, entry, raw) for name, (entry, raw) in given.items()}
    if existing is None and external is not None:
        values.update([external])
    merged = {**(existing or {}), **values}
    missing = [
        entry["name"]
        for entry in describe[object_type]
        if entry["createable"]
        and not entry["nillable"]
        and not entry["defaultedOnCreate"]
        and merged.get(entry["name"]) in (None, "")
    ]
    if missing:
        raise ApiError(
            400,
            "REQUIRED_FIELD_MISSING",
            f"Required fields are missing: [{', '.join(missing)}]",
            fields=missing,
        )
    if existing is not None:
        record_id = existing["Id"]
        org.rows[object_type][record_id] = {**merged, "SystemModstamp": modstamp(org.now, "now")}
        org.written.append((object_type, record_id))
        return 200, {"id": record_id, "success": True, "errors": [], "created": False}, {}
    record_id = org.new_id(object_type)
    row: Row = {"Id": record_id, "IsDeleted": False, "SystemModstamp": modstamp(org.now, "now")}
    if object_type != "Opportunity":
        row["MasterRecordId"] = None
    if object_type == "Contact":
        row["AccountId"] = None
    org.rows[object_type][record_id] = {**row, **values}
    org.written.append((object_type, record_id))
    out: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
    if external is not None:
        out["created"] = True
    location = f"/services/data/v{match['version']}/sobjects/{object_type}/{record_id}"
    return 201, out, {"Location": location}


def _find_external(
    org: Org, describe: dict[str, list[Described]], object_type: str, match: re.Match[str]
) -> tuple[Row | None, tuple[str, str]]:
    """The live record an upsert's external ID names, if any, and that (field, value)."""
    entry = by_name(describe[object_type]).get(match["field"].lower())
    if entry is None or not entry["externalId"]:
        raise ApiError(
            404,
            "NOT_FOUND",
            "Provided external ID field does not exist or is not accessible: " + match["field"],
        )
    name, value = entry["name"], unquote(match["value"])
    found = [
        row
        for row in org.rows[object_type].values()
        if not row["IsDeleted"] and row.get(name) == value
    ]
    if len(found) > 1:
        error = ApiError(300, "MULTIPLE_CHOICES", f"More than one record has {name} {value}")
        error.body = [
            f"/services/data/v{match['version']}/sobjects/{object_type}/{row['Id']}"
            for row in found
        ]
        raise error
    return (found[0] if found else None), (name, value)


def _field_value(org: Org, entry: Described, raw: Any) -> FieldValue:
    """A JSON value written to a field, as the field's type stores it."""
    kind, name = entry["type"], entry["name"]
    if raw is None:
        return None
    if kind in ID_TYPES:
        try:
            record_id = normalize_id(raw)
        except InvalidRecordError:
            raise ApiError(
                400, "MALFORMED_ID", f"{name}: id value of incorrect type: {raw}", fields=[name]
            ) from None
        targets = [kind for kind in entry["referenceTo"] if kind in org.rows]
        if not any(org.live(target, record_id) is not None for target in targets):
            raise ApiError(
                400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", fields=[]
            )
        return record_id
    try:
        return typed(kind, raw)
    except (TypeError, ValueError, ArithmeticError):
        raise ApiError(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {kind} from value {dumps(raw)} for field {name}",
        ) from None
