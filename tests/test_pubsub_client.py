"""`acctsync.sources.pubsub`: Avro change events into CometD's shape, and `PubSubStream`.

The schemas here are built as Salesforce's are (field order of a real AccountChangeEvent,
the header of a real event, compound fields as nested records, ``doc`` type hints), and
payloads are written with fastavro. Bitmaps are written by an encoder of this file's own,
which packs bits into bytes the way Salesforce's Java example reads them back.

The stream is tested against a small Pub/Sub servicer of this file, built from the
generated stubs and served by a real gRPC server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("grpc")
pytest.importorskip("fastavro")
pytest.importorskip("simple_salesforce")

import fastavro
import grpc
from hypothesis import given
from hypothesis import strategies as st
from simple_salesforce.api import Salesforce

from acctsync import (
    ConfigurationError,
    EventBatch,
    EventStream,
    PartialUpdate,
    Refetch,
    ReplayUnavailableError,
    SyncEngine,
    decode_change_event,
)
from acctsync._formats import format_datetime
from acctsync.sources.pubsub import ChangeEventSchema, PubSubError, PubSubStream
from acctsync.sources.pubsub._proto import pubsub_api_pb2 as pb
from acctsync.sources.pubsub._proto import pubsub_api_pb2_grpc as pb_grpc
from acctsync.sources.salesforce import RetryPolicy, SalesforceLogin
from acctsync.testing import InMemorySource, InMemoryStore, make_id
from acctsync.testing.salesforce import FakeSalesforce

A1, A2 = make_id("001", 1), make_id("001", 2)
C1 = make_id("003", 1)
O1 = make_id("006", 1)
USER = "005000000000001AAA"
ORG_ID = "00D000000000001"
TOKEN = f"{ORG_ID}!first-session-token-abcdef"
INSTANCE = "acme.my.salesforce.com"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
REPLAY_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"


def millis(value: datetime | date) -> int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return (value - EPOCH) // timedelta(milliseconds=1)


# --- Schemas, as Salesforce writes them ----------------------------------------------------


def optional(name: str, kind: Any = "string", doc: str | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"name": name, "type": ["null", kind], "default": None}
    if doc is not None:
        field["doc"] = doc
    return field


# Change Data Capture Developer Guide, "ChangeEventHeader Fields"; order and Avro types of
# a real event's header.
HEADER: dict[str, Any] = {
    "type": "record",
    "name": "ChangeEventHeader",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {
                "type": "enum",
                "name": "ChangeType",
                "symbols": [
                    "CREATE",
                    "UPDATE",
                    "DELETE",
                    "UNDELETE",
                    "GAP_CREATE",
                    "GAP_UPDATE",
                    "GAP_DELETE",
                    "GAP_UNDELETE",
                    "GAP_OVERFLOW",
                    "SNAPSHOT",
                ],
            },
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}
ADDRESS: dict[str, Any] = {
    "type": "record",
    "name": "Address",
    "fields": [
        *(optional(n) for n in ("Street", "City", "State", "PostalCode", "Country")),
        optional("StateCode"),
        optional("CountryCode"),
        optional("Latitude", "double"),
        optional("Longitude", "double"),
        optional("Xyz"),
        optional("GeocodeAccuracy"),
    ],
}
NAME_PARTS = ("Salutation", "FirstName", "LastName", "MiddleName", "InformalName", "Suffix")
# The order of a real AccountChangeEvent's fields; custom fields come last.
ACCOUNT_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "AccountChangeEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER},
        {
            "name": "Name",
            "type": [
                "null",
                "string",
                {
                    "type": "record",
                    "name": "Switchable_PersonName",
                    "fields": [optional(n) for n in NAME_PARTS],
                },
            ],
            "default": None,
            "doc": "Data:Switchable_PersonName",
        },
        optional("Type"),
        optional("ParentId"),
        optional("BillingAddress", ADDRESS, "Data:Address"),
        optional("ShippingAddress", "Address", "Data:Address"),  # the type, named again
        *(optional(n) for n in ("Phone", "Fax", "AccountNumber", "Website", "Sic", "Industry")),
        optional("AnnualRevenue", "double"),
        optional("NumberOfEmployees", "int"),
        *(optional(n) for n in ("Ownership", "TickerSymbol", "Description", "Rating", "Site")),
        optional("OwnerId", doc="Owner:EntityId"),
        optional("CreatedDate", "long", "CreatedDate:DateTime"),
        optional("CreatedById", doc="CreatedBy:EntityId"),
        optional("LastModifiedDate", "long", "LastModifiedDate:DateTime"),
        optional("LastModifiedById", doc="LastModifiedBy:EntityId"),
        *(
            optional(n)
            for n in (
                "Jigsaw",
                "JigsawCompanyId",
                "CleanStatus",
                "AccountSource",
                "DunsNumber",
                "Tradestyle",
                "NaicsCode",
                "NaicsDesc",
                "YearStarted",
                "SicDesc",
                "DandbCompanyId",
            )
        ),
        # A custom field's doc ends with its id, as in a real org's schema.
        optional("Founded__c", "long", "Data:DateOnly:00NDp000009Rr9I"),
        optional("Renewal__c", "long", "Data:DateTime:00NDp000009Rr9D"),
        optional("Opens__c", "long", "Data:TimeOnly:00NDp000009RrA1"),
        optional(
            "Loc__c",
            {
                "type": "record",
                "name": "Location",
                "fields": [optional("Latitude", "double"), optional("Longitude", "double")],
            },
            "Data:Location",
        ),
    ],
}
CONTACT_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ContactChangeEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER},
        optional("AccountId", doc="Account:EntityId"),
        optional(
            "Name",
            {"type": "record", "name": "PersonName", "fields": [optional(n) for n in NAME_PARTS]},
            "Data:PersonName",
        ),
        optional("OtherAddress", ADDRESS, "Data:Address"),
        optional("MailingAddress", "Address", "Data:Address"),
        *(optional(n) for n in ("Phone", "Fax", "MobilePhone", "Email", "Title", "Department")),
        optional("Birthdate", "long", "Data:Date"),
        optional("OwnerId", doc="Owner:EntityId"),
        optional("CreatedDate", "long", "CreatedDate:DateTime"),
        optional("CreatedById", doc="CreatedBy:EntityId"),
        optional("LastModifiedDate", "long", "LastModifiedDate:DateTime"),
        optional("LastModifiedById", doc="LastModifiedBy:EntityId"),
    ],
}
OPPORTUNITY_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "OpportunityChangeEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER},
        optional("Name"),
        optional("StageName"),
    ],
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "acct-schema-id-00000000": ACCOUNT_SCHEMA,
    "cont-schema-id-00000000": CONTACT_SCHEMA,
    "oppo-schema-id-00000000": OPPORTUNITY_SCHEMA,
}
SCHEMA_OF = {"Account": "acct-schema-id-00000000", "Contact": "cont-schema-id-00000000"}
SCHEMA_OF["Opportunity"] = "oppo-schema-id-00000000"


def reader(schema: Mapping[str, Any]) -> ChangeEventSchema:
    return ChangeEventSchema(json.dumps(schema), schema_id=str(schema["name"]))


def compound_parts(schema: Mapping[str, Any], position: int) -> list[str]:
    """The sub-fields of the compound field at ``position``, by the schema's JSON."""
    kind = schema["fields"][position]["type"]
    records = [b for b in kind if isinstance(b, dict)] if isinstance(kind, list) else []
    if not records:  # named again: look the name up among the fields before it
        name = next(b for b in kind if b not in ("null", "string"))
        records = [
            b
            for f in schema["fields"][:position]
            for b in f["type"]
            if isinstance(b, dict) and b["name"] == name
        ]
    return [f["name"] for f in records[0]["fields"]]


