"""The loopback org's Pub/Sub API, driven by a real grpc client made from the stubs.

The subscriber is tested against this server, so these tests hold it to what Salesforce
does: change events as Change Data Capture makes them from the org's writes, their Avro
payloads and bitmaps (read here with fastavro and a bitmap reader of the tests' own),
Subscribe's flow control, keepalives and replay, and Salesforce's errors.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
fastavro = pytest.importorskip("fastavro")

from acctsync import Account, ConfigurationError, Contact  # noqa: E402
from acctsync.sources.pubsub._proto import pubsub_api_pb2 as pb  # noqa: E402
from acctsync.sources.pubsub._proto import pubsub_api_pb2_grpc as pb_grpc  # noqa: E402
from acctsync.testing import make_id  # noqa: E402
from acctsync.testing.salesforce import FakeSalesforce  # noqa: E402
from realworld import describe_fields  # noqa: E402

T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
A1, A2, A3 = make_id("001", 1), make_id("001", 2), make_id("001", 3)
C1, C2, C3 = make_id("003", 1), make_id("003", 2), make_id("003", 3)
ALL, ACCOUNTS, CONTACTS = (
    "/data/ChangeEvents",
    "/data/AccountChangeEvent",
    "/data/ContactChangeEvent",
)
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ERROR = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
KEEPALIVE = 0.05
WAIT = 5.0


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def day_ms(value: date) -> int:
    return ms(datetime(value.year, value.month, value.day, tzinfo=UTC))


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=T + timedelta(days=1), pubsub=True, keepalive=KEEPALIVE) as fake:
        yield fake


@pytest.fixture
def stub(org: FakeSalesforce) -> Iterator[Any]:
    channel = grpc.insecure_channel(org.pubsub_target)
    yield pb_grpc.PubSubStub(channel)
    channel.close()


def auth(org: FakeSalesforce, **changed: str) -> tuple[tuple[str, str], ...]:
    """The call metadata a client sends: lower-case keys, as Python's grpc requires."""
    # simple-salesforce's instance URL is https://, whatever the fake serves.
    sent = {
        "accesstoken": org.session_id,
        "instanceurl": "https://" + org.url.partition("://")[2],
        "tenantid": org.org_id,
        **changed,
    }
    return tuple(sent.items())


def account(number: int, *, at: datetime = T, **fields: Any) -> Account:
    return Account(
        id=make_id("001", number),
        fields={"Name": f"Account {number}", **fields},
        system_modstamp=at,
    )


def contact(number: int, account_id: str | None, *, at: datetime = T, **fields: Any) -> Contact:
    return Contact(
        id=make_id("003", number),
        account_id=account_id,
        fields={"LastName": f"Doe {number}", **fields},
        system_modstamp=at,
    )


class Subscription:
    """A Subscribe call: FetchRequests sent as the test asks, responses read with a timeout."""

    def __init__(self, stub: Any, metadata: Any, first: Any) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(first)
        self._responses: queue.Queue[Any] = queue.Queue()
        self.call = stub.Subscribe(iter(self._requests.get, None), metadata=metadata)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
            self._responses.put("end")
        except grpc.RpcError as error:
            self._responses.put(error)

    def fetch(self, number: int, **fields: Any) -> None:
        self._requests.put(pb.FetchRequest(num_requested=number, **fields))

    def next(self, timeout: float = WAIT) -> Any:
        """The next response; the error or "end" that ended the call."""
        return self._responses.get(timeout=timeout)

    def quiet(self, seconds: float) -> bool:
        """Whether nothing comes for ``seconds``."""
        try:
            self._responses.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def events(self, count: int) -> list[Any]:
        """The next ``count`` events, past keepalives."""
        out: list[Any] = []
        deadline = time.monotonic() + WAIT
        while len(out) < count:
            assert time.monotonic() < deadline, f"{len(out)} events of {count}"
            response = self.next()
            assert isinstance(response, pb.FetchResponse), response
            out += response.events
        assert len(out) == count
        return out

    def error(self) -> Any:
        """The error that ends the call, past what comes before it."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            response = self.next()
            if not isinstance(response, pb.FetchResponse):
                return response
        raise AssertionError("the call goes on")

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()


@pytest.fixture
def subscribe(org: FakeSalesforce, stub: Any) -> Iterator[Any]:
    opened: list[Subscription] = []

    def open_(
        topic: str = ALL,
        *,
        preset: Any = None,
        replay_id: bytes = b"",
        requested: int = 100,
        metadata: Any = None,
    ) -> Subscription:
        first = pb.FetchRequest(
            topic_name=topic,
            replay_preset=pb.EARLIEST if preset is None else preset,
            replay_id=replay_id,
            num_requested=requested,
        )
        opened.append(Subscription(stub, metadata or auth(org), first))
        return opened[-1]

    yield open_
    for subscription in opened:
        subscription.close()


# -- Reading an event as a subscriber does ------------------------------------------------


def named_types(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named record of an Avro schema, by name."""
    found = {} if found is None else found
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            found[schema["name"]] = schema
            for field in schema["fields"]:
                named_types(field["type"], found)
    elif isinstance(schema, list):
        for branch in schema:
            named_types(branch, found)
    return found


