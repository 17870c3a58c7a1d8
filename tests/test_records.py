"""Records validate themselves at construction (rules R6, R7 and the data model in SPEC.md)."""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acctsync import (
    RESERVED_FIELDS,
    UNCHANGED,
    Account,
    AcctSyncError,
    Contact,
    Deletion,
    InvalidRecordError,
    Opportunity,
    PartialUpdate,
    Person,
    Refetch,
)
from acctsync._records import checked_accounts, checked_contacts, same_value
from acctsync.testing import make_id, strategies

A1 = make_id("001", 1)
A2 = make_id("001", 2)
C1 = make_id("003", 1)
C2 = make_id("003", 2)
O1 = make_id("006", 1)
T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))
NEW_YORK = timezone(timedelta(hours=-5))
NAIVE = datetime(2024, 1, 31, 12, 0)

# The published pair also used in test_ids: 001A0000006Vm9r -> 001A0000006Vm9rIAC.
A15 = "001A0000006Vm9r"
A18 = "001A0000006Vm9rIAC"


def account(**kw: object) -> Account:
    args: dict[str, object] = {"id": A1, "fields": {}, "system_modstamp": T}
    args.update(kw)
    return Account(**args)  # type: ignore[arg-type]


def contact(**kw: object) -> Contact:
    args: dict[str, object] = {"id": C1, "account_id": A1, "fields": {}, "system_modstamp": T}
    args.update(kw)
    return Contact(**args)  # type: ignore[arg-type]


def opportunity(**kw: object) -> Opportunity:
    args: dict[str, object] = {
        "id": O1,
        "account_id": A1,
        "contact_id": C1,
        "fields": {},
        "system_modstamp": T,
    }
    args.update(kw)
    return Opportunity(**args)  # type: ignore[arg-type]


def person(**kw: object) -> Person:
    args: dict[str, object] = {"id": "p-1", "fields": {}}
    args.update(kw)
    return Person(**args)  # type: ignore[arg-type]


def deletion(**kw: object) -> Deletion:
    args: dict[str, object] = {"object_type": "Account", "id": A1, "deleted_at": T}
    args.update(kw)
    return Deletion(**args)  # type: ignore[arg-type]


def partial(**kw: object) -> PartialUpdate:
    args: dict[str, object] = {
        "object_type": "Account",
        "id": A1,
        "fields": {},
        "system_modstamp": T,
    }
    args.update(kw)
    return PartialUpdate(**args)  # type: ignore[arg-type]


def refetch(**kw: object) -> Refetch:
    args: dict[str, object] = {"object_type": "Account", "ids": (A1,), "reason": "GAP_UPDATE"}
    args.update(kw)
    return Refetch(**args)  # type: ignore[arg-type]


# Builders of the records that carry a ``fields`` mapping, for the field-value tests.
FIELD_RECORDS = {
    "Account": account,
    "Contact": contact,
    "Opportunity": opportunity,
    "Person": person,
    "PartialUpdate": partial,
}


# --- IDs -----------------------------------------------------------------------------


def test_15_char_ids_are_stored_in_18_char_form() -> None:
    assert account(id=A15).id == A18
    assert contact(account_id=A15).account_id == A18
    assert opportunity(account_id=A15).account_id == A18
    assert deletion(id=A15).id == A18
    assert deletion(id=A1, master_record_id=A15).master_record_id == A18
    assert partial(id=A15).id == A18
    assert refetch(ids=[A15, A2]).ids == (A18, A2)
    c15 = C1[:15]
    assert contact(id=c15).id == C1
    assert opportunity(contact_id=c15).contact_id == C1
    assert person(contact_id=c15).contact_id == C1
    assert opportunity(id=O1[:15]).id == O1


@pytest.mark.parametrize("bad", ["", "001", "001xx", A1 + "x", A1[:-1] + "Z", None, 1, b"x"])
def test_bad_ids_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidRecordError):
        account(id=bad)
    with pytest.raises(InvalidRecordError):
        deletion(id=bad)
    with pytest.raises(InvalidRecordError):
        partial(id=bad)


