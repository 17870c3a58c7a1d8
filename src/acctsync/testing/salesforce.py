"""A fake Salesforce org on a loopback HTTP server, for a real ``simple_salesforce`` client.

Theory of operation: `FakeSalesforce` keeps an org's rows (Accounts, Contacts and
Opportunities, each with ``Id``, ``SystemModstamp``, ``IsDeleted`` and its fields) and
serves the part of the REST API a sync needs, in Salesforce's own shapes:

- ``GET query/?q=`` and ``queryAll/?q=``: a small SOQL (see `FakeSalesforce`), paged
  through ``nextRecordsUrl`` cursors whose result set is fixed when the query runs;
- ``GET sobjects/{object}/describe``;
- ``POST sobjects/{object}`` (create) and ``PATCH sobjects/{object}/{field}/{value}``
  (upsert by external ID), alone or as subrequests of ``POST composite``;
- Salesforce's error bodies, which simple-salesforce turns into its exceptions.

A test arranges the org through Python methods (`FakeSalesforce.put`, `delete`, `fail`, ...)
and lets the code under test talk to it over HTTP, so that the client and the wire are
tested too, not a mock of them. One lock guards the org and each request runs whole under
it, as one transaction.

With ``tls=True`` it serves HTTPS under a certificate it makes for 127.0.0.1, so that a
client built as in production (from an instance URL, trusting the CA bundle named by
``REQUESTS_CA_BUNDLE``) reaches it, in another process too.

Only the standard library and acctsync are imported here; ``requests`` and
``simple_salesforce`` are imported when `FakeSalesforce.client` is called, and
``cryptography`` when a TLS fake starts.
"""

from __future__ import annotations

import json
import operator
import re
import secrets
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import define, frozen

from acctsync._errors import ConfigurationError, InvalidRecordError
from acctsync._formats import format_datetime
from acctsync._ids import ACCOUNT_PREFIX, CONTACT_PREFIX, OPPORTUNITY_PREFIX, normalize_id
from acctsync._records import Account, Contact, FieldValue, ObjectType, Opportunity, check_field

if TYPE_CHECKING:
    from requests import Session
    from simple_salesforce.api import Salesforce

__all__ = ["FakeSalesforce", "ServedRequest"]

_Row: TypeAlias = dict[str, Any]
_Described: TypeAlias = dict[str, Any]

_PREFIXES: Final = {"Account": ACCOUNT_PREFIX, "Contact": CONTACT_PREFIX}
_KEY_PREFIXES: Final = {**_PREFIXES, "Opportunity": OPPORTUNITY_PREFIX}
_ROW_KEYS: Final = frozenset({"Id", "SystemModstamp", "IsDeleted", "MasterRecordId", "AccountId"})
_NUMBER_TYPES: Final = frozenset({"int", "long", "double", "currency", "percent"})
_ID_TYPES: Final = frozenset({"id", "reference"})
_COMPOUND_TYPES: Final = frozenset({"address", "location"})
_NOT_TEXT: Final = _NUMBER_TYPES | _COMPOUND_TYPES | {"boolean", "date", "datetime"}
_HALTED: Final = (
    "The transaction was rolled back since another operation in the same transaction failed."
)
_MESSAGES: Final = {
    "INVALID_SESSION_ID": "Session expired or invalid",
    "REQUEST_LIMIT_EXCEEDED": "TotalRequests Limit exceeded.",
    "QUERY_TIMEOUT": "Your query request was running for too long.",
    "SERVER_UNAVAILABLE": "Server temporarily unavailable.",
}


# -- Describe metadata --------------------------------------------------------------------


def _field(name: str, kind: str, **overrides: Any) -> _Described:
    """A describe entry; the defaults are those of a plain, writable, optional field."""
    entry: _Described = {
        "name": name,
        "label": name,
        "type": kind,
        "calculated": False,
        "compoundFieldName": None,
        "createable": True,
        "updateable": True,
        "nillable": True,
        "defaultedOnCreate": False,
        "externalId": False,
        "unique": False,
        "custom": name.endswith("__c"),
        "referenceTo": [],
    }
    entry.update(overrides)
    return entry


def _system_fields(object_type: str) -> list[_Described]:
    fixed = {"createable": False, "updateable": False, "defaultedOnCreate": True}
    fields = [
        _field("Id", "id", nillable=False, **fixed),
        _field("IsDeleted", "boolean", nillable=False, **fixed),
        _field("SystemModstamp", "datetime", nillable=False, **fixed),
    ]
    if object_type != "Opportunity":  # opportunities are never merged
        fields.append(_field("MasterRecordId", "reference", referenceTo=[object_type], **fixed))
    if object_type == "Contact":
        fields.append(_field("AccountId", "reference", referenceTo=["Account"]))
    return fields


def _address(prefix: str) -> list[_Described]:
    parent = prefix + "Address"
    parts = [("Street", "textarea"), ("City", "string"), ("State", "string")]
    parts += [("PostalCode", "string"), ("Country", "string")]
    return [_field(parent, "address", createable=False, updateable=False)] + [
        _field(prefix + part, kind, compoundFieldName=parent) for part, kind in parts
    ]


def _default_describe() -> dict[str, list[_Described]]:
    external = _field("External_Id__c", "string", externalId=True, unique=True)
    return {
        "Account": [
            *_system_fields("Account"),
            _field("Name", "string", nillable=False),
            _field("Industry", "picklist"),
            _field("AnnualRevenue", "currency"),
            _field("NumberOfEmployees", "int"),
            _field("Phone", "phone"),
            _field("Website", "url"),
            *_address("Billing"),
            _field("Tier__c", "string", calculated=True, createable=False, updateable=False),
            external,
        ],
        "Contact": [
            *_system_fields("Contact"),
            _field("Salutation", "picklist"),
            _field("FirstName", "string"),
            _field("LastName", "string", nillable=False),
            _field("Title", "string"),
            _field("Email", "email"),
            _field("Phone", "phone"),
            _field("MobilePhone", "phone"),
            _field("LeadSource", "picklist"),
            _field("Birthdate", "date"),
            *_address("Mailing"),
            dict(external),
        ],
        "Opportunity": [
            *_system_fields("Opportunity"),
            # Optional in Salesforce; required here, as acctsync's Opportunity has one.
            _field("AccountId", "reference", referenceTo=["Account"], nillable=False),
            _field("ContactId", "reference", referenceTo=["Contact"]),
            _field("Name", "string", nillable=False),
            _field("StageName", "picklist", nillable=False),
            _field("CloseDate", "date", nillable=False),
            _field("Amount", "currency"),
            _field("LeadSource", "picklist"),
            dict(external),
        ],
    }


