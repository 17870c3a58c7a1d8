"""The in-memory fakes behave as the org they stand for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