@pytest.mark.parametrize(
    ("build", "kwargs"),
    [
        (account, {"id": C1}),  # an Account with a Contact id
        (account, {"id": O1}),
        (contact, {"id": A1}),
        (contact, {"account_id": C1}),  # a contact's account must be an account
        (contact, {"account_id": C2}),
        (opportunity, {"id": A1}),
        (opportunity, {"account_id": C1}),
        (opportunity, {"contact_id": A1}),
        (person, {"contact_id": A1}),
        (deletion, {"object_type": "Account", "id": C1}),
        (deletion, {"object_type": "Contact", "id": A1}),
        (deletion, {"object_type": "Account", "id": A1, "master_record_id": C1}),
        (deletion, {"object_type": "Contact", "id": C1, "master_record_id": A1}),
        (partial, {"object_type": "Account", "id": C1}),
        (partial, {"object_type": "Contact", "id": A1}),
        (partial, {"object_type": "Contact", "id": C1, "account_id": C2}),
        (refetch, {"object_type": "Account", "ids": (A1, C1)}),
        (refetch, {"object_type": "Contact", "ids": (A1,)}),
    ],
)
def test_wrong_key_prefix_is_rejected(build: object, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRecordError, match="prefix"):
        build(**kwargs)  # type: ignore[operator]


def test_opportunity_needs_an_account() -> None:
    with pytest.raises(InvalidRecordError):
        opportunity(account_id=None)
    assert opportunity(contact_id=None).contact_id is None


def test_contact_without_account_is_allowed() -> None:
    assert contact(account_id=None).account_id is None
    assert Contact(id=C1, system_modstamp=T).account_id is None


@pytest.mark.parametrize("bad", ["", "   ", "\n", None, 1, b"p-1"])
def test_person_id_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(InvalidRecordError):
        person(id=bad)


def test_person_ids_are_free_form() -> None:
    assert person(id="lead 42 / Marketo").id == "lead 42 / Marketo"
    assert person(id="Müller ✓").id == "Müller ✓"


def test_a_person_id_no_store_could_keep_is_refused() -> None:
    # A lone surrogate: every store takes it or none (R10); SQL would fail on it late.
    with pytest.raises(InvalidRecordError, match="lone surrogate at position 5"):
        person(id="lead-\ud800")


@pytest.mark.parametrize("bad", ["Lead", "account", "", None, 1, "Opportunity"])
def test_unknown_object_type_is_rejected(bad: object) -> None:
    with pytest.raises(InvalidRecordError, match="object type"):
        deletion(object_type=bad)
    with pytest.raises(InvalidRecordError, match="object type"):
        partial(object_type=bad)
    with pytest.raises(InvalidRecordError, match="object type"):
        refetch(object_type=bad, ids=())


def test_a_record_cannot_be_merged_into_itself() -> None:
    with pytest.raises(InvalidRecordError, match="itself"):
        deletion(id=A1, master_record_id=A1)
    with pytest.raises(InvalidRecordError, match="itself"):
        deletion(id=A18, master_record_id=A15)  # the same ID in its two forms


def test_deletion_and_merge() -> None:
    plain = deletion()
    assert plain.master_record_id is None
    assert plain.system_modstamp == T
    merged = deletion(object_type="Contact", id=C1, master_record_id=C2[:15])
    assert merged.master_record_id == C2


def test_partial_update_account_id() -> None:
    assert partial().account_id is UNCHANGED
    assert partial(object_type="Contact", id=C1).account_id is UNCHANGED
    assert partial(object_type="Contact", id=C1, account_id=None).account_id is None
    assert partial(object_type="Contact", id=C1, account_id=A15).account_id == A18
    with pytest.raises(InvalidRecordError, match="only a contact"):
        partial(object_type="Account", id=A1, account_id=A2)
    with pytest.raises(InvalidRecordError, match="only a contact"):
        partial(object_type="Account", id=A1, account_id=None)


def test_refetch_of_the_whole_object_has_no_ids() -> None:
    whole = refetch(ids=())
    assert whole.ids == ()
    assert Refetch(object_type="Contact", reason="GAP_OVERFLOW").ids == ()
    assert refetch(ids=iter([A1, A2])).ids == (A1, A2)


# --- Timestamps ----------------------------------------------------------------------


TIMESTAMPED = [
    (account, "system_modstamp"),
    (contact, "system_modstamp"),
    (opportunity, "system_modstamp"),
    (deletion, "deleted_at"),
    (partial, "system_modstamp"),
]


