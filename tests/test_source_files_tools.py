"""Export folders as Salesforce's own tools write them (rule R8), synced into every store.

Each fixture is written by hand in the shape its tool publishes, and says where: Data
Loader (forcedotcom/dataloader, Salesforce's own source), the Bulk API 2.0 (Bulk API 2.0
and Bulk API Developer Guide) and the weekly Data Export service. Field names and types
are those of a real org's describe (the Account and Contact describes CumulusCI recorded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from acctsync import (
    Account,
    ConfigurationError,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    Origin,
    RawRecord,
    Store,
    SyncEngine,
    Unreadable,
    decode_record,
)
from acctsync.sources.files import ExportFolder, types_from_describe
from acctsync.testing import make_id

A1, A2, A3 = (make_id("001", n) for n in (1, 2, 3))
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))
OWNER = make_id("005", 1)
EMPTY_ID = "000000000000000AAA"


def _describe(name: str, fields: str) -> dict[str, Any]:
    """A describe in the shape of ``GET /services/data/vXX.X/sobjects/{name}/describe``.

    REST API Developer Guide, "sObject Describe": ``name`` and a list of ``fields``, each
    with its ``name`` and ``type`` (only those two are read).
    """
    pairs = (entry.split(":") for entry in fields.split())
    return {"name": name, "fields": [{"name": n, "type": t} for n, t in pairs]}


# The fields these tests use, with the types a real org's describe gives them.
ACCOUNT_DESCRIBE = _describe(
    "Account",
    "Id:id IsDeleted:boolean MasterRecordId:reference Name:string ParentId:reference"
    " BillingAddress:address Industry:picklist AnnualRevenue:currency"
    " NumberOfEmployees:int Description:textarea OwnerId:reference CreatedDate:datetime"
    " CreatedById:reference LastModifiedDate:datetime LastModifiedById:reference"
    " SystemModstamp:datetime LastActivityDate:date IsPartner:boolean",
)
CONTACT_DESCRIBE = _describe(
    "Contact",
    "Id:id IsDeleted:boolean MasterRecordId:reference AccountId:reference LastName:string"
    " FirstName:string Name:string ReportsToId:reference Email:email Birthdate:date"
    " OwnerId:reference CreatedDate:datetime CreatedById:reference"
    " LastModifiedDate:datetime LastModifiedById:reference SystemModstamp:datetime"
    " LastActivityDate:date EmailBouncedDate:datetime IsEmailBounced:boolean",
)
DESCRIBED = types_from_describe(ACCOUNT_DESCRIBE) | types_from_describe(CONTACT_DESCRIBE)


def write(
    folder: Path, name: str, lines: Sequence[str], *, end: str = "\n", bom: bool = False
) -> None:
    text = "".join(line + end for line in lines)
    (folder / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


def read(folder: ExportFolder, object_type: ObjectType) -> list[Any]:
    """Every record the folder yields for ``object_type``, decoded; none may be unreadable."""
    out: list[Any] = []
    for page in folder.read_changes(object_type, None, page_size=1000):
        for item in page:
            assert isinstance(item, RawRecord), item
            out.append(decode_record(item.object_type, item.payload))
    return out


def assert_holds_exactly(store: Store, records: Sequence[Account | Contact]) -> None:
    """The store holds each record: equal, and each value of the same type (1 is not True)."""
    for want in records:
        got = (
            store.get_account(want.id) if isinstance(want, Account) else store.get_contact(want.id)
        )
        assert got == want
        assert got is not None
        assert {k: type(v) for k, v in got.fields.items()} == {
            k: type(v) for k, v in want.fields.items()
        }


def sync_twice(folder: Path, store: Store, types: Mapping[str, str]) -> None:
    """Sync the folder, then again: the second sync applies and logs nothing (R1, R2)."""
    engine = SyncEngine(source=ExportFolder(folder, types=types), store=store)
    first = engine.sync()
    assert first.ok, first.rejected
    logged = list(store.activities())
    second = engine.sync()
    assert second.ok, second.rejected
    assert (second.accounts_upserted, second.contacts_upserted, second.activities) == (0, 0, ())
    assert (second.accounts_deleted, second.contacts_deleted) == (0, 0)
    assert list(store.activities()) == logged


def account(number: int, stamp: datetime, **fields: FieldValue) -> Account:
    return Account(id=make_id("001", number), fields=fields, system_modstamp=stamp)


def contact(number: int, account_id: str | None, stamp: datetime, **fields: FieldValue) -> Contact:
    return Contact(
        id=make_id("003", number), account_id=account_id, fields=fields, system_modstamp=stamp
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    return path


# -- Data Loader ----------------------------------------------------------------------

# Data Loader (forcedotcom/dataloader): CSVFileWriter writes the header in upper case and
# ends each line with the platform's line separator (CRLF on Windows); CSVColumnVisitor
# quotes every value and doubles a quote inside; PartnerQueryVisitor writes a datetime as
# yyyy-MM-dd'T'HH:mm:ss.SSS'Z' in GMT and a date as yyyy-MM-dd. Audit fields come along
# when the query names them. The byte-order mark is what a spreadsheet saving "CSV UTF-8"
# puts in front.
# OWNER.NAME: a relationship column, as the export wizard offers the owner's name.
DATA_LOADER_ACCOUNTS = [
    '"ID","NAME","INDUSTRY","ANNUALREVENUE","DESCRIPTION","CREATEDDATE","LASTMODIFIEDDATE",'
    '"OWNER.NAME","SYSTEMMODSTAMP"',
    f'"{A1}","Acme ""East""","Technology","1500000.5","Line one\r\nLine two\nLine three",'
    '"2026-01-02T08:00:00.000Z","2026-01-05T09:00:00.000Z","Ada Admin","2026-01-05T09:00:00.000Z"',
    f'"{A2}","Beta","","","","2026-01-02T08:00:00.000Z","2026-01-05T09:00:01.000Z","Ada Admin",'
    '"2026-01-05T09:00:01.000Z"',
]
DATA_LOADER_CONTACTS = [
    '"ID","ACCOUNTID","FIRSTNAME","LASTNAME","EMAIL","BIRTHDATE","LASTMODIFIEDBYID",'
    '"SYSTEMMODSTAMP"',
    f'"{C1}","{A1}","Ada","Lovelace","ada@acme.example","1815-12-10","{OWNER}",'
    '"2026-01-05T09:00:02.000Z"',
    f'"{C2}","","Grace","Hopper","","","{OWNER}","2026-01-05T09:00:03.000Z"',
]
T_LOADER = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_r8_a_data_loader_export_syncs_exactly_into_every_store(
    folder: Path, any_store: Store
) -> None:
    write(folder, "Account.csv", DATA_LOADER_ACCOUNTS, end="\r\n", bom=True)
    write(folder, "Contact.csv", DATA_LOADER_CONTACTS, end="\r\n", bom=True)

    sync_twice(folder, any_store, DESCRIBED)

    # Upper-case headers take the describe's spelling; audit and relationship columns are
    # dropped.
    assert_holds_exactly(
        any_store,
        [
            account(
                1,
                T_LOADER,
                Name='Acme "East"',
                Industry="Technology",
                AnnualRevenue=Decimal("1500000.5"),
                Description="Line one\r\nLine two\nLine three",
            ),
            account(
                2,
                T_LOADER.replace(second=1),
                **dict.fromkeys(("Industry", "AnnualRevenue", "Description")),
                Name="Beta",
            ),
            contact(
                1,
                A1,
                T_LOADER.replace(second=2),
                FirstName="Ada",
                LastName="Lovelace",
                Email="ada@acme.example",
                Birthdate=date(1815, 12, 10),
            ),
            contact(
                2,
                None,
                T_LOADER.replace(second=3),
                FirstName="Grace",
                LastName="Hopper",
                Email=None,
                Birthdate=None,
            ),
        ],
    )
    assert any_store.contact_ids(A1) == [C1]


