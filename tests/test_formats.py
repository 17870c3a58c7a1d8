"""Rule R8: Salesforce REST JSON records and Change Data Capture events decode to records.

The fuzz tests at the end hold the decoders to R7: whatever JSON arrives, the only
exception that leaves them is the library's own `AcctSyncError`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acctsync import (
    AUDIT_FIELDS,
    UNCHANGED,
    Account,
    AcctSyncError,
    Contact,
    Deletion,
    InvalidRecordError,
    PartialUpdate,
    Refetch,
    Store,
    SyncEngine,
    _formats,  # the plain path's own tests
    decode_change_event,
    decode_record,
    encode_record,
)
from acctsync._ids import normalize_id
from acctsync._records import parse_object_type
from acctsync.testing import InMemorySource, make_id, strategies
from realworld import realworld

A1 = make_id("001", 1)
A2 = make_id("001", 2)
A3 = make_id("001", 3)
C1 = make_id("003", 1)
C2 = make_id("003", 2)
T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
T_MS = 1706702400000  # T in epoch milliseconds, as CDC's commitTimestamp carries it
assert datetime.fromtimestamp(T_MS / 1000, UTC) == T


def rest_account(**extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "attributes": {"type": "Account", "url": f"/services/data/v60.0/sobjects/Account/{A1}"},
        "Id": A1,
        "Name": "Acme",
        "SystemModstamp": "2024-01-31T12:00:00.000+0000",
    }
    record.update(extra)
    return record


def rest_contact(**extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "attributes": {"type": "Contact", "url": f"/services/data/v60.0/sobjects/Contact/{C1}"},
        "Id": C1,
        "AccountId": A1,
        "Email": "a@b.c",
        "SystemModstamp": "2024-01-31T12:00:00.000+0000",
    }
    record.update(extra)
    return record


# Change Data Capture Developer Guide, "Change Event Header Fields": the header every
# event carries, as the guide's examples show it.
def header(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "entityName": "Account",
        "recordIds": [A1],
        "changeType": "UPDATE",
        "changeOrigin": "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/",
        "transactionKey": "0002b4c0-f1b0-4b58-ba5b-3e2f2d0b7a52",
        "sequenceNumber": 1,
        "commitTimestamp": T_MS,
        "commitNumber": 11658922434425,
        "commitUser": "005xx000001X8UzAAK",
        "changedFields": [],
        "nulledFields": [],
        "diffFields": [],
    }
    out.update(extra)
    return out


SEQ = (11658922434425, 1)  # header()'s (commitNumber, sequenceNumber)


def fields_of(change: object) -> dict[str, object]:
    assert isinstance(change, Account | Contact | PartialUpdate)
    return dict(change.fields)


def event(body: dict[str, Any] | None = None, **header_fields: Any) -> dict[str, Any]:
    return {"ChangeEventHeader": header(**header_fields), **(body or {})}


# --- REST JSON records ---------------------------------------------------------------


def test_account_from_rest_json() -> None:
    record = decode_record("Account", rest_account(Industry="Retail", NumberOfEmployees=12))
    assert record == Account(
        id=A1,
        fields={"Name": "Acme", "Industry": "Retail", "NumberOfEmployees": 12},
        system_modstamp=T,
    )
    assert "attributes" not in record.fields
    assert "Id" not in record.fields
    assert "SystemModstamp" not in record.fields


def test_rest_json_text_as_it_comes_off_the_wire() -> None:
    text = (
        '{"attributes":{"type":"Account","url":"/services/data/v60.0/sobjects/Account/'
        + A1
        + '"},"Id":"'
        + A1
        + '","Name":"Acme","AnnualRevenue":1500000.5,"NumberOfEmployees":250,'
        '"IsActive__c":true,"Rating":null,"Founded__c":"1999-12-31",'
        '"Renewal__c":"2024-06-01T08:30:00.000+0200",'
        '"SystemModstamp":"2024-01-31T12:00:00.000+0000"}'
    )
    record = decode_record("Account", json.loads(text))
    assert isinstance(record, Account)
    fields = record.fields
    assert fields["Name"] == "Acme"
    assert fields["AnnualRevenue"] == 1500000.5
    assert type(fields["AnnualRevenue"]) is float
    assert fields["NumberOfEmployees"] == 250
    assert type(fields["NumberOfEmployees"]) is int
    assert fields["IsActive__c"] is True
    assert "Rating" in fields
    assert fields["Rating"] is None
    assert fields["Founded__c"] == date(1999, 12, 31)
    assert type(fields["Founded__c"]) is date
    assert fields["Renewal__c"] == datetime(2024, 6, 1, 6, 30, tzinfo=UTC)
    assert record.system_modstamp == T


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-01-31T12:00:00.000+0000", T),
        ("2024-01-31T12:00:00.000Z", T),
        ("2024-01-31T12:00:00Z", T),
        ("2024-01-31T12:00:00+0000", T),
        ("2024-01-31T13:00:00.000+0100", T),
        ("2024-01-31T07:00:00.000-0500", T),
        ("2024-01-31T12:00:00.123+0000", T + timedelta(milliseconds=123)),
    ],
)
def test_system_modstamp_formats(stamp: str, expected: datetime) -> None:
    record = decode_record("Account", rest_account(SystemModstamp=stamp))
    assert record.system_modstamp == expected
    assert record.system_modstamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-31T12:00:00.000",  # no time zone: naive
        "2024-01-31T12:00:00",
        "2024-01-31",
        "2024-13-31T12:00:00.000+0000",
        "2024-02-30T12:00:00.000+0000",
        "31/01/2024 12:00",
        "",
        1706702400000,
        True,
        ["2024-01-31T12:00:00.000+0000"],
        {"value": "2024-01-31T12:00:00.000+0000"},
    ],
)
def test_bad_system_modstamp_is_rejected(stamp: object) -> None:
    with pytest.raises(InvalidRecordError) as info:
        decode_record("Account", rest_account(SystemModstamp=stamp))
    assert info.value.field == "SystemModstamp"
    assert info.value.record_id == A1


@pytest.mark.parametrize("missing", ["Id", "SystemModstamp"])
def test_missing_id_or_stamp_is_rejected(missing: str) -> None:
    payload = rest_account()
    del payload[missing]
    with pytest.raises(InvalidRecordError, match=missing):
        decode_record("Account", payload)
    with pytest.raises(InvalidRecordError, match=missing):
        decode_record("Account", {**rest_account(), missing: None})


@pytest.mark.parametrize("bad_id", ["001", C1, A1[:-1] + "Z", 42, ["x"]])
def test_bad_id_is_rejected_with_the_field_named(bad_id: object) -> None:
    with pytest.raises(InvalidRecordError) as info:
        decode_record("Account", rest_account(Id=bad_id))
    assert info.value.field == "Id"
    assert info.value.reason


def test_15_char_id_is_normalised() -> None:
    record = decode_record("Account", rest_account(Id=A1[:15]))
    assert record.id == A1
    contact = decode_record("Contact", rest_contact(Id=C1[:15], AccountId=A1[:15]))
    assert isinstance(contact, Contact)
    assert (contact.id, contact.account_id) == (C1, A1)


@pytest.mark.parametrize("object_type", ["Lead", "account", "", None, 1])
def test_unknown_object_type_is_rejected(object_type: object) -> None:
    with pytest.raises(InvalidRecordError, match="object type"):
        decode_record(object_type, rest_account())  # type: ignore[arg-type]


def test_attributes_type_must_match() -> None:
    with pytest.raises(InvalidRecordError, match="attributes"):
        decode_record("Account", rest_account(attributes={"type": "Contact"}))
    with pytest.raises(InvalidRecordError):
        decode_record("Account", rest_account(attributes="Account"))
    # attributes are optional, and so is their type
    payload = rest_account()
    del payload["attributes"]
    assert decode_record("Account", payload).id == A1
    assert decode_record("Account", rest_account(attributes={"url": "/x"})).id == A1


@pytest.mark.parametrize("payload", [None, [], "record", 1, [rest_account()]])
def test_payload_must_be_an_object(payload: object) -> None:
    with pytest.raises(InvalidRecordError):
        decode_record("Account", payload)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, 0),
        (-7, -7),
        (2**53 + 1, 2**53 + 1),
        (1.25, 1.25),
        (True, True),
        (False, False),
        (None, None),
        ("", ""),
        ("plain text", "plain text"),
        ("2024-01-31", date(2024, 1, 31)),
        ("2024-01-31T12:00:00.000+0000", T),
        ("2024-01-31T12:00:00Z", T),
        ("2024-01-31 is a date in text", "2024-01-31 is a date in text"),
        (" 2024-01-31", " 2024-01-31"),
    ],
    ids=repr,
)
def test_field_value_decoding(raw: object, expected: object) -> None:
    record = decode_record("Account", rest_account(Value__c=raw))
    value = fields_of(record)["Value__c"]
    assert type(value) is type(expected)
    assert value == expected


def test_numbers_parsed_as_decimal_stay_decimal() -> None:
    text = json.dumps(rest_account(AnnualRevenue=1.5))
    record = decode_record("Account", json.loads(text, parse_float=Decimal))
    assert fields_of(record)["AnnualRevenue"] == Decimal("1.5")
    assert type(fields_of(record)["AnnualRevenue"]) is Decimal


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    with pytest.raises(InvalidRecordError) as info:
        decode_record("Account", rest_account(AnnualRevenue=value))
    assert info.value.field == "AnnualRevenue"


def test_audit_fields_are_dropped() -> None:
    audit = {
        "CreatedDate": "2020-01-01T00:00:00.000+0000",
        "CreatedById": "005xx000001X8UzAAK",
        "LastModifiedDate": "2024-01-31T12:00:00.000+0000",
        "LastModifiedById": "005xx000001X8UzAAK",
        "LastActivityDate": "2024-01-30",
        "LastViewedDate": "2024-01-31T11:00:00.000+0000",
        "LastReferencedDate": "2024-01-31T11:00:00.000+0000",
    }
    assert set(audit) == set(AUDIT_FIELDS)
    record = decode_record("Account", rest_account(**audit))
    assert fields_of(record) == {"Name": "Acme"}
    contact = decode_record("Contact", rest_contact(**audit))
    assert fields_of(contact) == {"Email": "a@b.c"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Owner", {"attributes": {"type": "User"}, "Name": "Jane"}),
        ("Account", {"attributes": {"type": "Account"}, "Name": "Acme"}),
        ("BillingAddress", {"attributes": {"type": "Address"}, "city": "Paris"}),
        ("Industry", {"city": "Paris"}),  # the shape of a compound, on no compound
        ("Loc__c", {"latitude": 1.0, "altitude": 2.0}),  # a key no compound has
        ("Tags__c", ["a", "b"]),
    ],
)
def test_relationship_and_other_object_values_are_rejected_with_a_reason(
    name: str, value: object
) -> None:
    with pytest.raises(InvalidRecordError) as info:
        decode_record("Account", rest_account(**{name: value}))
    assert info.value.field == name
    assert info.value.record_id == A1
    assert info.value.reason
    if isinstance(value, dict):
        assert "compound" in info.value.reason or "relationship" in info.value.reason


def test_contact_account_id() -> None:
    contact = decode_record("Contact", rest_contact())
    assert contact == Contact(id=C1, account_id=A1, fields={"Email": "a@b.c"}, system_modstamp=T)
    orphan = decode_record("Contact", rest_contact(AccountId=None))
    assert isinstance(orphan, Contact)
    assert orphan.account_id is None
    absent = rest_contact()
    del absent["AccountId"]
    assert decode_record("Contact", absent).account_id is None  # type: ignore[union-attr]
    assert "AccountId" not in contact.fields


@pytest.mark.parametrize("bad", [C2, "nope", 5])
def test_contact_with_bad_account_id_is_rejected(bad: object) -> None:
    with pytest.raises(InvalidRecordError):
        decode_record("Contact", rest_contact(AccountId=bad))


def test_is_deleted_gives_a_deletion() -> None:
    deleted = decode_record("Account", rest_account(IsDeleted=True))
    assert deleted == Deletion(object_type="Account", id=A1, deleted_at=T, master_record_id=None)


def test_is_deleted_with_master_record_id_is_a_merge() -> None:
    merged = decode_record("Account", rest_account(IsDeleted=True, MasterRecordId=A2[:15]))
    assert isinstance(merged, Deletion)
    assert merged.master_record_id == A2
    contact = decode_record(
        "Contact", rest_contact(IsDeleted=True, MasterRecordId=C2, AccountId=None)
    )
    assert contact == Deletion(object_type="Contact", id=C1, deleted_at=T, master_record_id=C2)


def test_not_deleted_record_ignores_is_deleted_and_master_record_id() -> None:
    record = decode_record("Account", rest_account(IsDeleted=False, MasterRecordId=None))
    assert isinstance(record, Account)
    assert "IsDeleted" not in record.fields
    assert "MasterRecordId" not in record.fields


@pytest.mark.parametrize("bad", ["true", 1, None, [True]])
def test_is_deleted_must_be_a_boolean(bad: object) -> None:
    payload = rest_account(IsDeleted=bad)
    if bad is None:  # JSON null reads as "not given" or is rejected; never crashes
        with contextlib.suppress(InvalidRecordError):
            decode_record("Account", payload)
        return
    with pytest.raises(InvalidRecordError, match="IsDeleted"):
        decode_record("Account", payload)


@pytest.mark.parametrize("master", [A1, C1, "bad"])
def test_bad_master_record_id_is_rejected(master: str) -> None:
    with pytest.raises(InvalidRecordError):
        decode_record("Account", rest_account(IsDeleted=True, MasterRecordId=master))


def _encodable_records() -> list[Account | Contact | Deletion]:
    return [
        Account(
            id=A1,
            fields={
                "Name": "Acme",
                "NumberOfEmployees": 12,
                "AnnualRevenue": 1.5,
                "Active": True,
                "Founded": date(1999, 12, 31),
                "Renewal": datetime(2024, 6, 1, 6, 30, 0, 123000, tzinfo=UTC),
                "Rating": None,
            },
            system_modstamp=T + timedelta(milliseconds=7),
        ),
        Contact(id=C1, account_id=A1, fields={"Email": "a@b.c"}, system_modstamp=T),
        Contact(id=C2, account_id=None, fields={}, system_modstamp=T),
        Deletion(object_type="Account", id=A1, deleted_at=T),
        Deletion(object_type="Contact", id=C1, deleted_at=T, master_record_id=C2),
    ]


@pytest.mark.parametrize("record", _encodable_records(), ids=lambda r: type(r).__name__)
def test_encode_then_decode_is_the_identity(record: Account | Contact | Deletion) -> None:
    encoded = encode_record(record)
    wire = json.loads(json.dumps(encoded))  # JSON-ready
    object_type = record.object_type if isinstance(record, Deletion) else type(record).__name__
    assert decode_record(object_type, wire) == record


def test_encode_uses_the_salesforce_formats() -> None:
    encoded = encode_record(_encodable_records()[0])
    assert encoded["attributes"] == {"type": "Account"}
    assert encoded["Id"] == A1
    assert encoded["SystemModstamp"] == "2024-01-31T12:00:00.007+0000"
    assert encoded["Founded"] == "1999-12-31"
    assert encoded["Renewal"] == "2024-06-01T06:30:00.123+0000"
    contact = encode_record(_encodable_records()[1])
    assert contact["AccountId"] == A1
    deleted = encode_record(_encodable_records()[4])
    assert deleted["IsDeleted"] is True
    assert deleted["MasterRecordId"] == C2


def test_encode_decimal_as_a_json_number() -> None:
    record = Account(id=A1, fields={"a": Decimal("1.50"), "b": Decimal(3)}, system_modstamp=T)
    encoded = encode_record(record)
    assert encoded["a"] == 1.5
    assert encoded["b"] == 3
    assert type(encoded["b"]) is int
    json.dumps(encoded)


# --- Change Data Capture -------------------------------------------------------------


def test_cdc_create_account() -> None:
    body = {
        "Name": "Acme",
        "Industry": "Retail",
        "BillingAddress": {"Street": "1 Main St", "City": "Paris", "Country": "FR"},
        "OwnerId": "005xx000001X8UzAAK",
        "CreatedDate": "2024-01-31T12:00:00.000Z",
        "CreatedById": "005xx000001X8UzAAK",
        "LastModifiedDate": "2024-01-31T12:00:00.000Z",
        "LastModifiedById": "005xx000001X8UzAAK",
    }
    changes = decode_change_event(event(body, changeType="CREATE"))
    assert changes == [
        Account(
            id=A1,
            fields={
                "Name": "Acme",
                "Industry": "Retail",
                "BillingStreet": "1 Main St",
                "BillingCity": "Paris",
                "BillingCountry": "FR",
                "OwnerId": "005xx000001X8UzAAK",
            },
            system_modstamp=T,
            sequence=SEQ,
        )
    ]


def test_cdc_create_contact_with_account_and_compound_name() -> None:
    body = {
        "Name": {"Salutation": "Ms.", "FirstName": "Ada", "LastName": "Lovelace"},
        "AccountId": A1,
        "Email": "ada@example.com",
        "Birthdate": "1815-12-10",
    }
    changes = decode_change_event(
        event(body, entityName="Contact", recordIds=[C1], changeType="CREATE")
    )
    assert changes == [
        Contact(
            id=C1,
            account_id=A1,
            fields={
                "Salutation": "Ms.",
                "FirstName": "Ada",
                "LastName": "Lovelace",
                "Email": "ada@example.com",
                "Birthdate": date(1815, 12, 10),
            },
            system_modstamp=T,
            sequence=SEQ,
        )
    ]


def test_cdc_undelete_gives_the_full_record() -> None:
    changes = decode_change_event(event({"Name": "Back"}, changeType="UNDELETE"))
    assert changes == [Account(id=A1, fields={"Name": "Back"}, system_modstamp=T, sequence=SEQ)]


def test_cdc_update_carries_only_changed_fields() -> None:
    body = {
        "Name": "New name",
        "Industry": "Not in changedFields",
        "LastModifiedDate": "2024-01-31T12:00:00.000Z",
    }
    changes = decode_change_event(
        event(body, changedFields=["Name", "LastModifiedDate"], commitTimestamp=T_MS + 5)
    )
    assert changes == [
        PartialUpdate(
            object_type="Account",
            id=A1,
            fields={"Name": "New name"},
            system_modstamp=T + timedelta(milliseconds=5),
            sequence=SEQ,
        )
    ]
    assert changes[0].account_id is UNCHANGED  # type: ignore[union-attr]


def test_cdc_update_nulled_fields_become_none() -> None:
    changes = decode_change_event(
        event({"Name": "x"}, changedFields=["Name", "Phone"], nulledFields=["Phone"])
    )
    (update,) = changes
    assert isinstance(update, PartialUpdate)
    assert dict(update.fields) == {"Name": "x", "Phone": None}


def test_cdc_update_compound_field_is_flattened() -> None:
    body = {"BillingAddress": {"City": "Lyon", "Street": None, "PostalCode": None}}
    changes = decode_change_event(
        event(
            body,
            changedFields=["BillingAddress.City", "BillingAddress.Street"],
            nulledFields=["BillingAddress.Street"],
        )
    )
    (update,) = changes
    assert isinstance(update, PartialUpdate)
    assert dict(update.fields) == {"BillingCity": "Lyon", "BillingStreet": None}


def test_cdc_update_compound_name_of_contact() -> None:
    body = {"Name": {"FirstName": "Grace", "LastName": None}}
    changes = decode_change_event(
        event(
            body,
            entityName="Contact",
            recordIds=[C1],
            changedFields=["Name.FirstName"],
        )
    )
    (update,) = changes
    assert isinstance(update, PartialUpdate)
    assert dict(update.fields) == {"FirstName": "Grace"}
    assert update.account_id is UNCHANGED


@pytest.mark.parametrize(
    ("change", "body", "changed"),
    [
        ("CREATE", {"Name": {"FirstName": "Ada", "LastName": "Lovelace"}}, []),
        ("UPDATE", {"Name": {"LastName": "King"}}, ["Name.LastName"]),
        ("UPDATE", {"Name": {"Salutation": None}}, []),
    ],
    ids=["created", "renamed", "salutation-nulled"],
)
def test_cdc_a_person_accounts_name_asks_for_a_refetch(
    change: str, body: dict[str, Any], changed: list[str]
) -> None:
    # Its components come nested; the whole Name a query reads ("Ada Lovelace") is the
    # org's to format, so the account is read again rather than left with its old name.
    nulled = ["Name.Salutation"] if "Salutation" in body["Name"] else []
    *records, refetch = decode_change_event(
        event(body, changeType=change, changedFields=changed, nulledFields=nulled)
    )
    assert len(records) == 1
    assert "Name" not in records[0].fields
    assert refetch == Refetch(
        object_type="Account", ids=(A1,), reason="a person account's Name, read whole"
    )


def test_cdc_a_business_accounts_name_is_read_as_it_comes() -> None:
    for change, changed in (("CREATE", []), ("UPDATE", ["Name"])):
        (record,) = decode_change_event(
            event({"Name": "Acme"}, changeType=change, changedFields=changed)
        )
        assert record.fields == {"Name": "Acme"}


def test_cdc_update_diff_fields_asks_for_a_refetch() -> None:
    body = {"Name": "x", "Description": None}
    changes = decode_change_event(
        event(body, changedFields=["Name", "Description"], diffFields=["Description"])
    )
    assert len(changes) == 2
    update, refetch = changes
    assert isinstance(update, PartialUpdate)
    assert dict(update.fields) == {"Name": "x"}  # the diffed field's value is not in the event
    assert isinstance(refetch, Refetch)
    assert refetch.object_type == "Account"
    assert refetch.ids == (A1,)
    assert "Description" in refetch.reason


def test_cdc_contact_moves_to_another_account() -> None:
    changes = decode_change_event(
        event(
            {"AccountId": A2[:15]},
            entityName="Contact",
            recordIds=[C1],
            changedFields=["AccountId"],
        )
    )
    (update,) = changes
    assert isinstance(update, PartialUpdate)
    assert update.account_id == A2
    assert "AccountId" not in update.fields


def test_cdc_contact_leaves_its_account() -> None:
    changes = decode_change_event(
        event(
            {},
            entityName="Contact",
            recordIds=[C1],
            changedFields=["AccountId"],
            nulledFields=["AccountId"],
        )
    )
    (update,) = changes
    assert isinstance(update, PartialUpdate)
    assert update.account_id is None
    assert "AccountId" not in update.fields


def test_cdc_delete() -> None:
    changes = decode_change_event(event({}, changeType="DELETE"))
    assert changes == [Deletion(object_type="Account", id=A1, deleted_at=T, sequence=SEQ)]


def test_cdc_delete_of_a_merge_loser_keeps_the_master() -> None:
    changes = decode_change_event(event({"MasterRecordId": A2}, changeType="DELETE"))
    assert changes == [
        Deletion(object_type="Account", id=A1, deleted_at=T, master_record_id=A2, sequence=SEQ)
    ]


def test_cdc_multiple_record_ids_give_one_change_each() -> None:
    ids = [A1, A2, A3[:15]]
    updates = decode_change_event(
        event({"Rating": "Hot"}, recordIds=ids, changedFields=["Rating"])
    )
    assert [u.id for u in updates] == [A1, A2, A3]  # type: ignore[union-attr]
    assert all(isinstance(u, PartialUpdate) for u in updates)
    assert all(dict(u.fields) == {"Rating": "Hot"} for u in updates)  # type: ignore[union-attr]
    deletes = decode_change_event(event({}, recordIds=ids, changeType="DELETE"))
    assert deletes == [
        Deletion(object_type="Account", id=i, deleted_at=T, sequence=SEQ) for i in (A1, A2, A3)
    ]
    creates = decode_change_event(event({"Name": "n"}, recordIds=ids, changeType="CREATE"))
    assert [c.id for c in creates] == [A1, A2, A3]  # type: ignore[union-attr]


@pytest.mark.parametrize("gap", ["GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"])
def test_cdc_gap_events_ask_for_a_refetch(gap: str) -> None:
    changes = decode_change_event(event({}, changeType=gap, recordIds=[A1, A2], changedFields=[]))
    assert changes == [Refetch(object_type="Account", ids=(A1, A2), reason=gap)]


def test_cdc_gap_overflow_refetches_the_whole_object() -> None:
    changes = decode_change_event(
        event({}, entityName="Contact", changeType="GAP_OVERFLOW", recordIds=[])
    )
    assert changes == [Refetch(object_type="Contact", ids=(), reason="GAP_OVERFLOW")]


@pytest.mark.parametrize("change_type", ["UPDATE", "CREATE", "DELETE", "GAP_UPDATE"])
def test_cdc_wildcard_record_ids_refetch_the_whole_object(change_type: str) -> None:
    changes = decode_change_event(
        event({"Name": "x"}, recordIds=["001*"], changeType=change_type, changedFields=["Name"])
    )
    assert len(changes) == 1
    (refetch,) = changes
    assert isinstance(refetch, Refetch)
    assert refetch.object_type == "Account"
    assert refetch.ids == ()


def test_cdc_wrapped_messages_decode_like_the_payload() -> None:
    payload = event({"Name": "x"}, changedFields=["Name"])
    expected = decode_change_event(payload)
    streaming = {
        "data": {"schema": "abc123", "payload": copy.deepcopy(payload), "event": {"replayId": 7}},
        "channel": "/data/AccountChangeEvent",
    }
    assert decode_change_event(streaming) == expected
    assert decode_change_event({"payload": copy.deepcopy(payload)}) == expected


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("entityName", "Lead"),
        ("entityName", None),
        ("changeType", "UPSERT"),
        ("changeType", None),
        ("recordIds", []),
        ("recordIds", None),
        ("recordIds", A1),
        ("recordIds", [C1]),
        ("recordIds", ["bad"]),
        ("recordIds", [1]),
        ("commitTimestamp", None),
        ("commitTimestamp", -1),
        ("commitTimestamp", "2024-01-31T12:00:00Z"),
        ("commitTimestamp", 1.5),
        ("commitTimestamp", True),
        ("changedFields", "Name"),
        ("nulledFields", [1]),
        ("diffFields", {"Name": 1}),
    ],
)
def test_cdc_bad_header_is_rejected(name: str, bad: object) -> None:
    fields: dict[str, Any] = {"changedFields": ["Name"], name: bad}
    with pytest.raises(InvalidRecordError):
        decode_change_event(event({"Name": "x"}, **fields))


@pytest.mark.parametrize(
    "message",
    [None, [], "event", {}, {"data": {}}, {"payload": None}, {"ChangeEventHeader": []}],
    ids=repr,
)
def test_cdc_message_without_a_header_is_rejected(message: object) -> None:
    with pytest.raises(InvalidRecordError):
        decode_change_event(message)


def test_cdc_compound_value_in_create_must_be_flat_inside() -> None:
    with pytest.raises(InvalidRecordError):
        decode_change_event(
            event({"BillingAddress": {"City": {"nested": 1}}}, changeType="CREATE")
        )


def test_cdc_and_rest_json_decode_into_the_same_record() -> None:
    rest = decode_record("Contact", rest_contact(Email="x@y.z", Birthdate="1990-05-17"))
    cdc = decode_change_event(
        event(
            {"AccountId": A1, "Email": "x@y.z", "Birthdate": "1990-05-17"},
            entityName="Contact",
            recordIds=[C1],
            changeType="CREATE",
        )
    )
    assert cdc == [attrs.evolve(rest, sequence=SEQ)]


# --- Every shape a real org sends: names in any case, compounds, the empty ID --------

EMPTY_ID = "000000000000000AAA"  # Salesforce's empty ID, and its 15-character form below
SPELLINGS = [str.upper, str.lower, str.swapcase]


@pytest.mark.parametrize("spell", SPELLINGS, ids=lambda spell: spell.__name__)
def test_r9_rest_record_attributes_are_recognised_in_any_case(spell: Callable[[str], str]) -> None:
    contact = decode_record(
        "Contact",
        {
            spell("attributes"): {"type": "Contact"},
            spell("Id"): C1[:15],
            spell("AccountId"): A1,
            spell("SystemModstamp"): "2024-01-31T12:00:00.000+0000",
            spell("IsDeleted"): False,
            spell("MasterRecordId"): None,
            "Email": "a@b.c",
        },
    )
    assert contact == Contact(id=C1, account_id=A1, fields={"Email": "a@b.c"}, system_modstamp=T)
    merged = decode_record(
        "Account",
        {
            spell("Id"): A1,
            spell("SystemModstamp"): "2024-01-31T12:00:00.000+0000",
            spell("IsDeleted"): True,
            spell("MasterRecordId"): A2,
        },
    )
    assert merged == Deletion(object_type="Account", id=A1, deleted_at=T, master_record_id=A2)
    with pytest.raises(InvalidRecordError, match="attributes"):
        decode_record("Account", {**rest_account(), spell("attributes"): {"type": "Contact"}})


@pytest.mark.parametrize("spell", SPELLINGS, ids=lambda spell: spell.__name__)
def test_r9_audit_fields_are_dropped_in_any_case(spell: Callable[[str], str]) -> None:
    audit = {spell(name): "2024-01-31T12:00:00.000+0000" for name in AUDIT_FIELDS}
    assert fields_of(decode_record("Account", rest_account(**audit))) == {"Name": "Acme"}
    (created,) = decode_change_event(event({"Name": "Acme", **audit}, changeType="CREATE"))
    assert fields_of(created) == {"Name": "Acme"}
    (update,) = decode_change_event(
        event({"Name": "Acme 2", **audit}, changedFields=["Name", *audit])
    )
    assert fields_of(update) == {"Name": "Acme 2"}


def test_r9_other_field_names_stay_as_written() -> None:
    # The engine gives each the org's one spelling; the decoder does not guess it.
    record = decode_record("Account", rest_account(INDUSTRY="Retail", billing_code__C="B7"))
    assert fields_of(record) == {"Name": "Acme", "INDUSTRY": "Retail", "billing_code__C": "B7"}


def test_r9_a_record_attribute_given_in_two_spellings_must_agree() -> None:
    assert decode_record("Account", rest_account(ID=A1)).id == A1
    with pytest.raises(InvalidRecordError) as info:
        decode_record("Account", rest_account(ID=A2))
    assert info.value.field == "Id"
    with pytest.raises(InvalidRecordError) as info:
        decode_change_event(
            event({"AccountId": A1, "ACCOUNTID": A2}, entityName="Contact", recordIds=[C1])
        )
    assert (info.value.record_id, info.value.field) == (C1, "AccountId")


def test_r9_change_event_names_in_any_case() -> None:
    contact = {"entityName": "Contact", "recordIds": [C1]}
    (created,) = decode_change_event(
        event({"accountid": A1, "Email": "a@b.c"}, changeType="CREATE", **contact)
    )
    assert isinstance(created, Contact)
    assert (created.account_id, fields_of(created)) == (A1, {"Email": "a@b.c"})
    (moved,) = decode_change_event(
        event({"ACCOUNTID": A2}, changedFields=["ACCOUNTID", "lastmodifieddate"], **contact)
    )
    assert isinstance(moved, PartialUpdate)
    assert (moved.account_id, fields_of(moved)) == (A2, {})
    (left,) = decode_change_event(
        event({}, changedFields=["accountId"], nulledFields=["accountId"], **contact)
    )
    assert isinstance(left, PartialUpdate)
    assert (left.account_id, fields_of(left)) == (None, {})
    (merged,) = decode_change_event(event({"masterrecordid": A2}, changeType="DELETE"))
    assert merged == Deletion(
        object_type="Account", id=A1, deleted_at=T, master_record_id=A2, sequence=SEQ
    )


@pytest.mark.parametrize(
    ("name", "value"), [("Bad Name", 1), ("1st__c", 1), ("Name", "\ud83d"), ("", 1)], ids=repr
)
def test_r10_a_name_or_text_salesforce_could_not_send_is_rejected(
    name: str, value: object
) -> None:
    with pytest.raises(InvalidRecordError) as info:
        decode_record("Account", rest_account(**{name: value}))
    assert info.value.record_id == A1
    with pytest.raises(InvalidRecordError):
        decode_change_event(event({name: value}, changeType="CREATE"))


# REST API Developer Guide, "Compound Fields" ("Address Compound Fields"): an address as a
# SELECT FIELDS(ALL) query or an sobject GET returns it, beside its component fields.
BILLING_ADDRESS = {
    "city": "San Francisco",
    "country": "United States",
    "countryCode": "US",
    "geocodeAccuracy": "Address",
    "latitude": 37.7897,
    "longitude": -122.3972,
    "postalCode": "94105",
    "state": "California",
    "stateCode": "CA",
    "street": "415 Mission Street",
}
BILLING_COMPONENTS = {
    "BillingCity": "San Francisco",
    "BillingCountry": "United States",
    "BillingCountryCode": "US",
    "BillingGeocodeAccuracy": "Address",
    "BillingLatitude": 37.7897,
    "BillingLongitude": -122.3972,
    "BillingPostalCode": "94105",
    "BillingState": "California",
    "BillingStateCode": "CA",
    "BillingStreet": "415 Mission Street",
}


def test_r8_rest_address_compound_is_read_as_its_components() -> None:
    record = decode_record("Account", rest_account(BillingAddress=BILLING_ADDRESS))
    assert fields_of(record) == {"Name": "Acme", **BILLING_COMPONENTS}
    contact = decode_record(
        "Contact", rest_contact(MailingAddress={"city": "Lyon"}, OtherAddress={"street": "x"})
    )
    assert fields_of(contact) == {"Email": "a@b.c", "MailingCity": "Lyon", "OtherStreet": "x"}


def test_r8_rest_component_held_by_the_record_wins_over_the_compound() -> None:
    record = decode_record(
        "Account",
        rest_account(BillingCity="Oakland", billingstate=None, BillingAddress=BILLING_ADDRESS),
    )
    expected = {**BILLING_COMPONENTS, "BillingCity": "Oakland", "billingstate": None}
    del expected["BillingState"]  # the record holds it, in another spelling
    assert fields_of(record) == {"Name": "Acme", **expected}


@pytest.mark.parametrize(
    ("object_type", "describe"),
    [
        ("Account", "describe_account_cumulusci.json"),
        ("Contact", "describe_contact_cumulusci.json"),
    ],
)
def test_r8_rest_compound_components_are_the_fields_a_real_describe_names(
    object_type: str, describe: str
) -> None:
    fields = realworld(describe)["fields"]
    compounds = [f["name"] for f in fields if f["type"] == "address"]
    assert compounds
    # This org has no state and country picklists: its addresses have no code components.
    keys = set(BILLING_ADDRESS) - {"stateCode", "countryCode"}
    for compound in compounds:
        expected = {f["name"] for f in fields if f.get("compoundFieldName") == compound}
        payload = rest_account() if object_type == "Account" else rest_contact()
        payload[compound] = dict.fromkeys(keys)
        record = decode_record(object_type, payload)
        assert set(fields_of(record)) - set(payload) == expected


# REST API Developer Guide, "Geolocation Compound Field": a geolocation as an object of
# latitude and longitude; "Compound Field Considerations and Limitations": its components
# are the field's name with __Latitude__s and __Longitude__s for __c.
def test_r8_rest_custom_geolocation_is_read_as_latitude_and_longitude() -> None:
    record = decode_record(
        "Account",
        rest_account(
            Loc__c={"latitude": 48.8566, "longitude": 2.3522},
            ns__Site__c={"latitude": 1.5, "longitude": None},
        ),
    )
    assert fields_of(record) == {
        "Name": "Acme",
        "Loc__Latitude__s": 48.8566,
        "Loc__Longitude__s": 2.3522,
        "ns__Site__Latitude__s": 1.5,
        "ns__Site__Longitude__s": None,
    }


def test_r8_rest_null_compound_is_no_field() -> None:
    record = decode_record(
        "Contact",
        rest_contact(
            MailingAddress=None,
            MailingCity=None,
            Loc__c=None,
            Loc__Latitude__s=None,
            Loc__Longitude__s=None,
            Plain__c=None,  # a custom field: no components beside it
        ),
    )
    assert fields_of(record) == {
        "Email": "a@b.c",
        "MailingCity": None,
        "Loc__Latitude__s": None,
        "Loc__Longitude__s": None,
        "Plain__c": None,
    }


@pytest.mark.parametrize("empty", [EMPTY_ID, EMPTY_ID[:15]])
def test_r8_empty_id_is_no_account_and_no_master(empty: str) -> None:
    orphan = Contact(id=C1, fields={"Email": "a@b.c"}, system_modstamp=T)
    assert decode_record("Contact", rest_contact(AccountId=empty)) == orphan
    merged = decode_record("Account", rest_account(IsDeleted=True, MasterRecordId=empty))
    assert merged == Deletion(object_type="Account", id=A1, deleted_at=T)
    contact = {"entityName": "Contact", "recordIds": [C1]}
    created = decode_change_event(event({"AccountId": empty}, changeType="CREATE", **contact))
    assert created == [Contact(id=C1, system_modstamp=T, sequence=SEQ)]
    moved = decode_change_event(
        event({"AccountId": empty}, changedFields=["AccountId"], **contact)
    )
    assert moved == [
        PartialUpdate(
            object_type="Contact", id=C1, account_id=None, system_modstamp=T, sequence=SEQ
        )
    ]
    deleted = decode_change_event(event({"MasterRecordId": empty}, changeType="DELETE"))
    assert deleted == [Deletion(object_type="Account", id=A1, deleted_at=T, sequence=SEQ)]


def test_r8_empty_id_in_any_other_field_is_an_empty_lookup() -> None:
    record = decode_record("Account", rest_account(ParentId=EMPTY_ID, AccountNumber=EMPTY_ID[:15]))
    assert fields_of(record)["ParentId"] is None
    assert fields_of(record)["AccountNumber"] == "000000000000000"  # text that only looks like it


def test_r8_empty_id_in_record_ids_names_no_record() -> None:
    overflow = decode_change_event(event({}, changeType="GAP_OVERFLOW", recordIds=[EMPTY_ID]))
    assert overflow == [Refetch(object_type="Account", ids=(), reason="GAP_OVERFLOW")]
    gap = decode_change_event(event({}, changeType="GAP_UPDATE", recordIds=[EMPTY_ID, A1]))
    assert gap == [Refetch(object_type="Account", ids=(A1,), reason="GAP_UPDATE")]
    with pytest.raises(InvalidRecordError, match="names no record"):
        decode_change_event(event({"Name": "x"}, changedFields=["Name"], recordIds=[EMPTY_ID]))


# --- Every shape a real org sends: change events over CometD and the Pub/Sub API ------


# Pub/Sub API Developer Guide, "Event Deserialization Considerations": the field lists
# as the API delivers them, bitmaps over the Avro schema's field positions.
@pytest.mark.parametrize("key", ["changedFields", "nulledFields", "diffFields"])
@pytest.mark.parametrize("bitmap", ["0x400800", "0x650004E0", "4-0x01", "7-0x06"])
@pytest.mark.parametrize("change_type", ["UPDATE", "CREATE", "DELETE"])
def test_r8_unexpanded_pubsub_bitmap_is_refused_not_taken_for_a_field(
    key: str, bitmap: str, change_type: str
) -> None:
    lists: dict[str, Any] = {"changedFields": ["Name"], key: [bitmap]}
    if key == "changedFields":
        lists[key] = ["Name", bitmap]
    with pytest.raises(InvalidRecordError) as info:
        decode_change_event(event({"Name": "x"}, changeType=change_type, **lists))
    assert "bitmap" in info.value.reason
    assert (info.value.record_id, info.value.field) == (A1, f"ChangeEventHeader.{key}")


# Change Data Capture Developer Guide, "Data Differences in Event Fields": over CometD a
# long text field's update carries {"diff": ...}, and the header has no diffFields.
def test_r8_cometd_diff_value_refetches_the_record_and_applies_the_other_fields() -> None:
    message = event(
        {
            "Description": {
                "diff": "--- \n+++ 682b8747ccdb93b546e7bbe479b27d26ec7c38ccabb76cdd8308c65954"
                "92bffc\n@@ -2,1 +2,1 @@\n-Business applications\n+Business apps\n"
            },
            "Name": "Acme 2",
            "LastModifiedDate": "2024-01-31T12:00:00.000Z",
        },
        changedFields=["Description", "Name", "LastModifiedDate"],
    )
    del message["ChangeEventHeader"]["diffFields"], message["ChangeEventHeader"]["nulledFields"]
    assert decode_change_event(message) == [
        PartialUpdate(
            object_type="Account",
            id=A1,
            fields={"Name": "Acme 2"},
            system_modstamp=T,
            sequence=SEQ,
        ),
        Refetch(object_type="Account", ids=(A1,), reason="diffFields: Description"),
    ]


ADDRESS_PARTS = [
    "Street",
    "City",
    "State",
    "StateCode",
    "PostalCode",
    "Country",
    "CountryCode",
    "Latitude",
    "Longitude",
    "GeocodeAccuracy",
]


def test_r8_nulled_whole_address_clears_each_of_its_components() -> None:
    (update,) = decode_change_event(
        event(
            {"BillingAddress": None, "Name": "x"},
            changedFields=["BillingAddress", "Name"],
            nulledFields=["BillingAddress"],
        )
    )
    assert fields_of(update) == {
        "Name": "x",
        **{f"Billing{part}": None for part in ADDRESS_PARTS},
    }
    (contact,) = decode_change_event(
        event({}, entityName="Contact", recordIds=[C1], nulledFields=["MailingAddress"])
    )
    assert fields_of(contact) == {f"Mailing{part}": None for part in ADDRESS_PARTS}


def test_r8_nulled_custom_compound_clears_its_components_where_the_event_nests_it() -> None:
    (update,) = decode_change_event(
        event(
            {"Loc__c": {"Latitude": None, "Longitude": None}, "Rank__c": None},
            changedFields=["Loc__c", "Rank__c"],
            nulledFields=["Loc__c", "Rank__c"],
        )
    )
    assert fields_of(update) == {
        "Loc__Latitude__s": None,
        "Loc__Longitude__s": None,
        "Rank__c": None,
    }


def test_r8_change_event_custom_geolocation_is_read_as_its_components() -> None:
    (created,) = decode_change_event(
        event({"Loc__c": {"Latitude": 48.8566, "Longitude": 2.3522}}, changeType="CREATE")
    )
    assert fields_of(created) == {"Loc__Latitude__s": 48.8566, "Loc__Longitude__s": 2.3522}
    (update,) = decode_change_event(
        event({"Loc__c": {"Latitude": 1.5, "Longitude": None}}, changedFields=["Loc__c.Latitude"])
    )
    assert fields_of(update) == {"Loc__Latitude__s": 1.5}


def test_r8_update_naming_a_whole_compound_reads_its_components_that_hold_a_value() -> None:
    # Over the Pub/Sub API an unchanged component is null, a cleared one is in nulledFields.
    (update,) = decode_change_event(
        event(
            {"BillingAddress": {"City": "Lyon", "Street": None, "PostalCode": None}},
            changedFields=["BillingAddress"],
            nulledFields=["BillingAddress.PostalCode"],
        )
    )
    assert fields_of(update) == {"BillingCity": "Lyon", "BillingPostalCode": None}


def test_r8_address_sub_field_no_object_has_is_not_read() -> None:
    # The Pub/Sub API's Address record carries an "Xyz" that no Account field matches.
    (created,) = decode_change_event(
        event({"BillingAddress": {"City": "Paris", "Xyz": None}}, changeType="CREATE")
    )
    assert fields_of(created) == {"BillingCity": "Paris"}
    (update,) = decode_change_event(
        event({"BillingAddress": {"Xyz": "1"}}, changedFields=["BillingAddress.Xyz"])
    )
    assert fields_of(update) == {}


# Change Data Capture Developer Guide, "Change Event Header Fields": commitNumber and
# sequenceNumber, as numbers or, from some clients, in digits.
@pytest.mark.parametrize(
    ("commit", "number", "expected"),
    [
        (11658922434425, 3, (11658922434425, 3)),
        ("11658922434425", "3", (11658922434425, 3)),
        (11658922434425, None, (11658922434425,)),
        (11658922434425, "third", (11658922434425,)),
        (None, 3, None),
        ("", 3, None),
        (-1, 3, None),
        (True, 3, None),
        (1.5e13, 3, None),
    ],
)
@pytest.mark.parametrize("change_type", ["CREATE", "UPDATE", "DELETE"])
def test_r3_a_change_is_ordered_by_commit_number_then_sequence_number(
    commit: object, number: object, expected: tuple[int, ...] | None, change_type: str
) -> None:
    message = event(
        {"Name": "x"}, changeType=change_type, changedFields=["Name"], recordIds=[A1, A2]
    )
    for key, value in (("commitNumber", commit), ("sequenceNumber", number)):
        if value is None:
            del message["ChangeEventHeader"][key]
        else:
            message["ChangeEventHeader"][key] = value
    changes = decode_change_event(message)
    assert len(changes) == 2
    assert [c.sequence for c in changes if not isinstance(c, Refetch)] == [expected, expected]


def test_r8_the_documented_shapes_decode_as_documented() -> None:
    text = (Path(__file__).parent.parent / "docs" / "formats.md").read_text()
    blocks = re.findall(r"```(json|python)\n(.*?)```", text, re.DOTALL)
    decoded: list[object] = []
    for kind, block in blocks:
        if kind == "json":
            payload = json.loads(block)
            is_event = "ChangeEventHeader" in block
            decoded.append(
                decode_change_event(payload) if is_event else decode_record("Account", payload)
            )
        else:  # what the JSON block before it decodes to
            namespace = {"PartialUpdate": PartialUpdate, "Refetch": Refetch, "UTC": UTC}
            assert eval(block, {**namespace, "datetime": datetime}) == decoded[-1]
    assert [kind for kind, _ in blocks] == ["json", "json", "json", "python", "json", "python"]
    compound = decoded[1]
    assert fields_of(compound)["BillingCity"] == "Oakland"
    assert len(fields_of(compound)) == 12  # the table's: no compound among them
    assert {"BillingAddress", "ShippingAddress", "Loc__c"}.isdisjoint(fields_of(compound))


# --- Through the engine, on every store ------------------------------------------------


def test_r8_r9_rest_shapes_sync_alike_on_every_store(any_store: Store) -> None:
    org = InMemorySource()
    org.add_raw(
        "Account",
        {
            "ATTRIBUTES": {"type": "Account"},
            "ID": A1,
            "SystemModstamp": "2024-01-31T12:00:00.000+0000",
            "Name": "Acme",
            "BillingAddress": BILLING_ADDRESS,
            "BillingCity": "Oakland",
            "ParentId": EMPTY_ID,
            "lastmodifieddate": "2024-01-31T12:00:00.000+0000",
        },
    )
    org.add_raw("Account", rest_account(Id=A2, Owner={"attributes": {"type": "User"}}))
    lee = rest_contact(MailingAddress=None)
    lee["ACCOUNTID"] = lee.pop("AccountId")
    org.add_raw("Contact", lee)
    org.add_raw("Contact", rest_contact(Id=C2, AccountId=EMPTY_ID))
    report = SyncEngine(source=org, store=any_store).sync()
    assert [(r.record_id, r.field) for r in report.rejected] == [(A2, "Owner")]
    acme = any_store.get_account(A1)
    assert acme is not None
    assert fields_of(acme) == {
        "Name": "Acme",
        **BILLING_COMPONENTS,
        "BillingCity": "Oakland",
        "ParentId": None,
    }
    assert list(any_store.contact_ids(A1)) == [C1]
    orphan = any_store.get_contact(C2)
    assert orphan is not None
    assert orphan.account_id is None


# --- Regressions for inputs that once escaped as non-library exceptions ----------------


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00.000+0100",  # before year 1 in UTC
        "9999-12-31T23:59:59.000-0100",  # after year 9999 in UTC
    ],
)
def test_system_modstamp_outside_the_utc_range_is_rejected(stamp: str) -> None:
    with pytest.raises(InvalidRecordError):
        decode_record("Account", rest_account(SystemModstamp=stamp))


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00.000+0100", "9999-12-31T23:59:59.000-0100"])
def test_field_datetime_outside_the_utc_range_raises_only_library_errors(value: str) -> None:
    with contextlib.suppress(AcctSyncError):  # anything else fails the test
        decode_record("Account", rest_account(Renewal__c=value))


@pytest.mark.parametrize("change_type", [["UPDATE"], {"type": "UPDATE"}, [], {}], ids=repr)
def test_cdc_unhashable_change_type_is_rejected(change_type: object) -> None:
    with pytest.raises(InvalidRecordError):
        decode_change_event(event({"Name": "x"}, changeType=change_type))


@pytest.mark.parametrize(
    "stamp",
    [
        "²",  # str.isdigit() is true for superscripts, but int() refuses them
        "①",
        "9" * 5000,  # more digits than int() converts by default
    ],
)
def test_cdc_strange_commit_timestamp_is_rejected(stamp: str) -> None:
    with pytest.raises(InvalidRecordError):
        decode_change_event(event({"Name": "x"}, changedFields=["Name"], commitTimestamp=stamp))


# --- Fuzz: only AcctSyncError may escape --------------------------------------------

DIGITISH = st.text(
    alphabet=st.characters(categories=["Nd", "No"]) | st.sampled_from("0123456789"),
    min_size=1,
    max_size=8,
)


EDGE_MOMENTS = ["0001-01-01T00:00:00", "9999-12-31T23:59:59", "1970-01-01T00:00:00"]


@st.composite
def salesforce_datetime_text(draw: st.DrawFn) -> str:
    """Strings shaped like Salesforce datetimes, valid or not, favouring edge moments."""
    moment = draw(st.datetimes().map(lambda m: f"{m.year:04d}-{m:%m-%dT%H:%M:%S}"))
    moment = draw(st.sampled_from([moment, *EDGE_MOMENTS]))
    frac = draw(st.sampled_from(["", ".000", ".1", ".123456789"]))
    zone = draw(
        st.sampled_from(["Z", "+0000", "+0100", "-0100", "+1400", "-1200"])
        | st.builds(
            "{}{:02d}{:02d}".format,
            st.sampled_from("+-"),
            st.integers(0, 25),
            st.integers(0, 60),
        )
    )
    return f"{moment}{frac}{zone}"


@st.composite
def salesforce_date_text(draw: st.DrawFn) -> str:
    year, month, day = (
        draw(st.integers(0, 9999)),
        draw(st.integers(0, 13)),
        draw(st.integers(0, 32)),
    )
    return f"{year:04d}-{month:02d}-{day:02d}"


SALTY_TEXT = st.one_of(
    st.text(),
    salesforce_datetime_text(),
    salesforce_date_text(),
    DIGITISH,
    st.sampled_from(
        [
            A1,
            A1[:15],
            C1,
            "001*",
            "*",
            "Account",
            "Contact",
            "CREATE",
            "UPDATE",
            "DELETE",
            "UNDELETE",
            "GAP_OVERFLOW",
            "GAP_UPDATE",
            "BillingAddress.City",
            "Name.FirstName",
            "ChangeEventHeader",
            "payload",
            "Id",
            "AccountId",
            "SystemModstamp",
            "IsDeleted",
            "MasterRecordId",
            "attributes",
            "ID",
            "systemmodstamp",
            "accountid",
            "LASTMODIFIEDDATE",
            "0x400800",
            "4-0x01",
            "diff",
            "latitude",
            "Loc__c",
            "000000000000000AAA",
            "000000000000000",
            "",
        ]
    ),
)

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # includes nan and +-inf
    SALTY_TEXT,
)

JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(SALTY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)

# What a part of a near-valid payload is replaced with: often a plain value, else any JSON.
REPLACEMENTS = st.one_of(
    salesforce_datetime_text(), DIGITISH, JSON_LEAVES, JSON_LEAVES, JSON_VALUES
)


def only_library_errors(decode: Callable[..., Any], *args: Any) -> Any:
    """Call ``decode``; an AcctSyncError is fine, any other exception fails the test.

    Other exceptions are deliberately not caught: they propagate from where the library
    raised them, so hypothesis tells distinct bugs apart and reports each one.
    """
    try:
        return decode(*args)
    except AcctSyncError:
        return None


def check_decode_record(object_type: str, payload: Any) -> None:
    result = only_library_errors(decode_record, object_type, payload)
    if result is not None:
        assert isinstance(result, Account | Contact | Deletion)
        if isinstance(result, Deletion):
            assert result.object_type == object_type
        else:
            assert type(result).__name__ == object_type


def check_decode_change_event(message: Any) -> None:
    result = only_library_errors(decode_change_event, message)
    if result is not None:
        assert isinstance(result, list)
        assert result
        assert all(
            isinstance(c, Account | Contact | Deletion | PartialUpdate | Refetch) for c in result
        )


FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(JSON_VALUES)
def test_fuzz_arbitrary_json(value: Any) -> None:
    check_decode_record("Account", value)
    check_decode_record("Contact", value)
    check_decode_change_event(value)
    check_decode_change_event({"payload": value})
    check_decode_change_event({"ChangeEventHeader": value})


def _record_templates() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("Account", rest_account(Industry="Retail", Founded__c="1999-12-31", Revenue=1.5)),
        ("Account", rest_account(IsDeleted=True, MasterRecordId=A2)),
        ("Contact", rest_contact(Birthdate="1990-05-17", LastModifiedDate=T.isoformat())),
        ("Contact", rest_contact(IsDeleted=True, MasterRecordId=C2)),
        ("Account", rest_account(BillingAddress=BILLING_ADDRESS, Loc__c={"latitude": 1.5})),
        ("Contact", {**rest_contact(AccountId=EMPTY_ID), "ID": C1, "MailingAddress": None}),
    ]


def _event_templates() -> list[dict[str, Any]]:
    contact = {"entityName": "Contact", "recordIds": [C1, C2]}
    return [
        event(
            {"Name": "A", "BillingAddress": {"City": "Paris", "Street": "x"}},
            changeType="CREATE",
        ),
        event(
            {"Name": {"FirstName": "A", "LastName": "B"}, "AccountId": A1},
            changeType="UNDELETE",
            **contact,
        ),
        event(
            {"Name": "x", "BillingAddress": {"City": "Lyon"}, "Description": None},
            changedFields=["Name", "BillingAddress.City", "Phone", "Description"],
            nulledFields=["Phone"],
            diffFields=["Description"],
        ),
        event(
            {"AccountId": A2, "Name": {"FirstName": "G"}},
            changedFields=["AccountId", "Name.FirstName"],
            **contact,
        ),
        event({"MasterRecordId": A2}, changeType="DELETE", recordIds=[A1, A3]),
        event({}, changeType="GAP_UPDATE", recordIds=[A1, A2]),
        event({}, changeType="GAP_OVERFLOW", recordIds=[]),
        event({"Name": "x"}, changeType="UPDATE", recordIds=["001*"], changedFields=["Name"]),
        {"data": {"payload": event({"Name": "x"}, changedFields=["Name"]), "event": {}}},
        {"payload": event({}, changeType="DELETE", **contact)},
        event(
            {"Description": {"diff": "--- \n+++ 0\n"}, "Loc__c": {"Latitude": 1.5}},
            changedFields=["Description", "Loc__c.Latitude", "BillingAddress"],
            nulledFields=["BillingAddress", "accountid"],
        ),
        event({}, changeType="GAP_OVERFLOW", recordIds=[EMPTY_ID]),
    ]


def test_templates_are_valid() -> None:
    # The near-valid fuzz below starts from these; they must decode cleanly.
    for object_type, payload in _record_templates():
        assert isinstance(decode_record(object_type, payload), Account | Contact | Deletion)
    for message in _event_templates():
        assert decode_change_event(message)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*prefix, index))


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.copy(value)
    out[path[0]] = new if len(path) == 1 else _set(value[path[0]], path[1:], new)
    return out


def _delete(value: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        out = copy.copy(value)
        del out[path[0]]
        return out
    out = copy.copy(value)
    out[path[0]] = _delete(value[path[0]], path[1:])
    return out


@st.composite
def near_valid(draw: st.DrawFn, template: Any) -> Any:
    """``template`` with one to three of its parts replaced, removed or added to."""
    value = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(value))[1:] or [()]))
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace" or not path:
            value = _set(value, path, draw(REPLACEMENTS))
        elif action == "delete":
            value = _delete(value, path)
        elif isinstance(parent, dict):
            value = _set(value, (*path[:-1], draw(SALTY_TEXT)), draw(REPLACEMENTS))
        else:
            value = _set(value, path[:-1], [*parent, draw(REPLACEMENTS)])
    return value


@FUZZ
@given(
    st.sampled_from(_record_templates()).flatmap(
        lambda t: st.tuples(st.just(t[0]), near_valid(t[1]))
    )
)
def test_fuzz_near_valid_records(case: tuple[str, Any]) -> None:
    object_type, payload = case
    check_decode_record(object_type, payload)
    other = "Contact" if object_type == "Account" else "Account"
    check_decode_record(other, payload)


@FUZZ
@given(st.sampled_from(_event_templates()).flatmap(near_valid))
def test_fuzz_near_valid_change_events(message: Any) -> None:
    check_decode_change_event(message)


def test_r8_an_object_under_a_field_that_is_no_compound_is_refused_not_read() -> None:
    # Avro's JSON form of a union, as a careless Pub/Sub client may hand it over.
    union = event({"Industry": {"string": "Retail"}}, changedFields=["Industry"])
    with pytest.raises(InvalidRecordError, match="no compound") as refused:
        decode_change_event(union)
    assert refused.value.field == "Industry"
    # A component named changed under a compound that holds no object.
    broken = event({"BillingAddress": [1]}, changedFields=["BillingAddress.City"])
    with pytest.raises(InvalidRecordError, match="holds no object"):
        decode_change_event(broken)


# --- The plain path: most REST records, decoded in one pass ---------------------------
#
# decode_record reads a plain record (canonical attribute names, names checked before,
# scalar values) in one pass and builds it without the record's own checks; anything
# else goes the general way. Both must give the same record, value types and field order
# included, and the general way must give the same error for what the plain one passes on.


def _same_record(a: object, b: object) -> bool:
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, Account | Contact) and isinstance(b, Account | Contact):
        typed = [(name, type(value), value) for name, value in a.fields.items()]
        return typed == [(name, type(value), value) for name, value in b.fields.items()] and (
            a.system_modstamp.tzinfo is b.system_modstamp.tzinfo
        )
    return True


def _outcome(decode: Callable[[str, Any], Any], object_type: str, payload: Any) -> Any:
    """What ``decode`` makes of ``payload``: a record, or its error's attributes."""
    try:
        return decode(object_type, payload)
    except InvalidRecordError as error:
        return (error.reason, error.record_id, error.field)


