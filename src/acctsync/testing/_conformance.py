"""Conformance checks an integrator runs against their own store or source.

They need no test runner: call ``check_store(make_store)`` from any test and it raises
`ConformanceError` naming the first broken duty. ``make_store`` must return a new, empty
store each call; ``make_source(records)`` a source presenting exactly ``records``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import attrs

from acctsync._activity import ActivityPolicy, ChangeDataValue, Origin
from acctsync._apply import same_second, stream_of
from acctsync._engine import SyncEngine
from acctsync._errors import AcctSyncError
from acctsync._formats import decode_change_event, decode_record
from acctsync._protocols import (
    CheckpointStore,
    ContactIndex,
    DescribedSource,
    FieldNameStore,
    FormulaSource,
    GroupCommitStore,
    ListingStore,
    Source,
    Store,
)
from acctsync._records import (
    RESERVED_FIELDS,
    Account,
    Change,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    PartialUpdate,
    RawChangeEvent,
    RawRecord,
    Refetch,
    Unreadable,
    field_name_problem,
)
from acctsync._state import (
    AccountState,
    Batch,
    Checkpoint,
    Conversion,
    DeleteContacts,
    FieldName,
    MoveContacts,
    StoredAccount,
    StoredContact,
    Watermark,
)
from acctsync.testing._fakes import InMemorySource, make_id

__all__ = ["ConformanceError", "check_source", "check_store"]

T0 = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
A1, A2, A3 = (make_id("001", n) for n in (1, 2, 3))
C1, C2, C3 = (make_id("003", n) for n in (1, 2, 3))
HOSTILE = "x'); DROP TABLE accounts; --"
ODD_VALUES: dict[str, FieldValue] = {
    "Decimal": Decimal("1234.50"),
    "Date": date(2024, 2, 29),
    "Stamp": datetime(2024, 1, 31, 12, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2))),
    "Yes": True,
    "One": 1,
    "Float": 0.1,
    "Nothing": None,
    "Unicode": "Zürich \u2603 \x00 '\"",
    # Names are API names (R10); what SQL could trip on is in the values.
    "Drop_Table__c": HOSTILE,
}
# A change event's (commitNumber, sequenceNumber), and a commit number of 19 digits, as
# the decoders accept them: more than a signed 64-bit column holds.
SEQUENCE = (10_811_127_185_262, 3)
LONG_SEQUENCE = (9_999_999_999_999_999_999,)
_RESERVED_FOLDED = frozenset(name.lower() for name in RESERVED_FIELDS)


class ConformanceError(AcctSyncError, AssertionError):
    """An implementation breaks a duty of its protocol."""


def _expect(condition: bool, duty: str) -> None:
    if not condition:
        raise ConformanceError(duty)


def _t(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _account(account_id: str, seconds: int, **fields: FieldValue) -> Account:
    return Account(id=account_id, fields=fields, system_modstamp=_t(seconds))


def _contact(contact_id: str, account_id: str | None, seconds: int) -> Contact:
    return Contact(
        id=contact_id,
        account_id=account_id,
        fields={"Email": "x@y.z"},
        system_modstamp=_t(seconds),
    )


def _entry(entry_id: str, contact_id: str = C1) -> ChangeDataValue:
    return ChangeDataValue(
        id=entry_id,
        contact_id=contact_id,
        account_id=A1,
        field="Name",
        old_value="a",
        new_value="b",
        origin=Origin.SALESFORCE,
        occurred_at=T0,
    )


def _store_empty(store: Store) -> None:
    _expect(store.watermark("Account") is None, "a new store has no watermark")
    _expect(store.get_account(A1) is None, "a new store has no account")
    _expect(store.get_contact(C1) is None, "a new store has no contact")
    _expect(store.count_contacts(A1) == 0, "a new store counts no contacts")
    _expect(list(store.contact_ids(A1)) == [], "a new store lists no contacts")
    _expect(list(store.activities()) == [], "a new store has no activities")
    _expect(store.conversion("p-1") is None, "a new store has no conversion")


def _store_round_trip(store: Store) -> None:
    state = AccountState(
        upstream=_account(A1, 0, **ODD_VALUES),
        local_edits={"Industry": "Retail"},
        local_revision=3,
    )
    contact = Contact(id=C1, account_id=A1, fields=ODD_VALUES, system_modstamp=_t(1))
    store.apply(Batch(accounts=[state], contacts=[contact]))
    _expect(
        store.account_states([A1, A2]) == {A1: state}, "account_states returns what was stored"
    )
    _expect(
        store.contact_states([C1, C2]) == {C1: contact}, "contact_states returns what was stored"
    )
    got = store.account_states([A1])[A1]
    assert isinstance(got, AccountState)
    for name, value in ODD_VALUES.items():
        kept = got.upstream.fields[name]
        _expect(
            type(kept) is type(value) and str(kept) == str(value),
            f"field {name!r} keeps its value and type exactly ({value!r} came back as {kept!r})",
        )
    effective = store.get_account(A1)
    _expect(
        effective is not None and effective.fields["Industry"] == "Retail",
        "get_account shows local edits on top of upstream values",
    )
    _expect(store.get_contact(C1) == contact, "get_contact returns the stored contact")


def _store_sequences(store: Store) -> None:
    account = attrs.evolve(_account(A1, 0, Name="Acme"), sequence=SEQUENCE)
    plain = _account(A2, 0, Name="Beta")
    contact = attrs.evolve(_contact(C1, A1, 1), sequence=LONG_SEQUENCE)
    doomed = attrs.evolve(_contact(C2, A3, 2), sequence=(7, 0))
    gone = Deletion(object_type="Account", id=A3, deleted_at=_t(4), sequence=(8, 1))
    tombstone = Deletion(object_type="Contact", id=C3, deleted_at=_t(3), sequence=(8, 2))
    store.apply(
        Batch(
            accounts=[AccountState(upstream=account), AccountState(upstream=plain)],
            contacts=[contact, doomed, tombstone],
        )
    )
    kept = {i: _sequence_of(s) for i, s in store.account_states([A1, A2]).items()}
    _expect(
        kept == {A1: SEQUENCE, A2: None},
        f"an account's sequence reads back as written, and none as None (got {kept})",
    )
    kept = {i: _sequence_of(s) for i, s in store.contact_states([C1, C3]).items()}
    _expect(
        kept == {C1: LONG_SEQUENCE, C3: tombstone.sequence},
        f"a contact's and a contact tombstone's sequence read back as written (got {kept})",
    )
    _expect(store.get_contact(C1) == contact, "get_contact returns the contact with its sequence")
    store.apply(Batch(accounts=[gone], contact_ops=[DeleteContacts(account_id=A3)]))
    kept = {i: _sequence_of(s) for i, s in store.account_states([A3]).items()}
    _expect(
        kept == {A3: gone.sequence},
        f"an account tombstone's sequence reads back as written (got {kept})",
    )
    cascaded = store.contact_states([C2]).get(C2)
    _expect(
        isinstance(cascaded, Deletion)
        and (cascaded.deleted_at, cascaded.sequence) == (_t(2), doomed.sequence),
        "DeleteContacts leaves tombstones with each contact's own SystemModstamp and"
        f" sequence (got {cascaded!r})",
    )


def _sequence_of(entry: StoredAccount | StoredContact) -> tuple[int, ...] | None:
    return entry.upstream.sequence if isinstance(entry, AccountState) else entry.sequence


def _store_membership(store: Store) -> None:
    store.apply(
        Batch(
            accounts=[AccountState(upstream=_account(a, 0)) for a in (A1, A2)],
            contacts=[_contact(C1, A1, 1), _contact(C2, A1, 1), _contact(C3, None, 1)],
        )
    )
    _expect(store.count_contacts(A1) == 2, "count_contacts counts an account's contacts")
    _expect(sorted(store.contact_ids(A1)) == sorted([C1, C2]), "contact_ids lists them")
    if isinstance(store, ContactIndex):
        members = {k: sorted(v) for k, v in store.contact_ids_of([A1, A2, A3], up_to=2).items()}
        _expect(
            members == {A1: sorted([C1, C2]), A2: [], A3: []},
            "contact_ids_of lists the contacts of each account, none as empty",
        )
        _expect(
            dict(store.contact_ids_of([A1, A2], up_to=1)) == {A2: []},
            "contact_ids_of leaves out an account with more than up_to contacts",
        )
    store.apply(Batch(contacts=[_contact(C1, A2, 2)]))
    _expect(
        sorted(store.contact_ids(A1)) == [C2] and list(store.contact_ids(A2)) == [C1],
        "a contact whose account changes leaves the old account and joins the new (S4)",
    )
    store.apply(Batch(contacts=[Deletion(object_type="Contact", id=C2, deleted_at=_t(3))]))
    _expect(store.count_contacts(A1) == 0, "a deleted contact no longer counts")
    _expect(store.get_contact(C2) is None, "get_contact hides a deleted contact")
    _expect(
        store.contact_states([C2])
        == {C2: Deletion(object_type="Contact", id=C2, deleted_at=_t(3))},
        "contact_states returns the tombstone of a deleted contact",
    )
    _expect(store.count_contacts(A3) == 0, "an unknown account has no contacts")
    if isinstance(store, ListingStore):
        _expect(
            sorted(store.live_ids("Account")) == sorted([A1, A2])
            and sorted(store.live_ids("Contact")) == sorted([C1, C3]),
            "live_ids lists the live records of each object, not tombstones",
        )


def _store_contact_ops(store: Store) -> None:
    pending = make_id("001", 99)  # an account the store has never seen (R5)
    first = attrs.evolve(_contact(C1, A1, 5), sequence=SEQUENCE)
    store.apply(
        Batch(
            accounts=[AccountState(upstream=_account(a, 0)) for a in (A1, A2, A3)],
            contacts=[first, _contact(C2, pending, 6), _contact(C3, A3, 7)],
        )
    )
    loser = Deletion(object_type="Account", id=A1, deleted_at=_t(10), master_record_id=A2)
    store.apply(
        Batch(
            accounts=[loser],
            contact_ops=[
                MoveContacts(from_account_id=A1, to_account_id=A2),
                MoveContacts(from_account_id=pending, to_account_id=A2),
                DeleteContacts(account_id=A3),
            ],
        )
    )
    _expect(store.get_account(A1) is None, "get_account hides a deleted account")
    _expect(store.account_states([A1]) == {A1: loser}, "account_states returns the tombstone")
    _expect(
        sorted(store.contact_ids(A2)) == sorted([C1, C2]),
        "MoveContacts moves every contact of the account, known or not",
    )
    _expect(
        store.get_contact(C1) == attrs.evolve(first, account_id=A2),
        "MoveContacts keeps each contact's SystemModstamp, sequence and fields",
    )
    _expect(
        store.contact_states([C3])
        == {C3: Deletion(object_type="Contact", id=C3, deleted_at=_t(7))},
        "DeleteContacts leaves tombstones stamped with each contact's own SystemModstamp",
    )
    _expect(store.count_contacts(A3) == 0, "DeleteContacts removes the contacts")


def _store_log_and_marks(store: Store) -> None:
    store.apply(Batch(activities=[_entry("e1"), _entry("e2", C2)]))
    store.apply(Batch(activities=[_entry("e2", C2), _entry("e3", C3)]))
    _expect(
        [e.id for e in store.activities()] == ["e1", "e2", "e3"],
        "the activity log keeps insertion order and skips an id it has (R2)",
    )
    _expect(list(store.activities())[1] == _entry("e2", C2), "entries come back as stored")
    store.apply(
        Batch(
            watermarks=[
                Watermark(stream="Account", system_modstamp=_t(9)),
                Watermark(stream="Contact", system_modstamp=_t(4)),
            ]
        )
    )
    store.apply(Batch(watermarks=[Watermark(stream="Contact", system_modstamp=_t(5))]))
    _expect(store.watermark("Account") == _t(9), "watermarks are kept per stream")
    _expect(store.watermark("Contact") == _t(5), "watermarks are kept per stream")
    conversion = Conversion(person_id="p-1", account_id=A1, contact_id=C1, opportunity_id="x")
    store.apply(Batch(conversions=[conversion]))
    _expect(store.conversion("p-1") == conversion, "conversions are recorded by person id")


def _names(object_type: ObjectType, *names: str) -> list[FieldName]:
    return [FieldName(object_type=object_type, name=name) for name in names]


def _store_field_names(store: Store) -> None:
    if not isinstance(store, FieldNameStore):
        return

    def kept(object_type: ObjectType) -> list[str]:
        return sorted(store.field_names(object_type))

    _expect(kept("Account") == kept("Contact") == [], "a new store has no field names")
    store.apply(
        Batch(
            field_names=[
                *_names("Account", "Industry", "Drop_Table__c"),
                *_names("Contact", "Email"),
            ]
        )
    )
    _expect(
        kept("Account") == ["Drop_Table__c", "Industry"] and kept("Contact") == ["Email"],
        f"field names from batches are kept, by object type (got {kept('Account')} and"
        f" {kept('Contact')})",
    )
    store.apply(Batch(field_names=_names("Account", "INDUSTRY", "drop_table__C", "Sic", "SIC")))
    _expect(
        kept("Account") == ["Drop_Table__c", "Industry", "Sic"],
        "a field name the store has in another case is not added again: the first"
        f" spelling stays, also within one batch (R9; got {kept('Account')})",
    )
    store.apply(Batch(field_names=_names("Contact", "industry")))
    _expect(
        kept("Contact") == ["Email", "industry"] and "industry" not in kept("Account"),
        "each object type has its own field names: a contact's industry is not an"
        f" account's Industry (got {kept('Contact')})",
    )


def _store_checkpoints(store: Store) -> None:
    if not isinstance(store, CheckpointStore):
        return
    stream = "pubsub /data/ChangeEvents"
    _expect(store.checkpoint(stream) is None, "a new store has no checkpoint")
    store.apply(
        Batch(
            accounts=[AccountState(upstream=_account(A1, 0))],
            checkpoints=[Checkpoint(name=stream, position=b"\x00\x01")],
        )
    )
    _expect(store.checkpoint(stream) == b"\x00\x01", "a checkpoint is stored with its batch")
    # Any bytes: a replay id is opaque, NUL and high bytes included.
    odd = bytes(range(256))
    store.apply(
        Batch(
            checkpoints=[
                Checkpoint(name=stream, position=odd),
                Checkpoint(name="other", position=b""),
            ]
        )
    )
    got = store.checkpoint(stream)
    _expect(
        type(got) is bytes and got == odd,
        f"a checkpoint is overwritten by the next of its name, and reads back as the"
        f" same bytes (got {got!r:.40})",
    )
    _expect(
        store.checkpoint("other") == b"",
        "checkpoints are kept per name, and an empty position is kept as one, not None",
    )
    _expect(
        store.checkpoint(stream.upper()) is None,
        "a checkpoint's name is exact: in another case it names another stream",
    )
    broken = Batch(
        accounts=[AccountState(upstream=_account(A2, 0))],
        checkpoints=[
            Checkpoint(name=stream, position=b"new"),
            "not a checkpoint",  # type: ignore[list-item]
        ],
    )
    try:
        store.apply(broken)
    except Exception:  # any failure will do, as long as nothing changed
        pass
    else:
        raise ConformanceError("a batch holding something that is not a checkpoint must fail")
    _expect(
        store.checkpoint(stream) == odd and store.account_states([A2]) == {},
        "a batch that fails stores neither its checkpoint nor its records (R2)",
    )


def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        store.account_states([A1, A2]),
        store.contact_states([C1]),
        list(store.activities()),
        store.watermark("Account"),
    )


def _store_atomic(store: Store) -> None:
    store.apply(
        Batch(
            accounts=[AccountState(upstream=_account(A1, 0))],
            field_names=_names("Account", "Name"),
        )
    )
    mark = Watermark(stream="Account", system_modstamp=_t(1))
    # The second batch fails at its watermarks, after its field names (see `Batch`): a
    # store that does not undo the steps before keeps them.
    names = _names("Account", "Industry")
    for broken in (
        Batch(
            accounts=[AccountState(upstream=_account(A2, 0))],
            activities=[_entry("ok"), "not an entry"],  # type: ignore[list-item]
            field_names=names,
            watermarks=[mark],
        ),
        Batch(
            accounts=[AccountState(upstream=_account(A2, 0))],
            contacts=[_contact(C1, A2, 1)],
            field_names=names,
            watermarks=[mark, "not a watermark"],  # type: ignore[list-item]
        ),
    ):
        before = _snapshot(store)
        try:
            store.apply(broken)
        except Exception:  # any failure will do, as long as nothing changed
            pass
        else:
            raise ConformanceError("a batch holding something that is not a record must fail")
        _expect(_snapshot(store) == before, "a batch that fails leaves the store as it was (R2)")
        if isinstance(store, FieldNameStore):
            kept = sorted(store.field_names("Account"))
            _expect(
                kept == ["Name"],
                f"a batch that fails records none of its field names (R2; got {kept})",
            )


class _AbandonedError(Exception):
    """Raised inside `GroupCommitStore.group_commits` by the check."""


def _store_group_commits(store: Store) -> None:
    if not isinstance(store, GroupCommitStore):
        return
    mark = Watermark(stream="Account", system_modstamp=_t(1))
    later_refused = False
    try:
        with store.group_commits():
            store.apply(
                Batch(accounts=[AccountState(upstream=_account(A1, 0))], watermarks=[mark])
            )
            _expect(
                A1 in store.account_states([A1]) and store.watermark("Account") == _t(1),
                "inside group_commits, reads see the batches applied",
            )
            later = Watermark(stream="Account", system_modstamp=_t(2))
            broken = Batch(
                accounts=[AccountState(upstream=_account(A2, 0))],
                watermarks=[later, "not a watermark"],  # type: ignore[list-item]
            )
            try:
                store.apply(broken)
            except Exception:  # any failure will do, as long as nothing of it stays
                pass
            else:
                raise ConformanceError(
                    "a batch holding something that is not a watermark must fail"
                )
            try:
                store.apply(Batch(contacts=[_contact(C1, A1, 1)]))
            except Exception:  # allowed: see below
                later_refused = True
            raise _AbandonedError
    except _AbandonedError:
        pass
    kept = A1 in store.account_states([A1])
    _expect(
        A2 not in store.account_states([A2]),
        "inside group_commits, a batch that fails leaves nothing of it (R2)",
    )
    _expect(
        store.watermark("Account") == (_t(1) if kept else None),
        "inside group_commits, a batch before a failed one stays or goes with its watermark",
    )
    _expect(
        kept or later_refused,
        "inside group_commits, once a failed batch took the batches before it, a later"
        " batch must be refused: its watermark would pass theirs (R2)",
    )
    _expect(
        later_refused or C1 in store.contact_states([C1]),
        "the batches applied inside group_commits stay when it exits by an exception",
    )


def _store_under_engine(store: Store) -> None:
    source = InMemorySource()
    engine = SyncEngine(
        source=source, store=store, policy=ActivityPolicy(max_contacts_per_account=2)
    )
    source.upsert(_account(A1, 0, Name="Acme", Industry="Tech"))
    source.upsert(_account(A2, 0, Name="Big"))
    for number, account_id in enumerate([A1, A1, A2, A2, A2]):
        source.upsert(_contact(make_id("003", 10 + number), account_id, 1))
    engine.sync()
    first = make_id("003", 10)
    engine.edit_account_field(contact_id=first, field="Industry", value="Retail")
    _expect(len(list(store.activities())) == 2, "a local edit logs one entry per contact (S2, S7)")
    engine.sync()
    account = store.get_account(A1)
    _expect(
        account is not None and account.fields["Industry"] == "Retail",
        "a sync without a newer account version keeps the local edit (S3)",
    )
    source.upsert(_account(A1, 60, Name="Acme Corp", Industry="Tech"))
    source.upsert(_account(A2, 60, Name="Bigger"))
    report = engine.sync()
    account = store.get_account(A1)
    _expect(
        account is not None and account.fields["Industry"] == "Tech",
        "a newer Salesforce version overwrites the local edit (S3)",
    )
    _expect(len(report.activities) == 4, "two contacts x two changed fields log four entries (S7)")
    _expect(
        [(s.account_id, s.entries_skipped) for s in report.suppressed] == [(A2, 3)],
        "an account over the policy's limit logs nothing and is reported (S8)",
    )
    engine.sync()
    _expect(len(list(store.activities())) == 6, "a re-run logs nothing twice (R2)")


STORE_CHECKS: tuple[Callable[[Store], None], ...] = (
    _store_empty,
    _store_round_trip,
    _store_membership,
    _store_sequences,
    _store_contact_ops,
    _store_log_and_marks,
    _store_field_names,
    _store_checkpoints,
    _store_atomic,
    _store_group_commits,
    _store_under_engine,
)


def check_store(make_store: Callable[[], Store]) -> None:
    """Check that stores made by ``make_store`` fulfil the `Store` protocol's duties.

    Each duty is checked on a new store: those of `Store` (records, with their
    ``sequence``, read back as written), and those of `ContactIndex`, `ListingStore`,
    `FieldNameStore`, `CheckpointStore` and `GroupCommitStore` when the store has them. Raises
    `ConformanceError` on the first failure.
    """
    for check in STORE_CHECKS:
        check(make_store())


def _decoded(page: Sequence[Change]) -> list[Account | Contact | Deletion | PartialUpdate]:
    out: list[Account | Contact | Deletion | PartialUpdate] = []
    for item in page:
        if isinstance(item, RawRecord):
            out.append(decode_record(item.object_type, item.payload))
        elif isinstance(item, RawChangeEvent):
            out.extend(c for c in decode_change_event(item.payload) if not isinstance(c, Refetch))
        elif not isinstance(item, Refetch | Unreadable):
            out.append(item)
    return out


def _sample_records() -> list[Account | Contact | Deletion]:
    records: list[Account | Contact | Deletion] = []
    for n in range(12):
        # Several records share each stamp, so that pages end in the middle of a stamp.
        records.append(_account(make_id("001", 100 + n), n // 3, Name=f"Account {n}"))
        records.append(_contact(make_id("003", 100 + n), make_id("001", 100 + n), n // 4))
    records.append(Deletion(object_type="Account", id=make_id("001", 200), deleted_at=_t(2)))
    records.append(
        Deletion(
            object_type="Contact",
            id=make_id("003", 200),
            deleted_at=_t(3),
            master_record_id=make_id("003", 100),
        )
    )
    return records


def check_source(make_source: Callable[[Sequence[Account | Contact | Deletion]], Source]) -> None:
    """Check that a source made by ``make_source(records)`` reads back ``records`` by contract.

    Every record comes out once, ordered by ``(SystemModstamp, Id)``, in pages no larger
    than asked, filtered by an inclusive ``since``. A `DescribedSource`'s ``field_names``
    are API names, no record attribute, each in one case, and name every field it reads.
    A `FormulaSource`'s ``read_formulas`` gives live records of ``records`` only, each
    once, under its stamp, in pages no larger than asked. Raises `ConformanceError` on
    failure.
    """
    records = _sample_records()
    source = make_source(records)
    streams: tuple[ObjectType, ...] = ("Account", "Contact")
    for stream in streams:
        expected = sorted(
            (r for r in records if _stream(r) == stream), key=lambda r: (r.system_modstamp, r.id)
        )
        for page_size in (1, 2, 5, 1000):
            pages = [list(page) for page in source.read_changes(stream, None, page_size=page_size)]
            _expect(
                all(0 < len(page) <= page_size for page in pages),
                f"pages hold between 1 and page_size ({page_size}) items",
            )
            got = [change for page in pages for change in _decoded(page)]
            _expect(
                got == expected,
                f"{stream} records come out once each, ordered by (SystemModstamp, Id)",
            )
        if isinstance(source, DescribedSource):
            _source_field_names(source, stream, got)  # got: the last read, in one page
        since = _t(1)
        got = [
            change
            for page in source.read_changes(stream, since, page_size=3)
            for change in _decoded(page)
        ]
        _expect(
            got == [r for r in expected if r.system_modstamp >= since],
            "since is inclusive: records stamped exactly at it come out, older ones do not",
        )
        if isinstance(source, FormulaSource):
            _source_formulas(source, stream, expected)


def _source_formulas(
    source: FormulaSource, stream: ObjectType, records: Sequence[Account | Contact | Deletion]
) -> None:
    """The duties of a `FormulaSource`'s ``read_formulas``, against the records it holds."""
    live = {r.id: r.system_modstamp for r in records if not isinstance(r, Deletion)}
    pages = [list(page) for page in source.read_formulas(stream, page_size=2)]
    _expect(
        all(0 < len(page) <= 2 for page in pages),
        "read_formulas pages hold between 1 and page_size (2) items",
    )
    read = [change for page in pages for change in _decoded(page)]
    ids = [change.id for change in read]
    _expect(len(ids) == len(set(ids)), f"read_formulas gives each {stream} record once")
    for change in read:
        stamp = live.get(change.id)
        _expect(
            stamp is not None and stream_of(change) == stream,
            f"read_formulas gives live {stream} records only (not {change.id})",
        )
        _expect(
            stamp is not None and same_second(change.system_modstamp, stamp),
            f"read_formulas gives each record under its SystemModstamp ({change.id})",
        )