def _type_of(value: FieldValue) -> str:
    # bool before int and datetime before date: each is a subclass of the other.
    for kind, name in ((bool, "boolean"), (int, "int"), (datetime, "datetime"), (date, "date")):
        if isinstance(value, kind):
            return name
    return "double" if isinstance(value, float | Decimal) else "string"


def _by_name(fields: list[_Described]) -> dict[str, _Described]:
    # Field names are case-insensitive in SOQL and in the REST API.
    return {entry["name"].lower(): entry for entry in fields}


# -- Values -------------------------------------------------------------------------------


def _millis(value: datetime) -> datetime:
    # Salesforce keeps datetimes to the millisecond.
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _instant(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidRecordError(f"{what} must be a timezone-aware datetime, not {value!r}")
    return _millis(value.astimezone(UTC))


def _stored(value: FieldValue) -> FieldValue:
    return _instant(value, "a datetime") if isinstance(value, datetime) else value


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _dumps(value: Any) -> str:
    """JSON text, with a `Decimal` written as the exact number it is."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return f"{value:f}"
    return json.dumps(value)


class _ApiError(Exception):
    """A Salesforce error response: ``[{"message", "errorCode"[, "fields"]}]``."""

    def __init__(
        self, status: int, code: str, message: str, *, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Any = [{"message": message, "errorCode": code}]
        if fields is not None:
            self.body[0]["fields"] = fields


def _malformed(message: str) -> _ApiError:
    return _ApiError(400, "MALFORMED_QUERY", message)


def _no_column(name: str, object_type: str) -> _ApiError:
    return _ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{object_type}'.")


# -- SOQL ---------------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""\s*(?:
      (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>[+-]?\d+(?:\.\d+)?)
    | (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<op>!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_RESERVED: Final = re.compile(
    r"SELECT|FROM|WHERE|AND|OR|NOT|IN|LIKE|ORDER|BY|ASC|DESC|NULLS|LIMIT|OFFSET|GROUP|HAVING"
    r"|TRUE|FALSE|NULL",
    re.IGNORECASE,
)
_ESCAPES: Final = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@frozen
class _Soql:
    object_type: str
    fields: tuple[str, ...]
    where: tuple[tuple[str, str, tuple[FieldValue, ...]], ...]  # (field, operator, literals)
    order: tuple[tuple[str, bool], ...]  # (field, descending)
    limit: int | None


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    if char not in _ESCAPES:
        raise _malformed(f"Invalid string literal: illegal escape sequence '\\{char}'")
    return _ESCAPES[char]


class _Parser:
    """``SELECT f, ... FROM o [WHERE c AND ...] [ORDER BY f [ASC|DESC], ...] [LIMIT n]``."""

    def __init__(self, soql: str) -> None:
        text, position = soql.strip(), 0
        self._tokens: list[tuple[str, str]] = []
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.lastgroup is None:
                raise _malformed(f"unexpected token: '{text[position:].split()[0]}'")
            self._tokens.append((match.lastgroup, match.group(match.lastgroup)))
            position = match.end()
        self._at = 0

    def parse(self) -> _Soql:
        self._keyword("SELECT")
        fields = [self._name()]
        while self._punct(","):
            fields.append(self._name())
        self._keyword("FROM")
        object_type = self._name()
        where: list[tuple[str, str, tuple[FieldValue, ...]]] = []
        if self._keyword("WHERE", optional=True):
            where.append(self._condition())
            while self._keyword("AND", optional=True):
                where.append(self._condition())
        order: list[tuple[str, bool]] = []
        if self._keyword("ORDER", optional=True):
            self._keyword("BY")
            while True:
                name = self._name()
                descending = self._keyword("DESC", optional=True)
                if not descending:
                    self._keyword("ASC", optional=True)
                order.append((name, descending))
                if not self._punct(","):
                    break
        limit = None
        if self._keyword("LIMIT", optional=True):
            kind, text = self._next()
            if kind != "number" or not text.isdigit():
                raise _malformed(f"unexpected token: '{text}'")
            limit = int(text)
        if self._at < len(self._tokens):
            raise _malformed(f"unexpected token: '{self._tokens[self._at][1]}'")
        return _Soql(object_type, tuple(fields), tuple(where), tuple(order), limit)

    def _next(self) -> tuple[str, str]:
        if self._at == len(self._tokens):
            raise _malformed("unexpected token: <EOF>")
        self._at += 1
        return self._tokens[self._at - 1]

    def _keyword(self, word: str, *, optional: bool = False) -> bool:
        if self._at < len(self._tokens):
            kind, text = self._tokens[self._at]
            if kind == "word" and text.upper() == word:
                self._at += 1
                return True
        if optional:
            return False
        raise _malformed(f"unexpected token: '{self._next()[1]}', expected {word}")

    def _punct(self, char: str) -> bool:
        if self._at < len(self._tokens) and self._tokens[self._at] == ("punct", char):
            self._at += 1
            return True
        return False

    def _name(self) -> str:
        kind, text = self._next()
        if kind != "word" or _RESERVED.fullmatch(text):
            raise _malformed(f"unexpected token: '{text}'")
        return text

    def _condition(self) -> tuple[str, str, tuple[FieldValue, ...]]:
        name = self._name()
        if self._keyword("IN", optional=True):
            if not self._punct("("):
                raise _malformed(f"unexpected token: '{self._next()[1]}', expected (")
            literals = [self._literal()]
            while self._punct(","):
                literals.append(self._literal())
            if not self._punct(")"):
                raise _malformed(f"unexpected token: '{self._next()[1]}', expected )")
            return name, "IN", tuple(literals)
        kind, op = self._next()
        if kind != "op":
            raise _malformed(f"unexpected token: '{op}'")
        literal = self._literal()
        if literal is None and op not in ("=", "!="):
            raise _malformed(f"invalid operator on null: '{op}'")
        return name, op, (literal,)

    def _literal(self) -> FieldValue:
        kind, text = self._next()
        if kind == "string":
            return re.sub(r"\\(.)", _unescape, text[1:-1], flags=re.DOTALL)
        if kind == "number":
            return Decimal(text) if "." in text else int(text)
        if kind == "datetime":
            return datetime.fromisoformat(text).astimezone(UTC)
        if kind == "date":
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise _malformed(f"invalid date: {text}") from None
        word = {"TRUE": True, "FALSE": False, "NULL": None}
        if kind == "word" and text.upper() in word:
            return word[text.upper()]
        raise _malformed(f"unexpected token: '{text}'")


def _filter_literal(entry: _Described, literal: FieldValue) -> FieldValue:
    """``literal`` as a value of ``entry``'s field, or INVALID_FIELD if it is none."""
    kind, name = entry["type"], entry["name"]
    if kind in _COMPOUND_TYPES:
        raise _ApiError(400, "INVALID_FIELD", f"field '{name}' can not be filtered in a query")
    if literal is None:
        return None
    if isinstance(literal, bool):
        fits = kind == "boolean"
    elif isinstance(literal, datetime):
        fits = kind == "datetime"
    elif isinstance(literal, date):
        fits = kind == "date"
    elif isinstance(literal, int | Decimal):
        fits = kind in _NUMBER_TYPES
    else:
        fits = kind not in _NOT_TEXT
    if not fits:
        rule = "not be enclosed in quotes" if kind in _NOT_TEXT else "be enclosed in quotes"
        raise _ApiError(
            400,
            "INVALID_FIELD",
            f"value of filter criterion for field '{name}' must be of type {kind}"
            f" and should {rule}",
        )
    if kind in _ID_TYPES:
        try:
            return normalize_id(literal)
        except InvalidRecordError:
            raise _ApiError(
                400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {literal}"
            ) from None
    return literal


def _comparable(kind: str, value: Any) -> Any:
    # Text compares case-insensitively in SOQL; IDs do not.
    if isinstance(value, str) and kind not in _ID_TYPES:
        return value.casefold()
    return value


def _matches(kind: str, value: Any, op: str, literals: tuple[FieldValue, ...]) -> bool:
    if op == "IN":
        return any(_matches(kind, value, "=", (literal,)) for literal in literals)
    (literal,) = literals
    if literal is None or value is None:
        # Only = and != see nulls: null = null, and null != 'x'.
        if op == "=":
            return value is literal
        return op == "!=" and value is not literal
    try:
        return _COMPARE[op](_comparable(kind, value), _comparable(kind, literal))
    except TypeError:  # a value of another type than the field's, as a test may put
        return False


# -- The org ------------------------------------------------------------------------------


@define
class _Org:
    """The state a composite request stages and then commits or throws away."""

    rows: dict[str, dict[str, _Row]]
    now: datetime
    created: int = 0

    def copy(self) -> _Org:
        return _Org({kind: dict(rows) for kind, rows in self.rows.items()}, self.now, self.created)

    def new_id(self, object_type: str) -> str:
        while True:
            self.created += 1
            record_id = normalize_id(f"{_KEY_PREFIXES[object_type]}Re{self.created:010d}")
            if record_id not in self.rows[object_type]:
                return record_id

    def live(self, object_type: str, record_id: str) -> _Row | None:
        row = self.rows[object_type].get(record_id)
        return None if row is None or row["IsDeleted"] else row


@frozen(kw_only=True)
class ServedRequest:
    """One HTTP request the fake served: what it asked for, and the status it got."""

    method: str
    path: str
    query: str
    """The raw query string."""
    soql: str | None
    """The decoded ``q`` parameter of a query, else None."""
    headers: Mapping[str, str]
    body: Any
    """The JSON body as parsed (decimals as `Decimal`), or None."""
    status: int


@define
class _Failure:
    status: int
    error_code: str | None
    message: str
    path: str | None
    times: int


@frozen
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # by lower-case name
    body: Any


_Response: TypeAlias = tuple[int, str, bytes]  # status, content type, body
_JSON: Final = "application/json;charset=UTF-8"
_UNREADABLE: Final = object()
_VERSION: Final = r"/services/data/v(?P<version>\d+\.\d)"
_SOBJECT: Final = re.compile(
    _VERSION + r"/sobjects/(?P<object>\w+)(?:/(?P<field>\w+)/(?P<value>[^/]+))?/?"
)
_REFERENCE: Final = re.compile(r"@\{([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\}")


def _json_response(status: int, body: Any) -> _Response:
    return status, _JSON, _dumps(body).encode()


class FakeSalesforce:
    """A Salesforce org that a real ``simple_salesforce.Salesforce`` client talks to.

    Use it as a context manager (or `start` and `stop`) and get a client from `client`.
    It serves queries in a small SOQL: ``SELECT f, ... FROM Object [WHERE cond AND ...]
    [ORDER BY f [ASC|DESC], ...] [LIMIT n]``, where a condition is ``Field op literal``
    (``= != < <= > >=``) or ``Field IN (literal, ...)`` and a literal is a datetime
    (``2024-01-31T12:00:00Z``, with ``.000`` or ``+hh:mm``), a date, a quoted string, a
    number, ``true``, ``false`` or ``null``. Anything else is ``MALFORMED_QUERY``.

    Writes through the API are checked as Salesforce checks them: fields must be in the
    describe and writable, required fields present, references live. The records one
    request writes share one ``SystemModstamp``, the org's `now`, which then moves on
    by a millisecond. ``clock`` is the first `now`; the current time when None.

    ``tls=True`` serves HTTPS (`url` is ``https://127.0.0.1:PORT``) under a certificate
    issued for 127.0.0.1 by a CA made at `start`, whose certificate is at `certificate`.
    """

    def __init__(
        self, *, api_version: str = "59.0", clock: datetime | None = None, tls: bool = False
    ) -> None:
        self.api_version = api_version
        """The API version `client` speaks."""
        self.session_id = f"00D000000000001!{secrets.token_urlsafe(24)}"
        """The session ID a request must carry as ``Authorization: Bearer``."""
        start = datetime.now(UTC) if clock is None else clock
        self._org = _Org({kind: {} for kind in _KEY_PREFIXES}, _instant(start, "clock"))
        self._describe = _default_describe()
        self._deleted_with: dict[str, list[str]] = {}
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._failures: list[_Failure] = []
        self._log: list[ServedRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sessions: list[Session] = []
        self._tls = tls
        self._certificates: Path | None = None

    def __repr__(self) -> str:
        with self._lock:
            rows = {
                k: sum(not r["IsDeleted"] for r in v.values()) for k, v in self._org.rows.items()
            }
        return (
            f"<FakeSalesforce {'serving' if self._server else 'stopped'}"
            f" accounts={rows['Account']} contacts={rows['Contact']}"
            f" opportunities={rows['Opportunity']} requests={len(self._log)}>"
        )

    # -- Serving ---------------------------------------------------------------------------

    def __enter__(self) -> FakeSalesforce:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1 in a background thread."""
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", 0), _Handler)
        server.org = self
        if self._tls:
            self._certificates = Path(tempfile.mkdtemp(prefix="fake-salesforce-"))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_issue_certificates(self._certificates))
            # The handshake then happens in the request's thread, on its first read: a
            # client that never completes one cannot stall the accepting loop.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            # stop() waits up to one poll interval for the loop to notice.
            kwargs={"poll_interval": 0.01},
            name="FakeSalesforce",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, and close the sessions of the clients handed out."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None
        for session in self._sessions:
            session.close()
        self._sessions.clear()
        if self._certificates is not None:
            shutil.rmtree(self._certificates, ignore_errors=True)
            self._certificates = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls``), once started."""
        if self._server is None:
            raise ConfigurationError("the fake Salesforce is not serving; call start()")
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def certificate(self) -> Path:
        """The PEM file of the CA that issued the server's certificate, for a client to trust.

        Only with ``tls``, once started; it is removed by `stop`.
        """
        if not self._tls:
            raise ConfigurationError("the fake Salesforce serves plain HTTP: pass tls=True")
        if self._certificates is None:
            raise ConfigurationError("the fake Salesforce is not serving; call start()")
        return self._certificates / "ca.pem"

    def client(self, *, timeout: float = 10.0, **options: Any) -> Salesforce:
        """A ``simple_salesforce.Salesforce`` client of this org.

        Requests without a ``timeout`` get ``timeout`` seconds. ``options`` go to the
        constructor (``parse_float=Decimal``, say).
        """
        from simple_salesforce.api import Salesforce

        session = _loopback_session(
            self.url, timeout, verify=str(self.certificate) if self._tls else True
        )
        self._sessions.append(session)
        return Salesforce(
            instance_url=self.url,
            session_id=self.session_id,
            version=self.api_version,
            session=session,
            **options,
        )

    # -- Arranging the org -----------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The org's clock (UTC, to the millisecond): the stamp of records the API writes.

        It moves only by a millisecond after each request that wrote, or when set.
        """
        with self._lock:
            return self._org.now

    @now.setter
    def now(self, value: datetime) -> None:
        with self._lock:
            self._org.now = _instant(value, "now")

    def put(self, *records: Account | Contact) -> None:
        """Create or replace live records as given, ``system_modstamp`` included.

        Datetimes are kept to the millisecond, as Salesforce keeps them. A field the
        describe lacks is added to it, typed after its value.
        """
        with self._lock:
            for record in records:
                if isinstance(record, Account):
                    kind = "Account"
                elif isinstance(record, Contact):
                    kind = "Contact"
                else:
                    raise InvalidRecordError(f"put takes Accounts and Contacts, not {record!r}")
                row: _Row = {
                    "Id": record.id,
                    "IsDeleted": False,
                    "MasterRecordId": None,
                    "SystemModstamp": _instant(record.system_modstamp, "SystemModstamp"),
                }
                if isinstance(record, Contact):
                    row["AccountId"] = record.account_id
                for name, value in record.fields.items():
                    row[self._known_field(kind, name, value)] = _stored(value)
                self._org.rows[kind][record.id] = row

    def delete(
        self,
        object_type: ObjectType,
        record_id: str,
        *,
        at: datetime,
        master_record_id: str | None = None,
    ) -> None:
        """Delete a live record into the recycle bin, stamped ``at``, as Salesforce does.

        The row stays, with ``IsDeleted`` true, for queryAll only. Deleting an account
        deletes its contacts too; merging it (``master_record_id``, the live winner)
        moves them to the winner instead, leaving their ``SystemModstamp`` as it was.
        """
        record_id = self._id(object_type, record_id)
        stamp = _instant(at, "at")
        with self._lock:
            rows = self._org.rows[object_type]
            row = self._org.live(object_type, record_id)
            if row is None:
                raise InvalidRecordError("no live record to delete", record_id=record_id)
            master = None
            if master_record_id is not None:
                master = self._id(object_type, master_record_id)
                if master == record_id or self._org.live(object_type, master) is None:
                    raise InvalidRecordError(
                        "the winner of a merge must be another live record", record_id=master
                    )
            deleted = {"IsDeleted": True, "SystemModstamp": stamp, "MasterRecordId": master}
            rows[record_id] = {**row, **deleted}
            if object_type != "Account":
                return
            contacts = self._org.rows["Contact"]
            members = [
                c for c in contacts.values() if c["AccountId"] == record_id and not c["IsDeleted"]
            ]
            for contact in members:
                if master is None:
                    contacts[contact["Id"]] = {
                        **contact,
                        "IsDeleted": True,
                        "SystemModstamp": stamp,
                    }
                else:
                    contacts[contact["Id"]] = {**contact, "AccountId": master}
            if master is None:
                self._deleted_with[record_id] = [contact["Id"] for contact in members]

    def undelete(self, object_type: ObjectType, record_id: str, *, at: datetime) -> None:
        """Restore a record from the recycle bin, stamped ``at``.

        An account comes back with the contacts that were deleted with it.
        """
        record_id = self._id(object_type, record_id)
        stamp = _instant(at, "at")
        with self._lock:
            rows = self._org.rows[object_type]
            row = rows.get(record_id)
            if row is None or not row["IsDeleted"]:
                raise InvalidRecordError("not in the recycle bin", record_id=record_id)
            restored = {"IsDeleted": False, "SystemModstamp": stamp, "MasterRecordId": None}
            rows[record_id] = {**row, **restored}
            contacts = self._org.rows["Contact"]
            for contact_id in self._deleted_with.pop(record_id, []):
                contact = contacts.get(contact_id)
                if contact is not None and contact["IsDeleted"]:
                    contacts[contact_id] = {**contact, **restored}

    def purge(self, object_type: ObjectType, record_id: str) -> None:
        """Hard-delete a record, live or in the recycle bin: gone from query and queryAll.

        An account takes its contacts with it.
        """
        record_id = self._id(object_type, record_id)
        with self._lock:
            if self._org.rows[object_type].pop(record_id, None) is None:
                raise InvalidRecordError("no such record", record_id=record_id)
            if object_type == "Account":
                contacts = self._org.rows["Contact"]
                members = {c["Id"] for c in contacts.values() if c["AccountId"] == record_id}
                members.update(self._deleted_with.pop(record_id, []))
                for contact_id in members:
                    contacts.pop(contact_id, None)

    def set_formula(self, object_type: ObjectType, record_id: str, **values: FieldValue) -> None:
        """Change field values without moving ``SystemModstamp``, as a formula's inputs do.

        A field the describe lacks is added to it as a formula field.
        """
        record_id = self._id(object_type, record_id)
        for name, value in values.items():
            check_field(name, value, record_id=record_id)
        with self._lock:
            row = self._org.rows[object_type].get(record_id)
            if row is None:
                raise InvalidRecordError("no such record", record_id=record_id)
            changed = dict(row)
            for name, value in values.items():
                changed[self._known_field(object_type, name, value, calculated=True)] = _stored(
                    value
                )
            self._org.rows[object_type][record_id] = changed

    def describe_fields(self, object_type: str, fields: list[dict[str, Any]]) -> None:
        """Replace the describe's fields of ``object_type``.

        Each entry needs ``name`` and ``type``; other keys default to those of a plain,
        writable, optional field. ``Id``, ``IsDeleted``, ``SystemModstamp``,
        ``MasterRecordId`` and a contact's ``AccountId`` are added when missing: they are
        always there to select.
        """
        if object_type not in _KEY_PREFIXES:
            raise InvalidRecordError(f"unknown object type {object_type!r}")
        described = []
        for entry in fields:
            if not isinstance(entry.get("name"), str) or not isinstance(entry.get("type"), str):
                raise InvalidRecordError(f"a describe entry needs a name and a type: {entry!r}")
            described.append({**_field(entry["name"], entry["type"]), **entry})
        names = {entry["name"] for entry in described}
        system = [entry for entry in _system_fields(object_type) if entry["name"] not in names]
        with self._lock:
            self._describe[object_type] = system + described

    def fail(
        self,
        status: int,
        error_code: str | None,
        message: str | None = None,
        *,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path`` with an error.

        The body is Salesforce's ``[{"message": ..., "errorCode": ...}]``; with no
        ``error_code``, an HTML page, as a proxy in front of Salesforce sends. ``message``
        defaults to Salesforce's own for the code.
        """
        if not 300 <= status <= 599 or times < 1:
            raise ConfigurationError(
                f"fail needs an error status and times >= 1: {status}, {times}"
            )
        text = message or _MESSAGES.get(error_code or "", f"Injected {error_code or status} error")
        with self._lock:
            self._failures.append(_Failure(status, error_code, text, path, times))

    # -- Reading the org -------------------------------------------------------------------

    def records(self, object_type: ObjectType) -> list[Account | Contact]:
        """The live records of ``object_type``, by Id, with the fields each row holds."""
        with self._lock:
            rows = sorted(self._org.rows[object_type].items())
        out: list[Account | Contact] = []
        for _, row in rows:
            if row["IsDeleted"]:
                continue
            fields = {k: v for k, v in row.items() if k not in _ROW_KEYS}
            if object_type == "Account":
                out.append(
                    Account(id=row["Id"], fields=fields, system_modstamp=row["SystemModstamp"])
                )
            else:
                out.append(
                    Contact(
                        id=row["Id"],
                        account_id=row.get("AccountId"),
                        fields=fields,
                        system_modstamp=row["SystemModstamp"],
                    )
                )
        return out

    def opportunities(self) -> list[Opportunity]:
        """The live opportunities created through the API, by Id."""
        with self._lock:
            rows = sorted(self._org.rows["Opportunity"].items())
        return [
            Opportunity(
                id=row["Id"],
                account_id=row["AccountId"],
                contact_id=row.get("ContactId"),
                fields={k: v for k, v in row.items() if k not in _ROW_KEYS and k != "ContactId"},
                system_modstamp=row["SystemModstamp"],
            )
            for _, row in rows
            if not row["IsDeleted"]
        ]

    @property
    def requests(self) -> list[ServedRequest]:
        """Every request served so far, oldest first."""
        with self._lock:
            return list(self._log)

    # -- Helpers of the arranging methods ---------------------------------------------------

    @staticmethod
    def _id(object_type: str, record_id: str) -> str:
        if object_type not in _PREFIXES:
            raise InvalidRecordError(f"unknown object type {object_type!r}")
        return normalize_id(record_id, prefix=_PREFIXES[object_type])

    def _known_field(
        self, object_type: str, name: str, value: FieldValue, *, calculated: bool = False
    ) -> str:
        """``name`` as the describe spells it, after adding it if it is missing."""
        entry = _by_name(self._describe[object_type]).get(name.lower())
        if entry is None:
            writable = not calculated
            entry = _field(
                name,
                _type_of(value),
                calculated=calculated,
                createable=writable,
                updateable=writable,
            )
            self._describe[object_type].append(entry)
        return str(entry["name"])

    # -- Answering requests -----------------------------------------------------------------

    def _serve(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> _Response:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw, parse_float=Decimal)
            except ValueError:
                body = _UNREADABLE
        request = _Request(
            method, split.path, query, {k.lower(): v for k, v in headers.items()}, body
        )
        with self._lock:
            response = self._respond(request)
            self._log.append(
                ServedRequest(
                    method=method,
                    path=split.path,
                    query=split.query,
                    soql=query["q"][0] if "q" in query else None,
                    headers=dict(headers),
                    body=None if body is _UNREADABLE else body,
                    status=response[0],
                )
            )
        return response

    def _respond(self, request: _Request) -> _Response:
        for rule in self._failures:
            if rule.path is None or rule.path in request.path:
                rule.times -= 1
                if rule.times == 0:
                    self._failures.remove(rule)
                if rule.error_code is None:
                    page = f"<html><body><h1>{rule.status} {rule.message}</h1></body></html>"
                    return rule.status, "text/html;charset=UTF-8", page.encode()
                return _json_response(
                    rule.status, [{"message": rule.message, "errorCode": rule.error_code}]
                )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or token != self.session_id:
            body = [
                {"message": _MESSAGES["INVALID_SESSION_ID"], "errorCode": "INVALID_SESSION_ID"}
            ]
            return _json_response(401, body)
        try:
            return self._route(request)
        except _ApiError as error:
            return _json_response(error.status, error.body)
        except Exception as error:  # a fault of the fake: show it as Salesforce shows its own
            message = f"{type(error).__name__}: {error}"
            return _json_response(500, [{"message": message, "errorCode": "UNKNOWN_EXCEPTION"}])

    def _route(self, request: _Request) -> _Response:
        routes: tuple[tuple[str, str, Callable[[_Request, re.Match[str]], _Response]], ...] = (
            ("GET", _VERSION + r"/(?P<resource>query|queryAll)/?", self._serve_query),
            ("GET", _VERSION + r"/(?:query|queryAll)/(?P<locator>[^/]+)", self._serve_more),
            ("GET", _VERSION + r"/sobjects/(?P<object>\w+)/describe/?", self._serve_describe),
            ("POST", _VERSION + r"/composite/?", self._serve_composite),
            ("POST PATCH", _SOBJECT.pattern, self._serve_write),
        )
        for methods, pattern, serve in routes:
            match = re.fullmatch(pattern, request.path)
            if match is None:
                continue
            if request.method not in methods.split():
                raise _ApiError(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{request.method}' not allowed. Allowed are {methods}",
                )
            return serve(request, match)
        raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist")

    def _object(self, name: str) -> str:
        # sObject names are case-insensitive too.
        for object_type in self._describe:
            if object_type.lower() == name.lower():
                return object_type
        raise _ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")

    def _serve_describe(self, request: _Request, match: re.Match[str]) -> _Response:
        try:
            object_type = self._object(match["object"])
        except _ApiError:
            raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist") from None
        return _json_response(
            200,
            {
                "name": object_type,
                "label": object_type,
                "keyPrefix": _KEY_PREFIXES[object_type],
                "custom": False,
                "queryable": True,
                "createable": True,
                "updateable": True,
                "deletable": True,
                "fields": [dict(entry) for entry in self._describe[object_type]],
            },
        )

    # -- Queries -----------------------------------------------------------------------------

    def _serve_query(self, request: _Request, match: re.Match[str]) -> _Response:
        soql = request.query.get("q", [""])[0]
        if not soql.strip():
            raise _malformed("A query string has to be specified")
        records = self._run(
            _Parser(soql).parse(), match["version"], match["resource"] == "queryAll"
        )
        option = re.search(
            r"batchSize\s*=\s*(\d+)", request.headers.get("sforce-query-options", "")
        )
        # Salesforce takes batch sizes from 200 to 2000 and bends others into that range.
        size = min(max(int(option[1]), 200), 2000) if option else 2000
        cursor = ""
        if len(records) > size:
            cursor = normalize_id(f"01g{len(self._cursors) + 1:012d}")
            self._cursors[cursor] = (records, size)
        return self._page(match["version"], cursor, records, 0, size)

    def _serve_more(self, request: _Request, match: re.Match[str]) -> _Response:
        cursor, _, offset = match["locator"].partition("-")
        found = self._cursors.get(cursor)
        if found is None or not offset.isdigit() or int(offset) >= len(found[0]):
            raise _ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, size = found
        return self._page(match["version"], cursor, records, int(offset), size)

    def _page(
        self, version: str, cursor: str, records: list[dict[str, Any]], offset: int, size: int
    ) -> _Response:
        body: dict[str, Any] = {"totalSize": len(records), "done": offset + size >= len(records)}
        if not body["done"]:
            # Even a queryAll cursor is read under query/, as in Salesforce.
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{offset + size}"
        body["records"] = records[offset : offset + size]
        return _json_response(200, body)

    def _run(self, soql: _Soql, version: str, include_deleted: bool) -> list[dict[str, Any]]:
        """The query's records, encoded: the snapshot its cursor pages through."""
        object_type = self._object(soql.object_type)
        described = _by_name(self._describe[object_type])

        def entry(name: str) -> _Described:
            found = described.get(name.lower())
            if found is None:
                raise _no_column(name, object_type)
            return found

        selected = [entry(name) for name in soql.fields]
        names = [e["name"] for e in selected]
        for name in names:
            if names.count(name) > 1:
                raise _malformed(f"duplicate field selected: {name}")
        where = []
        for name, op, literals in soql.where:
            found = entry(name)
            values = tuple(_filter_literal(found, literal) for literal in literals)
            where.append((found["name"], found["type"], op, values))
        order = [(entry(name), descending) for name, descending in soql.order]
        rows = [
            row
            for _, row in sorted(self._org.rows[object_type].items())
            if (include_deleted or not row["IsDeleted"])
            and all(_matches(kind, row.get(n), op, lits) for n, kind, op, lits in where)
        ]
        for e, descending in reversed(order):
            if e["type"] in _COMPOUND_TYPES:
                raise _ApiError(400, "INVALID_FIELD", f"field '{e['name']}' can not be sorted")
            rows.sort(key=_sort_key(e), reverse=descending)
        if soql.limit is not None:
            rows = rows[: soql.limit]
        return [self._encode(object_type, row, selected, version) for row in rows]

    def _encode(
        self, object_type: str, row: _Row, selected: list[_Described], version: str
    ) -> dict[str, Any]:
        url = f"/services/data/v{version}/sobjects/{object_type}/{row['Id']}"
        out: dict[str, Any] = {"attributes": {"type": object_type, "url": url}}
        for entry in selected:
            name = entry["name"]
            if entry["type"] in _COMPOUND_TYPES:
                out[name] = self._compound(object_type, row, name)
            else:
                out[name] = _wire(row.get(name))
        return out

    def _compound(self, object_type: str, row: _Row, parent: str) -> dict[str, Any] | None:
        # BillingAddress is {"street": BillingStreet, "postalCode": BillingPostalCode, ...}.
        prefix = parent.removesuffix("Address")
        parts: dict[str, Any] = {}
        for entry in self._describe[object_type]:
            if entry["compoundFieldName"] == parent:
                key = entry["name"].removeprefix(prefix)
                parts[key[:1].lower() + key[1:]] = _wire(row.get(entry["name"]))
        return parts if any(value is not None for value in parts.values()) else None

    # -- Writes ------------------------------------------------------------------------------

    def _serve_write(self, request: _Request, match: re.Match[str]) -> _Response:
        staged = self._org.copy()
        status, body, _ = self._write(staged, request.method, match, request.body)
        self._commit(staged)
        return _json_response(status, body)

    def _commit(self, staged: _Org) -> None:
        # Each record written in a request carries the request's stamp; the next gets a later one.
        staged.now += timedelta(milliseconds=1)
        self._org = staged

    def _serve_composite(self, request: _Request, match: re.Match[str]) -> _Response:
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise _ApiError(
                400, "JSON_PARSER_ERROR", "The request body must hold compositeRequest"
            )
        subrequests: list[dict[str, Any]] = body["compositeRequest"]
        seen: set[str] = set()
        for sub in subrequests:
            ref = sub.get("referenceId") if isinstance(sub, dict) else None
            if (
                not isinstance(ref, str)
                or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ref)
                or ref in seen
                or not isinstance(sub.get("method"), str)
                or not isinstance(sub.get("url"), str)
            ):
                raise _ApiError(400, "JSON_PARSER_ERROR", f"Invalid subrequest: {_dumps(sub)}")
            seen.add(ref)
        all_or_none = body.get("allOrNone") is True
        staged = self._org.copy()
        results: dict[str, dict[str, Any]] = {}
        entries: list[dict[str, Any]] = []
        failed: int | None = None
        for position, sub in enumerate(subrequests):
            ref = sub["referenceId"]
            if failed is not None and all_or_none:
                entries.append(_halted(ref))
                continue
            try:
                url = _resolve(sub["url"], results)
                sub_match = _SOBJECT.fullmatch(urlsplit(url).path)
                if sub_match is None:
                    raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist")
                if sub["method"] not in ("POST", "PATCH"):
                    raise _ApiError(
                        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{sub['method']}' not allowed"
                    )
                sub_body = _resolve(sub.get("body"), results)
                status, out, headers = self._write(staged, sub["method"], sub_match, sub_body)
            except _ApiError as error:
                failed = position if failed is None else failed
                entries.append(_entry(ref, error.status, error.body, {}))
            else:
                results[ref] = out
                entries.append(_entry(ref, status, out, headers))
        if failed is not None and all_or_none:
            entries = [
                e if i == failed else _halted(e["referenceId"]) for i, e in enumerate(entries)
            ]
        elif results:
            self._commit(staged)
        return _json_response(200, {"compositeResponse": entries})

    def _write(
        self, org: _Org, method: str, match: re.Match[str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        """Create (POST) or upsert by external ID (PATCH) one record in ``org``."""
        try:
            object_type = self._object(match["object"])
        except _ApiError:
            raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        described = _by_name(self._describe[object_type])
        given: dict[str, tuple[_Described, Any]] = {}
        for name, raw in body.items():
            if name == "attributes":
                continue
            entry = described.get(name.lower())
            if entry is None:
                raise _ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {object_type}",
                )
            given[entry["name"]] = (entry, raw)
        if (method == "PATCH") != (match["field"] is not None):
            raise _ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
        existing, external = None, None
        if match["field"] is not None:
            existing, external = self._find_external(org, object_type, match)
        allowed = "createable" if existing is None else "updateable"
        refused = [name for name, (entry, _) in given.items() if not entry[allowed]]
        if refused:
            raise _ApiError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(refused)}. Please check the"
                " security settings of this field and verify that it is read/write for your"
                " profile or permission set.",
                fields=refused,
            )
        values = {name: _field_value(org, entry, raw) for name, (entry, raw) in given.items()}
        if existing is None and external is not None:
            values.update([external])
        merged = {**(existing or {}), **values}
        missing = [
            entry["name"]
            for entry in self._describe[object_type]
            if entry["createable"]
            and not entry["nillable"]
            and not entry["defaultedOnCreate"]
            and merged.get(entry["name"]) in (None, "")
        ]
        if missing:
            raise _ApiError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                fields=missing,
            )
        if existing is not None:
            record_id = existing["Id"]
            org.rows[object_type][record_id] = {**merged, "SystemModstamp": org.now}
            return 200, {"id": record_id, "success": True, "errors": [], "created": False}, {}
        record_id = org.new_id(object_type)
        row: _Row = {"Id": record_id, "IsDeleted": False, "SystemModstamp": org.now}
        if object_type != "Opportunity":
            row["MasterRecordId"] = None
        if object_type == "Contact":
            row["AccountId"] = None
        org.rows[object_type][record_id] = {**row, **values}
        out: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
        if external is not None:
            out["created"] = True
        location = f"/services/data/v{match['version']}/sobjects/{object_type}/{record_id}"
        return 201, out, {"Location": location}

    def _find_external(
        self, org: _Org, object_type: str, match: re.Match[str]
    ) -> tuple[_Row | None, tuple[str, str]]:
        """The live record an upsert's external ID names, if any, and that (field, value)."""
        entry = _by_name(self._describe[object_type]).get(match["field"].lower())
        if entry is None or not entry["externalId"]:
            raise _ApiError(
                404,
                "NOT_FOUND",
                "Provided external ID field does not exist or is not accessible: "
                + match["field"],
            )
        name, value = entry["name"], unquote(match["value"])
        found = [
            row
            for row in org.rows[object_type].values()
            if not row["IsDeleted"] and row.get(name) == value
        ]
        if len(found) > 1:
            error = _ApiError(300, "MULTIPLE_CHOICES", f"More than one record has {name} {value}")
            error.body = [
                f"/services/data/v{match['version']}/sobjects/{object_type}/{row['Id']}"
                for row in found
            ]
            raise error
        return (found[0] if found else None), (name, value)