def _general(object_type: str, payload: Any) -> Any:
    return _outcome(
        lambda kind, raw: _formats._any_record(parse_object_type(kind), raw), object_type, payload
    )


def _decoded(object_type: str, payload: Any) -> Any:
    return _outcome(decode_record, object_type, payload)


def check_plain_path(object_type: str, payload: Any) -> None:
    """The plain path, where it takes ``payload``, decodes it as the general one does;
    and decode_record, whichever path it takes, answers as the general path."""
    general = _general(object_type, payload)
    # Twice: the first decode may check names that the plain path then takes.
    for _ in range(2):
        decoded = _decoded(object_type, payload)
        assert _same_record(decoded, general) or decoded == general, (decoded, general)
        if type(payload) is dict and object_type in ("Account", "Contact"):
            plain = _formats._plain_record(object_type, payload)
            assert plain is None or _same_record(plain, general), (plain, general)


def _as_rest(record: Account | Contact, json_numbers: bool) -> dict[str, Any]:
    encoded = encode_record(record)
    return json.loads(json.dumps(encoded)) if json_numbers else encoded


@FUZZ
@given(
    st.one_of(strategies.accounts(), strategies.contacts()),
    st.booleans(),
    st.dictionaries(SALTY_TEXT, REPLACEMENTS, max_size=3),
)
def test_plain_path_decodes_as_the_general_one(
    record: Account | Contact, json_numbers: bool, extra: dict[str, Any]
) -> None:
    payload = _as_rest(record, json_numbers)
    object_type = type(record).__name__
    check_plain_path(object_type, payload)
    check_plain_path(object_type, {**payload, **extra})