def hex_bits(positions: Sequence[int], *, upper: bool = False, pad: int = 0) -> str:
    """A bitmap as Salesforce's Java example reads it: bytes, reversed, then bit i is field i."""
    size = max(positions, default=0) // 8 + 1 + pad
    packed = bytearray(size)
    for i in positions:
        packed[i // 8] |= 1 << (i % 8)
    text = bytes(reversed(packed)).hex()
    return "0x" + (text.upper() if upper else text)


def bitmaps(
    schema: Mapping[str, Any],
    names: Sequence[str],
    *,
    upper: bool = False,
    pad: int = 0,
    parent_bits: bool = False,
) -> list[str]:
    """The header field list naming ``names``, as the Pub/Sub API writes it."""
    top = [f["name"] for f in schema["fields"]]
    plain: list[int] = []
    nested: dict[int, list[int]] = {}
    for name in names:
        parent, _, part = name.partition(".")
        position = top.index(parent)
        if part:
            nested.setdefault(position, []).append(compound_parts(schema, position).index(part))
            if parent_bits:
                plain.append(position)
        else:
            plain.append(position)
    out = [hex_bits(plain, upper=upper, pad=pad)] if plain or nested else []
    out += [f"{p}-{hex_bits(bits, upper=upper)}" for p, bits in nested.items()]
    return out


def header(
    schema: Mapping[str, Any],
    entity: str,
    change_type: str,
    ids: Sequence[str],
    *,
    changed: Sequence[str] = (),
    nulled: Sequence[str] = (),
    diffed: Sequence[str] = (),
    stamp: datetime = T,
) -> dict[str, Any]:
    return {
        "entityName": entity,
        "recordIds": list(ids),
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/",
        "transactionKey": "0002b4c0-f1b0-4b58-ba5b-3e2f2d0b7a52",
        "sequenceNumber": 1,
        "commitTimestamp": millis(stamp),
        "commitNumber": 11658922434425,
        "commitUser": USER,
        "nulledFields": bitmaps(schema, nulled),
        "diffFields": bitmaps(schema, diffed),
        "changedFields": bitmaps(schema, changed),
    }


def cometd_header(
    entity: str,
    change_type: str,
    ids: Sequence[str],
    *,
    changed: Sequence[str] = (),
    nulled: Sequence[str] = (),
    diffed: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "entityName": entity,
        "recordIds": list(ids),
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/",
        "transactionKey": "0002b4c0-f1b0-4b58-ba5b-3e2f2d0b7a52",
        "sequenceNumber": 1,
        "commitTimestamp": millis(T),
        "commitNumber": 11658922434425,
        "commitUser": USER,
        "changedFields": list(changed),
        "nulledFields": list(nulled),
        "diffFields": list(diffed),
    }


def avro(schema: Mapping[str, Any], record: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(dict(schema)), dict(record))
    return out.getvalue()


# --- Bitmaps --------------------------------------------------------------------------------

ACCOUNT = reader(ACCOUNT_SCHEMA)
ACCOUNT_FIELDS = [f["name"] for f in ACCOUNT_SCHEMA["fields"]]
COMPOUNDS = {
    position: compound_parts(ACCOUNT_SCHEMA, position)
    for position, name in enumerate(ACCOUNT_FIELDS)
    if name in ("Name", "BillingAddress", "ShippingAddress", "Loc__c")
}


@given(st.data())
def test_bitmaps_expand_to_the_names_an_independent_encoder_wrote(data: st.DataObject) -> None:
    plain = data.draw(st.sets(st.integers(1, len(ACCOUNT_FIELDS) - 1)), label="fields")
    nested = data.draw(
        st.dictionaries(
            st.sampled_from(sorted(COMPOUNDS)),
            st.sets(st.integers(0, 10), min_size=1),
        ),
        label="sub-fields",
    )
    names = [ACCOUNT_FIELDS[i] for i in sorted(plain)]
    for position, parts in nested.items():
        among = COMPOUNDS[position]
        names += [f"{ACCOUNT_FIELDS[position]}.{among[i % len(among)]}" for i in sorted(parts)]
    names = list(dict.fromkeys(names))
    parent_bits = data.draw(st.booleans(), label="parent bits")
    encoded = bitmaps(
        ACCOUNT_SCHEMA,
        names,
        upper=data.draw(st.booleans(), label="upper case"),
        pad=data.draw(st.integers(0, 2), label="leading zero bytes"),
        parent_bits=parent_bits,
    )
    expanded, whole = ACCOUNT.names(encoded)
    assert whole
    parents = {n.partition(".")[0] for n in names if "." in n} if parent_bits else set()
    assert set(expanded) == set(names) | parents
    assert len(expanded) == len(set(expanded))


def test_bitmaps_documented_examples() -> None:
    # Pub/Sub API Developer Guide, "Event Deserialization Considerations": bit i, from the
    # least significant, is the field at position i; "4-0x10" is sub-field 4 of field 4.
    expanded, whole = ACCOUNT.names(["0x650004E0", "4-0x10", "7-0x06"])
    assert not whole  # position 7 (Fax) is no compound field in this schema
    top = [ACCOUNT_FIELDS[i] for i in (5, 6, 7, 10, 24, 26, 29, 30)]
    assert expanded == [*top, "BillingAddress.Country"]
    # A real UPDATE of BillingAddress City and State (LastModifiedDate is field 22).
    assert ACCOUNT.names(["0x400000", "4-0x06"]) == (
        ["LastModifiedDate", "BillingAddress.City", "BillingAddress.State"],
        True,
    )
    assert ACCOUNT.names(["0X400000"]) == ([], False)  # no bitmap: "0x" is lower case
    assert ACCOUNT.names(["", "4-0x2"]) == (["BillingAddress.City"], True)
    assert ACCOUNT.names([f"0x{1 << len(ACCOUNT_FIELDS):x}"]) == ([], False)
    assert ACCOUNT.names(["99-0x1", "6-0x1"]) == ([], False)  # no field 99; Phone no compound


# --- Events read as CometD sends them -------------------------------------------------------


def both_ways(
    schema: Mapping[str, Any], record: Mapping[str, Any], cometd: Mapping[str, Any]
) -> list[Any]:
    """The engine's changes from the Avro event and from the CometD one, which must agree."""
    from_avro = decode_change_event(reader(schema).event(avro(schema, record)))
    assert from_avro == decode_change_event(dict(cometd))
    return from_avro


def test_account_create_reads_as_its_cometd_event() -> None:
    record = {
        "ChangeEventHeader": header(ACCOUNT_SCHEMA, "Account", "CREATE", [A1]),
        "Name": "Acme",
        "Industry": "Retail",
        "BillingAddress": {"Street": "1 Main St", "City": "Paris", "Latitude": 48.8566},
        "AnnualRevenue": 1.5e6,
        "NumberOfEmployees": 120,
        "OwnerId": USER,
        "CreatedDate": millis(T),
        "CreatedById": USER,
        "LastModifiedDate": millis(T),
        "Founded__c": millis(date(1999, 5, 4)),
        "Renewal__c": millis(datetime(2025, 3, 1, 8, 30, 15, 250000, tzinfo=UTC)),
        "Opens__c": (10 * 3600 + 30 * 60 + 5) * 1000 + 7,  # milliseconds since midnight
        "Loc__c": {"Latitude": 1.5, "Longitude": -2.25},
    }
    # CDC Developer Guide: over CometD null fields are left out, dates are text.
    cometd = {
        "ChangeEventHeader": cometd_header("Account", "CREATE", [A1]),
        "Name": "Acme",
        "Industry": "Retail",
        "BillingAddress": {"Street": "1 Main St", "City": "Paris", "Latitude": 48.8566},
        "AnnualRevenue": 1.5e6,
        "NumberOfEmployees": 120,
        "OwnerId": USER,
        "CreatedDate": "2024-01-31T12:00:00Z",
        "CreatedById": USER,
        "LastModifiedDate": "2024-01-31T12:00:00Z",
        "Founded__c": "1999-05-04",
        "Renewal__c": "2025-03-01T08:30:15.250Z",
        "Opens__c": "10:30:05.007Z",  # as REST writes a time
        "Loc__c": {"Latitude": 1.5, "Longitude": -2.25},
    }
    (account,) = both_ways(ACCOUNT_SCHEMA, record, cometd)
    assert account.fields["Founded__c"] == date(1999, 5, 4)
    assert account.fields["Opens__c"] == "10:30:05.007Z"
    assert account.fields["Renewal__c"] == datetime(2025, 3, 1, 8, 30, 15, 250000, tzinfo=UTC)
    assert "BillingState" not in account.fields  # null in Avro: left out, as CometD does


def test_account_update_with_nulled_and_compound_fields_reads_as_its_cometd_event() -> None:
    changed = ["Name", "Phone", "BillingAddress.City", "BillingAddress.PostalCode"]
    changed.append("LastModifiedDate")
    nulled = ["Phone", "BillingAddress.PostalCode"]
    record = {
        "ChangeEventHeader": header(
            ACCOUNT_SCHEMA, "Account", "UPDATE", [A1], changed=changed, nulled=nulled
        ),
        "Name": "Acme 2",
        "BillingAddress": {"City": "Lyon"},
        "LastModifiedDate": millis(T),
    }
    cometd = {
        "ChangeEventHeader": cometd_header(
            "Account", "UPDATE", [A1], changed=changed, nulled=nulled
        ),
        "Name": "Acme 2",
        "BillingAddress": {"City": "Lyon"},
        "LastModifiedDate": "2024-01-31T12:00:00.000Z",
    }
    (update,) = both_ways(ACCOUNT_SCHEMA, record, cometd)
    assert isinstance(update, PartialUpdate)
    assert dict(update.fields) == {
        "Name": "Acme 2",
        "Phone": None,
        "BillingCity": "Lyon",
        "BillingPostalCode": None,
    }


def test_whole_custom_compound_nulled_clears_its_components() -> None:
    record = {
        "ChangeEventHeader": header(
            ACCOUNT_SCHEMA, "Account", "UPDATE", [A1], changed=["Loc__c"], nulled=["Loc__c"]
        )
    }
    cometd = {
        "ChangeEventHeader": cometd_header(
            "Account", "UPDATE", [A1], changed=["Loc__c"], nulled=["Loc__c"]
        ),
        "Loc__c": {"Latitude": None, "Longitude": None},
    }
    (update,) = both_ways(ACCOUNT_SCHEMA, record, cometd)
    assert dict(update.fields) == {"Loc__Latitude__s": None, "Loc__Longitude__s": None}


def test_person_account_name_reads_as_its_cometd_event() -> None:
    record = {
        "ChangeEventHeader": header(
            ACCOUNT_SCHEMA, "Account", "UPDATE", [A1], changed=["Name.FirstName"]
        ),
        "Name": {**dict.fromkeys(NAME_PARTS), "FirstName": "Ada"},
    }
    cometd = {
        "ChangeEventHeader": cometd_header("Account", "UPDATE", [A1], changed=["Name.FirstName"]),
        "Name": {"FirstName": "Ada"},
    }
    update, refetch = both_ways(ACCOUNT_SCHEMA, record, cometd)
    assert dict(update.fields) == {"FirstName": "Ada"}
    # The whole name a query reads ("Ada Lovelace") is the org's to format: read again.
    assert refetch == Refetch(
        object_type="Account", ids=(A1,), reason="a person account's Name, read whole"
    )


def test_contact_create_reads_as_its_cometd_event() -> None:
    person = {"FirstName": "Ada", "LastName": "Lovelace"}
    record = {
        "ChangeEventHeader": header(CONTACT_SCHEMA, "Contact", "CREATE", [C1]),
        "AccountId": A1,
        "Name": {"Salutation": "Ms.", **person},
        "MailingAddress": {"City": "London", "Country": "UK"},
        "Email": "ada@example.com",
        "Birthdate": millis(date(1815, 12, 10)),
        "CreatedDate": millis(T),
    }
    cometd = {
        "ChangeEventHeader": cometd_header("Contact", "CREATE", [C1]),
        "AccountId": A1,
        "Name": {"Salutation": "Ms.", **person},
        "MailingAddress": {"City": "London", "Country": "UK"},
        "Email": "ada@example.com",
        "Birthdate": "1815-12-10",
        "CreatedDate": "2024-01-31T12:00:00.000Z",
    }
    (contact,) = both_ways(CONTACT_SCHEMA, record, cometd)
    assert contact.account_id == A1
    assert contact.fields["Birthdate"] == date(1815, 12, 10)
    assert contact.fields["MailingCity"] == "London"


def test_contact_moves_account_and_changes_name_as_its_cometd_event() -> None:
    changed = ["AccountId", "Name.LastName", "Birthdate"]
    record = {
        "ChangeEventHeader": header(CONTACT_SCHEMA, "Contact", "UPDATE", [C1], changed=changed),
        "AccountId": A2,
        "Name": {"LastName": "King"},
        "Birthdate": millis(date(1815, 12, 11)),
    }
    cometd = {
        "ChangeEventHeader": cometd_header("Contact", "UPDATE", [C1], changed=changed),
        "AccountId": A2,
        "Name": {"LastName": "King"},
        "Birthdate": "1815-12-11",
    }
    (update,) = both_ways(CONTACT_SCHEMA, record, cometd)
    assert update.account_id == A2
    assert dict(update.fields) == {"LastName": "King", "Birthdate": date(1815, 12, 11)}


@pytest.mark.parametrize("change_type", ["DELETE", "UNDELETE", "GAP_UPDATE", "GAP_OVERFLOW"])
def test_deletes_undeletes_and_gaps_read_as_their_cometd_events(change_type: str) -> None:
    ids = ["000000000000000AAA"] if change_type == "GAP_OVERFLOW" else [A1, A2]
    body = {"Name": "Back"} if change_type == "UNDELETE" else {}
    record = {
        "ChangeEventHeader": header(ACCOUNT_SCHEMA, "Account", change_type, ids),
        **body,
    }
    cometd = {"ChangeEventHeader": cometd_header("Account", change_type, ids), **body}
    assert both_ways(ACCOUNT_SCHEMA, record, cometd)


def test_diff_fields_ask_for_a_refetch_as_over_cometd() -> None:
    changed, diffed = ["Description", "Name"], ["Description"]
    record = {
        "ChangeEventHeader": header(
            ACCOUNT_SCHEMA, "Account", "UPDATE", [A1], changed=changed, diffed=diffed
        ),
        "Name": "x",
        "Description": "@@ -1 +1 @@\n-a\n+b\n",
    }
    cometd = {
        "ChangeEventHeader": cometd_header(
            "Account", "UPDATE", [A1], changed=changed, diffed=diffed
        ),
        "Name": "x",
    }
    update, refetch = both_ways(ACCOUNT_SCHEMA, record, cometd)
    assert dict(update.fields) == {"Name": "x"}
    assert refetch == Refetch(object_type="Account", ids=(A1,), reason="diffFields: Description")


def test_a_bitmap_naming_no_field_of_the_schema_reads_as_a_gap() -> None:
    event_header = header(ACCOUNT_SCHEMA, "Account", "UPDATE", [A1], changed=["Name"])
    event_header["changedFields"].append("6-0x01")  # Phone is no compound field
    event = ACCOUNT.event(avro(ACCOUNT_SCHEMA, {"ChangeEventHeader": event_header}))
    assert event["ChangeEventHeader"]["changeType"] == "GAP_UPDATE"
    assert decode_change_event(event) == [
        Refetch(object_type="Account", ids=(A1,), reason="GAP_UPDATE")
    ]


def test_logical_types_read_as_salesforce_text() -> None:
    schema = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "ChangeEventHeader", "type": HEADER},
            optional("At__c", {"type": "long", "logicalType": "timestamp-millis"}),
            optional("On__c", {"type": "int", "logicalType": "date"}),
        ],
    }
    record = {
        "ChangeEventHeader": header(schema, "Account", "CREATE", [A1]),
        "At__c": T,
        "On__c": date(2024, 2, 29),
    }
    event = reader(schema).event(avro(schema, record))
    assert (event["At__c"], event["On__c"]) == ("2024-01-31T12:00:00.000+0000", "2024-02-29")