def test_r8_without_types_a_column_keeps_its_header_and_audit_columns_still_drop(
    folder: Path,
) -> None:
    write(folder, "Account.csv", DATA_LOADER_ACCOUNTS, end="\r\n", bom=True)
    first, _ = read(ExportFolder(folder), "Account")
    assert first.fields == {
        "NAME": 'Acme "East"',
        "INDUSTRY": "Technology",
        "ANNUALREVENUE": "1500000.5",
        "DESCRIPTION": "Line one\r\nLine two\nLine three",
    }


def test_r8_a_typed_column_in_any_case_takes_the_spelling_and_type_of_its_entry(
    folder: Path,
) -> None:
    write(
        folder,
        "Account.csv",
        [
            '"id","name","annualrevenue","IsPartner","Systemmodstamp"',
            f'"{A1}","Acme","1.5E6","1","2026-01-05T09:00:00.000Z"',
        ],
    )
    write(
        folder,
        "Contact.csv",
        [
            '"Id","ANNUALREVENUE","NAME","SystemModstamp"',
            f'"{C1}","2","Ada","2026-01-05T09:00:00.000Z"',
        ],
    )
    export = ExportFolder(folder, types=DESCRIBED)
    [acme] = read(export, "Account")
    assert acme.fields == {"Name": "Acme", "AnnualRevenue": Decimal("1.5E6"), "IsPartner": True}
    # The Account describe's AnnualRevenue is not the Contact's; Name is both objects'.
    [ada] = read(export, "Contact")
    assert ada.fields == {"ANNUALREVENUE": "2", "Name": "Ada"}