@FUZZ
@given(
    st.sampled_from(_record_templates()).flatmap(
        lambda t: st.tuples(st.just(t[0]), near_valid(t[1]))
    )
)
def test_plain_path_passes_on_near_valid_records_as_the_general_one_reads_them(
    case: tuple[str, Any],
) -> None:
    object_type, payload = case
    check_plain_path(object_type, payload)
    check_plain_path("Contact" if object_type == "Account" else "Account", payload)


@pytest.mark.parametrize(
    "payload",
    [
        rest_account(Industry="Retail", Founded__c="1999-12-31", Revenue=1.5, Employees=7),
        rest_account(IsDeleted=False, MasterRecordId=None, LastModifiedDate="x", Name=None),
        rest_account(attributes={"type": None}),
        rest_account(attributes=None),
        rest_account(BillingAddress=None, BillingCity="Paris", Loc__c=None, Loc__Latitude__s=1.5),
        {k: v for k, v in rest_account(Rating=None).items() if k != "attributes"},
        rest_contact(AccountId=None, Birthdate="1990-05-17", Opted=True, Score=Decimal("1.5")),
        rest_contact(AccountId=EMPTY_ID, Title="Müller & Søn", Bounced="2024-01-31T12:00:00Z"),
        rest_contact(AccountId=A1[:15], Id=C1[:15], Plain="not-a-date", Lookup=EMPTY_ID),
    ],
    ids=repr,
)
def test_plain_path_takes_plain_records(payload: dict[str, Any]) -> None:
    object_type = "Contact" if "AccountId" in payload else "Account"
    general = _general(object_type, payload)
    assert isinstance(general, Account | Contact)
    plain = _formats._plain_record(object_type, payload)
    assert plain is not None, "the names are checked by the general decode above"
    assert _same_record(plain, general)