def expand(bitmaps: Sequence[str], schema: Any) -> list[str]:
    """Pub/Sub API Developer Guide, "Event Deserialization Considerations": the field names
    a header's bitmaps stand for, read as the guide's reference code reads them."""
    fields, records = schema["fields"], named_types(schema)
    names: list[str] = []
    for bitmap in bitmaps:
        position, _, bits = bitmap.rpartition("-")
        if not position:
            value = int(bits, 16)
            names += [f["name"] for i, f in enumerate(fields) if value >> i & 1]
            continue
        parent = fields[int(position)]
        (branch,) = (b for b in parent["type"] if b != "null")
        record = records[branch] if isinstance(branch, str) else branch
        value = int(bits, 16)
        names += [
            f"{parent['name']}.{f['name']}"
            for j, f in enumerate(record["fields"])
            if value >> j & 1
        ]
    return names


class Reader:
    """Decodes events as a Pub/Sub client does: the schema fetched once by its ID."""

    def __init__(self, org: FakeSalesforce, stub: Any) -> None:
        self._org, self._stub = org, stub
        self.schemas: dict[str, Any] = {}

    def schema(self, schema_id: str) -> Any:
        if schema_id not in self.schemas:
            info = self._stub.GetSchema(
                pb.SchemaRequest(schema_id=schema_id), metadata=auth(self._org)
            )
            assert info.schema_id == schema_id
            self.schemas[schema_id] = json.loads(info.schema_json)
        return self.schemas[schema_id]

    def decode(self, event: Any) -> dict[str, Any]:
        """The payload, with the header's bitmaps expanded into names, and its replay ID."""
        schema = self.schema(event.event.schema_id)
        payload = fastavro.schemaless_reader(
            BytesIO(event.event.payload), fastavro.parse_schema(schema), None
        )
        header = payload["ChangeEventHeader"]
        for key in ("changedFields", "nulledFields", "diffFields"):
            header[key] = expand(header[key], schema)
        return payload


@pytest.fixture
def reader(org: FakeSalesforce, stub: Any) -> Reader:
    return Reader(org, stub)


def values(payload: dict[str, Any]) -> dict[str, Any]:
    """The fields an event sends, nested records as sent, without the header."""
    return {k: v for k, v in payload.items() if k != "ChangeEventHeader" and v is not None}


def sent(nested: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (nested or {}).items() if v is not None}


def header(payload: dict[str, Any]) -> dict[str, Any]:
    return dict(payload["ChangeEventHeader"])


# -- The events of each change --------------------------------------------------------------


