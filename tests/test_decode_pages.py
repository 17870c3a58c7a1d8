"""A page of REST records is read as its records are, one by one.

`_formats._plain_records` reads a page of REST payloads column by column; for each it
must give exactly what `_formats._plain_record` gives (the record, value types and field
order included, or None), whatever the page holds. The engine decodes a page through it:
what a sync stores and rejects, and in which order, must be what decoding record by
record gives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acctsync import (
    Account,
    Contact,
    SyncEngine,
    _engine,
    _formats,
)
from acctsync._formats import EMPTY_ID, format_datetime
from acctsync._records import ObjectType
from acctsync.testing import InMemorySource, InMemoryStore, make_id, strategies
from test_formats import _same_record, salesforce_date_text, salesforce_datetime_text

PREFIXES = {"Account": "001", "Contact": "003"}
OTHER = {"Account": "Contact", "Contact": "Account"}
ACCOUNTS = [make_id("001", n) for n in range(3)]  # accounts many contacts name
T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)


def _flipped(record_id: str) -> str:
    """The ID with its first letter's case changed: its checksum no longer matches."""
    at = next((i for i, c in enumerate(record_id) if c.isalpha()), None)
    if at is None:
        return record_id[:15] + "000"
    return record_id[:at] + record_id[at].swapcase() + record_id[at + 1 :]


def ids(kind: ObjectType) -> st.SearchStrategy[Any]:
    """Record IDs: mostly good, in both lengths, and bad in each way an ID is."""
    good = strategies.salesforce_ids(PREFIXES[kind])
    return st.one_of(
        good,
        good,
        good,
        strategies.salesforce_ids(PREFIXES[kind], length=15),
        strategies.salesforce_ids(PREFIXES[OTHER[kind]]),
        good.map(_flipped),
        st.sampled_from([EMPTY_ID, EMPTY_ID[:15], "", "001*", "x" * 18, "é" * 18]),
        st.integers(),
        st.none(),
    )


def stamps() -> st.SearchStrategy[Any]:
    """SystemModstamps: mostly as REST writes them, and every other text and value."""
    rest = strategies.timestamps().map(format_datetime)
    return st.one_of(
        rest,
        rest,
        rest,
        strategies.timestamps().map(lambda t: f"{t:%Y-%m-%dT%H:%M:%S}.{t:%f}"[:23] + "Z"),
        salesforce_datetime_text(),
        salesforce_date_text(),
        st.sampled_from(
            [
                "2024-13-01T00:00:00.000+0000",  # REST's shape, no datetime
                "0001-01-01T00:00:00.000+0100",  # before the first UTC moment
                "9999-12-31T23:59:59.999-0100",  # after the last
                "2024-01-31T12:00:00.000+0000 ",
                "\uff12\uff10\uff12\uff14-01-31T12:00:00.000+0000",  # wide digits
            ]
        ),
        st.none(),
        st.integers(0, 9),
    )


def account_ids() -> st.SearchStrategy[Any]:
    """A contact's AccountId: a few accounts again and again, and every odd value."""
    return st.one_of(
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        strategies.salesforce_ids("001"),
        strategies.salesforce_ids("001", length=15),
        strategies.salesforce_ids("001").map(_flipped),
        strategies.salesforce_ids("003"),
        st.sampled_from([EMPTY_ID, EMPTY_ID[:15], "", "nope"]),
        st.none(),
        st.integers(0, 9),
        st.just(["001"]),
    )


# What a field's column holds: mostly values of one kind, as a query's field does.
TEXT = st.text(max_size=12)
ODD_TEXT = st.sampled_from(
    [
        EMPTY_ID,
        EMPTY_ID[:15],
        "000000000000000AAB",
        "\ud83d",  # a lone surrogate: no text Salesforce could send
        "a\udc00b",
        "Müller & Søn",
        "2024-01-31",
        "2024-02-30",
        "2024-01-3x",
        "2024-01-31T12:00:00Z",
        "2024-01-31T12:00:00.000-0500",
        "1234-5678 is no date",
        "12345",
        "-",
    ]
)
DATETIMES = st.one_of(strategies.timestamps().map(format_datetime), salesforce_datetime_text())
ODD = st.one_of(
    ODD_TEXT,
    st.floats(),  # nan and infinities too
    st.sampled_from(
        [2**1100, -(2**1100), 1e308, Decimal("1.5"), Decimal("NaN"), Decimal("-Infinity")]
    ),
    st.decimals(places=2),
    st.dictionaries(
        st.sampled_from(["city", "street", "latitude", "attributes"]), TEXT, max_size=2
    ),
    st.lists(st.integers(), max_size=2),
    st.booleans(),
    st.integers(),
)
KINDS_OF_VALUE = [
    TEXT,
    ODD_TEXT,
    salesforce_date_text(),
    DATETIMES,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
]


