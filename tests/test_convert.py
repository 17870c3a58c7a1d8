"""make_converter(): the library's lossless JSON form of its records.

``structure(unstructure(x)) == x`` must hold exactly: same value *and* same type for
every field (a Decimal stays a Decimal with its exponent, a bool never becomes an int,
a datetime keeps its UTC offset), also after a trip through real JSON text.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from cattrs import Converter
from hypothesis import given, settings
from hypothesis import strategies as st

from acctsync import (
    RESERVED_FIELDS,
    Account,
    AccountState,
    AcctSyncError,
    ChangeDataValue,
    Contact,
    Conversion,
    Deletion,
    InvalidRecordError,
    Opportunity,
    Origin,
    Person,
    make_converter,
)
from acctsync.testing import make_id, strategies

A1 = make_id("001", 1)
A2 = make_id("001", 2)
C1 = make_id("003", 1)
O1 = make_id("006", 1)
T = datetime(2024, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
BRT = timezone(timedelta(hours=-3))
KIRITIMATI = timezone(timedelta(hours=14))
HOSTILE = "x'); DROP TABLE accounts; --"

VALUES: dict[str, Any] = {
    "decimal": Decimal("1.50"),
    "decimal_exp": Decimal("1E+2"),
    "decimal_neg_zero": Decimal("-0.00"),
    "decimal_long": Decimal("123456789012345678.123456789"),
    "date": date(2024, 1, 31),
    "date_min": date(1, 1, 1),
    "datetime_ist": datetime(2024, 1, 31, 17, 30, 0, 1, tzinfo=IST),
    "datetime_brt": datetime(2024, 1, 31, 9, 0, tzinfo=BRT),
    "datetime_plus14": datetime(2024, 2, 1, 2, 0, tzinfo=KIRITIMATI),
    "datetime_utc": T,
    "true": True,
    "false": False,
    "int": 42,
    "zero": 0,
    "big_int": 2**70,
    "negative_int": -(2**63),
    "float": 0.1,
    "float_whole": 1.0,
    "float_neg_zero": -0.0,
    "float_tiny": 5e-324,
    "float_big": 1.7976931348623157e308,
    "none": None,
    "empty": "",
    "unicode": "Zoë Ünïcødé — 日本語 😀 \u202e",
    "nul": "a\x00b",
    "looks_tagged": '{"$decimal": "1.50"}',
    "dollar": "$decimal",
    "date_text": "2024-01-31",  # a str that looks like a date stays a str
    "datetime_text": "2024-01-31T12:00:00.000+0000",
    "Drop_Table__c": HOSTILE,
    # Field names are API names (R10): none can pass for one of the lossless form's tags.
    "decimal__c": "not a tag: a field called decimal__c",
    "datetime__c": 5,
    "class__c": "dunder-ish",
}


def same_exactly(a: object, b: object) -> bool:
    """Equal and of the same type, also where Python's == is too lenient."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return str(a) == str(b)  # keeps the exponent: 1.50 is not 1.5
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b  # type: ignore[arg-type]
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()  # type: ignore[attr-defined]
    return a == b


def assert_fields_exactly(got: Any, want: Any) -> None:
    assert list(got) == list(want)
    for name in want:
        assert same_exactly(got[name], want[name]), (name, got[name], want[name])


def json_trip(converter: Converter, value: object, cls: type) -> Any:
    raw = converter.unstructure(value)
    text = json.dumps(raw, allow_nan=False)  # JSON-ready: no Decimal, date, NaN...
    return converter.structure(json.loads(text), cls)


def test_same_exactly_is_strict() -> None:
    assert not same_exactly(Decimal("1.50"), Decimal("1.5"))
    assert not same_exactly(1, True)
    assert not same_exactly(1, 1.0)
    assert not same_exactly(0.0, -0.0)
    assert not same_exactly(
        datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 5, 30, tzinfo=IST)
    )
    assert not same_exactly(date(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("name", list(VALUES), ids=repr)
def test_each_field_value_round_trips_exactly(name: str) -> None:
    account = Account(id=A1, fields={name: VALUES[name]}, system_modstamp=T)
    converter = make_converter()
    back = json_trip(converter, account, Account)
    assert back == account
    assert_fields_exactly(back.fields, account.fields)
    # and without JSON text in between
    direct = converter.structure(converter.unstructure(account), Account)
    assert_fields_exactly(direct.fields, account.fields)


def test_all_values_together_round_trip_exactly() -> None:
    account = Account(id=A1, fields=VALUES, system_modstamp=T)
    back = json_trip(make_converter(), account, Account)
    assert back == account
    assert_fields_exactly(back.fields, VALUES)
    assert back.id == A1
    assert back.system_modstamp == T
    assert back.system_modstamp.utcoffset() == timedelta(0)


def test_decimal_keeps_its_exponent() -> None:
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields={"a": Decimal("1.50")}, system_modstamp=T))
    assert raw["fields"]["a"] == {"$decimal": "1.50"}
    back = converter.structure(raw, Account)
    assert str(back.fields["a"]) == "1.50"