def test_a_create_sends_every_value_of_the_record_in_avro(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(
        account(
            1,
            Industry="Energy",
            AnnualRevenue=Decimal("1500.25"),
            NumberOfEmployees=12,
            BillingCity="Paris",
            BillingPostalCode="75001",
        ),
        contact(1, A1, at=T + timedelta(seconds=1), Birthdate=date(1990, 5, 17), Email="d@x.org"),
    )

    first, second = (reader.decode(e) for e in subscribe().events(2))

    assert header(first) == {
        "entityName": "Account",
        "recordIds": [A1],
        "changeType": "CREATE",
        "changeOrigin": "",
        "transactionKey": header(first)["transactionKey"],
        "sequenceNumber": 1,
        "commitTimestamp": ms(T),
        "commitNumber": header(first)["commitNumber"],
        "commitUser": "005000000000001AAA",
        # Apex Reference, "ChangeEventHeader Class": empty for anything but an update.
        "nulledFields": [],
        "diffFields": [],
        "changedFields": [],
    }
    assert values(first) == {
        "Name": "Account 1",
        "Industry": "Energy",
        "AnnualRevenue": 1500.25,
        "NumberOfEmployees": 12,
        "BillingAddress": first["BillingAddress"],
        "CreatedDate": ms(T),
        "CreatedById": "005000000000001AAA",
        "LastModifiedDate": ms(T),
        "LastModifiedById": "005000000000001AAA",
    }
    assert sent(first["BillingAddress"]) == {"City": "Paris", "PostalCode": "75001"}
    assert list(first["BillingAddress"])[:5] == [
        "Street",
        "City",
        "State",
        "PostalCode",
        "Country",
    ]
    assert header(second)["entityName"] == "Contact"
    assert header(second)["commitNumber"] > header(first)["commitNumber"]
    assert header(second)["transactionKey"] != header(first)["transactionKey"]
    assert values(second) == {
        "AccountId": A1,
        "LastName": "Doe 1",
        "Email": "d@x.org",
        "Birthdate": day_ms(date(1990, 5, 17)),
        "CreatedDate": ms(T + timedelta(seconds=1)),
        "CreatedById": "005000000000001AAA",
        "LastModifiedDate": ms(T + timedelta(seconds=1)),
        "LastModifiedById": "005000000000001AAA",
    }


def test_an_update_sends_the_changed_fields_only_and_names_them_in_bitmaps(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1, Industry="Energy", Phone="1", BillingCity="Paris", BillingState="IDF"))
    later = T + timedelta(minutes=5)
    org.put(account(1, at=later, Phone="2", BillingCity="Lyon", BillingState="IDF"))

    _, update = subscribe().events(2)
    payload = reader.decode(update)

    assert header(payload)["changeType"] == "UPDATE"
    assert header(payload)["commitTimestamp"] == ms(later)
    assert values(payload) == {
        "Phone": "2",
        "BillingAddress": payload["BillingAddress"],
        "LastModifiedDate": ms(later),
    }
    # The compound holds its changed member only, the others null.
    assert sent(payload["BillingAddress"]) == {"City": "Lyon"}
    assert header(payload)["changedFields"] == [
        "Industry",
        "Phone",
        "LastModifiedDate",
        "BillingAddress.City",
    ]
    assert header(payload)["nulledFields"] == ["Industry"]


def test_bitmaps_are_written_as_salesforce_writes_them(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.describe_fields("Account", describe_fields("Account"))
    org.put(account(1, BillingStreet="1 Main St", BillingCity="Paris"))
    org.put(account(1, at=T + timedelta(seconds=1), BillingStreet="1 Main St", BillingState="CA"))

    _, update = subscribe().events(2)
    raw = fastavro.schemaless_reader(
        BytesIO(update.event.payload),
        fastavro.parse_schema(reader.schema(update.event.schema_id)),
        None,
    )
    schema = reader.schema(update.event.schema_id)
    positions = {field["name"]: i for i, field in enumerate(schema["fields"])}

    # "Event Deserialization Considerations": bit i of the first element is the field at
    # schema position i (the header at 0); "{position}-{bitmap}" is over a compound's
    # members. City is member 1 and State 2 of an Address: 0x06 for both.
    top = 1 << positions["LastModifiedDate"]
    billing = positions["BillingAddress"]
    expected = f"0x{top:0{2 * ((top.bit_length() + 7) // 8)}X}"
    assert raw["ChangeEventHeader"]["changedFields"] == [expected, f"{billing}-0x06"]
    assert raw["ChangeEventHeader"]["nulledFields"] == [f"{billing}-0x02"]
    assert schema["fields"][0]["name"] == "ChangeEventHeader"


def test_a_contacts_name_is_a_nested_record_as_in_a_real_orgs_schema(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.describe_fields("Contact", describe_fields("Contact"))
    org.put(contact(1, None, FirstName="Jo", Salutation="Ms."))
    org.put(contact(1, None, at=T + timedelta(seconds=1), FirstName="Joanna", Salutation="Ms."))

    create, update = (reader.decode(e) for e in subscribe().events(2))

    assert sent(create["Name"]) == {"Salutation": "Ms.", "FirstName": "Jo", "LastName": "Doe 1"}
    assert "FirstName" not in create  # only inside Name, as Salesforce sends it
    assert header(update)["changedFields"] == ["LastModifiedDate", "Name.FirstName"]
    assert sent(update["Name"]) == {"FirstName": "Joanna"}


def test_a_save_that_changes_nothing_but_its_stamp_is_an_update_of_last_modified_date(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1))
    org.put(account(1))  # the same row, the same stamp: no save
    org.put(account(1, at=T + timedelta(seconds=3)))

    subscription = subscribe()
    _, touched = (reader.decode(e) for e in subscription.events(2))

    assert header(touched)["changedFields"] == ["LastModifiedDate"]
    assert values(touched) == {"LastModifiedDate": ms(T + timedelta(seconds=3))}
    assert list(subscription.next().events) == []  # a keepalive: no third event


def test_deleting_an_account_deletes_its_contacts_in_one_event_of_one_transaction(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1), contact(1, A1), contact(2, A1), contact(3, None))
    gone = T + timedelta(hours=1)
    org.delete("Account", A1, at=gone)

    events = [reader.decode(e) for e in subscribe().events(6)]
    deleted_account, deleted_contacts = events[4:]

    assert (header(deleted_account)["changeType"], header(deleted_account)["recordIds"]) == (
        "DELETE",
        [A1],
    )
    # "Merged Change Events": the same change to several records of one transaction.
    assert (header(deleted_contacts)["changeType"], header(deleted_contacts)["recordIds"]) == (
        "DELETE",
        [C1, C2],
    )
    assert header(deleted_contacts)["transactionKey"] == header(deleted_account)["transactionKey"]
    assert [header(e)["sequenceNumber"] for e in (deleted_account, deleted_contacts)] == [1, 2]
    assert {header(e)["commitTimestamp"] for e in events[4:]} == {ms(gone)}
    # "Change Event Body Fields": a deletion's Pub/Sub body holds every field, null.
    assert values(deleted_account) == values(deleted_contacts) == {}


