"""The export-folder source: CSV and JSON Lines exports read by the Source contract.

Records are written to files here the way Data Loader, the Bulk API or a REST client
would write them, and read back through `ExportFolder`, alone or under a `SyncEngine`
into the SQLite store.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acctsync import (
    Account,
    AcctSyncError,
    ConfigurationError,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    RawRecord,
    SourceError,
    Store,
    SyncEngine,
    Unreadable,
    decode_record,
    encode_record,
)
from acctsync._formats import format_datetime
from acctsync.sources.files import ExportFileError, ExportFolder, types_from_describe
from acctsync.testing import InMemoryStore, check_source, make_id
from acctsync.testing import strategies as acctsync_st

T0 = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
A1, A2, A3 = (make_id("001", n) for n in (1, 2, 3))
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))
TYPES = {
    "AnnualRevenue": "currency",
    "NumberOfEmployees": "int",
    "IsPartner": "boolean",
    "Founded": "date",
    "Account.Audited": "datetime",
}
Record = Account | Contact | Deletion


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cell(value: FieldValue) -> str:
    """A value as a Data Loader export writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value).replace("+0000", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def columns(record: Record) -> dict[str, FieldValue]:
    if isinstance(record, Deletion):
        return {
            "Id": record.id,
            "IsDeleted": True,
            "MasterRecordId": record.master_record_id,
            "SystemModstamp": record.deleted_at,
        }
    out: dict[str, FieldValue] = {"Id": record.id}
    if isinstance(record, Contact):
        out["AccountId"] = record.account_id
    out.update(record.fields)
    out["SystemModstamp"] = record.system_modstamp
    out["IsDeleted"] = False
    return out


def csv_bytes(records: Sequence[Record], *, newline: str = "\n") -> bytes:
    rows = [columns(record) for record in records]
    names = [name for row in rows for name in row]
    header = list(dict.fromkeys(["Id", *names, "SystemModstamp", "IsDeleted", "MasterRecordId"]))
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator=newline)
    writer.writerow(header)
    writer.writerows([cell(row.get(name)) for name in header] for row in rows)
    return out.getvalue().encode()


def jsonl_bytes(records: Sequence[Record]) -> bytes:
    return "".join(json.dumps(encode_record(record)) + "\n" for record in records).encode()


def write(folder: Path, name: str, records: Sequence[Record]) -> Path:
    path = folder / name
    path.write_bytes(csv_bytes(records) if name.endswith(".csv") else jsonl_bytes(records))
    return path


def read(folder: ExportFolder, object_type: ObjectType) -> list[Any]:
    """Every item the folder yields for ``object_type``, decoded where it can be."""
    out: list[Any] = []
    for page in folder.read_changes(object_type, None, page_size=1000):
        for item in page:
            if isinstance(item, Unreadable):
                out.append(item)
                continue
            try:
                out.append(decode_record(item.object_type, item.payload))
            except AcctSyncError:
                out.append(item)
    return out


def same_types_and_digits(got: Mapping[str, FieldValue], want: Mapping[str, FieldValue]) -> bool:
    """Equal, and each value of the same type and written the same (``1.50`` is not ``1.5``)."""
    return {k: (type(v), str(v)) for k, v in got.items()} == {
        k: (type(v), str(v)) for k, v in want.items()
    }


def account(number: int, seconds: float, **fields: FieldValue) -> Account:
    return Account(id=make_id("001", number), fields=fields, system_modstamp=t(seconds))


