"""The in-memory fakes behave as the org they stand for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from acctsync import Account, RawRecord
from acctsync.testing import InMemorySource, make_id

T = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
A1, A2 = make_id("001", 1), make_id("001", 2)


def test_r9_a_raw_record_is_read_at_its_stamp_spelled_in_any_case() -> None:
    source = InMemorySource()
    later = Account(id=A2, fields={"Name": "Later"}, system_modstamp=T + timedelta(hours=1))
    source.upsert(later)
    source.add_raw(
        "Account",
        {
            "attributes": {"type": "Account"},
            "ID": A1,
            "SYSTEMMODSTAMP": "2024-01-31T12:00:00.000+0000",
            "NAME": "Acme",
        },
    )

    (everything,) = source.read_changes("Account", None, page_size=10)
    recent = list(source.read_changes("Account", T + timedelta(minutes=30), page_size=10))

    assert [type(item) for item in everything] == [RawRecord, Account]
    assert recent == [[later]]


def rest(record_id: str, name: str) -> dict[str, object]:
    return {
        "attributes": {"type": "Account"},
        "Id": record_id,
        "Name": name,
        "SystemModstamp": "2024-01-31T12:00:00.000+0000",
    }


def test_r3_a_record_s_new_version_replaces_the_old_as_a_rest_read_shows_it() -> None:
    # Two saves in one second: a read shows the second only, however it was added.
    source = InMemorySource()
    source.add_raw("Account", rest(A1, "First"))
    source.add_raw("Account", rest(A1, "Second"))
    source.upsert(Account(id=A2, fields={"Name": "First"}, system_modstamp=T))
    source.add_raw("Account", rest(A2, "Second"))

    (page,) = source.read_changes("Account", None, page_size=10)

    assert [(item.payload["Id"], item.payload["Name"]) for item in page] == [  # type: ignore[union-attr]
        (A1, "Second"),
        (A2, "Second"),
    ]
    source.upsert(Account(id=A1, fields={"Name": "Third"}, system_modstamp=T))
    (page,) = source.read_changes("Account", None, page_size=10)
    assert [type(item) for item in page] == [Account, RawRecord]


def test_r7_malformed_payloads_are_each_read_for_the_engine_to_reject() -> None:
    source = InMemorySource()
    source.add_raw("Account", {**rest(A1, "x"), "SystemModstamp": "yesterday"})
    source.add_raw("Account", {**rest(A1, "y"), "IsDeleted": "yes"})

    (page,) = source.read_changes("Account", None, page_size=10)

    assert len(page) == 2


def test_r3_a_version_added_again_after_an_upsert_replaces_it_in_turn() -> None:
    source = InMemorySource()
    source.add_raw("Account", rest(A1, "First"))
    source.upsert(Account(id=A1, fields={"Name": "Second"}, system_modstamp=T))
    source.add_raw("Account", rest(A1, "Third"))
    source.add_raw("Account", rest(A1, "Fourth"))

    (page,) = source.read_changes("Account", None, page_size=10)

    assert [item.payload["Name"] for item in page] == ["Fourth"]  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.sampled_from(["record", "raw", "raw without Id"]), st.integers(0, 3)),
        max_size=25,
    ),
    page_size=st.integers(1, 6),
    since=st.none() | st.integers(0, 3),
)
def test_a_read_gives_records_and_raw_payloads_by_stamp_and_id_in_pages(
    items: list[tuple[str, int]], page_size: int, since: int | None
) -> None:
    source = InMemorySource()
    expected: list[tuple[datetime, str, int, str]] = []
    for n, (kind, second) in enumerate(items):
        record_id, at = make_id("001", 1000 - n), T + timedelta(seconds=second)
        if kind == "record":
            source.upsert(Account(id=record_id, fields={"Name": str(n)}, system_modstamp=at))
        else:
            payload = {**rest(record_id, str(n)), "SystemModstamp": f"{at:%Y-%m-%dT%H:%M:%S}.000Z"}
            if kind == "raw without Id":
                del payload["Id"]
                record_id = ""  # read before the IDs of its second, in the order added
            source.add_raw("Account", payload)
        if since is None or second >= since:
            expected.append((at, record_id, n, str(n)))

    start = None if since is None else T + timedelta(seconds=since)
    pages = list(source.read_changes("Account", start, page_size=page_size))

    assert all(len(page) == page_size for page in pages[:-1])
    assert all(pages)
    names = [
        item.fields["Name"] if isinstance(item, Account) else item.payload["Name"]  # type: ignore[union-attr]
        for page in pages
        for item in page
    ]
    assert names == [name for *_, name in sorted(expected)]


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=20),
    in_order=st.booleans(),
    page_size=st.integers(1, 6),
    since=st.none() | st.integers(0, 3),
)
def test_raw_payloads_added_in_read_order_or_not_are_read_by_stamp_and_id(
    items: list[tuple[int, int]], in_order: bool, page_size: int, since: int | None
) -> None:
    # Added in read order, the items are read by their places as added; out of order, or
    # once an ID's new version replaced its old one, by their keys: the same pages.
    if in_order:
        items.sort()
    source = InMemorySource()
    current: dict[str, tuple[datetime, str, int]] = {}
    for n, (second, number) in enumerate(items):
        record_id, at = make_id("001", number), T + timedelta(seconds=second)
        payload = {**rest(record_id, str(n)), "SystemModstamp": f"{at:%Y-%m-%dT%H:%M:%S}.000Z"}
        source.add_raw("Account", payload)
        current[record_id] = (at, record_id, n)

    start = None if since is None else T + timedelta(seconds=since)
    pages = list(source.read_changes("Account", start, page_size=page_size))

    assert all(len(page) == page_size for page in pages[:-1])
    assert all(pages)
    read = [item.payload["Name"] for page in pages for item in page]  # type: ignore[union-attr]
    expected = sorted(key for key in current.values() if start is None or key[0] >= start)
    assert read == [str(n) for *_, n in expected]


def test_a_read_gives_what_the_source_held_when_it_began_whatever_comes_after() -> None:
    source = InMemorySource()

    def add(n: int, name: str, second: int) -> None:
        stamp = f"{T + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}.000Z"
        source.add_raw("Account", {**rest(make_id("001", n), name), "SystemModstamp": stamp})

    for n in range(6):
        add(n, f"v1 {n}", n)
    source.upsert(Account(id=A1, fields={"Name": "record"}, system_modstamp=T))
    pages = source.read_changes("Account", None, page_size=2)
    first = next(pages)
    # The org changes mid-read: a version not read yet is replaced, one is added, and the
    # record read already is saved again.
    add(4, "v2 4", 10)
    add(7, "new", 11)
    source.upsert(Account(id=A1, fields={"Name": "record v2"}, system_modstamp=T + timedelta(1)))
    read = [*first, *(item for page in pages for item in page)]

    names = [
        item.fields["Name"] if isinstance(item, Account) else item.payload["Name"]  # type: ignore[union-attr]
        for item in read
    ]
    assert names == ["v1 0", "record", "v1 2", "v1 3", "v1 4", "v1 5"]