@pytest.mark.parametrize(("build", "attribute"), TIMESTAMPED)
def test_naive_timestamps_are_rejected(build: object, attribute: str) -> None:
    with pytest.raises(InvalidRecordError, match="naive"):
        build(**{attribute: NAIVE})  # type: ignore[operator]


@pytest.mark.parametrize(("build", "attribute"), TIMESTAMPED)
@pytest.mark.parametrize(
    "bad", ["2024-01-31T12:00:00.000+0000", date(2024, 1, 31), 1706702400, None]
)
def test_non_datetime_timestamps_are_rejected(build: object, attribute: str, bad: object) -> None:
    with pytest.raises(InvalidRecordError):
        build(**{attribute: bad})  # type: ignore[operator]


@pytest.mark.parametrize(("build", "attribute"), TIMESTAMPED)
@pytest.mark.parametrize("zone", [PARIS, NEW_YORK, timezone(timedelta(hours=5, minutes=45)), UTC])
def test_timestamps_are_kept_in_utc(build: object, attribute: str, zone: timezone) -> None:
    local = T.astimezone(zone)
    record = build(**{attribute: local})  # type: ignore[operator]
    stamp = getattr(record, attribute)
    assert stamp == T
    assert stamp.utcoffset() == timedelta(0)
    assert stamp.tzinfo is UTC
    assert stamp.replace(tzinfo=None) == datetime(2024, 1, 31, 12, 0)


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(1, 1, 1, 0, 0, tzinfo=PARIS),  # in UTC this is before year 1
        datetime(9999, 12, 31, 23, 0, tzinfo=NEW_YORK),  # in UTC this is after year 9999
    ],
)
def test_timestamp_that_cannot_be_expressed_in_utc_is_an_invalid_record(stamp: datetime) -> None:
    # R7: the library's own error, not the OverflowError of datetime.astimezone.
    with pytest.raises(InvalidRecordError):
        account(system_modstamp=stamp)
    with pytest.raises(InvalidRecordError):
        deletion(deleted_at=stamp)


# --- Field values --------------------------------------------------------------------


GOOD_VALUES: list[object] = [
    "Acme",
    "",
    "ü😀 \x00 ' \"; DROP TABLE accounts; --",
    0,
    -(2**63),
    2**70,
    1.5,
    -0.0,
    1e308,
    Decimal("1.50"),
    Decimal("-0"),
    True,
    False,
    date(2024, 1, 31),
    datetime(2024, 1, 31, 12, tzinfo=PARIS),
    None,
]


@pytest.mark.parametrize("kind", FIELD_RECORDS)
@pytest.mark.parametrize("value", GOOD_VALUES, ids=repr)
def test_supported_field_values_are_kept_with_their_type(kind: str, value: object) -> None:
    record = FIELD_RECORDS[kind](fields={"F": value})
    kept = record.fields["F"]
    assert type(kept) is type(value)
    if isinstance(value, float) and math.copysign(1, value) < 0:
        assert math.copysign(1, kept) < 0
    assert kept == value or kept is value


def test_field_datetimes_keep_their_offset_and_instant() -> None:
    value = datetime(2024, 1, 31, 13, tzinfo=PARIS)
    kept = account(fields={"F": value}).fields["F"]
    assert kept == value
    assert kept.utcoffset() is not None


def test_bool_and_int_are_kept_distinct() -> None:
    record = account(fields={"b": True, "i": 1, "z": 0, "f": False})
    assert record.fields["b"] is True
    assert type(record.fields["i"]) is int
    assert type(record.fields["z"]) is int
    assert record.fields["f"] is False