# -- Bulk API 2.0 ---------------------------------------------------------------------

# Bulk API 2.0 and Bulk API Developer Guide, "Get Results for a Query Job": each set of
# results is a whole CSV, a header row of the queried fields in the query's order (API 50.0
# and later) then one row per record, values in double quotes, lines ending in LF (the
# job's default lineEnding); not ordered unless the query says ORDER BY. "Valid Date
# Format in Records": datetimes yyyy-MM-ddTHH:mm:ss.SSSZ, dates yyyy-MM-dd. The values
# as SALESFORCE.md records them: a null is an empty value, a checkbox true / false, a
# large double (a currency is one) in exponent form, 1.0E10.
# SELECT Id, Name, AnnualRevenue, NumberOfEmployees, IsPartner, ParentId, SystemModstamp,
# IsDeleted, MasterRecordId FROM Account (queryAll), in two sets:
BULK_ACCOUNTS_1 = [
    '"Id","Name","AnnualRevenue","NumberOfEmployees","IsPartner","ParentId","SystemModstamp",'
    '"IsDeleted","MasterRecordId"',
    f'"{A2}","Beta","","","false","{A1}","2026-01-05T09:00:01.000Z","false",""',
    f'"{A3}","Old Acme","","","false","","2026-01-05T09:00:02.000Z","true","{A1}"',
]
BULK_ACCOUNTS_2 = [
    BULK_ACCOUNTS_1[0],
    f'"{A1}","Acme","1.0E10","1200","true","","2026-01-05T09:00:00.000Z","false",""',
]
# SELECT Id, SystemModstamp, AccountId, LastName, Birthdate, EmailBouncedDate,
# IsEmailBounced FROM Contact
BULK_CONTACTS = [
    '"Id","SystemModstamp","AccountId","LastName","Birthdate","EmailBouncedDate","IsEmailBounced"',
    f'"{C2}","2026-01-05T09:00:04.000Z","{A2}","Hopper","","","false"',
    f'"{C1}","2026-01-05T09:00:03.000Z","{A1}","Lovelace","1815-12-10",'
    '"2026-01-04T23:59:59.000Z","true"',
]
T_BULK = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_r8_bulk_api_query_results_sync_exactly_into_every_store(
    folder: Path, any_store: Store
) -> None:
    write(folder, "Account_results_1.csv", BULK_ACCOUNTS_1)
    write(folder, "Account_results_2.csv", BULK_ACCOUNTS_2)
    write(folder, "Contact_results_1.csv", BULK_CONTACTS)

    sync_twice(folder, any_store, DESCRIBED)

    assert_holds_exactly(
        any_store,
        [
            account(
                1,
                T_BULK,
                Name="Acme",
                AnnualRevenue=Decimal("1.0E10"),
                NumberOfEmployees=1200,
                IsPartner=True,
                ParentId=None,
            ),
            account(
                2,
                T_BULK.replace(second=1),
                Name="Beta",
                AnnualRevenue=None,
                NumberOfEmployees=None,
                IsPartner=False,
                ParentId=A1,
            ),
            contact(
                1,
                A1,
                T_BULK.replace(second=3),
                LastName="Lovelace",
                Birthdate=date(1815, 12, 10),
                EmailBouncedDate=datetime(2026, 1, 4, 23, 59, 59, tzinfo=UTC),
                IsEmailBounced=True,
            ),
        ],
    )
    assert any_store.get_account(A3) is None  # merged into A1 (R4)
    assert any_store.get_account(A1) is not None
    assert any_store.contact_ids(A2) == [C2]


