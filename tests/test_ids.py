"""Rule R6: Salesforce IDs are 15 case-sensitive characters or 18 with a checksum suffix.

The known pairs below are published examples (Salesforce community answers, blog posts
explaining CASESAFEID, and other libraries' test suites), each re-derived by hand in the
comment next to it, so the tests do not only check the implementation against itself.
"""

from __future__ import annotations

import string
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acctsync import AcctSyncError, InvalidRecordError, _formats, normalize_id
from acctsync._formats import normalized_ids
from acctsync.testing.strategies import salesforce_ids

ALNUM = string.ascii_letters + string.digits
SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

# (15-character ID, 18-character ID). Each chunk of five gives one suffix character:
# bit i is set when character i of the chunk is an upper-case letter A-Z.
KNOWN_PAIRS = [
    # 001A0: A@3 = 8 -> I | 00000 -> A | 6Vm9r: V@1 = 2 -> C
    ("001A0000006Vm9r", "001A0000006Vm9rIAC"),
    # 003A0 -> I | 00000 -> A | 5QB3A: Q@1 B@2 A@4 = 2+4+16 = 22 -> W
    ("003A0000005QB3A", "003A0000005QB3AIAW"),
    # 003A0 -> I | 00000 -> A | 8qb1s: no capitals -> A
    ("003A0000008qb1s", "003A0000008qb1sIAA"),
    # a0D30: D@2 = 4 -> E | 00000 -> A | 1n7Pi: P@3 = 8 -> I
    ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
    # 00190 -> A | 00000 -> A | B98de: B@0 = 1 -> B
    ("0019000000B98de", "0019000000B98deAAB"),
    # 500x0 -> A | 00000 -> A | 003TR: T@3 R@4 = 8+16 = 24 -> Y
    ("500x000000003TR", "500x000000003TRAAY"),
    # 006E2: E@3 = 8 -> I | 00000 -> A | aIb6Z: I@1 Z@4 = 2+16 = 18 -> S
    ("006E200000aIb6Z", "006E200000aIb6ZIAS"),
    # 00D50: D@2 = 4 -> E | 00000 -> A | 0IZ3Z: I@1 Z@2 Z@4 = 2+4+16 = 22 -> W
    ("00D50000000IZ3Z", "00D50000000IZ3ZEAW"),
    # 00130 -> A | 00000 -> A | ABCde: A@0 B@1 C@2 = 7 -> H
    ("0013000000ABCde", "0013000000ABCdeAAH"),
    # Hand-made edge cases: all capitals (31 -> 5), none (0 -> A), one capital per chunk.
    ("AAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAA555"),
    ("zzzzzzzzzzzzzzz", "zzzzzzzzzzzzzzzAAA"),
    ("000000000000000", "000000000000000AAA"),
    ("A0000B0000C0000", "A0000B0000C0000BBB"),
    ("0000A0000B0000C", "0000A0000B0000CQQQ"),
    ("ZZZZZaaaaa00000", "ZZZZZaaaaa000005AA"),
]


def reference_suffix(id15: str) -> str:
    """The CASESAFEID suffix, written independently of the library."""
    chunks = [id15[0:5], id15[5:10], id15[10:15]]
    return "".join(
        SUFFIX_ALPHABET[sum(2**i for i, c in enumerate(chunk) if c in string.ascii_uppercase)]
        for chunk in chunks
    )


def test_reference_suffix_agrees_with_published_pairs() -> None:
    for id15, id18 in KNOWN_PAIRS:
        assert id15 + reference_suffix(id15) == id18


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_15_char_id_normalises_to_published_18_char_form(id15: str, id18: str) -> None:
    assert normalize_id(id15) == id18


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_18_char_id_with_matching_checksum_is_accepted_unchanged(id15: str, id18: str) -> None:
    assert normalize_id(id18) == id18


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_18_char_id_with_wrong_checksum_is_rejected(id15: str, id18: str) -> None:
    for position in (15, 16, 17):
        for replacement in SUFFIX_ALPHABET:
            if replacement == id18[position]:
                continue
            bad = id18[:position] + replacement + id18[position + 1 :]
            with pytest.raises(InvalidRecordError):
                normalize_id(bad)