def test_an_undelete_sends_the_records_whole_again(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1, Phone="5"), contact(1, A1, Title="CEO"))
    org.delete("Account", A1, at=T + timedelta(hours=1))
    back = T + timedelta(hours=2)
    org.undelete("Account", A1, at=back)

    account_back, contact_back = (reader.decode(e) for e in subscribe().events(6)[4:])

    assert [header(e)["changeType"] for e in (account_back, contact_back)] == ["UNDELETE"] * 2
    assert header(account_back)["transactionKey"] == header(contact_back)["transactionKey"]
    assert values(account_back) == {
        "Name": "Account 1",
        "Phone": "5",
        "CreatedDate": ms(T),
        "CreatedById": "005000000000001AAA",
        "LastModifiedDate": ms(back),
        "LastModifiedById": "005000000000001AAA",
    }
    assert values(contact_back)["Title"] == "CEO"
    assert values(contact_back)["AccountId"] == A1


def test_a_merge_deletes_the_loser_and_moves_its_contacts_in_one_update(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1), account(2), contact(1, A2), contact(2, A2))
    merged = T + timedelta(hours=1)
    org.delete("Account", A2, at=merged, master_record_id=A1)

    loser, moved = (reader.decode(e) for e in subscribe().events(6)[4:])

    assert (header(loser)["changeType"], header(loser)["recordIds"]) == ("DELETE", [A2])
    assert (header(moved)["changeType"], header(moved)["recordIds"]) == ("UPDATE", [C1, C2])
    assert header(moved)["changedFields"] == ["AccountId", "LastModifiedDate"]
    assert values(moved) == {"AccountId": A1, "LastModifiedDate": ms(merged)}
    assert header(moved)["transactionKey"] == header(loser)["transactionKey"]