def test_r8_unordered_bulk_results_are_read_in_stamp_order(folder: Path) -> None:
    write(folder, "Account_results_1.csv", BULK_ACCOUNTS_1)
    write(folder, "Account_results_2.csv", BULK_ACCOUNTS_2)
    got = read(ExportFolder(folder, types=DESCRIBED), "Account")
    assert [item.id for item in got] == [A1, A2, A3]
    assert got[2] == Deletion(
        object_type="Account", id=A3, deleted_at=T_BULK.replace(second=2), master_record_id=A1
    )


# -- The Data Export service ------------------------------------------------------------

# The weekly Data Export service (Setup > Data Export; Salesforce Help, "Backing Up Data
# from Salesforce", which describes the service but not its values) writes one CSV per
# object (Account.csv, Contact.csv): a header of API names, audit fields included, and
# values in double quotes. The values as issue 11 and SALESFORCE.md record them: a
# checkbox as 1 / 0, IsDeleted too; a datetime in UTC with no zone, 2026-06-09 16:12:25;
# a date as 2026-06-09; an empty lookup as the empty ID, 000000000000000AAA.
EXPORT_ACCOUNTS = [
    '"Id","IsDeleted","MasterRecordId","Name","ParentId","Industry","AnnualRevenue",'
    '"NumberOfEmployees","OwnerId","CreatedDate","CreatedById","LastModifiedDate",'
    '"LastModifiedById","SystemModstamp","LastActivityDate","IsPartner"',
    f'"{A1}","0","{EMPTY_ID}","Acme","{EMPTY_ID}","Technology","1500000.5","12","{OWNER}",'
    f'"2026-06-01 08:00:00","{OWNER}","2026-06-09 16:12:25","{OWNER}","2026-06-09 16:12:25",'
    '"2026-06-08","1"',
    f'"{A2}","0","{EMPTY_ID}","Beta","{A1}","","","","{OWNER}","2026-06-01 08:00:00",'
    f'"{OWNER}","2026-06-09 16:12:26","{OWNER}","2026-06-09 16:12:26","","0"',
    f'"{A3}","1","{A1}","Old Acme","{EMPTY_ID}","","","","{OWNER}","2026-06-01 08:00:00",'
    f'"{OWNER}","2026-06-09 16:12:27","{OWNER}","2026-06-09 16:12:27","","0"',
]
EXPORT_CONTACTS = [
    '"Id","IsDeleted","MasterRecordId","AccountId","LastName","FirstName","ReportsToId",'
    '"Email","Birthdate","OwnerId","CreatedDate","CreatedById","LastModifiedDate",'
    '"LastModifiedById","SystemModstamp","LastActivityDate","EmailBouncedDate",'
    '"IsEmailBounced"',
    f'"{C1}","0","{EMPTY_ID}","{A1}","Lovelace","Ada","{EMPTY_ID}","ada@acme.example",'
    f'"1815-12-10","{OWNER}","2026-06-01 08:00:00","{OWNER}","2026-06-09 16:12:28","{OWNER}",'
    '"2026-06-09 16:12:28","","2026-06-03 10:00:00","1"',
    f'"{C2}","0","{EMPTY_ID}","{EMPTY_ID}","Hopper","Grace","{C1}","","","{OWNER}",'
    f'"2026-06-01 08:00:00","{OWNER}","2026-06-09 16:12:29","{OWNER}","2026-06-09 16:12:29",'
    '"","","0"',
]
T_EXPORT = datetime(2026, 6, 9, 16, 12, 25, tzinfo=UTC)