def contact(number: int, account_id: str | None, seconds: float, **fields: FieldValue) -> Contact:
    return Contact(
        id=make_id("003", number),
        account_id=account_id,
        fields=fields,
        system_modstamp=t(seconds),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    pytest.importorskip("sqlalchemy")
    from acctsync.stores.sql import SqlStore

    with SqlStore.sqlite(tmp_path / "x.db") as opened:
        yield opened


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    return path


# -- The Source contract --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_the_folder_passes_the_source_conformance_check(folder: Path, suffix: str) -> None:
    def make_source(records: Sequence[Record]) -> ExportFolder:
        for object_type in ("Account", "Contact"):
            mine = [r for r in records if stream(r) == object_type]
            # Split each object over two files, so that order holds across files.
            write(folder, f"{object_type}-1{suffix}", mine[::2])
            write(folder, f"{object_type}-2{suffix}", mine[1::2])
        return ExportFolder(folder)

    check_source(make_source)


def stream(record: Record) -> str:
    if isinstance(record, Deletion):
        return record.object_type
    return type(record).__name__


VERSIONS = st.lists(
    st.tuples(
        st.integers(1, 6),  # which record
        st.integers(0, 8),  # its stamp, in seconds: ties are common
        st.booleans(),  # deleted
        st.integers(0, 2),  # which file
    ),
    max_size=25,
)


@settings(max_examples=60)
@given(
    versions=VERSIONS,
    since=st.none() | st.integers(0, 8),
    page_size=st.integers(1, 7),
)
def test_r1_pages_hold_each_records_latest_version_in_order(
    versions: list[tuple[int, int, bool, int]], since: int | None, page_size: int
) -> None:
    names = ["Account-a.csv", "Account-b.jsonl", "accounts_c.csv"]
    files: list[list[Record]] = [[], [], []]
    # The documented rule: the highest stamp wins; on a tie a deletion, else the row read
    # last (files by name, rows in file order).
    latest: dict[str, tuple[tuple[int, bool, int, int], Record]] = {}
    for number, seconds, deleted, file in versions:
        record: Record = (
            Deletion(object_type="Account", id=make_id("001", number), deleted_at=t(seconds))
            if deleted
            else account(number, seconds, Name=f"v{seconds}")
        )
        files[file].append(record)
        rank = (seconds, deleted, file, len(files[file]))
        if record.id not in latest or rank >= latest[record.id][0]:
            latest[record.id] = (rank, record)
    expected = sorted(
        (r for _, r in latest.values() if since is None or r.system_modstamp >= t(since)),
        key=lambda r: (r.system_modstamp, r.id),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, records in zip(names, files, strict=True):
            write(Path(tmp), name, records)
        pages = list(
            ExportFolder(tmp).read_changes(
                "Account", None if since is None else t(since), page_size=page_size
            )
        )
        got = [
            decode_record(item.object_type, item.payload)
            for page in pages
            for item in page
            if isinstance(item, RawRecord)
        ]
    assert sum(map(len, pages)) == len(got)
    assert all(0 < len(page) <= page_size for page in pages)
    assert got == expected


def test_a_tie_goes_to_the_deletion_then_to_the_file_read_last(folder: Path) -> None:
    gone = Deletion(object_type="Account", id=A1, deleted_at=t(5))
    write(folder, "Account-1.csv", [gone, account(2, 5, Name="first")])
    write(folder, "Account-2.csv", [account(1, 5, Name="alive"), account(2, 5, Name="second")])
    assert read(ExportFolder(folder), "Account") == [gone, account(2, 5, Name="second")]


def test_files_are_found_by_object_name_in_any_case_and_read_by_name(folder: Path) -> None:
    for name in [
        "Account.csv",
        "accounts_2024-01-31.jsonl",
        "ACCOUNT2.ndjson",
        "AccountContactRelation.csv",
        "Account_Plan__c.csv",  # a custom object's, in a Data Export archive
        "Accounts_Receivable__History.csv",
        "Account.json",
        "notes.txt",
        "Contact.csv",
        "Contacts-part 2.CSV",
    ]:
        (folder / name).write_bytes(b"")
    (folder / "Account-old.csv").mkdir()
    export = ExportFolder(folder)
    assert [p.name for p in export.files("Account")] == [
        "ACCOUNT2.ndjson",
        "Account.csv",
        "accounts_2024-01-31.jsonl",
    ]
    assert [p.name for p in export.files("Contact")] == ["Contact.csv", "Contacts-part 2.CSV"]
    assert read(export, "Account") == []


# -- Under the engine, into the SQLite store ------------------------------------------


def test_a_full_sync_makes_the_store_hold_what_the_folder_holds(
    folder: Path, store: Store
) -> None:
    acme = account(
        1,
        0,
        Name='Acme, "Inc"\nHQ',
        AnnualRevenue=Decimal("1500000.50"),
        NumberOfEmployees=12,
        IsPartner=True,
        Founded=date(1999, 12, 31),
        Audited=t(-3600),
    )
    # A CSV row has every column: an empty cell is null (None), not a missing field.
    beta = account(2, 1, **{**dict.fromkeys(acme.fields), "Name": "Beta", "IsPartner": False})
    loser = make_id("001", 4)
    write(folder, "Account.csv", [acme, beta])
    write(folder, "Account-merged.csv", [account(4, 0, Name="Old")])
    write(folder, "Contact.jsonl", [contact(1, A1, 2, Email="a@acme.test"), contact(2, A2, 3)])
    write(folder, "Contact-late.jsonl", [contact(3, loser, 1, Email="c@old.test")])
    write(
        folder,
        "Account-zz-deleted.csv",
        [Deletion(object_type="Account", id=loser, deleted_at=t(4), master_record_id=A2)],
    )

    report = SyncEngine(source=ExportFolder(folder, types=TYPES), store=store).sync()

    assert report.ok, report.rejected
    got = store.get_account(A1)
    assert got == acme
    assert got is not None
    assert same_types_and_digits(got.fields, acme.fields)
    assert store.get_account(A2) == beta
    assert store.get_account(loser) is None
    assert store.get_contact(C1) == contact(1, A1, 2, Email="a@acme.test")
    assert store.contact_ids(A1) == [C1]
    assert sorted(store.contact_ids(A2)) == sorted([C2, C3])  # the merge moved C3 (R4)


def test_r1_a_second_export_brings_new_and_late_rows_and_applies_nothing_twice(
    folder: Path, store: Store
) -> None:
    engine = SyncEngine(source=ExportFolder(folder), store=store)
    write(folder, "Account.csv", [account(1, 0, Industry="Tech"), account(2, 10, Name="B")])
    write(folder, "Contact.jsonl", [contact(1, A1, 5), contact(2, A1, 6)])
    first = engine.sync()
    assert (first.accounts_upserted, first.contacts_upserted) == (2, 2)
    assert store.watermark("Account") == t(10)

    # The next export: A1 changed; A3 and C3 committed late, stamped before the
    # watermarks but within the lookback; A2 exported again, unchanged.
    write(folder, "Account-2.csv", [account(1, 20, Industry="Retail"), account(2, 10, Name="B")])
    write(folder, "Account-3.csv", [account(3, 10 - 120, Name="Late")])
    write(folder, "Contact-2.jsonl", [contact(3, A3, 6 - 120)])
    second = engine.sync()

    assert (second.accounts_upserted, second.contacts_upserted) == (2, 1)
    assert second.already_applied == 3  # A2, C1 and C2, read again by the lookback
    assert store.get_account(A3) == account(3, -110, Name="Late")
    assert store.contact_ids(A3) == [C3]
    assert [(e.contact_id, e.new_value) for e in second.activities] == [
        (C1, "Retail"),
        (C2, "Retail"),
    ]
    third = engine.sync()
    assert (third.accounts_upserted, third.contacts_upserted, third.activities) == (0, 0, ())
    assert len(list(store.activities())) == 2


def test_r1_records_sharing_a_stamp_across_a_page_boundary_apply_once(
    folder: Path, store: Store
) -> None:
    engine = SyncEngine(source=ExportFolder(folder), store=store, page_size=3)
    write(folder, "Account.csv", [account(n, 0, Name=f"A{n}") for n in range(1, 8)])
    assert engine.sync().accounts_upserted == 7
    write(folder, "Account-more.csv", [account(n, 0, Name=f"A{n}") for n in range(8, 10)])
    report = engine.sync()
    assert (report.accounts_upserted, report.already_applied) == (2, 7)
    assert all(store.get_account(make_id("001", n)) for n in range(1, 10))


# -- Bad input ------------------------------------------------------------------------


def test_r7_bad_rows_are_rejected_with_file_and_line_and_the_rest_applies(
    folder: Path, store: Store
) -> None:
    stamp = "2024-01-31T12:00:00.000Z"
    (folder / "Account.csv").write_text(
        '"Id","Name","NumberOfEmployees","SystemModstamp"\n'
        f'"{A1}","Good","1","{stamp}"\n'
        f'"001notanid","Bad Id","1","{stamp}"\n'
        f'"{make_id("001", 5)}","No stamp","1",""\n'
        f'"{make_id("001", 6)}","Naive","1","2024-01-31T12:00:00"\n'
        f'"{A2[:15]}","Two\nlines","2","{stamp}"\n'
        f'"{make_id("001", 7)}","Short","{stamp}"\n'
        f'"{make_id("001", 8)}","Not a number","twelve","{stamp}"\n'
        f'"{make_id("001", 9)}","Bad "quoting"","1","{stamp}"\n'
        f'"{A3}","Also good","3","{stamp}"\n'
    )
    good = json.dumps(encode_record(contact(1, A1, 0)))
    bad_id = json.dumps({**encode_record(contact(2, A1, 0)), "Id": C2[:17] + "X"})
    wrong_type = json.dumps({**encode_record(contact(3, A1, 0)), "attributes": {"type": "Lead"}})
    (folder / "Contact.jsonl").write_text(
        "\n".join([good, '{"Id": "003', "[1, 2]", "", wrong_type, bad_id]) + "\n"
    )

    report = SyncEngine(
        source=ExportFolder(folder, types={"NumberOfEmployees": "int"}), store=store
    ).sync()

    rejected = {r.origin: (r.record_id, r.field, r.reason) for r in report.rejected}
    assert set(rejected) == {
        "Account.csv:3",
        "Account.csv:4",
        "Account.csv:5",
        "Account.csv:8",
        "Account.csv:9",
        "Account.csv:10",
        "Contact.jsonl:2",
        "Contact.jsonl:3",
        "Contact.jsonl:5",
        "Contact.jsonl:6",
    }
    assert rejected["Account.csv:3"][0] == "001notanid"
    assert rejected["Account.csv:4"][2] == "missing SystemModstamp"
    assert rejected["Account.csv:5"][1:] == (
        "SystemModstamp",
        "'2024-01-31T12:00:00' is not a Salesforce datetime with a time zone",
    )
    assert rejected["Account.csv:8"][2] == "the row has 3 values, the header 4 columns"
    assert rejected["Account.csv:9"] == (
        make_id("001", 8),
        "NumberOfEmployees",
        "'twelve' is not an integer",
    )
    assert rejected["Account.csv:10"][2].startswith("not valid CSV")
    assert rejected["Contact.jsonl:2"][2].startswith("not valid JSON")
    assert rejected["Contact.jsonl:3"][2] == "a record must be a JSON object, not list"
    assert "attributes.type" in rejected["Contact.jsonl:5"][2]
    assert rejected["Contact.jsonl:6"][1] == "Id"
    assert [a.fields for a in map(store.get_account, (A1, A2, A3)) if a] == [
        {"Name": "Good", "NumberOfEmployees": 1},
        {"Name": "Two\nlines", "NumberOfEmployees": 2},
        {"Name": "Also good", "NumberOfEmployees": 3},
    ]
    assert store.contact_ids(A1) == [C1]


def test_r7_a_row_without_a_readable_stamp_comes_first_in_every_read(folder: Path) -> None:
    lines = [encode_record(account(1, 0)), {"Id": A2, "SystemModstamp": "yesterday"}]
    (folder / "Account.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "[\n")
    export = ExportFolder(folder)
    for since in (None, t(0), t(3600)):
        pages = list(export.read_changes("Account", since, page_size=1))
        origins = [item.origin for page in pages for item in page]
        assert origins[:2] == ["Account.jsonl:2", "Account.jsonl:3"]
        assert origins[2:] == (["Account.jsonl:1"] if since != t(3600) else [])


def test_a_data_loader_file_with_bom_crlf_quoted_newlines_and_empty_cells(
    folder: Path,
) -> None:
    (folder / "Contact.csv").write_bytes(
        b"\xef\xbb\xbf"
        b'"ID","ACCOUNTID","LastName","Description","Phone","SYSTEMMODSTAMP"\r\n'
        + f'"{C1}","{A1}","Smith","Line one\r\nLine two\r\n","",'.encode()
        + b'"2024-01-31T12:00:00.000+0000"\r\n'
        + f'"{C2}","","M\u00fcller","","","2024-01-31T12:00:01.000Z"\r\n'.encode()
        + b'"bad","","x","","",""\r\n'
        + f'"{C3}","","M\u00fcller","","","2024-01-31T12:00:02.000Z"\r\n'.encode("latin-1")
    )
    got = read(ExportFolder(folder), "Contact")
    assert got[2:] == [
        contact(
            1,
            A1,
            0,
            LastName="Smith",
            Description="Line one\r\nLine two\r\n",
            Phone=None,
        ),
        contact(2, None, 1, LastName="M\u00fcller", Description=None, Phone=None),
    ]
    # Physical lines: the quoted field above spans three.
    assert [item.origin for item in got[:2]] == ["Contact.csv:6", "Contact.csv:7"]
    assert isinstance(got[1], Unreadable)
    assert got[1].reason == "the row is not UTF-8 text"


DESCRIBED_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20).filter(
    lambda s: not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T.*)?", s)
)


@settings(max_examples=40)
@given(
    values=st.fixed_dictionaries(
        {
            "Name": st.none() | DESCRIBED_TEXT,
            "AnnualRevenue": st.none() | st.decimals(allow_nan=False, allow_infinity=False),
            "NumberOfEmployees": st.none() | st.integers(),
            "IsPartner": st.none() | st.booleans(),
            "Founded": st.none() | st.dates(date(1700, 1, 1), date(4000, 12, 31)),
            "Audited": st.none() | acctsync_st.timestamps(),
        }
    ),
    stamp=acctsync_st.timestamps(),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_typed_csv_values_round_trip_exactly(
    values: dict[str, FieldValue], stamp: datetime, newline: str
) -> None:
    record = Account(id=A1, fields=values, system_modstamp=stamp)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Account.csv").write_bytes(csv_bytes([record], newline=newline))
        got = read(ExportFolder(tmp, types=TYPES), "Account")
    assert got == [record]
    assert same_types_and_digits(got[0].fields, values)


def test_json_lines_numbers_keep_their_digits(folder: Path) -> None:
    (folder / "Account.jsonl").write_text(
        f'{{"attributes": {{"type": "Account"}}, "Id": "{A1}", "AnnualRevenue": 1500000.50,'
        ' "NumberOfEmployees": 12, "SystemModstamp": "2024-01-31T12:00:00.000+0000"}\n'
    )
    [got] = read(ExportFolder(folder), "Account")
    assert str(got.fields["AnnualRevenue"]) == "1500000.50"
    assert got.fields["NumberOfEmployees"] == 12


def test_untyped_csv_values_stay_text_and_bad_typed_values_are_rejected(folder: Path) -> None:
    rows = [
        f'"{A1}","1.50","true","2024-01-31","2024-01-31T12:00:00.000Z"',
        f'"{A2}","1,5","yes","2024-02-30","2024-01-31T12:00:00.000Z"',
    ]
    (folder / "Account.csv").write_text(
        '"Id","Amount","Flag","Day","SystemModstamp"\n' + "\n".join(rows) + "\n"
    )
    [plain, _] = read(ExportFolder(folder), "Account")
    assert plain.fields == {"Amount": "1.50", "Flag": "true", "Day": date(2024, 1, 31)}
    for types, field, reason in [
        ({"Amount": "double"}, "Amount", "'1,5' is not a number"),
        ({"Flag": "boolean"}, "Flag", "'yes' is not a boolean (true, false, 1 or 0)"),
        ({"Day": "date"}, "Day", "'2024-02-30' is not a date (YYYY-MM-DD)"),
    ]:
        rejected = read(ExportFolder(folder, types=types), "Account")[1]
        assert isinstance(rejected, Unreadable)
        assert (rejected.field, rejected.reason) == (field, reason)


# -- Configuration errors -------------------------------------------------------------


def test_a_missing_folder_or_an_unknown_type_name_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="no export folder"):
        ExportFolder(tmp_path / "nowhere")
    with pytest.raises(ConfigurationError, match="unknown type name 'decimel'"):
        ExportFolder(tmp_path, types={"AnnualRevenue": "decimel"})
    with pytest.raises(ConfigurationError, match="IsDeleted is always read as boolean"):
        ExportFolder(tmp_path, types={"IsDeleted": "string"})
    with pytest.raises(ConfigurationError, match="delimiter"):
        ExportFolder(tmp_path, delimiter=";;")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'"Id","Name"\n', "the header row has no SystemModstamp column"),
        (b'"Id","SystemModstamp","Name","NAME"\n', "column 'NAME' appears twice"),
        (b'"Id","SystemModstamp",""\n', "column 3 of the header has no name"),
        (b'"Id","Syst\xe9mModstamp"\n', "the header row is not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_an_export_is_named_in_the_error(
    folder: Path, content: bytes, reason: str
) -> None:
    (folder / "Account.csv").write_bytes(content)
    with pytest.raises(ExportFileError, match=reason) as error:
        ExportFolder(folder).read_changes("Account", None, page_size=10)
    assert error.value.path == folder / "Account.csv"


def test_an_unreadable_file_is_an_export_file_error(folder: Path) -> None:
    (folder / "Contact.csv").symlink_to(folder / "gone.csv")
    with pytest.raises(ExportFileError, match="cannot open") as error:
        ExportFolder(folder).read_changes("Contact", None, page_size=10)
    assert isinstance(error.value.__cause__, OSError)
    assert isinstance(error.value, SourceError)
    assert not error.value.retryable


def test_types_from_a_describe_apply_to_their_object_only(folder: Path) -> None:
    describe = {
        "name": "Account",
        "fields": [
            {"name": "Id", "type": "id"},
            {"name": "AnnualRevenue", "type": "currency"},
            {"name": "BillingAddress", "type": "address"},
            {"name": "SystemModstamp", "type": "datetime"},
        ],
    }
    types = types_from_describe(describe)
    assert types == {
        "Account.Id": "id",
        "Account.AnnualRevenue": "currency",
        "Account.SystemModstamp": "datetime",
    }
    stamp = "2024-01-31T12:00:00.000Z"
    (folder / "Account.csv").write_text(
        f'"Id","AnnualRevenue","SystemModstamp"\n"{A1}","2.50","{stamp}"\n'
    )
    (folder / "Contact.csv").write_text(
        f'"Id","AnnualRevenue","SystemModstamp"\n"{C1}","2.50","{stamp}"\n'
    )
    export = ExportFolder(folder, types=types)
    assert read(export, "Account")[0].fields == {"AnnualRevenue": Decimal("2.50")}
    assert read(export, "Contact")[0].fields == {"AnnualRevenue": "2.50"}


def test_a_relationship_column_is_passed_over_though_the_types_name_its_field(
    folder: Path,
) -> None:
    # The Account and Contact types merged, as the docs suggest: Account.Name is a type,
    # and a Contact export's ACCOUNT.NAME column (Data Loader's export wizard offers it)
    # holds the account's name, not the contact's.
    fields = [{"name": n, "type": t} for n, t in (("Name", "string"), ("Industry", "picklist"))]
    types = {
        **types_from_describe({"name": "Account", "fields": fields}),
        **types_from_describe({"name": "Contact", "fields": fields[:1]}),
    }
    stamp = "2024-01-31T12:00:00.000Z"
    (folder / "Contact.csv").write_text(
        '"ID","ACCOUNTID","NAME","LASTNAME","ACCOUNT.NAME","ACCOUNT.INDUSTRY","SYSTEMMODSTAMP"\n'
        f'"{C1}","{A1}","Ada Lovelace","Lovelace","Acme","Retail","{stamp}"\n'
    )
    (contact,) = read(ExportFolder(folder, types=types), "Contact")
    assert contact.fields == {"Name": "Ada Lovelace", "LASTNAME": "Lovelace"}


def test_csv_files_are_read_in_the_folder_s_encoding(folder: Path) -> None:
    stamp = "2024-01-31T12:00:00.000Z"
    text = f'"Id","Name","SystemModstamp"\n"{A1}","Société Générale","{stamp}"\n'
    (folder / "Account.csv").write_bytes(text.encode("cp1252"))
    (folder / "Contact.jsonl").write_text(  # JSON Lines are UTF-8 whatever the CSV files are
        f'{{"Id": "{C1}", "LastName": "Müller", "SystemModstamp": "{stamp}"}}\n',
        encoding="utf-8",
    )
    export = ExportFolder(folder, encoding="cp1252")
    assert read(export, "Account")[0].fields == {"Name": "Société Générale"}
    assert read(export, "Contact")[0].fields == {"LastName": "Müller"}
    (unreadable,) = [
        item
        for page in ExportFolder(folder).read_changes("Account", None, page_size=5)
        for item in page
    ]
    assert isinstance(unreadable, Unreadable)
    assert unreadable.reason == "the row is not UTF-8 text"
    for wrong in ("utf-16", "utf-32-le", "no-such-codec"):
        with pytest.raises(ConfigurationError):
            ExportFolder(folder, encoding=wrong)


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sqlalchemy")
    text = (Path(__file__).parent.parent / "docs" / "source-files.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert example is not None
    monkeypatch.chdir(tmp_path)
    printed: list[str] = []
    exec(example.group(1), {"print": lambda value: printed.append(repr(value))})
    comments = re.findall(r"print\(.*\)\s+# (.*)", example.group(1))
    assert printed == comments


def test_r7_a_number_longer_than_python_reads_is_a_rejection_not_a_crash(tmp_path: Path) -> None:
    huge = "9" * 5000
    (tmp_path / "Account.jsonl").write_text(
        json.dumps({"Id": A1, "SystemModstamp": "2024-01-31T12:00:00.000Z"})
        + "\n"
        + f'{{"Id": "{A2}", "SystemModstamp": "2024-01-31T12:00:01.000Z", "Big": {huge}}}\n'
    )
    (tmp_path / "Contact.csv").write_text(
        f"Id,SystemModstamp,Score\n{C1},2024-01-31T12:00:00.000Z,{huge}\n"
    )
    store = InMemoryStore()
    engine = SyncEngine(source=ExportFolder(tmp_path, types={"Score": "int"}), store=store)

    report = engine.sync()

    assert sorted(r.origin or "" for r in report.rejected) == ["Account.jsonl:2", "Contact.csv:2"]
    assert all("longer than any field holds" in r.reason for r in report.rejected)
    assert store.get_account(A1) is not None
