"""The loopback fake Salesforce org, driven by a real simple-salesforce client over HTTP.

The source adapter's tests stand on this fake, so these tests hold it to what Salesforce
does: paged, snapshot query cursors; the recycle bin seen by queryAll only; SOQL errors;
describe; composite requests that roll back whole; and the error bodies that
simple-salesforce maps to its exceptions.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.bulk2 import LineEnding
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from acctsync import (
    Account,
    ConfigurationError,
    Contact,
    Deletion,
    InvalidRecordError,
    decode_record,
)
from acctsync.sources import _bulk
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce
from realworld import describe_fields

T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
A1, A2, A3 = make_id("001", 1), make_id("001", 2), make_id("001", 3)
C1, C2 = make_id("003", 1), make_id("003", 2)
V = "/services/data/v59.0"
ROW = "SELECT Id, Name, SystemModstamp, IsDeleted, MasterRecordId FROM Account"
# Describes of a real org, as CumulusCI recorded them (see its README).
# REST API Developer Guide, "Get Field Values from a Standard Object Record", and SOAP API
# Developer Guide, "Address Compound Fields": an address comes as an object of its
# components, keyed by their names without the address's prefix.
NO_ADDRESS = {"street": None, "city": None, "state": None, "postalCode": None, "country": None}


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=T + timedelta(days=1)) as fake:
        yield fake


@pytest.fixture
def sf(org: FakeSalesforce) -> Salesforce:
    return org.client()


def account(number: int, *, at: datetime = T, **fields: Any) -> Account:
    return Account(
        id=make_id("001", number),
        fields={"Name": f"Account {number}", **fields},
        system_modstamp=at,
    )


def ids(records: Any) -> list[str]:
    return [record["Id"] for record in records]


def error_code(error: SalesforceError) -> str:
    content: Any = error.content
    return str(content[0]["errorCode"])


# -- Query and queryAll paging --------------------------------------------------------------


def test_query_all_iter_pages_through_every_record(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(*(account(n, at=T + timedelta(seconds=n)) for n in range(2500)))
    org.delete("Account", make_id("001", 7), at=T + timedelta(days=1))

    live = list(sf.query_all_iter("SELECT Id FROM Account"))
    everything = list(sf.query_all_iter(ROW, include_deleted=True))

    assert len(live) == 2499
    assert make_id("001", 7) not in ids(live)
    assert len(everything) == 2500
    assert [r["IsDeleted"] for r in everything if r["Id"] == make_id("001", 7)] == [True]
    paths = [r.path for r in org.requests]
    assert paths[0] == f"{V}/query/"
    assert re.fullmatch(rf"{V}/query/01g\w{{15}}-2000", paths[1])
    # A queryAll cursor is read under query/, as in Salesforce.
    assert paths[2] == f"{V}/queryAll/"
    assert paths[3].startswith(f"{V}/query/01g")


def test_query_more_follows_next_records_url(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(*(account(n) for n in range(450)))
    headers = {"Sforce-Query-Options": "batchSize=200"}

    page = sf.query("SELECT Id FROM Account", headers=headers)
    sizes, seen = [len(page["records"])], ids(page["records"])
    assert (page["totalSize"], page["done"]) == (450, False)
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        sizes.append(len(page["records"]))
        seen += ids(page["records"])

    assert sizes == [200, 200, 50]
    assert "nextRecordsUrl" not in page
    assert seen == sorted(make_id("001", n) for n in range(450))


def test_query_more_by_locator_as_simple_salesforce_builds_it(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(*(account(n) for n in range(250)))
    page = sf.query(ROW, include_deleted=True, headers={"Sforce-Query-Options": "batchSize=200"})
    locator = page["nextRecordsUrl"].rsplit("/", 1)[1]

    rest = sf.query_more(locator, include_deleted=True)

    assert len(rest["records"]) == 50
    assert rest["done"] is True
    assert org.requests[-1].path == f"{V}/queryAll/{locator}"


@pytest.mark.parametrize(
    ("header", "sizes"),
    [
        (None, [2000, 1]),
        ("batchSize=50", [200] * 10 + [1]),  # raised to Salesforce's minimum
        ("batchSize=500", [500] * 4 + [1]),
        ("batchSize=9000", [2000, 1]),  # lowered to Salesforce's maximum
        ("batchSize=many", [2000, 1]),
    ],
)
def test_batch_size_header_sets_the_page_size(
    org: FakeSalesforce, sf: Salesforce, header: str | None, sizes: list[int]
) -> None:
    org.put(*(account(n) for n in range(2001)))
    headers = {"Sforce-Query-Options": header} if header else {}

    page = sf.query("SELECT Id FROM Account", headers=headers)
    seen = [len(page["records"])]
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        seen.append(len(page["records"]))

    assert seen == sizes


def test_a_cursor_keeps_the_result_set_of_its_query(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(*(account(n) for n in range(450)))
    headers = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query("SELECT Id, Name FROM Account", headers=headers)

    last = make_id("001", 449)
    org.put(account(449, Name="Renamed"), account(1000))
    org.delete("Account", make_id("001", 300), at=T + timedelta(hours=1))
    org.purge("Account", make_id("001", 301))
    rest: list[Any] = []
    page = first
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        rest += page["records"]

    assert ids(first["records"]) + ids(rest) == sorted(make_id("001", n) for n in range(450))
    assert [r["Name"] for r in rest if r["Id"] == last] == ["Account 449"]
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 449


@pytest.mark.parametrize("locator", ["01g000000000999AAA-200", "nonsense", "01g-x"])
def test_an_unknown_cursor_is_an_invalid_query_locator(sf: Salesforce, locator: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query_more(f"{V}/query/{locator}", identifier_is_url=True)
    assert error_code(raised.value) == "INVALID_QUERY_LOCATOR"


# -- The recycle bin ------------------------------------------------------------------------


def test_deleted_and_merged_rows_show_in_query_all_only(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(account(1), account(2), account(3))
    org.put(Contact(id=C2, account_id=A2, fields={"LastName": "Two"}, system_modstamp=T))
    org.delete("Account", A2, at=T + timedelta(hours=1), master_record_id=A1)
    org.delete("Account", A3, at=T + timedelta(hours=2))

    assert ids(sf.query(ROW)["records"]) == [A1]
    rows = {r["Id"]: r for r in sf.query_all(ROW, include_deleted=True)["records"]}
    assert rows[A2]["IsDeleted"] is True
    assert rows[A2]["MasterRecordId"] == A1
    assert rows[A2]["SystemModstamp"] == "2024-01-31T13:00:00.000+0000"
    assert rows[A3]["MasterRecordId"] is None
    assert decode_record("Account", rows[A2]) == Deletion(
        object_type="Account", id=A2, deleted_at=T + timedelta(hours=1), master_record_id=A1
    )
    # A merge moves the loser's contacts to the winner without touching their stamp.
    (contact,) = sf.query("SELECT Id, AccountId, SystemModstamp FROM Contact")["records"]
    assert (contact["AccountId"], contact["SystemModstamp"]) == (
        A1,
        "2024-01-31T12:00:00.000+0000",
    )


def test_deleting_an_account_deletes_its_contacts_and_undelete_restores_them(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(account(1), Contact(id=C1, account_id=A1, fields={"LastName": "A"}, system_modstamp=T))
    org.delete("Account", A1, at=T + timedelta(hours=1))

    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0
    (gone,) = sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)["records"]
    assert gone["IsDeleted"] is True

    org.undelete("Account", A1, at=T + timedelta(hours=2))
    assert [c.id for c in org.records("Contact")] == [C1]
    assert org.records("Account")[0].system_modstamp == T + timedelta(hours=2)
    with pytest.raises(InvalidRecordError):
        org.undelete("Account", A1, at=T + timedelta(hours=3))


def test_purge_removes_a_row_from_query_all_too(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(account(1), account(2))
    org.delete("Account", A1, at=T + timedelta(hours=1))
    org.purge("Account", A1)
    org.purge("Account", A2)

    assert sf.query_all(ROW, include_deleted=True)["totalSize"] == 0
    with pytest.raises(InvalidRecordError):
        org.purge("Account", A1)


def test_set_formula_changes_a_value_but_not_the_stamp(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(account(1, Tier__c="Bronze"))
    org.set_formula("Account", A1, Tier__c="Gold")

    (row,) = sf.query("SELECT Tier__c, SystemModstamp FROM Account")["records"]
    assert (row["Tier__c"], row["SystemModstamp"]) == ("Gold", "2024-01-31T12:00:00.000+0000")
    assert org.records("Account")[0].fields["Tier__c"] == "Gold"


# -- SOQL -----------------------------------------------------------------------------------


@pytest.fixture
def accounts(org: FakeSalesforce) -> None:
    org.put(
        account(1, at=T, Industry="Retail", AnnualRevenue=Decimal("10.5"), NumberOfEmployees=5),
        account(2, at=T + timedelta(seconds=1), Industry="Energy", NumberOfEmployees=50),
        account(3, at=T + timedelta(seconds=2), Industry=None, AnnualRevenue=Decimal(300)),
        Account(id=make_id("001", 4), fields={"Name": "O'Brien & Co"}, system_modstamp=T),
    )


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("SystemModstamp >= 2024-01-31T12:00:01Z", [2, 3]),
        ("SystemModstamp >= 2024-01-31T12:00:01.000Z", [2, 3]),
        ("SystemModstamp > 2024-01-31T12:00:00+00:00", [2, 3]),
        ("SystemModstamp < 2024-01-31T13:00:01+01:00", [1, 4]),  # compares instants
        ("Industry IN ('retail', 'Energy')", [1, 2]),  # text compares case-insensitively
        ("Industry = null", [3, 4]),
        ("Industry != 'Retail'", [2, 3, 4]),  # != includes nulls, as in SOQL
        ("Name = 'O\\'Brien & Co'", [4]),
        ("NumberOfEmployees > 10 AND IsDeleted = false", [2]),
        ("AnnualRevenue <= 10.5", [1]),
        (f"Id = '{make_id('001', 2)[:15]}'", [2]),  # a 15-character ID matches too
        ("Id IN ('001Ak0000000001', '001Ak0000000003')", [1, 3]),
    ],
)
def test_where_conditions(sf: Salesforce, where: str, expected: list[int]) -> None:
    result = sf.query(f"SELECT Id FROM Account WHERE {where}")
    assert ids(result["records"]) == [make_id("001", n) for n in expected]


@pytest.mark.usefixtures("accounts")
def test_count_answers_the_number_of_rows_and_no_records(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.delete("Account", make_id("001", 4), at=T + timedelta(seconds=3))
    where = (
        "WHERE SystemModstamp >= 2024-01-31T12:00:00Z AND SystemModstamp < 2024-01-31T12:00:02Z"
    )

    assert sf.query(f"SELECT COUNT() FROM Account {where}") == {
        "totalSize": 2,
        "done": True,
        "records": [],
    }
    assert sf.query("SELECT COUNT() FROM Account", include_deleted=True)["totalSize"] == 4
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT COUNT(), Id FROM Account")
    assert error_code(raised.value) == "MALFORMED_QUERY"


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("ORDER BY SystemModstamp, Id", [1, 4, 2, 3]),
        ("ORDER BY SystemModstamp DESC, Id DESC LIMIT 2", [3, 2]),
        ("ORDER BY AnnualRevenue", [2, 4, 1, 3]),  # nulls first, ascending
        ("ORDER BY Industry DESC, Id", [1, 2, 3, 4]),  # nulls last, descending
        ("LIMIT 0", []),
    ],
)
def test_order_by_and_limit(sf: Salesforce, tail: str, expected: list[int]) -> None:
    result = sf.query(f"SELECT Id FROM Account {tail}")
    assert ids(result["records"]) == [make_id("001", n) for n in expected]


@pytest.mark.usefixtures("accounts")
def test_keywords_and_names_are_case_insensitive(sf: Salesforce) -> None:
    result = sf.query("select id, name from account where industry = 'RETAIL' order by name asc")
    assert list(result["records"][0]) == ["attributes", "Id", "Name"]
    assert result["records"][0]["attributes"] == {
        "type": "Account",
        "url": f"{V}/sobjects/Account/{A1}",
    }


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT FROM Account",
        "SELECT Id Account",
        "SELECT Id FROM Account WHERE",
        "SELECT Id FROM Account WHERE Name LIKE 'A%'",
        "SELECT Id FROM Account WHERE Name = 'A' OR Name = 'B'",
        "SELECT Id FROM Account WHERE Name = 'unterminated",
        "SELECT Id FROM Account WHERE Name = 'bad \\q escape'",
        "SELECT Id FROM Account WHERE SystemModstamp > 2024-01-31T12:00:00+0000",
        "SELECT Id FROM Account WHERE SystemModstamp > null",
        "SELECT Id FROM Account ORDER BY Name DESC NULLS LAST",
        "SELECT Id FROM Account LIMIT x",
        "SELECT Id FROM Account LIMIT 1 extra",
        "SELECT FIELDS(EVERYTHING) FROM Account LIMIT 1",
        "SELECT FIELDS(ALL FROM Account LIMIT 1",
        "SELECT FIELDS(ALL) FROM Account",  # unbounded: a LIMIT is required
        "SELECT FIELDS(CUSTOM) FROM Account LIMIT 201",
        "   ",
    ],
)
def test_malformed_queries(sf: Salesforce, soql: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    assert error_code(raised.value) == "MALFORMED_QUERY"


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Nope__c FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Nope__c = 1", "INVALID_FIELD"),
        ("SELECT Id FROM Account ORDER BY Nope__c", "INVALID_FIELD"),
        ("SELECT AccountId FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE SystemModstamp > '2024-01-31T12:00:00Z'", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE BillingAddress = null", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Id = 'not-an-id'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id, Id FROM Account", "INVALID_FIELD"),
        ("SELECT Id, FIELDS(ALL) FROM Account LIMIT 200", "INVALID_FIELD"),
        ("SELECT Id FROM Lead", "INVALID_TYPE"),
    ],
)
def test_queries_naming_what_the_object_lacks(sf: Salesforce, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    assert error_code(raised.value) == code


def test_system_fields_always_select_and_missing_fields_are_null(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(Contact(id=C1, account_id=None, fields={"LastName": "Solo"}, system_modstamp=T))
    (row,) = sf.query(
        "SELECT Id, AccountId, SystemModstamp, IsDeleted, MasterRecordId, Email,"
        " MailingAddress FROM Contact"
    )["records"]
    assert row["AccountId"] is None
    assert row["MasterRecordId"] is None
    assert row["Email"] is None
    assert row["MailingAddress"] is None


def test_a_compound_field_selects_as_an_object(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(account(1, BillingCity="Oslo", BillingPostalCode="0150"))
    (row,) = sf.query("SELECT BillingAddress, BillingCity FROM Account")["records"]
    assert row["BillingAddress"] == {
        "street": None,
        "city": "Oslo",
        "state": None,
        "postalCode": "0150",
        "country": None,
    }
    assert row["BillingCity"] == "Oslo"


def test_fields_all_selects_every_field_and_compounds_as_objects(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(account(1, BillingCity="Oslo", BillingPostalCode="0150", Region__c="EMEA"))

    (row,) = sf.query("SELECT FIELDS(ALL) FROM Account LIMIT 200")["records"]
    (standard,) = sf.query("SELECT FIELDS(STANDARD) FROM Account")["records"]
    (custom,) = sf.query("SELECT Id, FIELDS(CUSTOM) FROM Account LIMIT 1")["records"]

    described = [f["name"] for f in sf.Account.describe()["fields"]]
    assert list(row) == ["attributes", *described]
    assert row["BillingAddress"] == {**NO_ADDRESS, "city": "Oslo", "postalCode": "0150"}
    assert (row["BillingCity"], row["Region__c"]) == ("Oslo", "EMEA")
    assert "BillingAddress" in standard
    assert "Region__c" not in standard
    assert list(custom) == ["attributes", "Id", "Tier__c", "External_Id__c", "Region__c"]


def test_an_sobject_get_answers_a_record_with_compounds_as_objects(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(account(1, BillingCity="Oslo"))
    org.put(account(2))
    org.delete("Account", A2, at=T + timedelta(hours=1))

    record = sf.Account.get(A1)
    some = sf.Account.get(A1[:15], params={"fields": "name,BillingAddress"})

    assert record["attributes"] == {"type": "Account", "url": f"{V}/sobjects/Account/{A1}"}
    assert record["BillingAddress"] == {**NO_ADDRESS, "city": "Oslo"}
    assert (record["Id"], record["Name"], record["BillingCity"]) == (A1, "Account 1", "Oslo")
    assert record["SystemModstamp"] == "2024-01-31T12:00:00.000+0000"
    assert some == {
        "attributes": record["attributes"],
        "Name": "Account 1",
        "BillingAddress": record["BillingAddress"],
    }
    for gone in (A2, A3, make_id("003", 1)):  # deleted, never there, another object's ID
        with pytest.raises(SalesforceResourceNotFound):
            sf.Account.get(gone)
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Account.get(A1, params={"fields": "Name,Nope__c"})
    assert error_code(raised.value) == "INVALID_FIELD"


# -- Field-level security -------------------------------------------------------------------


def test_a_hidden_field_is_gone_from_describe_records_and_fields_all(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(account(1, Industry="Retail", BillingCity="Oslo"))
    org.hide_fields("Account", "industry", "BillingCity")

    described = [f["name"] for f in sf.Account.describe()["fields"]]
    (row,) = sf.query("SELECT FIELDS(ALL) FROM Account LIMIT 200")["records"]
    record = sf.Account.get(A1)

    assert "Industry" not in described
    assert "BillingCity" not in described
    for seen in (row, record):
        assert "Industry" not in seen
        assert "BillingCity" not in seen
        assert seen["BillingAddress"] is None  # its one visible component with a value is hidden
    # The arranging side sees everything; the values are kept.
    assert org.records("Account")[0].fields["Industry"] == "Retail"
    org.show_fields("Account", "Industry", "BillingCity")
    assert sf.Account.get(A1)["Industry"] == "Retail"
    assert sf.Account.get(A1)["BillingAddress"] == {**NO_ADDRESS, "city": "Oslo"}


@pytest.mark.parametrize(
    "ask",
    [
        lambda sf: sf.query("SELECT Id, Industry FROM Account"),
        lambda sf: sf.query("SELECT Id FROM Account WHERE Industry = 'Retail'"),
        lambda sf: sf.query("SELECT Id FROM Account ORDER BY Industry"),
        lambda sf: sf.Account.get(A1, params={"fields": "Industry"}),
        lambda sf: sf.Account.create({"Name": "Acme", "Industry": "Retail"}),
    ],
    ids=["select", "where", "order-by", "fields-parameter", "create"],
)
def test_naming_a_hidden_field_is_an_invalid_field(
    org: FakeSalesforce, sf: Salesforce, ask: Any
) -> None:
    org.put(account(1, Industry="Retail"))
    org.hide_fields("Account", "Industry")
    with pytest.raises(SalesforceMalformedRequest) as raised:
        ask(sf)
    assert error_code(raised.value) == "INVALID_FIELD"
    assert "'Industry'" in str(raised.value.content)


def test_a_composite_subrequest_naming_a_hidden_field_fails(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.hide_fields("Account", "Industry")
    create = subrequest("POST", "/sobjects/Account", "a", {"Name": "A", "Industry": "Retail"})

    answer = sf.restful("composite", method="POST", json={"compositeRequest": [create]})

    assert answer is not None
    (entry,) = answer["compositeResponse"]

    assert (entry["httpStatusCode"], entry["body"][0]["errorCode"]) == (400, "INVALID_FIELD")
    assert org.records("Account") == []


def test_what_cannot_be_hidden(org: FakeSalesforce) -> None:
    for name in ("Id", "SystemModstamp", "isdeleted", "MasterRecordId"):
        with pytest.raises(InvalidRecordError):
            org.hide_fields("Account", name)
    with pytest.raises(InvalidRecordError):
        org.hide_fields("Contact", "AccountId")
    with pytest.raises(InvalidRecordError):
        org.hide_fields("Account", "Nope__c")
    with pytest.raises(InvalidRecordError):
        org.hide_fields("Lead", "Name")


def test_a_real_orgs_describes_are_served_as_recorded(org: FakeSalesforce, sf: Salesforce) -> None:
    for object_type in ("Account", "Contact"):
        recorded = describe_fields(object_type)
        org.describe_fields(object_type, recorded)
        described = sf.restful(f"sobjects/{object_type}/describe")
        assert described is not None
        assert described["fields"] == recorded
    org.put(account(1, BillingCity="Oslo", BillingLatitude=59.91, BillingGeocodeAccuracy="City"))

    (row,) = sf.query("SELECT FIELDS(ALL) FROM Account LIMIT 200")["records"]

    # Every component the recorded describe gives the address, keyed as the API keys them.
    assert row["BillingAddress"] == {
        **NO_ADDRESS,
        "city": "Oslo",
        "latitude": 59.91,
        "longitude": None,
        "geocodeAccuracy": "City",
    }
    assert row["ShippingAddress"] is None


# -- Values ---------------------------------------------------------------------------------


def test_values_round_trip_through_the_wire(org: FakeSalesforce) -> None:
    sf = org.client(parse_float=Decimal, object_pairs_hook=dict)
    fields: dict[str, Any] = {
        "Name": "Ünïcode \"quoted\" 'name'",
        "AnnualRevenue": Decimal("12345678901234567.89"),
        "NumberOfEmployees": 42,
        "Share__c": 0.25,
        "Active__c": True,
        "Founded__c": date(1999, 12, 31),
        "Audited__c": datetime(2023, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
        "Notes__c": None,
    }
    given = Account(id=A1, fields=fields, system_modstamp=T)
    contact = Contact(
        id=C1, account_id=A1, fields={"Birthdate": date(1980, 2, 29)}, system_modstamp=T
    )
    org.put(given, contact)

    (row,) = sf.query(f"SELECT Id, SystemModstamp, {', '.join(fields)} FROM Account")["records"]
    (crow,) = sf.query("SELECT Id, AccountId, Birthdate, SystemModstamp FROM Contact")["records"]

    assert row["AnnualRevenue"] == Decimal("12345678901234567.89")
    assert decode_record("Account", row) == given
    assert decode_record("Contact", crow) == contact
    assert org.records("Account") == [given]


def test_put_keeps_datetimes_to_the_millisecond_and_stamps_to_the_second(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    audited = T + timedelta(microseconds=1999)
    org.put(account(1, at=T + timedelta(milliseconds=999), Audited__c=audited))

    (put,) = org.records("Account")
    assert put.system_modstamp == T
    assert put.fields["Audited__c"] == T + timedelta(milliseconds=1)
    (row,) = sf.query("SELECT SystemModstamp, Audited__c FROM Account")["records"]
    assert (row["SystemModstamp"], row["Audited__c"]) == (
        "2024-01-31T12:00:00.000+0000",
        "2024-01-31T12:00:00.001+0000",
    )


def test_r3_saves_in_one_second_share_a_stamp(org: FakeSalesforce, sf: Salesforce) -> None:
    org.now = T + timedelta(milliseconds=998)
    sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme"})
    first = org.records("Account")[0].system_modstamp
    sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme Corp"})  # at .999
    second = org.records("Account")[0]
    sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme Inc"})  # at the next second

    assert first == second.system_modstamp == T
    assert second.fields["Name"] == "Acme Corp"
    assert org.records("Account")[0].system_modstamp == T + timedelta(seconds=1)
    org.delete("Account", second.id, at=T + timedelta(seconds=2, milliseconds=500))
    (row,) = sf.query_all("SELECT SystemModstamp FROM Account", include_deleted=True)["records"]
    assert row["SystemModstamp"] == "2024-01-31T12:00:02.000+0000"


# -- Describe -------------------------------------------------------------------------------


def test_describe(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(account(1, Region__c="EMEA", Seats__c=3))
    described = sf.Account.describe()
    fields = {f["name"]: f for f in described["fields"]}

    assert described["name"] == "Account"
    assert fields["Id"]["type"] == "id"
    assert fields["AnnualRevenue"]["type"] == "currency"
    assert fields["NumberOfEmployees"]["type"] == "int"
    assert fields["Industry"]["type"] == "picklist"
    assert fields["BillingAddress"]["type"] == "address"
    assert fields["BillingAddress"]["compoundFieldName"] is None
    assert fields["BillingStreet"]["compoundFieldName"] == "BillingAddress"
    assert fields["Tier__c"]["calculated"] is True
    assert fields["External_Id__c"]["externalId"] is True
    assert fields["SystemModstamp"]["type"] == "datetime"
    assert fields["MasterRecordId"]["type"] == "reference"
    assert (fields["Region__c"]["type"], fields["Seats__c"]["type"]) == ("string", "int")
    contact = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert contact["Birthdate"]["type"] == "date"
    assert contact["MailingCity"]["compoundFieldName"] == "MailingAddress"
    assert contact["AccountId"]["referenceTo"] == ["Account"]


def test_describe_fields_replaces_the_metadata(org: FakeSalesforce, sf: Salesforce) -> None:
    org.describe_fields("Account", [{"name": "Name", "type": "string", "nillable": False}])
    names = [f["name"] for f in sf.Account.describe()["fields"]]
    assert sorted(names) == ["Id", "IsDeleted", "MasterRecordId", "Name", "SystemModstamp"]
    with pytest.raises(SalesforceMalformedRequest):
        sf.query("SELECT Industry FROM Account")


def test_describe_of_an_unknown_object_is_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.describe()


# -- Composite ------------------------------------------------------------------------------


def subrequest(method: str, url: str, ref: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"method": method, "url": f"{V}{url}", "referenceId": ref, "body": body}


def conversion(contact: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
    """The composite request Convert Person sends: by POST, or by upsert on ``key``."""

    def target(kind: str) -> tuple[str, str]:
        return (
            ("PATCH", f"/sobjects/{kind}/External_Id__c/{key}")
            if key
            else ("POST", f"/sobjects/{kind}")
        )

    return {
        "allOrNone": True,
        "compositeRequest": [
            subrequest(*target("Account"), "acct", {"Name": "Acme", "AnnualRevenue": 1.5}),
            subrequest(*target("Contact"), "ct", {**contact, "AccountId": "@{acct.id}"}),
            subrequest(
                *target("Opportunity"),
                "opp",
                {
                    "Name": "Acme deal",
                    "StageName": "Prospecting",
                    "CloseDate": "2024-12-31",
                    "AccountId": "@{acct.id}",
                    "ContactId": "@{ct.id}",
                },
            ),
        ],
    }


def test_composite_creates_linked_records(org: FakeSalesforce, sf: Salesforce) -> None:
    before = org.now
    result = sf.restful("composite", method="POST", json=conversion({"LastName": "Doe"}))

    entries = result["compositeResponse"]
    assert [e["httpStatusCode"] for e in entries] == [201, 201, 201]
    account_id, contact_id, opportunity_id = (e["body"]["id"] for e in entries)
    assert (account_id[:3], contact_id[:3], opportunity_id[:3]) == ("001", "003", "006")
    assert entries[0]["httpHeaders"]["Location"] == f"{V}/sobjects/Account/{account_id}"
    (created,) = org.records("Account")
    assert created == Account(
        id=account_id,
        fields={"Name": "Acme", "AnnualRevenue": Decimal("1.5")},
        system_modstamp=before,
    )
    assert [(c.id, c.account_id) for c in org.records("Contact")] == [(contact_id, account_id)]
    (opportunity,) = org.opportunities()
    assert (opportunity.id, opportunity.account_id, opportunity.contact_id) == (
        opportunity_id,
        account_id,
        contact_id,
    )
    assert opportunity.fields["CloseDate"] == date(2024, 12, 31)
    assert org.now > before
    # The new records are queryable, stamped with the org's clock.
    (row,) = sf.query("SELECT Id, SystemModstamp FROM Contact")["records"]
    assert row["SystemModstamp"] == "2024-02-01T12:00:00.000+0000"


def test_composite_all_or_none_rolls_back_on_a_missing_required_field(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    before = org.now
    result = sf.restful("composite", method="POST", json=conversion({"FirstName": "Jo"}))

    entries = result["compositeResponse"]
    assert [e["httpStatusCode"] for e in entries] == [400, 400, 400]
    assert [e["body"][0]["errorCode"] for e in entries] == [
        "PROCESSING_HALTED",
        "REQUIRED_FIELD_MISSING",
        "PROCESSING_HALTED",
    ]
    assert entries[1]["body"][0]["fields"] == ["LastName"]
    assert org.records("Account") == []
    assert org.records("Contact") == []
    assert org.opportunities() == []
    assert org.now == before


def test_composite_without_all_or_none_keeps_what_succeeded(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    payload = conversion({"FirstName": "Jo"})
    payload["allOrNone"] = False

    entries = sf.restful("composite", method="POST", json=payload)["compositeResponse"]

    assert [e["httpStatusCode"] for e in entries] == [201, 400, 400]
    assert entries[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"  # @{ct.id} has no value
    assert [a.fields["Name"] for a in org.records("Account")] == ["Acme"]


def test_upsert_by_external_id_creates_once(org: FakeSalesforce, sf: Salesforce) -> None:
    payload = conversion({"LastName": "Doe"}, key="acctsync-convert-person%3Ap-1")

    first = sf.restful("composite", method="POST", json=payload)["compositeResponse"]
    second = sf.restful("composite", method="POST", json=payload)["compositeResponse"]

    assert [(e["httpStatusCode"], e["body"]["created"]) for e in first] == [(201, True)] * 3
    assert [(e["httpStatusCode"], e["body"]["created"]) for e in second] == [(200, False)] * 3
    assert [e["body"]["id"] for e in first] == [e["body"]["id"] for e in second]
    (created,) = org.records("Account")
    assert created.fields["External_Id__c"] == "acctsync-convert-person:p-1"
    assert len(org.records("Contact")) == len(org.opportunities()) == 1


def test_upsert_and_create_outside_composite(org: FakeSalesforce, sf: Salesforce) -> None:
    assert sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme"}) == 201
    assert sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme 2"}) == 200
    created = sf.Contact.create({"LastName": "Doe", "AccountId": org.records("Account")[0].id})

    assert created["success"] is True
    assert [a.fields["Name"] for a in org.records("Account")] == ["Acme 2"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.upsert("Name/Acme", {"Industry": "Retail"})


def test_an_external_id_on_two_records_is_ambiguous(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(account(1, External_Id__c="X-1"), account(2, External_Id__c="X-1"))
    with pytest.raises(SalesforceMoreThanOneRecord) as raised:
        sf.Account.upsert("External_Id__c/X-1", {"Name": "Acme"})
    content: Any = raised.value.content
    assert content == [f"{V}/sobjects/Account/{A1}", f"{V}/sobjects/Account/{A2}"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Name": "A", "Nope__c": 1}, "INVALID_FIELD"),
        ({"Name": "A", "Tier__c": "Gold"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"Name": "A", "Id": A1}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"Name": "A", "NumberOfEmployees": "many"}, "JSON_PARSER_ERROR"),
        ({"Name": "A", "NumberOfEmployees": 1.5}, "JSON_PARSER_ERROR"),
        ({"Industry": "Retail"}, "REQUIRED_FIELD_MISSING"),
        ({"Name": ""}, "REQUIRED_FIELD_MISSING"),
    ],
)
def test_create_refuses_what_salesforce_refuses(
    sf: Salesforce, body: dict[str, Any], code: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Account.create(body)
    assert error_code(raised.value) == code


@pytest.mark.parametrize(
    ("account_id", "code"),
    [("not-an-id", "MALFORMED_ID"), (make_id("001", 99), "INVALID_CROSS_REFERENCE_KEY")],
)
def test_a_reference_must_name_a_live_record(sf: Salesforce, account_id: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Contact.create({"LastName": "Doe", "AccountId": account_id})
    assert error_code(raised.value) == code


def test_a_malformed_composite_body_fails_whole(org: FakeSalesforce, sf: Salesforce) -> None:
    payload = {"compositeRequest": [{"method": "POST", "url": f"{V}/sobjects/Account"}]}
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite", method="POST", json=payload)
    assert org.records("Account") == []


# -- Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "exception"),
    [
        (401, "INVALID_SESSION_ID", SalesforceExpiredSession),
        (403, "REQUEST_LIMIT_EXCEEDED", SalesforceRefusedRequest),
        (400, "QUERY_TIMEOUT", SalesforceMalformedRequest),
        (503, "SERVER_UNAVAILABLE", SalesforceGeneralError),
    ],
)
def test_injected_errors_carry_salesforce_bodies(
    org: FakeSalesforce, sf: Salesforce, status: int, code: str, exception: type[SalesforceError]
) -> None:
    org.fail(status, code)
    with pytest.raises(exception) as raised:
        sf.query("SELECT Id FROM Account")
    assert raised.value.status == status
    assert error_code(raised.value) == code
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0  # once only, by default


def test_an_error_without_a_code_is_an_html_page(org: FakeSalesforce, sf: Salesforce) -> None:
    org.fail(500, None, "Internal Server Error")
    with pytest.raises(SalesforceGeneralError) as raised:
        sf.query("SELECT Id FROM Account")
    content: Any = raised.value.content
    assert isinstance(content, str)
    assert content.startswith("<html>")


def test_failures_count_and_match_by_path(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(*(account(n) for n in range(250)))
    org.fail(503, "SERVER_UNAVAILABLE", times=2, path="/query/01g")
    page = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"})

    for _ in range(2):
        with pytest.raises(SalesforceGeneralError):
            sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    rest = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)

    assert len(rest["records"]) == 50
    assert [r.status for r in org.requests] == [200, 503, 503, 200]


# -- The daily API allowance ----------------------------------------------------------------


def test_every_rest_answer_says_the_orgs_usage_and_allowance(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    assert (org.api_used, org.api_allowance) == (0, 15_000)
    sf.query("SELECT Id FROM Account")
    assert sf.api_usage["api-usage"] == (1, 15_000)
    org.fail(503, "SERVER_UNAVAILABLE")
    with pytest.raises(SalesforceGeneralError):
        sf.restful("sobjects/Account/describe")
    answer = sf.session.get(f"{sf.base_url}sobjects/Account/describe", headers=sf.headers)
    assert answer.headers["Sforce-Limit-Info"] == "api-usage=3/15000"  # the failure counted
    org.api_used = 14_990
    sf.query("SELECT Id FROM Account")
    assert sf.api_usage["api-usage"] == (14_991, 15_000)


def test_past_the_allowance_the_api_refuses_with_the_daily_limit_error(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.api_allowance = 2
    for _ in range(2):
        sf.query("SELECT Id FROM Account")
    for _ in range(2):  # refused requests do not count: it stays spent, no further
        with pytest.raises(SalesforceRefusedRequest) as raised:
            sf.query("SELECT Id FROM Account")
        assert raised.value.status == 403
        assert raised.value.content == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
    assert org.api_used == 2
    org.api_allowance = 3
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0


def test_a_sign_in_is_not_counted_against_the_allowance(org: FakeSalesforce) -> None:
    from simple_salesforce import login

    login.SalesforceLogin(
        username=org.username,
        password=org.password,
        security_token=org.security_token,
        session=org.session(),
    )
    assert org.api_used == 0


@pytest.mark.parametrize("value", [-1, True, 1.5, "3"])
def test_usage_and_allowance_are_checked(org: FakeSalesforce, value: object) -> None:
    with pytest.raises(ConfigurationError, match="api_used"):
        org.api_used = value  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="api_allowance"):
        org.api_allowance = value  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="api_allowance"):
        org.api_allowance = 0


def test_the_concurrent_request_limit_is_injected_as_often_as_asked(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.fail(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded", times=2)
    for _ in range(2):
        with pytest.raises(SalesforceRefusedRequest) as raised:
            sf.query("SELECT Id FROM Account")
        assert "ConcurrentPerOrgLongTxn" in raised.value.content[0]["message"]
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0
    assert org.api_used == 3


def test_a_wrong_session_id_is_refused(org: FakeSalesforce) -> None:
    stranger = Salesforce(
        instance_url=org.url, session_id="00Dx!wrong", session=org.client().session
    )
    with pytest.raises(SalesforceExpiredSession) as raised:
        stranger.query("SELECT Id FROM Account")
    assert error_code(raised.value) == "INVALID_SESSION_ID"


def test_unknown_paths_and_methods(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound) as raised:
        sf.restful("limits/")
    assert error_code(raised.value) == "NOT_FOUND"
    with pytest.raises(SalesforceGeneralError) as refused:
        sf.restful("composite", method="GET")
    assert refused.value.status == 405


def test_the_request_log(org: FakeSalesforce, sf: Salesforce) -> None:
    sf.query("SELECT Id FROM Account WHERE Name = 'a b'")
    sf.restful("composite", method="POST", json={"compositeRequest": []})

    query, composite = org.requests
    assert (query.method, query.path) == ("GET", f"{V}/query/")
    assert query.soql == "SELECT Id FROM Account WHERE Name = 'a b'"
    assert composite.body == {"compositeRequest": []}
    assert composite.soql is None


# -- Life cycle -----------------------------------------------------------------------------


def test_the_fake_serves_only_while_started() -> None:
    fake = FakeSalesforce()
    with pytest.raises(ConfigurationError):
        _ = fake.url
    with fake:
        assert fake.url.startswith("http://127.0.0.1:")
        sf = fake.client()
        assert sf.query("SELECT Id FROM Account")["done"] is True
    fake.stop()
    assert "stopped" in repr(fake)
    with pytest.raises(requests.ConnectionError):
        sf.query("SELECT Id FROM Account")


def test_the_client_speaks_the_api_version_given() -> None:
    with FakeSalesforce(api_version="60.0") as fake:
        fake.put(*(account(n) for n in range(201)))
        sf = fake.client()
        page = sf.query(
            "SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"}
        )
        assert page["nextRecordsUrl"].startswith("/services/data/v60.0/query/")
        assert fake.requests[0].path == "/services/data/v60.0/query/"


def test_the_clock_is_utc_to_the_millisecond() -> None:
    fake = FakeSalesforce(clock=datetime(2024, 1, 1, 1, 0, 0, 1500, tzinfo=UTC))
    assert fake.now == datetime(2024, 1, 1, 1, 0, 0, 1000, tzinfo=UTC)
    fake.now = T
    assert fake.now == T
    with pytest.raises(InvalidRecordError):
        fake.now = datetime(2024, 1, 1)


def test_the_client_session_turns_this_fakes_https_urls_into_http(org: FakeSalesforce) -> None:
    session = org.client(timeout=2.5).session
    https = org.url.replace("http://", "https://")

    refused = session.get(f"{https}{V}/query/", params={"q": "SELECT Id FROM Account"})

    assert session.trust_env is False  # the environment's CA bundle and proxies stay out
    assert refused.url.startswith(org.url)
    assert refused.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_requests_and_changes_from_several_threads(org: FakeSalesforce) -> None:
    clients = [org.client() for _ in range(4)]
    totals: list[int] = []

    def read(sf: Salesforce) -> None:
        for _ in range(10):
            totals.append(len(list(sf.query_all_iter("SELECT Id, Name FROM Account"))))

    threads = [threading.Thread(target=read, args=(sf,)) for sf in clients]
    for thread in threads:
        thread.start()
    for n in range(100):
        org.put(account(n))
    for thread in threads:
        thread.join()

    assert len(totals) == 40  # no reader died on the way
    assert all(0 <= total <= 100 for total in totals)
    assert len(org.records("Account")) == 100


# -- Compound fields ------------------------------------------------------------------------


def test_a_custom_geolocation_selects_as_latitude_and_longitude(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    # REST API Developer Guide and SOAP API Developer Guide, "Geolocation Compound Field":
    # a geolocation is an object of latitude and longitude; a custom one's components are
    # named Loc__Latitude__s and Loc__Longitude__s.
    location = [
        {"name": "Loc__c", "type": "location", "createable": False, "updateable": False},
        {"name": "Loc__Latitude__s", "type": "double", "compoundFieldName": "Loc__c"},
        {"name": "Loc__Longitude__s", "type": "double", "compoundFieldName": "Loc__c"},
    ]
    org.describe_fields("Account", [*sf.Account.describe()["fields"], *location])
    org.put(account(1, Loc__Latitude__s=59.91, Loc__Longitude__s=10.75), account(2))

    one, two = sf.query("SELECT Id, SystemModstamp, Loc__c FROM Account ORDER BY Name")["records"]

    assert one["Loc__c"] == {"latitude": 59.91, "longitude": 10.75}
    assert two["Loc__c"] is None
    assert sf.Account.get(A1)["Loc__c"] == one["Loc__c"]
    decoded = decode_record("Account", one)
    assert isinstance(decoded, Account)
    assert decoded.fields == {"Loc__Latitude__s": 59.91, "Loc__Longitude__s": 10.75}


# -- Signing in ------------------------------------------------------------------------------


def test_the_token_endpoint_answers_as_salesforce_does() -> None:
    with FakeSalesforce() as fake:
        fake.register_app("key", consumer_secret="secret")
        session = fake.session()
        token = "https://acme.my.salesforce.com/services/oauth2/token"
        ok = session.post(token, {"grant_type": "client_credentials"}, auth=("key", "secret"))
        assert ok.status_code == 200
        answer = ok.json()
        assert answer["instance_url"] == fake.url
        assert answer["token_type"] == "Bearer"
        api = f"{fake.url}/services/data/v{fake.api_version}/sobjects/Account/describe"
        bearer = {"Authorization": f"Bearer {answer['access_token']}"}
        assert session.get(api, headers=bearer).status_code == 200
        in_form = {"grant_type": "client_credentials", "client_id": "key", "client_secret": "x"}
        assert session.post(token, in_form).json() == {
            "error": "invalid_client",
            "error_description": "invalid client credentials",
        }
        assert session.post(token, {"grant_type": "password"}).json()["error"] == (
            "unsupported_grant_type"
        )
        assert session.get(token).json()["error"] == "invalid_request"
        fake.expire_sessions()
        expired = session.get(api, headers=bearer)
        assert (expired.status_code, expired.json()[0]["errorCode"]) == (401, "INVALID_SESSION_ID")
        with pytest.raises(ConfigurationError, match="a secret or a key"):
            fake.register_app("key")


def test_the_proxy_tunnels_login_hosts_only() -> None:
    pytest.importorskip("cryptography")
    with FakeSalesforce(tls=True) as fake:
        fake.register_app("key", consumer_secret="secret")
        with requests.Session() as session:
            session.trust_env = False
            session.verify = str(fake.certificate)
            session.proxies = {"https": fake.proxy_url}
            answer = session.post(
                "https://acme--dev.sandbox.my.salesforce.com/services/oauth2/token",
                {"grant_type": "client_credentials"},
                auth=("key", "secret"),
                timeout=10,
            )
            assert answer.json()["instance_url"] == fake.url
            with pytest.raises(requests.exceptions.ProxyError):
                session.get("https://example.com/", timeout=10)
    with FakeSalesforce() as plain, pytest.raises(ConfigurationError, match="tls=True"):
        plain.proxy_url  # noqa: B018


# -- Bulk API 2.0 query jobs ------------------------------------------------------------------
# Bulk API 2.0 Developer Guide: "Create a Query Job", "Get Information About a Query Job",
# "Get Results for a Query Job".


def bulk(sf: Salesforce, body: dict[str, Any]) -> Any:
    return sf.restful("jobs/query", method="POST", json=body)


def test_bulk_query_job_moves_through_its_states_and_serves_csv_sets(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.put(
        account(1, at=T, AnnualRevenue=Decimal("1.5"), IsPartner__c=True),
        account(2, at=T + timedelta(seconds=1), Name='Quote "and", comma'),
        account(3, at=T + timedelta(seconds=2)),
    )
    org.delete("Account", A3, at=T + timedelta(seconds=3))
    query = "SELECT Id, Name, AnnualRevenue, IsPartner__c, SystemModstamp, IsDeleted FROM Account"
    job = bulk(sf, {"operation": "queryAll", "query": query + " ORDER BY SystemModstamp, Id"})
    assert job["state"] == "UploadComplete"
    assert job["id"].startswith("750")
    states = [sf.restful(f"jobs/query/{job['id']}")["state"] for _ in range(3)]
    assert states == ["UploadComplete", "InProgress", "JobComplete"]
    url = f"{org.url}{V}/jobs/query/{job['id']}/results"
    session = org.session()
    headers = {"Authorization": f"Bearer {org.session_id}"}
    first = session.get(url, params={"maxRecords": 2}, headers=headers)
    assert first.headers["Sforce-NumberOfRecords"] == "2"
    assert first.headers["Content-Type"].startswith("text/csv")
    lines = first.text.splitlines()
    assert lines[0] == '"Id","Name","AnnualRevenue","IsPartner__c","SystemModstamp","IsDeleted"'
    assert lines[1] == f'"{A1}","Account 1","1.5","true","2024-01-31T12:00:00.000Z","false"'
    assert lines[2].startswith(f'"{A2}","Quote ""and"", comma","",""')
    last = session.get(
        url,
        params={"maxRecords": 2, "locator": first.headers["Sforce-Locator"]},
        headers=headers,
    )
    assert last.headers["Sforce-Locator"] == "null"
    assert last.headers["Sforce-NumberOfRecords"] == "1"
    assert last.text.splitlines()[0] == lines[0]
    assert last.text.splitlines()[1].endswith('"true"')  # the deleted one, by queryAll


def test_bulk_query_through_simple_salesforces_bulk2(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(*(account(n) for n in range(1, 6)))
    sets = list(sf.bulk2.Account.query("SELECT Id, Name FROM Account", max_records=2, wait=0))
    assert [len(s.splitlines()) - 1 for s in sets] == [2, 2, 1]
    assert all(s.splitlines()[0] == '"Id","Name"' for s in sets)


def test_bulk_query_ends_rows_as_the_job_asks(org: FakeSalesforce, sf: Salesforce) -> None:
    org.put(account(1, Name="Two\nlines"), account(2))
    query = "SELECT Id, Name, SystemModstamp, IsDeleted FROM Account ORDER BY Id"
    lf, crlf = (
        list(sf.bulk2.Account.query(query, line_ending=ending, wait=0))
        for ending in (LineEnding.LF, LineEnding.CRLF)
    )
    assert crlf == [lf[0].replace('"\n', '"\r\n')]  # not the line break within a value
    assert crlf[0].count("\r\n") == 3
    assert "\r" not in lf[0]
    job = bulk(sf, {"operation": "query", "query": query, "lineEnding": "CRLF"})
    assert job["lineEnding"] == "CRLF"
    # The source's reader reads either into the same records.
    describe = sf.Account.describe()
    typing = _bulk.CsvTyping("Account", describe)
    read_lf, read_crlf = (
        list(typing.pages(_bulk.ResultSet(text.encode(), None), "job 750 set 1", 10))
        for text in (lf[0], crlf[0])
    )
    assert read_crlf == read_lf
    assert read_lf[0][0].fields["Name"] == "Two\nlines"  # type: ignore[union-attr]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        bulk(sf, {"operation": "query", "query": query, "lineEnding": "CR"})
    assert error_code(caught.value) == "INVALIDJOB"


def test_bulk_query_refuses_compound_fields_and_fields_all(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    for query in (
        "SELECT Id, BillingAddress FROM Account",
        "SELECT FIELDS(STANDARD) FROM Account",
    ):
        with pytest.raises(SalesforceMalformedRequest) as caught:
            bulk(sf, {"operation": "query", "query": query})
        assert error_code(caught.value) == "FUNCTIONALITY_NOT_ENABLED"


def test_a_bulk_job_fails_on_demand_and_its_results_are_refused(
    org: FakeSalesforce, sf: Salesforce
) -> None:
    org.fail_bulk_jobs("Internal error", times=1)
    job = bulk(sf, {"operation": "query", "query": "SELECT Id FROM Account"})
    infos = [sf.restful(f"jobs/query/{job['id']}") for _ in range(3)]
    assert infos[-1]["state"] == "Failed"
    assert infos[-1]["errorMessage"] == "Internal error"
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful(f"jobs/query/{job['id']}/results")
    again = bulk(sf, {"operation": "query", "query": "SELECT Id FROM Account"})
    assert [sf.restful(f"jobs/query/{again['id']}")["state"] for _ in range(3)][-1] == (
        "JobComplete"
    )


def test_bulk_requests_count_against_the_allowance(org: FakeSalesforce, sf: Salesforce) -> None:
    before = org.api_used
    job = bulk(sf, {"operation": "query", "query": "SELECT Id FROM Account"})
    sf.restful(f"jobs/query/{job['id']}")
    assert org.api_used == before + 2
    assert sf.api_usage["api-usage"].used == before + 2


def test_latency_delays_each_answer_outside_the_lock() -> None:
    with FakeSalesforce(latency=0.2) as org:
        client = org.client()
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: client.query("SELECT Id FROM Account"), range(4)))
        took = time.perf_counter() - started
    # Four answers waited together, not one after another.
    assert 0.2 <= took < 0.7


@pytest.mark.parametrize("latency", [-1, True, "0.1"])
def test_latency_must_be_seconds(latency: object) -> None:
    with pytest.raises(ConfigurationError, match="latency"):
        FakeSalesforce(latency=latency)  # type: ignore[arg-type]