def test_writes_through_the_api_publish_one_transaction_with_their_origin(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    sf = org.client()
    external = "/services/data/v59.0/sobjects/{}/External_Id__c/p-1"
    payload = {
        "allOrNone": True,
        "compositeRequest": [
            {
                "method": "PATCH",
                "url": external.format("Account"),
                "referenceId": "account",
                "body": {"Name": "Acme", "BillingCity": "Oslo"},
            },
            {
                "method": "PATCH",
                "url": external.format("Contact"),
                "referenceId": "contact",
                "body": {"LastName": "Doe", "AccountId": "@{account.id}"},
            },
            {
                "method": "PATCH",
                "url": external.format("Opportunity"),
                "referenceId": "opportunity",
                "body": {
                    "Name": "Deal",
                    "StageName": "Prospecting",
                    "CloseDate": "2024-12-31",
                    "AccountId": "@{account.id}",
                },
            },
        ],
    }
    when = org.now.replace(microsecond=0)
    sf.restful("composite", method="POST", json=payload)
    sf.restful(
        "composite",
        method="POST",
        json=payload,
        headers={"Sforce-Call-Options": "client=acctsync"},
    )

    events = [reader.decode(e) for e in subscribe().events(4)]

    (new_account,) = org.records("Account")
    (new_contact,) = org.records("Contact")
    created_account, created_contact, touched_account, touched_contact = events
    assert [header(e)["changeType"] for e in events] == ["CREATE", "CREATE", "UPDATE", "UPDATE"]
    assert header(created_account)["recordIds"] == [new_account.id]
    assert values(created_contact)["AccountId"] == new_account.id
    assert header(created_contact)["recordIds"] == [new_contact.id]
    assert header(created_account)["transactionKey"] == header(created_contact)["transactionKey"]
    assert header(created_account)["commitTimestamp"] == ms(when)
    # Apex Reference, "ChangeEventHeader Class": the API and version, and the client named.
    assert header(created_account)["changeOrigin"] == "com/salesforce/api/rest/59.0"
    assert (
        header(touched_account)["changeOrigin"] == "com/salesforce/api/rest/59.0;client=acctsync"
    )
    # The upsert again writes the same values: a save, of LastModifiedDate alone.
    assert header(touched_contact)["changedFields"] == ["LastModifiedDate"]
    assert sent(created_account["BillingAddress"]) == {"City": "Oslo"}
    assert {header(e)["entityName"] for e in events} == {"Account", "Contact"}


def test_formulas_purges_and_failed_requests_publish_nothing(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(account(1), account(2))
    subscription = subscribe()
    subscription.events(2)

    org.set_formula("Account", A1, Tier__c="Gold")  # formulas do not fire CDC
    org.purge("Account", A2)
    org.client().restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": "/services/data/v59.0/sobjects/Contact",
                    "referenceId": "c",
                    "body": {"FirstName": "no last name"},
                }
            ],
        },
    )

    response = subscription.next()
    assert list(response.events) == []  # a keepalive
    assert len(org.change_events()) == 2


def test_fields_the_user_may_not_see_are_left_out_of_delivered_events(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1, Phone="1", Industry="Energy", BillingCity="Paris"))
    org.put(account(1, at=T + timedelta(seconds=1), Phone="2", Industry="Mining"))
    org.hide_fields("Account", "Phone", "BillingCity")

    delivered = subscribe().events(2)
    create, update = (reader.decode(e) for e in delivered)

    # Change Data Capture Developer Guide, "Field-Level Security": the schema keeps every
    # field; the events delivered hold none the user cannot see.
    schema = reader.schema(delivered[1].event.schema_id)
    assert "Phone" in [field["name"] for field in schema["fields"]]
    assert create["Phone"] is None
    assert create["BillingAddress"] is None or sent(create["BillingAddress"]) == {}
    assert header(update)["changedFields"] == ["Industry", "LastModifiedDate"]
    assert header(update)["nulledFields"] == []


def test_a_describe_change_makes_a_new_schema_and_old_events_keep_theirs(
    org: FakeSalesforce, subscribe: Any, reader: Reader, stub: Any
) -> None:
    org.put(account(1))
    topic = stub.GetTopic(pb.TopicRequest(topic_name=ACCOUNTS), metadata=auth(org))
    org.put(account(2, Region__c="EMEA"))  # a field the describe lacked: added to it

    first, second = subscribe().events(2)

    assert first.event.schema_id == topic.schema_id
    assert second.event.schema_id != first.event.schema_id
    assert len(second.event.schema_id) == 22  # as Salesforce's schema IDs
    assert values(reader.decode(second))["Region__c"] == "EMEA"
    assert "Region__c" not in [f["name"] for f in reader.schema(first.event.schema_id)["fields"]]
    now = stub.GetTopic(pb.TopicRequest(topic_name=ACCOUNTS), metadata=auth(org))
    assert now.schema_id == second.event.schema_id


# -- Topics -----------------------------------------------------------------------------------


def test_each_objects_topic_carries_its_events_and_the_all_topic_both(
    org: FakeSalesforce, subscribe: Any, stub: Any
) -> None:
    org.put(account(1), contact(1, A1), account(2))

    def entities(topic: str, count: int) -> list[str]:
        return [
            header(p)["entityName"]
            for p in map(Reader(org, stub).decode, subscribe(topic).events(count))
        ]

    assert entities(ACCOUNTS, 2) == ["Account", "Account"]
    assert entities(CONTACTS, 1) == ["Contact"]
    assert entities(ALL, 3) == ["Account", "Contact", "Account"]
    assert [e.payload["ChangeEventHeader"]["entityName"] for e in org.change_events(CONTACTS)] == [
        "Contact"
    ]
    topics = {
        name: stub.GetTopic(pb.TopicRequest(topic_name=name), metadata=auth(org))
        for name in (ALL, ACCOUNTS, CONTACTS)
    }
    assert all(t.can_subscribe and not t.can_publish for t in topics.values())
    # A channel of several objects has no one schema: each event names its own.
    assert topics[ALL].schema_id == ""
    assert topics[ACCOUNTS].schema_id != topics[CONTACTS].schema_id != ""