def test_checksum_of_a_different_id_is_rejected() -> None:
    # A valid suffix, but for another ID's first 15 characters.
    with pytest.raises(InvalidRecordError, match="checksum"):
        normalize_id("001A0000006Vm9r" + "AAA")


def test_ids_differing_only_in_case_are_different_ids() -> None:
    upper = normalize_id("001A0000006VM9R")
    lower = normalize_id("001a0000006vm9r")
    mixed = normalize_id("001A0000006Vm9r")
    assert len({upper, lower, mixed}) == 3
    # ... and their 18-character forms differ even ignoring case, which is the point.
    assert len({upper.lower(), lower.lower(), mixed.lower()}) == 3


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "001A0000006Vm9",  # 14
        "001A0000006Vm9rI",  # 16
        "001A0000006Vm9rIA",  # 17
        "001A0000006Vm9rIAC0",  # 19
        "001A0000006Vm9rIAC001A0000006Vm9rIAC",
    ],
)
def test_wrong_length_is_rejected(value: str) -> None:
    with pytest.raises(InvalidRecordError):
        normalize_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "001A0000006Vm9-",
        "001A0000006Vm9 ",
        " 001A0000006Vm9",
        "001A0000006Vm9r\n",
        "001A0000006Vm9rIA\n",
        "001A0000006Vm9é",
        "001A0000006Vm9\u0131",  # dotless i: not an ASCII letter
        "００１A0000006Vm9r",  # full-width digits  # noqa: RUF001
        "001A0000006Vm9٣",  # Arabic-Indic digit three
        "001A0000006Vm9rIA_",
        "001A0000006Vm9r'--",
        "001A0000006Vm9\x00",
    ],
)
def test_non_alphanumeric_characters_are_rejected(value: str) -> None:
    with pytest.raises(InvalidRecordError):
        normalize_id(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        1.5,
        b"001A0000006Vm9r",
        bytearray(b"001A0000006Vm9r"),
        ["001A0000006Vm9r"],
        ("001A0000006Vm9r",),
        {"Id": "001A0000006Vm9r"},
    ],
)
def test_non_string_is_rejected(value: object) -> None:
    with pytest.raises(InvalidRecordError):
        normalize_id(value)


def test_str_subclass_is_normalised_to_plain_str() -> None:
    class MyStr(str):
        __slots__ = ()

    result = normalize_id(MyStr("001A0000006Vm9r"))
    assert result == "001A0000006Vm9rIAC"
    assert type(result) is str


@pytest.mark.parametrize("value", ["001A0000006Vm9r", "001A0000006Vm9rIAC"])
def test_key_prefix_is_checked(value: str) -> None:
    assert normalize_id(value, prefix="001") == "001A0000006Vm9rIAC"
    for wrong in ("003", "006", "00Q", "001A0000006Vm9rX"):
        with pytest.raises(InvalidRecordError, match="prefix"):
            normalize_id(value, prefix=wrong)


def test_key_prefix_is_case_sensitive() -> None:
    # "a0D" is a custom object prefix; "a0d" is a different one.
    assert normalize_id("a0D30000001n7Pi", prefix="a0D") == "a0D30000001n7PiEAI"
    with pytest.raises(InvalidRecordError):
        normalize_id("a0D30000001n7Pi", prefix="a0d")


def test_bad_checksum_is_rejected_even_with_right_prefix() -> None:
    with pytest.raises(InvalidRecordError):
        normalize_id("001A0000006Vm9rIAD", prefix="001")


def test_invalid_record_error_is_a_value_error_and_a_library_error() -> None:
    assert issubclass(InvalidRecordError, ValueError)
    assert issubclass(InvalidRecordError, AcctSyncError)
    assert issubclass(AcctSyncError, Exception)
    with pytest.raises(ValueError, match="Salesforce ID") as info:
        normalize_id("not an id")
    assert isinstance(info.value, AcctSyncError)
    assert isinstance(info.value, InvalidRecordError)
    assert info.value.reason
    assert str(info.value)


def test_error_reason_is_a_clear_message() -> None:
    with pytest.raises(InvalidRecordError) as info:
        normalize_id("001A0000006Vm9rIAD")
    assert "IAC" in info.value.reason  # says what the checksum should have been
    with pytest.raises(InvalidRecordError) as info:
        normalize_id(42)
    assert "int" in info.value.reason


ids15 = st.text(alphabet=ALNUM, min_size=15, max_size=15)