def column(kind_of_value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's values: of its kind, at times null, now and then anything at all."""
    return st.one_of(kind_of_value, kind_of_value, kind_of_value, st.none(), ODD)


ATTRIBUTE_VALUES: dict[str, Callable[[ObjectType], st.SearchStrategy[Any]]] = {
    "attributes": lambda kind: st.one_of(
        st.just({"type": kind, "url": f"/services/data/v60.0/sobjects/{kind}/x"}),
        st.just({"type": kind}),
        st.just({"type": OTHER[kind]}),
        st.just({"type": None}),
        st.just({}),
        st.none(),
        st.just(kind),
    ),
    "Id": ids,
    "SystemModstamp": lambda kind: stamps(),
    "IsDeleted": lambda kind: st.one_of(
        st.just(False), st.just(False), st.just(True), st.none(), st.just(0)
    ),
    "MasterRecordId": lambda kind: st.one_of(st.none(), ids(kind)),
    "AccountId": lambda kind: account_ids(),
}
# Keys a page may hold besides a query's: other spellings, audit fields, compound fields.
ODD_KEYS = [
    "ID",
    "systemmodstamp",
    "LastModifiedDate",
    "never seen",
    "BillingAddress",
    "MailingAddress",
    "Loc__c",
    "Loc__Latitude__s",
    "",
    1,
]


# What a plain record holds under each attribute, where the record is to be plain.
PLAIN_VALUES: dict[str, Callable[[ObjectType], st.SearchStrategy[Any]]] = {
    "attributes": lambda kind: st.just({"type": kind, "url": f"/x/{kind}"}),
    "Id": lambda kind: st.one_of(
        strategies.salesforce_ids(PREFIXES[kind]),
        strategies.salesforce_ids(PREFIXES[kind], length=15),
    ),
    "SystemModstamp": lambda kind: strategies.timestamps().map(format_datetime),
    "IsDeleted": lambda kind: st.just(False),
    "MasterRecordId": lambda kind: st.none(),
    "AccountId": lambda kind: st.one_of(
        st.sampled_from([*ACCOUNTS, EMPTY_ID, None]), strategies.salesforce_ids("001")
    ),
}
Template = list[tuple[Any, st.SearchStrategy[Any], st.SearchStrategy[Any]]]


@st.composite
def templates(draw: st.DrawFn, kind: ObjectType) -> Template:
    """A query's keys, in some order, each with what a plain record holds under it and
    what any record may."""
    attributes = ["attributes", "Id", "IsDeleted", "MasterRecordId", "SystemModstamp"]
    if kind == "Contact" or draw(st.integers(0, 9)) == 0:
        attributes.append("AccountId")
    dropped = draw(st.sets(st.sampled_from(attributes), max_size=2))
    if draw(st.integers(0, 3)):  # most keep what makes a record
        dropped -= {"Id", "SystemModstamp"}
    entries: Template = [
        (name, PLAIN_VALUES[name](kind), ATTRIBUTE_VALUES[name](kind))
        for name in attributes
        if name not in dropped
    ]
    for name in draw(st.lists(strategies.field_names(), max_size=5, unique=True)):
        values = draw(st.sampled_from(KINDS_OF_VALUE))
        entries.append((name, st.one_of(values, st.none()), column(values)))
    odd = draw(st.lists(st.sampled_from(ODD_KEYS), max_size=2, unique=True))
    taken = {name for name, _, _ in entries}
    for name in odd:
        if name not in taken:
            values = st.floats() if name == "Loc__Latitude__s" else st.none()
            entries.append((name, values, column(values)))
    return list(draw(st.permutations(entries)))


@st.composite
def pages(draw: st.DrawFn) -> tuple[ObjectType, list[dict[Any, Any]]]:
    """A page of REST payloads of one object, of a few sets of keys: most records
    plain where their keys allow, some with one odd value, some odd throughout."""
    kind: ObjectType = draw(st.sampled_from(["Account", "Contact"]))
    shapes = draw(st.lists(templates(kind), min_size=1, max_size=3))
    page = []
    for _ in range(draw(st.integers(0, 24))):
        shape = draw(st.sampled_from(shapes))
        odd = draw(st.sampled_from(["none", "none", "one", "all"]))
        spoiled = draw(st.integers(0, len(shape) - 1)) if odd == "one" and shape else None
        page.append(
            {
                name: draw(anything if odd == "all" or at == spoiled else plain)
                for at, (name, plain, anything) in enumerate(shape)
            }
        )
    return kind, page


def same(got: object, expected: object) -> bool:
    """The same result: both None, or equal records with values of the same types."""
    if got is None or expected is None:
        return got is expected
    return _same_record(got, expected)


def check_page(kind: ObjectType, page: list[dict[Any, Any]]) -> None:
    # Read as columns even in groups of one, and as the decoder groups them; the
    # page first, before the one-by-one reads fill the memories it consults.
    column_names: set[str] = set()
    with mock.patch.object(_formats, "_GROUP_MIN", 1):
        in_columns = _formats._plain_records(kind, page, column_names)
    expected = [_formats._plain_record(kind, payload) for payload in page]
    decoded_names: set[str] = set()
    as_decoded = _formats._plain_records(kind, page, decoded_names)
    for got, names in ((in_columns, column_names), (as_decoded, decoded_names)):
        assert len(got) == len(expected)
        for payload, record, wanted in zip(page, got, expected, strict=True):
            assert same(record, wanted), (payload, record, wanted)
        # Each record's names are told (the engine's spelling check trusts them), and no
        # name that no payload holds.
        assert names >= {name for record in got if record is not None for name in record.fields}
        assert names <= {key for payload in page for key in payload}


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pages())
def test_a_page_decodes_as_each_of_its_records(
    case: tuple[ObjectType, list[dict[Any, Any]]],
) -> None:
    check_page(*case)