def test_change_events_reads_the_log_as_a_subscriber_decodes_it(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1, Phone="1"))
    org.put(account(1, at=T + timedelta(seconds=1), BillingCity="Rome"))

    logged = org.change_events()
    delivered = subscribe().events(2)

    assert [e.replay_id for e in logged] == [e.replay_id for e in delivered]
    assert [e.schema_id for e in logged] == [e.event.schema_id for e in delivered]
    assert logged[1].changed_fields == ("Phone", "BillingAddress.City", "LastModifiedDate")
    assert logged[1].nulled_fields == ("Phone",)
    assert (
        logged[1].payload["ChangeEventHeader"]["changedFields"]
        == fastavro.schemaless_reader(
            BytesIO(delivered[1].event.payload),
            fastavro.parse_schema(reader.schema(delivered[1].event.schema_id)),
            None,
        )["ChangeEventHeader"]["changedFields"]
    )
    with pytest.raises(ConfigurationError):
        org.change_events("/data/LeadChangeEvent")


# -- Subscribe: flow control, keepalives, replay -------------------------------------------


def test_events_are_sent_while_requested_and_pending_counts_what_is_owed(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(*(account(n) for n in range(1, 6)))
    subscription = subscribe(requested=2)

    first = subscription.next()
    assert (len(first.events), first.pending_num_requested) == (2, 0)
    assert subscription.quiet(4 * KEEPALIVE)  # owed nothing: nothing, not even a keepalive

    subscription.fetch(1)
    subscription.fetch(1)  # "the server appends the new amount to the current amount"
    owed = [len(subscription.events(2))]
    subscription.fetch(100)
    rest = subscription.next()
    assert (len(rest.events), rest.pending_num_requested) == (1, 99)
    assert owed == [2]
    replay_ids = [e.replay_id for e in (*first.events, *rest.events)]
    assert all(len(replay_id) == 10 for replay_id in replay_ids)


def test_the_server_owes_a_call_at_most_100_events_whatever_it_was_asked(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(account(1))
    subscription = subscribe(requested=60)
    subscription.events(1)
    subscription.fetch(100)  # 159 asked for and not sent: owed as 100
    keepalive = subscription.next()
    if keepalive.pending_num_requested == 59:  # sent before the server read the request
        keepalive = subscription.next()
    assert (list(keepalive.events), keepalive.pending_num_requested) == ([], 100)


def test_a_subscription_owed_events_gets_keepalives_with_the_latest_replay_id(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(account(1))
    subscription = subscribe(requested=5)
    (event,) = subscription.events(1)

    started = time.monotonic()
    keepalive = subscription.next()
    assert time.monotonic() - started < WAIT
    assert list(keepalive.events) == []
    assert keepalive.latest_replay_id == event.replay_id
    assert keepalive.pending_num_requested == 4
    assert keepalive.rpc_id

    org.put(account(2))  # comes at once, between keepalives
    (later,) = subscription.events(1)
    assert later.replay_id != event.replay_id


def test_latest_sends_only_what_comes_after_the_subscription(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1))
    subscription = subscribe(preset=pb.LATEST)
    assert list(subscription.next().events) == []  # a keepalive: the subscription is open

    org.put(account(2))

    (event,) = subscription.events(1)
    assert header(reader.decode(event))["recordIds"] == [A2]


def test_custom_resumes_after_the_replay_id_given(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1), account(2), account(3))
    first, second, _ = subscribe().events(3)

    resumed = subscribe(preset=pb.CUSTOM, replay_id=first.replay_id).events(2)

    assert [header(reader.decode(e))["recordIds"] for e in resumed] == [[A2], [A3]]
    assert resumed[0].replay_id == second.replay_id


def test_a_keepalives_replay_id_resumes_with_nothing_lost(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    subscription = subscribe(preset=pb.LATEST)
    latest = subscription.next().latest_replay_id  # before any event
    subscription.close()
    org.put(account(1))

    (event,) = subscribe(preset=pb.CUSTOM, replay_id=latest).events(1)

    assert header(reader.decode(event))["recordIds"] == [A1]


# -- Retention ------------------------------------------------------------------------------


def test_a_replay_id_past_retention_or_not_the_orgs_is_invalid(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(
        account(1), account(2, at=T + timedelta(hours=1)), account(3, at=T + timedelta(hours=2))
    )
    first, second, third = subscribe().events(3)

    assert org.expire_events(before=T + timedelta(hours=1)) == 1

    for replay_id in (first.replay_id, b"\x00" * 10, second.replay_id[:8], b"nonsense!!"):
        error = subscribe(preset=pb.CUSTOM, replay_id=replay_id).error()
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(error.trailing_metadata())["error-code"] == REPLAY_ERROR
        assert "rpcId: " in error.details()
    # Another org's replay ID, of the same position, is not this org's.
    with FakeSalesforce(pubsub=True) as other:
        other.put(account(1))
        (theirs,) = other.change_events()
    assert theirs.replay_id != first.replay_id
    error = subscribe(preset=pb.CUSTOM, replay_id=theirs.replay_id).error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    kept = subscribe().events(2)  # EARLIEST: from the first event kept
    assert [e.replay_id for e in kept] == [second.replay_id, third.replay_id]
    resumed = subscribe(preset=pb.CUSTOM, replay_id=second.replay_id).events(1)
    assert resumed[0].replay_id == third.replay_id

    assert org.expire_events() == 2
    assert org.change_events() == []
    error = subscribe(preset=pb.CUSTOM, replay_id=third.replay_id).error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_subscription_reading_behind_expired_events_fails_as_an_expired_replay_id(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(account(1), account(2))
    subscription = subscribe(requested=1)
    subscription.events(1)

    org.expire_events()
    subscription.fetch(1)

    error = subscription.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata())["error-code"] == REPLAY_ERROR


# -- Errors ---------------------------------------------------------------------------------


def test_calls_without_a_live_session_of_the_org_are_unauthenticated(
    org: FakeSalesforce, stub: Any, subscribe: Any
) -> None:
    refused = [
        auth(org, accesstoken="00D000000000001!nope"),
        auth(org, tenantid="00D000000000002"),
        auth(org, instanceurl="https://acme.my.salesforce.com"),
        tuple(kv for kv in auth(org) if kv[0] != "tenantid"),
    ]
    for metadata in refused:
        for call in (
            lambda m=metadata: stub.GetTopic(pb.TopicRequest(topic_name=ALL), metadata=m),
            lambda m=metadata: stub.GetSchema(pb.SchemaRequest(schema_id="x"), metadata=m),
            lambda m=metadata: subscribe(metadata=m).error(),
        ):
            error = _raised(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert dict(error.trailing_metadata())["error-code"] == AUTH_ERROR

    # The 18-character form of the org's ID names it too.
    assert (
        stub.GetTopic(
            pb.TopicRequest(topic_name=ALL), metadata=auth(org, tenantid=org.org_id + "AAA")
        ).topic_name
        == ALL
    )
    org.expire_sessions()
    error = _raised(lambda: stub.GetTopic(pb.TopicRequest(topic_name=ALL), metadata=auth(org)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def _raised(call: Any) -> Any:
    try:
        result = call()
    except grpc.RpcError as error:
        return error
    assert isinstance(result, grpc.RpcError), result
    return result


def test_a_new_sign_ins_session_is_taken(org: FakeSalesforce, stub: Any) -> None:
    org.register_app("key", consumer_secret="secret")
    session = org.session()
    token = session.post(
        f"{org.url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "key", "client_secret": "secret"},
    ).json()["access_token"]

    assert token.startswith(org.org_id + "!")
    topic = stub.GetTopic(pb.TopicRequest(topic_name=ALL), metadata=auth(org, accesstoken=token))
    assert topic.topic_name == ALL


def test_unknown_topics_are_denied_and_requests_are_checked(
    org: FakeSalesforce, stub: Any, subscribe: Any
) -> None:
    for call in (
        lambda: stub.GetTopic(pb.TopicRequest(topic_name="/event/Nope__e"), metadata=auth(org)),
        lambda: subscribe("/data/accountchangeevent").error(),  # names are case-sensitive
    ):
        assert _raised(call).code() == grpc.StatusCode.PERMISSION_DENIED

    assert subscribe(requested=101).error().code() == grpc.StatusCode.INVALID_ARGUMENT
    subscription = subscribe(requested=1)
    subscription.fetch(1, topic_name=CONTACTS)  # another topic than the first request's
    assert subscription.error().code() == grpc.StatusCode.INVALID_ARGUMENT

    blank = _raised(lambda: stub.GetSchema(pb.SchemaRequest(schema_id=""), metadata=auth(org)))
    assert blank.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "The schema ID can't be blank." in blank.details()
    published = _raised(
        lambda: stub.Publish(pb.PublishRequest(topic_name=ALL), metadata=auth(org))
    )
    assert published.code() == grpc.StatusCode.UNIMPLEMENTED


def test_dropped_subscriptions_fail_unavailable_and_resume_from_their_replay_id(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1))
    first = subscribe(requested=10)
    (seen,) = first.events(1)
    other = subscribe(ACCOUNTS, requested=10)
    other.events(1)

    org.drop_subscriptions()
    org.put(account(2))

    for subscription in (first, other):
        assert subscription.error().code() == grpc.StatusCode.UNAVAILABLE
    (missed,) = subscribe(preset=pb.CUSTOM, replay_id=seen.replay_id).events(1)
    assert header(reader.decode(missed))["recordIds"] == [A2]

    closed = subscribe(preset=pb.LATEST)
    # Its first keepalive: the server holds the subscription, so the drop reaches it.
    assert isinstance(closed.next(), pb.FetchResponse)
    org.drop_subscriptions(cleanly=True)
    while (response := closed.next()) != "end":
        assert isinstance(response, pb.FetchResponse)


def test_subscribe_calls_fail_unavailable_as_often_as_asked(
    org: FakeSalesforce, subscribe: Any
) -> None:
    org.put(account(1))
    org.fail_subscriptions(times=2)

    for _ in range(2):
        error = subscribe().error()
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(error.trailing_metadata())["error-code"] == (
            "sfdc.platform.eventbus.grpc.service.unavailable"
        )
    assert len(subscribe().events(1)) == 1


def test_gap_and_overflow_events_name_records_and_carry_no_values(
    org: FakeSalesforce, subscribe: Any, reader: Reader
) -> None:
    org.put(account(1), contact(1, A1))
    with org.without_events():  # a change Salesforce lost
        org.put(account(1, at=T + timedelta(seconds=1), Phone="9"))
    org.publish_gap("Account", A1)
    org.publish_gap("Contact", C1, change_type="DELETE")
    org.publish_overflow("Contact")

    events = [reader.decode(e) for e in subscribe().events(5)[2:]]

    assert [(header(e)["changeType"], header(e)["recordIds"]) for e in events] == [
        ("GAP_UPDATE", [A1]),
        ("GAP_DELETE", [C1]),
        ("GAP_OVERFLOW", ["000000000000000AAA"]),  # the empty ID: no record named
    ]
    assert all(values(e) == {} and header(e)["changedFields"] == [] for e in events)
    assert org.records("Account")[0].fields["Phone"] == "9"
    with pytest.raises(ConfigurationError):
        org.publish_gap("Account", A1, change_type="MERGE")


def test_stopping_the_org_ends_its_subscriptions(org: FakeSalesforce, subscribe: Any) -> None:
    subscription = subscribe(preset=pb.LATEST)
    subscription.next()

    org.stop()

    ended = subscription.error()
    assert ended == "end" or ended.code() in (
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
    )


# -- Without pubsub=True --------------------------------------------------------------------


def test_an_org_without_pubsub_has_no_controls_and_imports_no_grpc() -> None:
    with FakeSalesforce() as plain:
        for control in (
            lambda: plain.pubsub_target,
            plain.change_events,
            plain.expire_events,
            plain.drop_subscriptions,
            plain.fail_subscriptions,
            lambda: plain.without_events().__enter__(),
            lambda: plain.publish_overflow("Account"),
        ):
            with pytest.raises(ConfigurationError, match="pubsub=True"):
                control()
    code = (
        "import sys\n"
        "from acctsync.testing.salesforce import FakeSalesforce\n"
        "FakeSalesforce().put()\n"
        "print(sorted(m for m in ('grpc', 'fastavro', 'google.protobuf') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("keepalive", [0, -1, True, "1"])
def test_keepalive_must_be_seconds(keepalive: object) -> None:
    with pytest.raises(ConfigurationError, match="keepalive"):
        FakeSalesforce(pubsub=True, keepalive=keepalive)  # type: ignore[arg-type]