@pytest.mark.parametrize(
    ("object_type", "payload"),
    [
        ("Account", rest_account(IsDeleted=True)),
        ("Account", rest_account(IsDeleted=0)),
        ("Account", {**rest_account(), "ID": A1}),
        ("Account", {**rest_account(), "systemmodstamp": "2024-01-31T12:00:00.000+0000"}),
        ("Account", rest_account(BillingAddress={"city": "Paris"})),
        ("Account", rest_account(Revenue=float("nan"))),
        ("Account", rest_account(Revenue=Decimal("Infinity"))),
        ("Account", rest_account(Note="\ud83d")),
        ("Account", rest_account(Tags=["a"])),
        ("Account", rest_account(attributes={"type": "Contact"})),
        ("Account", rest_account(SystemModstamp="2024-01-31")),
        ("Account", rest_account(SystemModstamp="2024-01-31T12:00:00")),
        ("Account", rest_account(Id=C1)),
        ("Account", rest_account(Id=A1[:-1] + "Z")),
        ("Contact", rest_contact(AccountId=C1)),
        ("Contact", rest_contact(AccountId=1)),
        ("Contact", rest_contact(**{"never seen": 1})),
    ],
    ids=repr,
)
def test_plain_path_passes_on_the_rest(object_type: str, payload: dict[str, Any]) -> None:
    _decoded(object_type, payload)  # the names it can check are checked
    assert _formats._plain_record(object_type, payload) is None  # type: ignore[arg-type]
    check_plain_path(object_type, payload)