def rest(kind: ObjectType, n: int, **fields: Any) -> dict[str, Any]:
    record_id = make_id(PREFIXES[kind], n)
    record: dict[str, Any] = {
        "attributes": {"type": kind, "url": f"/services/data/v60.0/sobjects/{kind}/{record_id}"},
        "Id": record_id,
        "IsDeleted": False,
        "MasterRecordId": None,
    }
    if kind == "Contact":
        record["AccountId"] = ACCOUNTS[n % len(ACCOUNTS)]
    record["SystemModstamp"] = format_datetime(T + timedelta(seconds=n))
    record.update(fields)
    return record


def test_a_query_page_is_read_whole_and_alike() -> None:
    page = [
        rest(
            "Contact",
            n,
            LastName=f"Name {n}",
            Birthdate=f"19{n % 90 + 10}-0{n % 9 + 1}-1{n % 9}",
            Bounced=format_datetime(T - timedelta(days=n)) if n % 3 else None,
            Score=n / 10,
            Opted=n % 2 == 0,
            Count=n,
        )
        for n in range(50)
    ]
    decoded = _formats._plain_records("Contact", page, set())
    assert all(isinstance(record, Contact) for record in decoded)
    check_page("Contact", page)


@pytest.mark.parametrize(
    ("kind", "odd"),
    [
        ("Account", {"Revenue": float("nan")}),
        ("Account", {"Revenue": float("inf")}),
        ("Account", {"Revenue": 2**1100}),  # no float, yet a plain int
        ("Account", {"Note": "\ud83d"}),
        ("Account", {"Founded__c": "2024-02-30"}),
        ("Account", {"Tags": ["a"]}),
        ("Account", {"IsDeleted": True}),
        ("Account", {"IsDeleted": 0}),
        ("Account", {"SystemModstamp": "0001-01-01T00:00:00.000+0100"}),
        ("Account", {"SystemModstamp": "2024-13-01T00:00:00.000+0000"}),
        ("Account", {"Id": make_id("003", 1)}),
        ("Account", {"Id": make_id("001", 7)[:15]}),
        ("Account", {"attributes": {"type": "Contact"}}),
        ("Contact", {"AccountId": make_id("003", 1)}),
        ("Contact", {"AccountId": EMPTY_ID}),
        ("Contact", {"AccountId": make_id("001", 9)[:15]}),
        ("Contact", {"AccountId": 5}),
    ],
    ids=repr,
)
def test_one_odd_record_among_plain_ones_is_read_as_alone(
    kind: ObjectType, odd: dict[str, Any]
) -> None:
    fields = {
        "Name": "Acme",
        "Revenue": 1.5,
        "Founded__c": "1999-12-31",
        "Note": "x",
        "Tags": None,
    }
    page = [rest(kind, n, **fields) for n in range(12)]
    page[5] = {**page[5], **odd}
    decoded = _formats._plain_records(kind, page, set())
    assert all(record is not None for i, record in enumerate(decoded) if i != 5)
    check_page(kind, page)