NON_FINITE = [
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("NaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Decimal("sNaN"),  # a signalling NaN: not a number either
]


@pytest.mark.parametrize("kind", FIELD_RECORDS)
@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
def test_non_finite_numbers_are_rejected(kind: str, value: object) -> None:
    with pytest.raises(InvalidRecordError) as info:
        FIELD_RECORDS[kind](fields={"Amount": value})
    assert info.value.field == "Amount"


@pytest.mark.parametrize(
    "value", [Decimal("1E+400"), Decimal("-1E+400"), Decimal("1E-400"), Decimal("9" * 400)]
)
def test_finite_decimals_beyond_float_range_are_accepted(value: Decimal) -> None:
    # FieldValue includes Decimal; these are finite numbers, so "not a finite number" is wrong.
    assert account(fields={"Amount": value}).fields["Amount"] == value


class _Thing:
    pass


UNSUPPORTED = [
    [1, 2],
    [],
    {"City": "Paris"},
    {},
    (1,),
    {1, 2},
    frozenset(),
    b"bytes",
    bytearray(b"x"),
    1j,
    _Thing(),
    object,
    MappingProxyType({"a": 1}),
    timedelta(seconds=1),
]


@pytest.mark.parametrize("kind", FIELD_RECORDS)
@pytest.mark.parametrize("value", UNSUPPORTED, ids=repr)
def test_unsupported_field_value_types_are_rejected(kind: str, value: object) -> None:
    with pytest.raises(InvalidRecordError) as info:
        FIELD_RECORDS[kind](fields={"F": value})
    assert info.value.field == "F"
    assert info.value.reason


@pytest.mark.parametrize("kind", FIELD_RECORDS)
def test_naive_datetime_field_values_are_rejected(kind: str) -> None:
    with pytest.raises(InvalidRecordError, match="timezone") as info:
        FIELD_RECORDS[kind](fields={"ClosedAt": NAIVE})
    assert info.value.field == "ClosedAt"


@pytest.mark.parametrize("kind", FIELD_RECORDS)
@pytest.mark.parametrize("name", sorted(RESERVED_FIELDS))
def test_reserved_field_names_are_rejected(kind: str, name: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        FIELD_RECORDS[kind](fields={name: "x"})
    assert info.value.field == name


def test_reserved_names_cover_the_record_attributes() -> None:
    assert {"Id", "AccountId", "SystemModstamp", "IsDeleted", "MasterRecordId"} <= set(
        RESERVED_FIELDS
    )


@pytest.mark.parametrize("kind", FIELD_RECORDS)
@pytest.mark.parametrize("name", ["", 1, None, ("a",)], ids=repr)
def test_field_names_must_be_non_empty_strings(kind: str, name: object) -> None:
    with pytest.raises(InvalidRecordError):
        FIELD_RECORDS[kind](fields={name: "x"})


@pytest.mark.parametrize("kind", FIELD_RECORDS)
@pytest.mark.parametrize("bad", [[("Name", "x")], "Name", 1, None], ids=repr)
def test_fields_must_be_a_mapping(kind: str, bad: object) -> None:
    with pytest.raises(InvalidRecordError):
        FIELD_RECORDS[kind](fields=bad)


def test_fields_default_to_empty() -> None:
    assert dict(Account(id=A1, system_modstamp=T).fields) == {}
    assert dict(Person(id="p").fields) == {}


def test_any_mapping_is_accepted_as_fields() -> None:
    record = account(fields=OrderedDict([("a", 1)]))
    assert dict(record.fields) == {"a": 1}
    assert dict(account(fields=MappingProxyType({"a": 1})).fields) == {"a": 1}


# --- Immutability --------------------------------------------------------------------


@pytest.mark.parametrize("kind", FIELD_RECORDS)
def test_fields_mapping_cannot_be_mutated(kind: str) -> None:
    record = FIELD_RECORDS[kind](fields={"Name": "Acme"})
    with pytest.raises(TypeError):
        record.fields["Name"] = "Evil"  # type: ignore[index]
    with pytest.raises(TypeError):
        record.fields["New"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        del record.fields["Name"]  # type: ignore[attr-defined]
    assert not hasattr(record.fields, "update")
    assert not hasattr(record.fields, "pop")
    assert dict(record.fields) == {"Name": "Acme"}


@pytest.mark.parametrize("kind", FIELD_RECORDS)
def test_callers_dict_does_not_leak_into_the_record(kind: str) -> None:
    given_fields: dict[str, object] = {"Name": "Acme"}
    record = FIELD_RECORDS[kind](fields=given_fields)
    given_fields["Name"] = "Evil"
    given_fields["Injected"] = [1, 2]  # not even a valid value
    del given_fields["Name"]
    assert dict(record.fields) == {"Name": "Acme"}


def test_mapping_proxy_input_does_not_leak_either() -> None:
    backing: dict[str, object] = {"Name": "Acme"}
    record = account(fields=MappingProxyType(backing))
    backing["Name"] = "Evil"
    assert record.fields["Name"] == "Acme"


@pytest.mark.parametrize(
    ("record", "attribute"),
    [
        (account(), "id"),
        (account(), "fields"),
        (account(), "system_modstamp"),
        (contact(), "account_id"),
        (opportunity(), "contact_id"),
        (person(), "id"),
        (deletion(), "master_record_id"),
        (partial(), "fields"),
        (refetch(), "ids"),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, str) else x,
)
def test_records_are_frozen(record: object, attribute: str) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(record, attribute, None)
    with pytest.raises((attrs.exceptions.FrozenInstanceError, AttributeError)):
        record.new_attribute = 1  # type: ignore[attr-defined]


def test_records_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Account(A1, {}, T)  # type: ignore[misc]


# --- Equality and hashing ------------------------------------------------------------


def _twins() -> list[tuple[object, object]]:
    return [
        (account(fields={"a": 1, "b": "x"}), account(id=A1[:15], fields={"b": "x", "a": 1})),
        (account(system_modstamp=T), account(system_modstamp=T.astimezone(PARIS))),
        (contact(fields={"Email": "a@b.c"}), contact(fields={"Email": "a@b.c"})),
        (opportunity(fields={"Amount": Decimal("1.5")}), opportunity(fields={"Amount": 1.5})),
        (person(fields={"LastName": "Doe"}), person(fields={"LastName": "Doe"})),
        (deletion(master_record_id=A2), deletion(master_record_id=A2[:15])),
        (partial(fields={"x": None}), partial(fields={"x": None})),
        (refetch(ids=[A1, A2]), refetch(ids=(A1[:15], A2))),
    ]


@pytest.mark.parametrize(("one", "two"), _twins(), ids=lambda x: type(x).__name__)
def test_records_are_equal_by_value_and_hash_alike(one: object, two: object) -> None:
    assert one is not two
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two}) == 1


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (account(fields={"a": 1}), account(fields={"a": 2})),
        (account(fields={"a": 1}), account(fields={"b": 1})),
        (account(fields={"a": None}), account(fields={})),
        (account(fields={"d": date(2024, 1, 31)}), account(fields={"d": "2024-01-31"})),
        (account(), account(id=A2)),
        (account(), account(system_modstamp=T + timedelta(microseconds=1))),
        (contact(), contact(account_id=A2)),
        (contact(), contact(account_id=None)),
        (deletion(), deletion(master_record_id=A2)),
        (deletion(), deletion(object_type="Contact", id=C1)),
        (
            partial(object_type="Contact", id=C1),
            partial(object_type="Contact", id=C1, account_id=None),
        ),
        (refetch(), refetch(ids=())),
        (refetch(), refetch(reason="GAP_CREATE")),
        (person(), person(contact_id=C1)),
    ],
    ids=lambda x: type(x).__name__,
)
def test_records_with_different_values_are_not_equal(one: object, two: object) -> None:
    assert one != two