@FUZZ
@given(st.one_of(SALTY_TEXT, salesforce_datetime_text(), salesforce_date_text()))
def test_text_is_a_date_or_datetime_exactly_where_the_shapes_say(text: str) -> None:
    value = _formats.text_value(text)
    if text == EMPTY_ID:
        assert value is None
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{4})", text):
        assert isinstance(value, datetime) or value == text
        if isinstance(value, datetime):
            assert value == datetime.fromisoformat(text)
            assert value.tzinfo is UTC
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        assert type(value) is date or value == text
    else:
        assert value is text


@FUZZ
@given(
    st.sampled_from(["001", "003"]),
    st.integers(0, 62**10 - 1),
    st.sampled_from(["as made", "15", "a case flipped", "a suffix changed", "other prefix"]),
    st.integers(0, 17),
)
def test_r6_an_id_checked_by_lookup_is_as_normalize_id_makes_it(
    prefix: str, number: int, change: str, at: int
) -> None:
    raw = make_id(prefix, number)
    if change == "15":
        raw = raw[:15]
    elif change == "a case flipped" and raw[at].isalpha():
        raw = raw[:at] + raw[at].swapcase() + raw[at + 1 :]
    elif change == "a suffix changed":
        raw = raw[:15] + ("A" if raw[15] != "A" else "B") + raw[16:]
    elif change == "other prefix":
        raw = make_id("003" if prefix == "001" else "001", number)
    expected = _outcome(lambda kind, text: normalize_id(text, prefix=kind), prefix, raw)
    looked_up = _outcome(lambda kind, text: _formats._normalized_id(text, kind), prefix, raw)
    assert looked_up == expected