DATETIME_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "E",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER},
        optional("At__c", "long", "At__c:DateTime"),
    ],
}


@given(st.datetimes(min_value=datetime(1, 1, 1), timezones=st.just(UTC)))
def test_datetimes_in_epoch_milliseconds_read_as_the_rest_api_writes_them(at: datetime) -> None:
    record = {
        "ChangeEventHeader": header(DATETIME_SCHEMA, "Account", "CREATE", [A1]),
        "At__c": millis(at),
    }
    event = reader(DATETIME_SCHEMA).event(avro(DATETIME_SCHEMA, record))
    to_the_millisecond = at.replace(microsecond=at.microsecond // 1000 * 1000)
    assert event["At__c"] == format_datetime(to_the_millisecond)


@pytest.mark.parametrize(
    ("schema_json", "reason"),
    [
        ("{not json", "not an Avro record schema"),
        (json.dumps({"type": "record", "name": "X", "fields": [{"name": "a"}]}), "not an Avro"),
        (json.dumps(OPPORTUNITY_SCHEMA["fields"][1]), "not an Avro"),
        (
            json.dumps({"type": "record", "name": "Ev__e", "fields": [optional("Message__c")]}),
            "not a change event's",
        ),
    ],
)
def test_a_schema_that_is_no_change_events_is_refused(schema_json: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        ChangeEventSchema(schema_json, schema_id="x")


# --- A Pub/Sub API servicer -----------------------------------------------------------------

TOPICS = ("/data/ChangeEvents", "/data/AccountChangeEvent", "/data/ContactChangeEvent")


def replay_id(number: int) -> bytes:
    return number.to_bytes(8, "big") + b"\x00\x00"  # 10 opaque bytes, as Salesforce's


class Servicer(pb_grpc.PubSubServicer):
    """The Pub/Sub API of one org: its change event log, served as Salesforce serves it.

    ``plans`` says how each next ``Subscribe`` call goes: ``serve`` (the default), ``drop``
    or ``end`` after one response (a status error, or the call simply ended), ``silent``
    (nothing, ever), or a status code to fail at once.
    """

    def __init__(self) -> None:
        self.log: list[tuple[bytes, str, bytes]] = []
        self.tip = replay_id(1000)  # the bus's position: further than this org's events
        self.changed = threading.Condition()
        self.keepalive = 0.05
        self.per_response = 100
        self.plans: deque[str | tuple[grpc.StatusCode, str | None]] = deque()
        self.refused_tokens: set[str] = set()
        self.instances = {f"https://{INSTANCE}"}
        self.echo_token = False
        self.calls: list[list[pb.FetchRequest]] = []
        self.metadata: list[dict[str, str]] = []
        self.schema_calls: Counter[str] = Counter()
        self.most_owed = 0
        self.sent = 0  # events sent, by every call

    def publish(self, entity: str, record: Mapping[str, Any]) -> bytes:
        with self.changed:
            replay = replay_id(len(self.log) + 1)
            schema_id = SCHEMA_OF[entity]
            self.log.append((replay, schema_id, avro(SCHEMAS[schema_id], record)))
            self.changed.notify_all()
            return replay

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.metadata.append(metadata)
        token = metadata.get("accesstoken", "")
        known = (
            metadata.get("tenantid") == ORG_ID and metadata.get("instanceurl") in self.instances
        )
        if token in self.refused_tokens or not known:
            context.set_trailing_metadata((("error-code", AUTH_ERROR),))
            shown = f" ({token})" if self.echo_token else ""
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"An authentication exception occurred{shown}. rpcId: 1",
            )

    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> Any:
        self._authenticate(context)
        self.schema_calls[request.schema_id] += 1
        schema = json.dumps(SCHEMAS[request.schema_id])
        return pb.SchemaInfo(schema_json=schema, schema_id=request.schema_id, rpc_id="r")

    def Subscribe(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        self._authenticate(context)
        plan = self.plans.popleft() if self.plans else "serve"
        first = next(request_iterator)
        requests = [first]
        self.calls.append(requests)
        if isinstance(plan, tuple):
            code, error_code = plan
            if error_code is not None:
                context.set_trailing_metadata((("error-code", error_code),))
            context.abort(code, f"{code.name} as planned. rpcId: 2")
        if first.topic_name not in TOPICS:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Topic not found. rpcId: 3")
        with self.changed:
            ids = [replay for replay, _, _ in self.log]
            if first.replay_preset == pb.CUSTOM:
                if first.replay_id not in ids:
                    context.set_trailing_metadata((("error-code", REPLAY_CORRUPTED),))
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "The Replay ID validation failed. rpcId: 4",
                    )
                at = ids.index(first.replay_id) + 1
            else:
                at = 0 if first.replay_preset == pb.EARLIEST else len(ids)
        owed = [first.num_requested]

        def read_requests() -> None:
            with contextlib.suppress(grpc.RpcError):  # the client cancelled the call
                for request in request_iterator:
                    with self.changed:
                        requests.append(request)
                        owed[0] += request.num_requested
                        self.changed.notify_all()

        threading.Thread(target=read_requests, daemon=True).start()
        last_sent = -self.keepalive  # the first answer comes at once, a keepalive if need be
        while context.is_active():
            if plan == "silent":
                time.sleep(0.01)
                continue
            with self.changed:
                self.most_owed = max(self.most_owed, owed[0])
                ready = owed[0] > 0 and at < len(self.log)
                if not ready and time.monotonic() - last_sent < self.keepalive:
                    self.changed.wait(0.02)
                    continue
                count = min(owed[0], self.per_response, len(self.log) - at) if ready else 0
                batch = self.log[at : at + count]
                at += count
                owed[0] -= count
                self.sent += count
                pending = owed[0]
            events = [
                pb.ConsumerEvent(
                    event=pb.ProducerEvent(id=str(r[-1]), schema_id=s, payload=p), replay_id=r
                )
                for r, s, p in batch
            ]
            latest = batch[-1][0] if batch else self.tip
            yield pb.FetchResponse(
                events=events, latest_replay_id=latest, rpc_id="r", pending_num_requested=pending
            )
            last_sent = time.monotonic()
            if plan == "drop":
                context.abort(grpc.StatusCode.UNAVAILABLE, "RST_STREAM closed stream. rpcId: 5")
            if plan == "end":
                return


@pytest.fixture
def servicer() -> Iterator[tuple[Servicer, str]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=16))
    org = Servicer()
    pb_grpc.add_PubSubServicer_to_server(org, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield org, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def client(token: str = TOKEN) -> Salesforce:
    return Salesforce(instance_url=f"https://{INSTANCE}", session_id=token)


NO_WAIT = RetryPolicy(attempts=3, initial=0.0, maximum=0.0, sleep=lambda _: None)


def stream_of(target: str, **options: Any) -> PubSubStream:
    options.setdefault("retry", NO_WAIT)
    options.setdefault("heartbeat", 0.05)
    options.setdefault("idle_timeout", 5.0)
    return PubSubStream(options.pop("client", client()), target=target, insecure=True, **options)


def account_created(record_id: str, name: str) -> dict[str, Any]:
    return {
        "ChangeEventHeader": header(ACCOUNT_SCHEMA, "Account", "CREATE", [record_id]),
        "Name": name,
    }


def contact_created(record_id: str) -> dict[str, Any]:
    return {
        "ChangeEventHeader": header(CONTACT_SCHEMA, "Contact", "CREATE", [record_id]),
        "AccountId": A1,
        "Name": {"LastName": "Lee"},
    }


def opportunity_created() -> dict[str, Any]:
    return {
        "ChangeEventHeader": header(OPPORTUNITY_SCHEMA, "Opportunity", "CREATE", [O1]),
        "Name": "Big deal",
    }


def collect(
    batches: Generator[EventBatch, None, None], events: int, *, keepalives: int = 0
) -> list[EventBatch]:
    """Batches until ``events`` events and ``keepalives`` empty batches came; then closes."""
    out: list[EventBatch] = []
    deadline = time.monotonic() + 10
    with contextlib.closing(batches):
        for batch in batches:
            out.append(batch)
            seen = sum(len(b.events) for b in out)
            empty = sum(not b.events for b in out)
            if seen >= events and empty >= keepalives:
                return out
            assert time.monotonic() < deadline, f"only {seen} events and {empty} keepalives"
    return out


def names_of(batches: Sequence[EventBatch]) -> list[str]:
    return [e.payload.get("Name") for b in batches for e in b.events]  # type: ignore[misc]


# --- The stream -----------------------------------------------------------------------------


def test_is_an_event_stream_named_after_its_topic(servicer: tuple[Servicer, str]) -> None:
    _, target = servicer
    stream = stream_of(target, topic="/data/AccountChangeEvent")
    assert isinstance(stream, EventStream)
    assert stream.name == "pubsub /data/AccountChangeEvent"


def test_subscribes_from_now_with_the_org_metadata(servicer: tuple[Servicer, str]) -> None:
    org, target = servicer
    org.publish("Account", account_created(A1, "Before"))
    batches = stream_of(target).events(None)
    first = next(batches)  # Salesforce answered: a keepalive at the bus's position
    assert first == EventBatch(events=(), position=org.tip)
    org.publish("Account", account_created(A2, "After"))
    got = collect(batches, 1)
    assert names_of(got) == ["After"]
    sent = {key: org.metadata[0][key] for key in ("accesstoken", "instanceurl", "tenantid")}
    assert sent == {"accesstoken": TOKEN, "instanceurl": f"https://{INSTANCE}", "tenantid": ORG_ID}
    request = org.calls[0][0]
    assert (request.topic_name, request.replay_preset, request.num_requested) == (
        "/data/ChangeEvents",
        pb.LATEST,
        100,
    )


def test_resumes_after_a_position_with_each_event_as_cometd_reads_it(
    servicer: tuple[Servicer, str],
) -> None:
    org, target = servicer
    first = org.publish("Account", account_created(A1, "One"))
    second = org.publish("Contact", contact_created(C1))
    got = collect(stream_of(target).events(first), 1)
    request = org.calls[0][0]
    assert (request.replay_preset, request.replay_id) == (pb.CUSTOM, first)
    (event,) = got[0].events
    assert got[0].position == second
    assert event.origin == f"replay {second.hex()}"
    assert event.payload == {
        "ChangeEventHeader": {
            **header(CONTACT_SCHEMA, "Contact", "CREATE", [C1]),
            "changedFields": [],
            "nulledFields": [],
            "diffFields": [],
        },
        "AccountId": A1,
        "Name": {"LastName": "Lee"},
    }


@pytest.mark.parametrize(("batch_size", "per_response"), [(100, 100), (30, 7), (1, 1)])
def test_flow_control_never_lets_more_than_the_batch_be_owed(
    servicer: tuple[Servicer, str], batch_size: int, per_response: int
) -> None:
    org, target = servicer
    org.per_response = per_response
    start = org.publish("Account", account_created(A1, "start"))
    for n in range(250):
        org.publish("Account", account_created(A1, f"n{n}"))
    got = collect(stream_of(target, batch_size=batch_size).events(start), 250)
    assert names_of(got) == [f"n{n}" for n in range(250)]
    assert all(len(b.events) <= batch_size for b in got)
    requested = [r.num_requested for r in org.calls[0]]
    assert requested[0] == batch_size
    assert all(0 < n <= batch_size for n in requested)
    assert org.most_owed <= batch_size
    assert sum(requested) >= 250


def test_responses_that_came_while_the_reader_was_busy_are_one_batch(
    servicer: tuple[Servicer, str],
) -> None:
    org, target = servicer
    org.per_response = 7
    start = org.publish("Account", account_created(A1, "start"))
    for n in range(250):
        org.publish("Account", account_created(A1, f"n{n}"))
    batches = stream_of(target, batch_size=30).events(start)
    with contextlib.closing(batches):
        first = next(batches)
        # The reader applies its batch meanwhile, and the server sends all it is owed
        # (at least 16 events: the stream asks for more once 15 or fewer are owed), in
        # responses of 7.
        deadline = time.monotonic() + 5
        while org.sent < sum(request.num_requested for request in org.calls[0]):
            assert time.monotonic() < deadline, f"the server sent {org.sent} events"
            time.sleep(0.01)
        time.sleep(0.05)  # for the last response to reach the stream
        second = next(batches)
        rest = collect(batches, 250 - len(first.events) - len(second.events))
    assert len(second.events) > 7  # two responses or more
    got = [first, second, *rest]
    assert all(len(batch.events) <= 30 for batch in got)
    assert names_of(got) == [f"n{n}" for n in range(250)]
    # Each position is after the batch's last event: its replay id, or the bus's latest
    # that a keepalive joined to it gave.
    for batch in (batch for batch in got if batch.events):
        last = batch.events[-1].origin
        assert batch.position == org.tip or last == f"replay {batch.position.hex()}"


def test_keepalives_move_the_position_and_heartbeats_repeat_it(
    servicer: tuple[Servicer, str],
) -> None:
    org, target = servicer
    org.keepalive = 30.0  # Salesforce's keepalive is far apart: the stream's heartbeat shows
    start = org.publish("Account", account_created(A1, "start"))
    batches = stream_of(target).events(start)
    with contextlib.closing(batches):
        keepalive = next(batches)
        assert keepalive == EventBatch(events=(), position=org.tip)
        assert next(batches) == EventBatch(events=(), position=org.tip)  # a heartbeat
        assert len(org.calls) == 1


@pytest.mark.parametrize("plan", ["drop", "end", "silent", grpc.StatusCode.INTERNAL])
def test_a_dropped_ended_or_silent_call_is_made_again_from_the_last_position(
    servicer: tuple[Servicer, str], plan: Any
) -> None:
    org, target = servicer
    org.per_response = 2
    start = org.publish("Account", account_created(A1, "start"))
    for n in range(5):
        org.publish("Account", account_created(A1, f"n{n}"))
    if plan == "silent" or isinstance(plan, grpc.StatusCode):
        org.plans.append(plan if plan == "silent" else (plan, None))
    else:
        org.plans.extend([plan, plan])
    got = collect(stream_of(target, idle_timeout=0.3).events(start), 5)
    assert names_of(got) == [f"n{n}" for n in range(5)]  # none lost, none twice
    positions = [b.position for b in got if b.events]
    resumed = [call[0].replay_id for call in org.calls]
    assert resumed[0] == start
    assert set(resumed[1:]) <= {start, *positions}  # each call from a position yielded


def test_a_failure_that_lasts_raises_after_the_backoff(servicer: tuple[Servicer, str]) -> None:
    org, target = servicer
    org.plans.extend([(grpc.StatusCode.UNAVAILABLE, None)] * 5)
    waits: list[float] = []
    retry = RetryPolicy(attempts=3, initial=0.01, maximum=0.02, sleep=waits.append)
    with pytest.raises(PubSubError) as info:
        next(stream_of(target, retry=retry).events(None))
    assert (info.value.status, info.value.retryable) == ("UNAVAILABLE", True)
    assert "Subscribe to /data/ChangeEvents" in str(info.value)
    assert len(org.calls) == 3
    assert len(waits) == 2


@pytest.mark.parametrize("code", [REPLAY_CORRUPTED, REPLAY_INVALID])
def test_a_replay_id_salesforce_no_longer_holds_raises_replay_unavailable(
    servicer: tuple[Servicer, str], code: str
) -> None:
    org, target = servicer
    gone = replay_id(7)
    if code == REPLAY_INVALID:
        org.plans.append((grpc.StatusCode.INVALID_ARGUMENT, code))
    with pytest.raises(ReplayUnavailableError) as info:
        next(stream_of(target).events(gone))
    assert info.value.position == gone
    assert not info.value.retryable
    assert gone.hex() in str(info.value)
    assert len(org.calls) == 1


def test_an_unknown_topic_says_so(servicer: tuple[Servicer, str]) -> None:
    _, target = servicer
    with pytest.raises(PubSubError) as info:
        next(stream_of(target, topic="/data/Nope__ChangeEvent").events(None))
    assert info.value.status == "PERMISSION_DENIED"
    assert "/data/Nope__ChangeEvent" in str(info.value)
    assert "case-sensitive" in str(info.value)


def test_an_expired_session_is_renewed_once_through_the_login(
    servicer: tuple[Servicer, str], caplog: pytest.LogCaptureFixture
) -> None:
    org, target = servicer
    with FakeSalesforce() as fake:
        old = fake.client()
        login = SalesforceLogin.password(
            username=fake.username, password=fake.password, security_token=fake.security_token
        )
        org.refused_tokens.add(old.session_id)
        org.echo_token = True
        org.instances.add(f"https://{old.sf_instance}")
        stream = stream_of(target, client=old, login=login)
        start = org.publish("Account", account_created(A1, "start"))
        org.publish("Account", account_created(A1, "after renewal"))
        with caplog.at_level(logging.WARNING):
            got = collect(stream.events(start), 1)
    assert names_of(got) == ["after renewal"]
    tokens = [m["accesstoken"] for m in org.metadata]
    assert tokens[0] == old.session_id
    assert tokens[1] != old.session_id
    assert old.session_id not in caplog.text
    assert "signing in again" in caplog.text


def test_without_a_login_an_expired_session_is_final(servicer: tuple[Servicer, str]) -> None:
    org, target = servicer
    org.refused_tokens.add(TOKEN)
    org.echo_token = True
    with pytest.raises(PubSubError) as info:
        next(stream_of(target).events(None))
    assert (info.value.status, info.value.error_code) == ("UNAUTHENTICATED", AUTH_ERROR)
    assert not info.value.retryable
    assert TOKEN not in str(info.value)
    assert "no login" in str(info.value)
    assert len(org.calls) == 0


class RefuseAll(set[str]):
    """Every token is refused."""

    def __contains__(self, item: object) -> bool:
        return True


def test_a_session_refused_again_after_renewal_is_final(servicer: tuple[Servicer, str]) -> None:
    org, target = servicer
    org.refused_tokens = RefuseAll()
    with FakeSalesforce() as fake:
        old = fake.client()
        org.instances.add(f"https://{old.sf_instance}")
        login = SalesforceLogin.password(
            username=fake.username, password=fake.password, security_token=fake.security_token
        )
        with pytest.raises(PubSubError) as info:
            next(stream_of(target, client=old, login=login).events(None))
    assert info.value.status == "UNAUTHENTICATED"
    tokens = [m["accesstoken"] for m in org.metadata]
    assert len(tokens) == len(set(tokens)) == 2  # the old session, then one renewal


def test_schemas_are_asked_for_once_per_id(servicer: tuple[Servicer, str]) -> None:
    org, target = servicer
    start = org.publish("Account", account_created(A1, "start"))
    for n in range(3):
        org.publish("Account", account_created(A1, f"a{n}"))
        org.publish("Contact", contact_created(C1))
    stream = stream_of(target)
    collect(stream.events(start), 6)
    collect(stream.events(start), 6)  # a new subscription keeps what it learnt
    assert org.schema_calls == {SCHEMA_OF["Account"]: 1, SCHEMA_OF["Contact"]: 1}
    assert repr(stream) == f"<PubSubStream /data/ChangeEvents at {target} schemas=2>"


def test_events_of_other_objects_are_left_out_but_move_the_position(
    servicer: tuple[Servicer, str],
) -> None:
    org, target = servicer
    org.per_response = 2
    start = org.publish("Account", account_created(A1, "start"))
    org.publish("Account", account_created(A1, "kept"))
    org.publish("Opportunity", opportunity_created())
    org.publish("Opportunity", opportunity_created())
    last = org.publish("Opportunity", opportunity_created())
    got = collect(stream_of(target).events(start), 1, keepalives=1)
    assert [len(b.events) for b in got[:2]] == [1, 0]
    assert names_of(got) == ["kept"]
    assert got[1].position == last


def test_the_engine_follows_the_stream_into_a_store_and_resumes_after_its_checkpoint(
    servicer: tuple[Servicer, str],
) -> None:
    org, target = servicer
    store = InMemoryStore()
    engine = SyncEngine(source=InMemorySource(), store=store, clock=lambda: T + timedelta(1))
    stream = stream_of(target)
    with contextlib.closing(engine.follow(stream)) as reports:
        next(reports)  # the catch-up sync, once subscribed
        created = org.publish("Account", account_created(A1, "Acme"))
        assert next(reports).accounts_upserted == 1
    account = store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme"}
    assert store.checkpoint(stream.name) == created
    changed = ["Name", "LastModifiedDate"]
    record = {
        "ChangeEventHeader": header(
            ACCOUNT_SCHEMA, "Account", "UPDATE", [A1], changed=changed, stamp=T + timedelta(0, 1)
        ),
        "Name": "Acme Inc",
        "LastModifiedDate": millis(T),
    }
    updated = org.publish("Account", record)
    with contextlib.closing(engine.follow(stream)) as reports:
        next(reports)
    assert org.calls[-1][0].replay_id == created
    account = store.get_account(A1)
    assert account is not None
    assert account.fields == {"Name": "Acme Inc"}
    assert store.checkpoint(stream.name) == updated


def test_an_event_its_schema_cannot_read_stops_the_stream_naming_it(
    servicer: tuple[Servicer, str],
) -> None:
    org, target = servicer
    start = org.publish("Account", account_created(A1, "start"))
    org.log.append((replay_id(2), SCHEMA_OF["Account"], b"\xff" * 40))
    with pytest.raises(PubSubError) as info:
        collect(stream_of(target).events(start), 1)
    assert replay_id(2).hex() in str(info.value)
    assert SCHEMA_OF["Account"] in str(info.value)
    assert not info.value.retryable


def test_no_secret_in_repr_errors_or_logs(
    servicer: tuple[Servicer, str], caplog: pytest.LogCaptureFixture
) -> None:
    org, target = servicer
    org.refused_tokens.add(TOKEN)
    org.echo_token = True
    stream = stream_of(target)
    with caplog.at_level(logging.DEBUG), pytest.raises(PubSubError) as info:
        next(stream.events(None))
    shown = [repr(stream), str(info.value), caplog.text]
    assert not any(TOKEN in text or TOKEN.partition("!")[2] in text for text in shown)


def test_tls_by_default_and_with_credentials_given() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    org = Servicer()
    pb_grpc.add_PubSubServicer_to_server(org, server)
    plain = server.add_insecure_port("127.0.0.1:0")
    local = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
    server.start()
    try:
        once = RetryPolicy(attempts=1)
        tls = PubSubStream(client(), target=f"127.0.0.1:{plain}", retry=once, idle_timeout=2)
        with pytest.raises(PubSubError) as info:
            next(tls.events(None))  # no TLS handshake with a plain server
        assert info.value.status == "UNAVAILABLE"
        credentials = grpc.local_channel_credentials()
        stream = PubSubStream(client(), target=f"127.0.0.1:{local}", credentials=credentials)
        with contextlib.closing(stream.events(None)) as batches:
            assert next(batches).position == org.tip
    finally:
        server.stop(grace=None).wait()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": "api.pubsub.salesforce.com:7443", "insecure": True}, "loopback"),
        ({"target": "10.0.0.1:7443", "insecure": True}, "loopback"),
        ({"insecure": True, "credentials": grpc.local_channel_credentials()}, "not both"),
        ({"topic": "/event/Order__e"}, "/data/"),
        ({"topic": "ChangeEvents"}, "/data/"),
        ({"target": ""}, "host and port"),
        ({"batch_size": 101}, "1 to 100"),
        ({"batch_size": 0}, "1 to 100"),
        ({"batch_size": True}, "integer"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"client": client("not-a-salesforce-token")}, "org id"),
    ],
)
def test_settings_it_cannot_work_with_are_refused(options: dict[str, Any], message: str) -> None:
    given_client = options.pop("client", client())
    with pytest.raises(ConfigurationError, match=message) as info:
        PubSubStream(given_client, **options)
    assert "not-a-salesforce-token" not in str(info.value)


@pytest.mark.parametrize("target", ["127.0.0.1:7443", "localhost:50051", "[::1]:7443"])
def test_insecure_channels_to_the_loopback_interface_are_allowed(target: str) -> None:
    assert PubSubStream(client(), target=target, insecure=True).name


def test_a_position_must_be_a_replay_id() -> None:
    stream = PubSubStream(client())
    with pytest.raises(ConfigurationError, match="replay id"):
        next(stream.events(b""))


def test_without_the_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "acctsync.sources.pubsub" or name.startswith("acctsync.sources.pubsub._"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastavro", None)
    with pytest.raises(ImportError, match=r"pubsub extra \(fastavro is missing\)") as info:
        import acctsync.sources.pubsub  # noqa: F401
    assert info.value.name == "fastavro"