def test_r8_a_data_export_syncs_exactly_into_every_store(folder: Path, any_store: Store) -> None:
    write(folder, "Account.csv", EXPORT_ACCOUNTS)
    write(folder, "Contact.csv", EXPORT_CONTACTS)

    sync_twice(folder, any_store, DESCRIBED)

    assert_holds_exactly(
        any_store,
        [
            account(
                1,
                T_EXPORT,
                Name="Acme",
                ParentId=None,
                Industry="Technology",
                AnnualRevenue=Decimal("1500000.5"),
                NumberOfEmployees=12,
                OwnerId=OWNER,
                IsPartner=True,
            ),
            account(
                2,
                T_EXPORT.replace(second=26),
                Name="Beta",
                ParentId=A1,
                Industry=None,
                AnnualRevenue=None,
                NumberOfEmployees=None,
                OwnerId=OWNER,
                IsPartner=False,
            ),
            contact(
                1,
                A1,
                T_EXPORT.replace(second=28),
                LastName="Lovelace",
                FirstName="Ada",
                ReportsToId=None,
                Email="ada@acme.example",
                Birthdate=date(1815, 12, 10),
                OwnerId=OWNER,
                EmailBouncedDate=datetime(2026, 6, 3, 10, tzinfo=UTC),
                IsEmailBounced=True,
            ),
            contact(
                2,
                None,
                T_EXPORT.replace(second=29),
                LastName="Hopper",
                FirstName="Grace",
                ReportsToId=C1,
                Email=None,
                Birthdate=None,
                OwnerId=OWNER,
                EmailBouncedDate=None,
                IsEmailBounced=False,
            ),
        ],
    )
    assert any_store.get_account(A3) is None  # IsDeleted 1: merged into A1
    assert any_store.contact_ids(A1) == [C1]


def test_r8_a_data_export_stamp_is_utc_and_orders_the_read(folder: Path) -> None:
    write(folder, "Account.csv", EXPORT_ACCOUNTS)
    export = ExportFolder(folder)
    after = [
        item.payload
        for page in export.read_changes("Account", T_EXPORT.replace(second=26), page_size=10)
        for item in page
        if isinstance(item, RawRecord)
    ]
    assert [payload["Id"] for payload in after] == [A2, A3]
    # Untyped, the system columns still read the Data Export's forms; the other columns
    # are handed on as written, audit columns dropped.
    assert after[1] == {
        "Id": A3,
        "IsDeleted": True,
        "MasterRecordId": A1,
        "Name": "Old Acme",
        "ParentId": EMPTY_ID,
        "Industry": None,
        "AnnualRevenue": None,
        "NumberOfEmployees": None,
        "OwnerId": OWNER,
        "SystemModstamp": "2026-06-09T16:12:27.000Z",
        "IsPartner": "0",
    }
    assert read(export, "Account")[2] == Deletion(
        object_type="Account",
        id=A3,
        deleted_at=T_EXPORT.replace(second=27),
        master_record_id=A1,
    )