def _sort_key(entry: _Described) -> Callable[[_Row], tuple[Any, ...]]:
    kind, name = entry["type"], entry["name"]

    def key(row: _Row) -> tuple[Any, ...]:
        value = row.get(name)
        # Nulls sort first ascending and last descending, as in SOQL by default.
        return (0,) if value is None else (1, _comparable(kind, value))

    return key


def _entry(ref: str, status: int, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    return {"body": body, "httpHeaders": headers, "httpStatusCode": status, "referenceId": ref}


def _halted(ref: str) -> dict[str, Any]:
    return _entry(ref, 400, [{"errorCode": "PROCESSING_HALTED", "message": _HALTED}], {})


def _resolve(value: Any, results: Mapping[str, Mapping[str, Any]]) -> Any:
    """``value`` with each ``@{ref.field}`` replaced by that field of an earlier result."""
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(item, results) for item in value]
    if not isinstance(value, str) or "@{" not in value:
        return value

    def lookup(match: re.Match[str]) -> Any:
        ref, name = match.groups()
        if name not in results.get(ref, {}):
            raise _ApiError(
                400,
                "PROCESSING_HALTED",
                f"Invalid reference specified. No value for {ref}.{name} found in {ref}.",
            )
        return results[ref][name]

    whole = _REFERENCE.fullmatch(value)
    if whole is not None:
        return lookup(whole)
    return _REFERENCE.sub(lambda match: str(lookup(match)), value)