def _source_field_names(
    source: DescribedSource,
    stream: ObjectType,
    read: Sequence[Account | Contact | Deletion | PartialUpdate],
) -> None:
    """The duties of a `DescribedSource`'s ``field_names``, against one read of ``stream``."""
    names = list(source.field_names(stream))
    reserved = [n for n in names if isinstance(n, str) and n.lower() in _RESERVED_FOLDED]
    _expect(
        not reserved,
        f"{stream} field_names leaves out the record attributes (Id, SystemModstamp...), in"
        f" any case (got {reserved})",
    )
    for name in names:
        problem = field_name_problem(name)
        _expect(problem is None, f"{stream} field_names gives API names; {name!r}: {problem}")
    folded = Counter(name.lower() for name in names)
    twice = sorted(n for n in names if folded[n.lower()] > 1)
    _expect(not twice, f"{stream} field_names gives each field once, in one case (got {twice})")
    # Names are case-insensitive (R9): the engine reads a record's INDUSTRY as Industry.
    unnamed = sorted(
        {
            name
            for record in read
            if not isinstance(record, Deletion)
            for name in record.fields
            if name.lower() not in folded
        }
    )
    _expect(
        not unnamed,
        f"{stream} records read hold only fields that field_names gives (also {unnamed})",
    )


def _stream(record: Account | Contact | Deletion) -> ObjectType:
    if isinstance(record, Deletion):
        return record.object_type
    return "Account" if isinstance(record, Account) else "Contact"