def test_r8_a_checkbox_reads_1_and_0_as_well_as_true_and_false(folder: Path) -> None:
    stamp = "2026-06-09 16:12:25"
    write(
        folder,
        "Account.csv",
        ['"Id","IsPartner","SystemModstamp","IsDeleted"']
        + [
            f'"{make_id("001", n)}","{flag}","{stamp}","{deleted}"'
            for n, (flag, deleted) in enumerate(
                [("1", "0"), ("0", "FALSE"), ("TRUE", "false"), ("false", "0"), ("", "1")],
                start=1,
            )
        ],
    )
    got = read(ExportFolder(folder, types=DESCRIBED), "Account")
    assert [r.fields.get("IsPartner") for r in got[:4]] == [True, False, True, False]
    assert isinstance(got[4], Deletion)


def test_r8_the_empty_id_is_null_in_reference_and_id_columns_only(folder: Path) -> None:
    write(
        folder,
        "Contact.csv",
        [
            '"Id","AccountId","ReportsToId","Code__c","SystemModstamp"',
            f'"{C1}","{EMPTY_ID}","{EMPTY_ID}","{EMPTY_ID}","2026-06-09 16:12:25"',
        ],
    )
    raw = [
        item.payload
        for page in ExportFolder(folder, types=DESCRIBED).read_changes(
            "Contact", None, page_size=10
        )
        for item in page
        if isinstance(item, RawRecord)
    ]
    # Code__c is not an ID column: a text value that looks like one stays as written here.
    assert raw == [
        {
            "Id": C1,
            "AccountId": None,
            "ReportsToId": None,
            "Code__c": EMPTY_ID,
            "SystemModstamp": "2026-06-09T16:12:25.000Z",
        }
    ]


@pytest.mark.parametrize(
    "written",
    [
        "2026-06-09T16:12:25",
        "2026-06-09 16:12",
        "2026-06-09 16:12:25.123",
        "06/09/2026 16:12:25",
        "2026-06-09 16:12:25 PST",
    ],
)
def test_r7_a_datetime_without_a_zone_in_any_other_form_is_rejected(
    folder: Path, any_store: Store, written: str
) -> None:
    good = "2026-06-09 16:12:25"
    write(
        folder,
        "Contact.csv",
        [
            '"Id","LastName","EmailBouncedDate","SystemModstamp"',
            f'"{C1}","Stamp","","{written}"',
            f'"{C2}","Bounced","{written}","{good}"',
            f'"{C3}","Good","{good}","{good}"',
        ],
    )
    report = SyncEngine(source=ExportFolder(folder, types=DESCRIBED), store=any_store).sync()

    reason = f"{written!r} is not a Salesforce datetime with a time zone"
    assert {(r.origin, r.record_id, r.field, r.reason) for r in report.rejected} == {
        ("Contact.csv:2", C1, "SystemModstamp", reason),
        ("Contact.csv:3", C2, "EmailBouncedDate", reason),
    }
    assert any_store.get_contact(C3) == contact(
        3,
        None,
        T_EXPORT,
        LastName="Good",
        EmailBouncedDate=T_EXPORT,
    )


def test_r7_a_data_export_datetime_that_is_no_date_is_rejected_as_written(folder: Path) -> None:
    write(
        folder,
        "Contact.csv",
        [
            '"Id","EmailBouncedDate","SystemModstamp"',
            f'"{C1}","","2026-02-30 16:12:25"',
            f'"{C2}","2026-06-09 24:00:00","2026-06-09 16:12:25"',
        ],
    )
    pages = ExportFolder(folder, types=DESCRIBED).read_changes("Contact", None, page_size=10)
    items = [item for page in pages for item in page]
    assert [
        (i.origin, i.record_id, i.field, i.reason) if isinstance(i, Unreadable) else i
        for i in items
    ] == [
        ("Contact.csv:2", C1, "SystemModstamp", "'2026-02-30 16:12:25' is not a valid datetime"),
        ("Contact.csv:3", C2, "EmailBouncedDate", "'2026-06-09 24:00:00' is not a valid datetime"),
    ]