def test_unstructured_form_is_plain_json() -> None:
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields=VALUES, system_modstamp=T))
    assert json.loads(json.dumps(raw, allow_nan=False)) == raw


@pytest.mark.parametrize(
    "record",
    [
        Contact(id=C1, account_id=A1, fields=VALUES, system_modstamp=T),
        Contact(id=C1, account_id=None, fields={}, system_modstamp=T),
        Deletion(object_type="Account", id=A1, deleted_at=T),
        Deletion(object_type="Account", id=A1, deleted_at=T, master_record_id=A2),
        Opportunity(id=O1, account_id=A1, contact_id=C1, fields=VALUES, system_modstamp=T),
        Opportunity(id=O1, account_id=A1, fields={}, system_modstamp=T),
        Person(id=HOSTILE, fields=VALUES),
        Person(id="p-1", fields={}, contact_id=C1),
        Conversion(person_id=HOSTILE, account_id=A1, contact_id=C1, opportunity_id=O1),
    ],
    ids=lambda r: type(r).__name__,
)
def test_other_records_round_trip(record: Any) -> None:
    back = json_trip(make_converter(), record, type(record))
    assert back == record
    if hasattr(record, "fields"):
        assert_fields_exactly(back.fields, record.fields)


def test_account_state_round_trips_with_local_edits() -> None:
    state = AccountState(
        upstream=Account(id=A1, fields=VALUES, system_modstamp=T),
        local_edits={"Industry": "Retail", "Amount": Decimal("2.0"), "Flag": False},
        local_revision=3,
    )
    back = json_trip(make_converter(), state, AccountState)
    assert back == state
    assert_fields_exactly(back.upstream.fields, VALUES)
    assert_fields_exactly(back.local_edits, state.local_edits)
    assert back.local_revision == 3


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Decimal("1.50"), Decimal("1.5")),
        (1, True),
        (None, 0),
        (date(2024, 1, 31), datetime(2024, 1, 31, tzinfo=IST)),
        ("", HOSTILE),
        (1.0, 1),
    ],
    ids=repr,
)
def test_change_data_value_round_trips(old: Any, new: Any) -> None:
    entry = ChangeDataValue(
        id=f"salesforce:{A1}:1:{C1}:{HOSTILE}",
        contact_id=C1,
        account_id=A1,
        field=HOSTILE,
        old_value=old,
        new_value=new,
        origin=Origin.SALESFORCE,
        occurred_at=datetime(2024, 1, 31, 17, 30, tzinfo=IST),
    )
    converter = make_converter()
    raw = converter.unstructure(entry)
    assert raw["origin"] == "salesforce"
    back = json_trip(converter, entry, ChangeDataValue)
    assert back == entry
    assert same_exactly(back.old_value, old)
    assert same_exactly(back.new_value, new)
    assert back.origin is Origin.SALESFORCE
    assert back.occurred_at.utcoffset() == IST.utcoffset(None)


# --- Malformed input ------------------------------------------------------------------