def test_an_account_is_not_equal_to_a_contact_or_a_dict() -> None:
    assert account() != contact()
    assert account() != {"id": A1}


def test_records_with_unhashable_looking_fields_are_hashable() -> None:
    # The fields mapping is a proxy; hashing the record must still work.
    assert isinstance(hash(account(fields={"a": 1})), int)
    assert isinstance(hash(person(fields={"a": 1})), int)
    assert isinstance(hash(partial(fields={"a": 1})), int)


# --- Errors carry where and why ------------------------------------------------------


def test_field_error_names_record_and_field() -> None:
    with pytest.raises(InvalidRecordError) as info:
        account(id=A15, fields={"Name": "ok", "Revenue": float("nan")})
    error = info.value
    assert error.record_id == A18
    assert error.field == "Revenue"
    assert "finite" in error.reason
    assert A18 in str(error)
    assert "Revenue" in str(error)
    assert isinstance(error, ValueError)
    assert isinstance(error, AcctSyncError)


def test_id_error_has_a_reason_and_no_record_id() -> None:
    with pytest.raises(InvalidRecordError) as info:
        account(id="bogus")
    assert info.value.reason
    assert info.value.record_id is None
    assert info.value.field is None
    assert str(info.value) == info.value.reason


def test_invalid_record_error_attributes() -> None:
    error = InvalidRecordError("too long", record_id=A1, field="Name")
    assert (error.reason, error.record_id, error.field) == ("too long", A1, "Name")
    assert "too long" in str(error)
    bare = InvalidRecordError("bad")
    assert (bare.reason, bare.record_id, bare.field) == ("bad", None, None)
    assert str(bare) == "bad"