def test_r8_an_id_column_may_be_typed_as_text_or_reference_other_system_types_are_fixed(
    tmp_path: Path,
) -> None:
    ExportFolder(tmp_path, types={"Id": "string", "Contact.AccountId": "reference"})
    with pytest.raises(ConfigurationError, match="AccountId is always read as reference"):
        ExportFolder(tmp_path, types={"AccountId": "date"})
    with pytest.raises(ConfigurationError, match="SystemModstamp is always read as datetime"):
        ExportFolder(tmp_path, types={"Account.SystemModstamp": "string"})


def test_r9_a_json_lines_record_is_placed_by_its_stamp_in_any_case(folder: Path) -> None:
    (folder / "Account.jsonl").write_text(
        f'{{"ID": "{A1}", "systemmodstamp": "2026-01-05T09:00:00.000+0000", "Name": "Acme"}}\n'
    )
    export = ExportFolder(folder)
    assert [len(page) for page in export.read_changes("Account", None, page_size=5)] == [1]
    # A row without a readable stamp would come in every read: this one is ordered.
    assert list(export.read_changes("Account", T_LOADER.replace(second=1), page_size=5)) == []


# -- A file's place breaks a same-second tie (R3) -----------------------------------------

T_TIE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TIE_HEADER = '"Id","Name","Industry","SystemModstamp"'


def tie_files(folder: Path, *names: str) -> None:
    versions = {
        "Account-1.csv": f'"{A1}","Acme","Tech","2026-01-05T09:00:00.000Z"',
        "Account-2.csv": f'"{A1}","Acme Corp","Retail","2026-01-05T09:00:00.000Z"',
    }
    for name in names:
        write(folder, name, [TIE_HEADER, versions[name]])
    write(
        folder,
        "Contact.csv",
        ['"Id","AccountId","SystemModstamp"', f'"{C1}","{A1}","2026-01-05T09:00:00.000Z"'],
    )


def test_r3_the_row_of_the_file_read_later_is_sent_and_a_second_sync_keeps_local_edits(
    folder: Path, any_store: Store
) -> None:
    tie_files(folder, "Account-1.csv", "Account-2.csv")
    engine = SyncEngine(source=ExportFolder(folder), store=any_store)
    assert engine.sync().ok
    assert any_store.get_account(A1) == account(1, T_TIE, Name="Acme Corp", Industry="Retail")

    engine.edit_account_field(contact_id=C1, field="Industry", value="Local")
    logged = list(any_store.activities())
    again = engine.sync()

    assert (again.accounts_upserted, again.activities) == (0, ())
    assert list(any_store.activities()) == logged
    edited = any_store.get_account(A1)
    assert edited is not None
    assert edited.fields["Industry"] == "Local"


def test_r3_a_same_second_version_in_a_later_file_of_a_later_sync_applies_and_logs(
    folder: Path, any_store: Store
) -> None:
    tie_files(folder, "Account-1.csv")
    engine = SyncEngine(source=ExportFolder(folder), store=any_store)
    assert engine.sync().activities == ()  # a first appearance logs nothing (S7)

    tie_files(folder, "Account-2.csv")
    second = engine.sync()

    assert any_store.get_account(A1) == account(1, T_TIE, Name="Acme Corp", Industry="Retail")
    assert sorted(
        (e.contact_id, e.field, e.old_value, e.new_value, e.origin) for e in second.activities
    ) == [
        (C1, "Industry", "Tech", "Retail", Origin.SALESFORCE),
        (C1, "Name", "Acme", "Acme Corp", Origin.SALESFORCE),
    ]
    third = engine.sync()
    assert (third.accounts_upserted, third.activities) == (0, ())


def test_r3_on_a_same_second_tie_a_data_export_deletion_wins_over_a_later_file(
    folder: Path,
) -> None:
    header = '"Id","IsDeleted","Name","SystemModstamp"'
    write(folder, "Account-1.csv", [header, f'"{A1}","1","Acme","2026-06-09 16:12:25"'])
    write(folder, "Account-2.csv", [header, f'"{A1}","0","Acme","2026-06-09 16:12:25"'])
    assert read(ExportFolder(folder), "Account") == [
        Deletion(object_type="Account", id=A1, deleted_at=T_EXPORT)
    ]