def _field_value(org: _Org, entry: _Described, raw: Any) -> FieldValue:
    """A JSON value written to a field, as the field's type stores it."""
    kind, name = entry["type"], entry["name"]
    if raw is None:
        return None
    if kind in _ID_TYPES:
        try:
            record_id = normalize_id(raw)
        except InvalidRecordError:
            raise _ApiError(
                400, "MALFORMED_ID", f"{name}: id value of incorrect type: {raw}", fields=[name]
            ) from None
        targets = [kind for kind in entry["referenceTo"] if kind in org.rows]
        if not any(org.live(target, record_id) is not None for target in targets):
            raise _ApiError(
                400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", fields=[]
            )
        return record_id
    try:
        return _typed(kind, raw)
    except (TypeError, ValueError, ArithmeticError):
        raise _ApiError(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {kind} from value {_dumps(raw)} for field {name}",
        ) from None


def _typed(kind: str, raw: Any) -> FieldValue:
    """``raw`` as a value of ``kind``; TypeError, ValueError or ArithmeticError if it is none."""
    if isinstance(raw, dict | list):
        raise TypeError(kind)
    if kind == "boolean" or isinstance(raw, bool):
        if kind == "boolean" and isinstance(raw, bool):
            return raw
        if kind in _NOT_TEXT:
            raise TypeError(kind)
        return "true" if raw else "false"
    if kind in _NUMBER_TYPES:
        number = Decimal(raw)  # Salesforce reads a number in a string, too
        if not number.is_finite():
            raise ValueError(kind)
        if kind in ("int", "long"):
            if number != number.to_integral_value():
                raise ValueError(kind)
            return int(number)
        return raw if isinstance(raw, int) else number
    if kind in ("date", "datetime") and not isinstance(raw, str):
        raise TypeError(kind)
    if kind == "date":
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError(kind)
        return date.fromisoformat(raw)
    if kind == "datetime":
        parsed = datetime.fromisoformat(re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", raw))
        # Salesforce reads a datetime without an offset as UTC.
        return _instant(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), kind)
    return raw if isinstance(raw, str) else _dumps(raw)


