"""Rule R8 against data a real org sent, as published (tests/data/realworld/).

- ``cdc_pubsub_node_client_update.json``: an Account UPDATE as the Pub/Sub API's Node
  client hands it over (pozil/pub-sub-api-node-client, README): Avro decoded, field
  lists expanded, every field present and null unless it changed.
- ``describe_account_cumulusci.json``: the REST describe of Account in a real org
  (SFDO-Tooling/CumulusCI's recorded response), its fields and their compounds.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from acctsync import (
    AUDIT_FIELDS,
    RESERVED_FIELDS,
    Account,
    InvalidRecordError,
    PartialUpdate,
    Store,
    SyncEngine,
    decode_change_event,
    decode_record,
)
from acctsync.sources.cdc import ChangeEventSource
from realworld import describe_fields, realworld

ACCOUNT = "0014H00002LbR7QQAV"  # the record the published event names
COMMITTED = datetime(2023, 10, 4, 18, 35, 13, tzinfo=UTC)  # its commitTimestamp


def published_event() -> dict[str, Any]:
    message: dict[str, Any] = realworld("cdc_pubsub_node_client_update.json")
    return message


def account_describe() -> list[dict[str, Any]]:
    return describe_fields("Account")


def test_r8_the_published_pubsub_update_decodes_to_its_changed_fields() -> None:
    message = published_event()
    expected = [
        PartialUpdate(
            object_type="Account",
            id=ACCOUNT,
            fields={"BillingCity": "San Francisco", "BillingState": "CA"},
            system_modstamp=COMMITTED,
            sequence=(11657372702432, 1),
        )
    ]
    assert decode_change_event(message) == expected
    assert decode_change_event(message["payload"]) == expected


def test_r8_the_published_update_applies_through_its_client_shape_on_every_store(
    any_store: Store,
) -> None:
    feed = ChangeEventSource()
    engine = SyncEngine(source=feed, store=any_store)
    before = published_event()
    before["payload"]["ChangeEventHeader"].update(
        changeType="CREATE", commitTimestamp=1696444000000, sequenceNumber=1
    )
    before["payload"].update(Name="Acme", BillingAddress={"City": "Paris", "State": None})
    feed.add(before, replay_id=18098166)
    feed.add(published_event())  # its replayId beside its payload
    report = engine.sync()
    feed.commit()
    assert report.ok
    stored = any_store.get_account(ACCOUNT)
    assert stored is not None
    assert stored.system_modstamp == COMMITTED
    assert (stored.fields["BillingCity"], stored.fields["BillingState"]) == ("San Francisco", "CA")
    assert stored.fields["Name"] == "Acme"
    assert feed.checkpoint == 18098167


def test_r8_the_published_update_with_its_lists_left_as_bitmaps_is_refused() -> None:
    # Pub/Sub API Developer Guide, "Event Deserialization Considerations": a bit per field
    # position in the schema, "N-0x.." for the sub-fields of the compound at N. Built from
    # the event's own field order: LastModifiedDate's bit, and City and State (sub-fields
    # 1 and 2) of BillingAddress.
    message = published_event()
    positions = list(message["payload"])
    bitmap = hex(1 << positions.index("LastModifiedDate"))
    compound = f"{positions.index('BillingAddress')}-0x06"
    message["payload"]["ChangeEventHeader"]["changedFields"] = [bitmap, compound]
    with pytest.raises(InvalidRecordError, match="bitmap") as info:
        decode_change_event(message)
    assert info.value.record_id == ACCOUNT


def test_r8_the_published_event_as_a_create_keeps_every_field_but_compounds() -> None:
    # A Pub/Sub CREATE has the same shape: every field present, null where unset.
    message = published_event()
    message["payload"]["ChangeEventHeader"].update(changeType="CREATE", changedFields=[])
    (created,) = decode_change_event(message)
    assert isinstance(created, Account)
    payload = message["payload"]
    plain = {
        name
        for name, value in payload.items()
        if name not in AUDIT_FIELDS
        and name != "ChangeEventHeader"
        and not name.endswith("Address")
    }
    # Every documented component of the address; the schema's "Xyz" names no field.
    address = {f"Billing{part}" for part in payload["BillingAddress"] if part != "Xyz"}
    assert set(created.fields) == plain | address
    assert created.fields["BillingCity"] == "San Francisco"
    described = {f["name"] for f in account_describe()}
    codes = {"BillingStateCode", "BillingCountryCode"}  # this org has no state picklists
    assert set(created.fields) - codes <= described


def test_r8_a_fields_all_record_of_the_published_describe_decodes_without_its_compounds() -> None:
    # REST API Developer Guide, "Compound Fields": SELECT FIELDS(ALL) and an sobject GET
    # give each compound as an object of lowerCamel component keys, beside the components.
    fields = account_describe()
    record: dict[str, Any] = {"attributes": {"type": "Account"}}
    for entry in fields:
        record[entry["name"]] = None
    for entry in fields:
        parent = entry.get("compoundFieldName")
        if parent and parent != entry["name"]:
            key = entry["name"].removeprefix(parent.removesuffix("Address"))
            record[parent] = record[parent] or {}
            record[parent][key[:1].lower() + key[1:]] = "x" if entry["type"] != "double" else 1.5
    record.update(Id=ACCOUNT, SystemModstamp="2023-10-04T18:35:13.000+0000", IsDeleted=False)
    decoded = decode_record("Account", copy.deepcopy(record))
    assert isinstance(decoded, Account)
    compounds = {entry["name"] for entry in fields if entry["type"] == "address"}
    expected = {entry["name"] for entry in fields} - compounds - RESERVED_FIELDS - AUDIT_FIELDS
    assert set(decoded.fields) == expected
    assert decoded.fields["BillingCity"] is None  # the component's own value wins