# -- Through the engine ---------------------------------------------------------------


def mixed_page() -> list[tuple[str, Any]]:
    """REST records of both objects: plain, odd and invalid, in one page each."""
    items: list[tuple[str, Any]] = []
    for n in range(30):
        items.append(("Account", rest("Account", n, Name=f"Acme {n}", Revenue=n * 1.5)))
        items.append(("Contact", rest("Contact", n, LastName=f"L{n}", Birthdate="1990-05-17")))
    odd: list[tuple[str, Any]] = [
        ("Account", rest("Account", 40, NAME="spelled otherwise", Name="Acme 40")),
        ("Account", {**rest("Account", 41), "ID": make_id("001", 41)}),
        ("Account", rest("Account", 42, BillingAddress={"city": "Paris"}, Name="Paris")),
        ("Account", rest("Account", 43, Revenue=float("nan"))),
        ("Account", rest("Account", 44, IsDeleted=True, MasterRecordId=make_id("001", 1))),
        ("Account", rest("Account", 45, Id="001bad")),
        ("Account", {k: v for k, v in rest("Account", 46).items() if k != "SystemModstamp"}),
        ("Account", rest("Account", 47, attributes={"type": "Contact"})),
        ("Account", MappingProxyType(rest("Account", 48, Name="a mapping, no dict"))),
        ("Lead", rest("Account", 49, Name="no object acctsync syncs")),
        ("account", rest("Account", 50, Name="an object type in lower case")),
        ("Contact", rest("Contact", 40, AccountId=make_id("003", 2))),
        ("Contact", rest("Contact", 41, AccountId=EMPTY_ID, Email="\ud83d")),
        ("Contact", rest("Contact", 42, lastname="case", LastName="twice")),
        ("Contact", rest("Contact", 43, IsDeleted=True)),
        ("Contact", rest("Contact", 44, Title=["a list"])),
        ("Contact", rest("Contact", 45, MailingAddress=None, Title="null compound")),
    ]
    # Spread among the plain ones, stamped within the same pages.
    for at, item in enumerate(odd):
        items.insert(at * 3 + 1, item)
    return items


def synced(items: list[tuple[str, Any]], page_size: int) -> tuple[Any, ...]:
    source = InMemorySource()
    for object_type, payload in items:
        source.add_raw(object_type, payload)
    store = InMemoryStore()
    report = SyncEngine(source=source, store=store, page_size=page_size, clock=lambda: T).sync()
    return (
        report.rejected,
        report.accounts_upserted,
        report.contacts_upserted,
        report.accounts_deleted,
        report.contacts_deleted,
        store.accounts(),
        store.contacts(),
        store.activities(),
        store.field_names("Account"),
        store.field_names("Contact"),
        store.watermark("Account"),
        store.watermark("Contact"),
    )


@pytest.mark.parametrize("page_size", [7, 2000])
def test_a_sync_of_mixed_pages_stores_and_rejects_as_record_by_record(page_size: int) -> None:
    items = mixed_page()
    by_pages = synced(items, page_size)
    with mock.patch.object(
        _engine, "_plain_records", lambda kind, payloads, names: [None] * len(payloads)
    ):
        one_by_one = synced(items, page_size)
    assert by_pages == one_by_one
    rejected = by_pages[0]
    assert len(rejected) >= 8, rejected  # the invalid ones, each with its reason
    assert {rejection.reason for rejection in rejected} >= {
        "attributes.type is 'Contact', expected 'Account'",
        "missing SystemModstamp",
    }
    accounts = {account.id: account for account in by_pages[5]}
    assert isinstance(accounts[make_id("001", 3)], Account)


@given(
    names=st.lists(st.text(max_size=5), unique=True, max_size=6),
    count=st.integers(0, 5),
    data=st.data(),
)
def test_field_dicts_are_each_row_s_names_and_values_in_order(
    names: list[str], count: int, data: st.DataObject
) -> None:
    columns = [data.draw(st.lists(st.integers(), min_size=count, max_size=count)) for _ in names]
    made = _formats.field_dicts(names, columns, count)
    rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    assert made == (rows if names else [{}] * count)
    assert [list(row) for row in made] == [names] * count  # the names' order
    assert len({id(row) for row in made}) == count  # each its own dict
    if names:
        with pytest.raises(ValueError, match="a column of count values"):
            _formats.field_dicts(names, [*columns[:-1], [*columns[-1], 0]], count)