def _loopback_session(url: str, timeout: float, *, verify: bool | str) -> Session:
    """A ``requests`` session that reaches the fake at ``url``.

    simple-salesforce builds every URL as ``https://`` whatever the instance URL says,
    so for a plain-HTTP fake the session turns this server's ``https://`` URLs back into
    ``http://``; a TLS fake is reached as is, trusting ``verify`` (its CA file). It
    ignores the environment (``trust_env``), whose CA bundle and proxy settings are
    meant for the real Salesforce, not for 127.0.0.1; and since simple-salesforce sets
    no timeout anywhere, it gives each request one, so that a hung test fails.
    """
    import requests

    # Nothing to rewrite for a TLS fake: its URLs are https:// already.
    https = "https" + url.removeprefix("http") + "/" if url.startswith("http:") else None

    class LoopbackSession(requests.Session):
        def request(  # type: ignore[override]
            self, method: str, url: str, *args: Any, **kwargs: Any
        ) -> requests.Response:
            if https is not None and url.startswith(https):
                url = "http" + url.removeprefix("https")
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(method, url, *args, **kwargs)

    session = LoopbackSession()
    session.trust_env = False
    session.verify = verify
    return session


def _issue_certificates(directory: Path) -> tuple[Path, Path]:
    """Make a CA and a server certificate for 127.0.0.1 in ``directory``.

    Returns the server's certificate chain and key files; the CA's certificate is
    ``ca.pem``. A CA rather than one self-signed certificate: strict verifiers (Python
    3.13's default context among them) refuse a leaf certificate as its own issuer.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def usage(**granted: bool) -> x509.KeyUsage:
        names = (
            "digital_signature content_commitment key_encipherment data_encipherment"
            " key_agreement key_cert_sign crl_sign encipher_only decipher_only"
        )
        return x509.KeyUsage(**{name: granted.get(name, False) for name in names.split()})

    def builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acctsync FakeSalesforce CA")])
    ca = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
            ca_name,
            key.public_key(),
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    chain, key_file = directory / "server.pem", directory / "server-key.pem"
    chain.write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file


class _Server(ThreadingHTTPServer):
    org: FakeSalesforce


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        status, content_type, body = self.server.org._serve(
            self.command, self.path, dict(self.headers.items()), raw
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # The names http.server looks up: every method goes through the same routing.
    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a test's output is not the place for an access log."""
