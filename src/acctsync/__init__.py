"""acctsync: a one-way local copy of Salesforce Accounts and Contacts.

It follows Marketo Engage's account sync: Salesforce is the source of truth, local account
edits reach every contact of the account and last until the next Salesforce update, and
each account-field change logs a Change Data Value entry per contact, except on accounts
with more contacts than the `ActivityPolicy` allows.
"""

from acctsync._activity import ActivityPolicy, ChangeDataValue, Origin
from acctsync._convert import make_converter
from acctsync._engine import CONVERSION_FIELD_MAP, SyncEngine
from acctsync._errors import (
    AcctSyncError,
    AlreadyAContactError,
    ConfigurationError,
    InvalidRecordError,
    LockLostError,
    LockTimeoutError,
    NoAccountError,
    SchemaVersionError,
    SourceError,
    StoreError,
    UnknownContactError,
)
from acctsync._formats import AUDIT_FIELDS, decode_change_event, decode_record, encode_record
from acctsync._ids import normalize_id
from acctsync._protocols import (
    ContactIndex,
    ExclusiveStore,
    ListingStore,
    LoggingPolicy,
    Source,
    Store,
    WritableSource,
)
from acctsync._records import (
    RESERVED_FIELDS,
    UNCHANGED,
    Account,
    Change,
    Contact,
    Deletion,
    FieldValue,
    ObjectType,
    Opportunity,
    PartialUpdate,
    Person,
    RawChangeEvent,
    RawRecord,
    Refetch,
    Unchanged,
    Unreadable,
)
from acctsync._report import EditResult, Rejection, Suppression, SyncReport
from acctsync._state import (
    AccountState,
    Batch,
    ContactOp,
    Conversion,
    ConversionRequest,
    DeleteContacts,
    MoveContacts,
    StoredAccount,
    StoredContact,
    Watermark,
)

__all__ = [
    "AUDIT_FIELDS",
    "CONVERSION_FIELD_MAP",
    "RESERVED_FIELDS",
    "UNCHANGED",
    "Account",
    "AccountState",
    "AcctSyncError",
    "ActivityPolicy",
    "AlreadyAContactError",
    "Batch",
    "Change",
    "ChangeDataValue",
    "ConfigurationError",
    "Contact",
    "ContactIndex",
    "ContactOp",
    "Conversion",
    "ConversionRequest",
    "DeleteContacts",
    "Deletion",
    "EditResult",
    "ExclusiveStore",
    "FieldValue",
    "InvalidRecordError",
    "ListingStore",
    "LockLostError",
    "LockTimeoutError",
    "LoggingPolicy",
    "MoveContacts",
    "NoAccountError",
    "ObjectType",
    "Opportunity",
    "Origin",
    "PartialUpdate",
    "Person",
    "RawChangeEvent",
    "RawRecord",
    "Refetch",
    "Rejection",
    "SchemaVersionError",
    "Source",
    "SourceError",
    "Store",
    "StoreError",
    "StoredAccount",
    "StoredContact",
    "Suppression",
    "SyncEngine",
    "SyncReport",
    "Unchanged",
    "UnknownContactError",
    "Unreadable",
    "Watermark",
    "WritableSource",
    "decode_change_event",
    "decode_record",
    "encode_record",
    "make_converter",
    "normalize_id",
]