@given(ids15)
def test_normalize_is_idempotent_and_keeps_the_first_15(id15: str) -> None:
    id18 = normalize_id(id15)
    assert isinstance(id18, str)
    assert len(id18) == 18
    assert id18[:15] == id15
    assert id18[15:] == reference_suffix(id15)
    assert normalize_id(id18) == id18
    assert normalize_id(normalize_id(id18)) == id18


@given(ids15, st.text(alphabet=ALNUM, min_size=3, max_size=3))
def test_any_18_char_id_is_accepted_iff_its_checksum_matches(id15: str, suffix: str) -> None:
    candidate = id15 + suffix
    if suffix == reference_suffix(id15):
        assert normalize_id(candidate) == candidate
    else:
        with pytest.raises(InvalidRecordError):
            normalize_id(candidate)


@given(ids15, st.data())
def test_case_mangled_18_char_id_never_becomes_a_different_id(
    id15: str, data: st.DataObject
) -> None:
    # A case-insensitive tool may change the case of an 18-character ID. Whatever the
    # library does with it (reject it, or repair it), it must never yield another record's ID.
    id18 = normalize_id(id15)
    flips = data.draw(st.lists(st.booleans(), min_size=18, max_size=18))
    mangled = "".join(c.swapcase() if flip else c for c, flip in zip(id18, flips, strict=True))
    try:
        result = normalize_id(mangled)
    except InvalidRecordError:
        return
    assert result == id18


@given(st.text(max_size=25).filter(lambda s: len(s) not in (15, 18)))
def test_any_string_of_another_length_is_rejected(value: str) -> None:
    with pytest.raises(InvalidRecordError):
        normalize_id(value)


@given(st.text(min_size=15, max_size=15).filter(lambda s: not all(c in ALNUM for c in s)))
def test_any_15_chars_with_a_non_ascii_alphanumeric_are_rejected(value: str) -> None:
    with pytest.raises(InvalidRecordError):
        normalize_id(value)


def _spoiled(record_id: str, at: int) -> str:
    """``record_id`` with the case of its character at ``at`` turned: a wrong checksum,
    where that character is a letter."""
    return record_id[:at] + record_id[at].swapcase() + record_id[at + 1 :]


@settings(max_examples=200)
@given(
    values=st.lists(
        st.one_of(
            salesforce_ids("003"),
            salesforce_ids("003", length=15),
            salesforce_ids("001"),
            st.builds(_spoiled, salesforce_ids("003"), st.integers(3, 17)),
            st.text(max_size=20),
        ),
        max_size=40,
    )
    | st.lists(salesforce_ids("003"), min_size=1, max_size=40),
    spoil=st.none() | st.tuples(st.integers(0, 39), st.integers(3, 17)),
    kept=st.sampled_from([4, 1 << 14]),
)
def test_a_column_of_ids_is_read_as_each_id_alone(
    values: list[str], spoil: tuple[int, int] | None, kept: int
) -> None:
    if spoil is not None and values:
        at, char = spoil[0] % len(values), spoil[1]
        if len(values[at]) > char:
            values[at] = _spoiled(values[at], char)
    # A column checked in passes of C (its slices kept, for short columns), or one by
    # one where any ID is not an 18-character one of the prefix: alike either way.
    expected: list[str | None] = []
    for value in values:
        try:
            expected.append(normalize_id(value, prefix="003"))
        except InvalidRecordError:
            expected.append(None)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(_formats, "_HEADS_MAX", kept)
        assert normalized_ids(values, "003") == expected


def test_the_kept_slices_stay_whole_whatever_threads_ask_for_them() -> None:
    # Two threads grow the kept slices at once, each having read the list before the
    # other put its own in place: each puts a whole list, never half of two.
    both = threading.Barrier(2, timeout=5)
    slices = _formats._slices

    def meeting(count: int) -> list[slice]:
        made = slices(count)
        both.wait()
        return made

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(_formats, "_HEADS", [[]])
        patched.setattr(_formats, "_slices", meeting)
        threads = [threading.Thread(target=_formats._heads, args=(n,)) for n in (10, 20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kept = _formats._HEADS[0]
    assert len(kept) in (10, 20)
    assert kept == [slice(18 * n, 18 * n + 15) for n in range(len(kept))]