def leaves(error: BaseException) -> list[BaseException]:
    """The innermost exceptions of a (possibly nested) exception group."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def structure_error(converter: Converter, raw: object, cls: type) -> BaseException:
    """Structure ``raw``, which must fail; return the error raised."""
    with pytest.raises(Exception) as info:  # noqa: PT011 - inspected below
        converter.structure(raw, cls)
    return info.value


def assert_library_error(error: BaseException) -> None:
    """The error is the library's InvalidRecordError, or a cattrs group of nothing else.

    cattrs (detailed validation) wraps errors raised while structuring an attribute in
    a ClassValidationError, an ExceptionGroup; that wrapper is acceptable, but what it
    wraps must be the library's own error with a reason, never a bare built-in error.
    """
    found = leaves(error)
    assert found
    for leaf in found:
        assert isinstance(leaf, InvalidRecordError), f"{type(leaf).__name__}: {leaf}"
        assert isinstance(leaf, AcctSyncError)
        assert leaf.reason


MALFORMED_TAGGED = [
    {"$decimal": "abc"},
    {"$decimal": ""},
    {"$decimal": "1,5"},
    {"$decimal": 1.5},  # the text must be a string
    {"$decimal": None},
    {"$decimal": "NaN"},
    {"$decimal": "Infinity"},
    {"$decimal": "sNaN"},
    {"$date": "2024-13-01"},
    {"$date": "31/01/2024"},
    {"$date": 20240131},
    {"$datetime": "nope"},
    {"$datetime": "2024-01-31T12:00:00"},  # naive
    {"$datetime": ["2024-01-31T12:00:00+00:00"]},
    {"$unknown": "1"},
    {"decimal": "1.50"},
    {"$decimal": "1.50", "$date": "2024-01-31"},  # two tags
    {},
    [],
    ["$decimal", "1.50"],
    {"$decimal": {"$decimal": "1"}},
]


@pytest.mark.parametrize("bad", MALFORMED_TAGGED, ids=repr)
def test_malformed_tagged_field_value_is_a_clear_library_error(bad: object) -> None:
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields={"Name": "ok"}, system_modstamp=T))
    raw["fields"]["Bad"] = bad
    error = structure_error(converter, raw, Account)
    assert_library_error(error)


# A ChangeDataValue does not validate its values (time zone, finiteness) the way a record
# validates its fields, so only the structurally malformed values apply to it.
MALFORMED_TAG_SHAPE = [
    bad
    for bad in MALFORMED_TAGGED
    if bad
    not in (
        {"$decimal": "NaN"},
        {"$decimal": "Infinity"},
        {"$decimal": "sNaN"},
        {"$datetime": "2024-01-31T12:00:00"},
    )
]


@pytest.mark.parametrize("bad", MALFORMED_TAG_SHAPE, ids=repr)
def test_malformed_tagged_value_in_an_activity_is_a_clear_library_error(bad: object) -> None:
    converter = make_converter()
    entry = ChangeDataValue(
        id="x",
        contact_id=C1,
        account_id=A1,
        field="f",
        old_value=None,
        new_value=1,
        origin=Origin.LOCAL,
        occurred_at=T,
    )
    raw = converter.unstructure(entry)
    raw["new_value"] = bad
    error = structure_error(converter, raw, ChangeDataValue)
    assert_library_error(error)


@pytest.mark.parametrize(
    ("attribute", "bad"),
    [("id", "not-an-id"), ("id", C1), ("system_modstamp", "2024-01-31T12:00:00")],
)
def test_invalid_record_data_is_a_clear_library_error(attribute: str, bad: object) -> None:
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields={}, system_modstamp=T))
    raw[attribute] = bad
    error = structure_error(converter, raw, Account)
    assert_library_error(error)


@pytest.mark.parametrize("bad", ["yesterday", "", 1706702400, None], ids=repr)
def test_unparseable_timestamp_is_a_clear_library_error(bad: object) -> None:
    # R7: errors are the library's own types. A stored record whose SystemModstamp is not
    # an ISO datetime at all is as malformed as a bad tagged value.
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields={}, system_modstamp=T))
    raw["system_modstamp"] = bad
    error = structure_error(converter, raw, Account)
    assert_library_error(error)


@pytest.mark.parametrize("bad", [None, "text", ["Name", "x"], 5], ids=repr)
def test_fields_that_are_not_an_object_do_not_structure(bad: object) -> None:
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields={}, system_modstamp=T))
    raw["fields"] = bad
    with pytest.raises(Exception):  # noqa: PT011, B017 - any clear error; never a bad record
        converter.structure(raw, Account)


def test_reserved_field_names_are_rejected_when_structuring() -> None:
    converter = make_converter()
    raw = converter.unstructure(Account(id=A1, fields={}, system_modstamp=T))
    for name in sorted(RESERVED_FIELDS):
        raw["fields"] = {name: "x"}
        assert_library_error(structure_error(converter, raw, Account))


# --- Independence -----------------------------------------------------------------------


def test_each_call_returns_a_new_converter() -> None:
    one, two = make_converter(), make_converter()
    assert isinstance(one, Converter)
    assert one is not two


def test_extending_one_converter_does_not_affect_another() -> None:
    one = make_converter()
    two = make_converter()
    account = Account(id=A1, fields={"a": Decimal("1.50")}, system_modstamp=T)
    expected = two.unstructure(account)

    one.register_unstructure_hook(Account, lambda _: "hijacked")
    one.register_unstructure_hook(Origin, lambda _: "hijacked")
    one.register_unstructure_hook(datetime, lambda _: "hijacked")
    one.register_structure_hook(Account, lambda *_: "hijacked")
    assert one.unstructure(account) == "hijacked"

    three = make_converter()  # made after the changes
    for converter in (two, three):
        assert converter.unstructure(account) == expected
        assert converter.unstructure(Origin.LOCAL) == "local"
        assert converter.structure(expected, Account) == account


# --- Property -------------------------------------------------------------------------

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.text(),
    st.dates(),
    st.datetimes(timezones=offsets),
)
field_names = strategies.field_names()


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(field_names, field_values, max_size=8),
    # Not within a day of datetime.min/max: test_records covers stamps outside UTC's range.
    st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=offsets),
)
def test_any_account_round_trips_exactly(fields: dict[str, Any], stamp: datetime) -> None:
    try:
        account = Account(id=A1, fields=fields, system_modstamp=stamp)
    except InvalidRecordError:
        return  # not a valid account (a stamp that cannot be expressed in UTC)
    back = json_trip(make_converter(), account, Account)
    assert back == account
    assert_fields_exactly(back.fields, account.fields)


@pytest.mark.parametrize(
    ("raw", "cls"),
    [
        ({}, Account),
        ({"id": make_id("001", 1)}, Account),
        ({"upstream": {"id": 1}}, AccountState),
        (["not", "a", "mapping"], Account),
        ({"id": "e", "contact_id": "c", "account_id": "a", "field": "f", "old_value": None,
          "new_value": None, "origin": "bogus", "occurred_at": "2024-01-01T00:00:00+00:00"},
         ChangeDataValue),
    ],
)  # fmt: skip
def test_structure_of_a_malformed_record_is_one_invalid_record_error(raw: Any, cls: type) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        make_converter().structure(raw, cls)
    assert cls.__name__ in caught.value.reason