# --- same_value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1),
        (1, 1.0),
        (1.0, 1),
        (1, Decimal(1)),
        (Decimal("1.50"), Decimal("1.5")),
        (Decimal("1.5"), 1.5),
        # REST's 1234.56 read as a float, Bulk's as a Decimal: Salesforce wrote one text.
        (1234.56, Decimal("1234.56")),
        (0.1, Decimal("0.100")),
        (1e16, Decimal("1E+16")),
        (0, -0.0),
        (True, True),
        (False, False),
        (None, None),
        ("a", "a"),
        (date(2024, 1, 31), date(2024, 1, 31)),
        (T, T.astimezone(PARIS)),  # the same instant
    ],
    ids=repr,
)
def test_same_value_true(a: object, b: object) -> None:
    assert same_value(a, b)  # type: ignore[arg-type]
    assert same_value(b, a)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, True),
        (0, False),
        (1.0, True),
        (Decimal(1), True),
        (0, None),
        ("", None),
        (False, None),
        (1, 2),
        (0.1, Decimal("0.10000000000000001")),
        (1234.56, Decimal("1234.5600001")),
        (1, "1"),
        ("True", True),
        (date(2024, 1, 31), datetime(2024, 1, 31, tzinfo=UTC)),
        (date(2024, 1, 31), "2024-01-31"),
        (T, T + timedelta(microseconds=1)),
        ("a", "A"),
    ],
    ids=repr,
)
def test_same_value_false(a: object, b: object) -> None:
    assert not same_value(a, b)  # type: ignore[arg-type]
    assert not same_value(b, a)  # type: ignore[arg-type]


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(),
    st.dates(),
    st.datetimes(timezones=st.just(UTC)),
)


@given(field_values)
def test_same_value_is_reflexive(value: object) -> None:
    assert same_value(value, value)  # type: ignore[arg-type]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_is_the_decimal_of_the_text_it_was_read_from(value: float) -> None:
    text = repr(value)  # the shortest text that reads back as the float
    assert same_value(value, Decimal(text))
    assert same_value(float(text), Decimal(text))


@given(field_values, field_values)
def test_same_value_is_symmetric_and_never_confuses_bool_with_numbers(
    a: object, b: object
) -> None:
    result = same_value(a, b)  # type: ignore[arg-type]
    assert result == same_value(b, a)  # type: ignore[arg-type]
    if result:
        assert isinstance(a, bool) == isinstance(b, bool)
        assert isinstance(a, datetime) == isinstance(b, datetime)
        assert (a is None) == (b is None)


@given(strategies.field_maps(values=field_values, max_size=10))
def test_any_valid_fields_make_a_record_with_the_same_values(fields: dict[str, object]) -> None:
    record = account(fields=fields)
    assert set(record.fields) == set(fields)
    for name, value in fields.items():
        assert type(record.fields[name]) is type(value)
        assert same_value(record.fields[name], value)  # type: ignore[arg-type]
    assert record == account(fields=dict(fields))
    assert hash(record) == hash(account(fields=dict(fields)))


def test_records_built_in_batches_equal_records_built_one_by_one() -> None:
    accounts = checked_accounts([A1, A2], [{"Name": "Acme"}, {}], [T, T + timedelta(seconds=1)])
    assert accounts == [
        Account(id=A1, fields={"Name": "Acme"}, system_modstamp=T),
        Account(id=A2, fields={}, system_modstamp=T + timedelta(seconds=1)),
    ]
    contacts = checked_contacts([C1, C2], [A1, None], [{"LastName": "Ng"}, {}], [T, T])
    assert contacts == [
        Contact(id=C1, account_id=A1, fields={"LastName": "Ng"}, system_modstamp=T),
        Contact(id=C2, account_id=None, fields={}, system_modstamp=T),
    ]
    assert all(c.sequence is None for c in contacts)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        contacts[0].id = C2  # type: ignore[misc]
    with pytest.raises(TypeError):
        contacts[0].fields["LastName"] = "Other"  # type: ignore[index]


def test_records_built_in_batches_need_a_value_of_each_attribute_for_each() -> None:
    with pytest.raises(ValueError, match="one value of each attribute"):
        checked_accounts([A1, A2], [{}], [T, T])
    with pytest.raises(ValueError, match="one value of each attribute"):
        checked_contacts([C1], [A1], [{}], [])
