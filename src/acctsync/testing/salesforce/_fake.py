"""A fake Salesforce org on a loopback HTTP server, for a real ``simple_salesforce`` client.

Theory of operation: `FakeSalesforce` keeps an org's rows (Accounts, Contacts and
Opportunities, each with ``Id``, ``SystemModstamp``, ``IsDeleted`` and its fields) and
serves the part of the REST API a sync needs, in Salesforce's own shapes:

- ``GET query/?q=`` and ``queryAll/?q=``: a small SOQL (see `FakeSalesforce`), paged
  through ``nextRecordsUrl`` cursors whose result set is fixed when the query runs;
- Bulk API 2.0 query jobs: ``POST jobs/query``, ``GET jobs/query/{id}`` (the state
  moving on at each poll), ``GET jobs/query/{id}/results`` in sets of CSV;
- ``GET sobjects/{object}/describe``, and ``GET sobjects/{object}/{id}`` (a record,
  with its compound fields as objects next to their components, as the API sends them);
- ``POST sobjects/{object}`` (create) and ``PATCH sobjects/{object}/{field}/{value}``
  (upsert by external ID), alone or as subrequests of ``POST composite``;
- Salesforce's error bodies, which simple-salesforce turns into its exceptions;
- the org's daily API allowance: each REST answer carries ``Sforce-Limit-Info:
  api-usage=N/M``, and once the allowance is spent the API answers 403
  ``REQUEST_LIMIT_EXCEEDED`` (`FakeSalesforce.api_used`, `api_allowance`);
- sign-in: ``POST /services/oauth2/token`` (client credentials, JWT bearer) for the apps
  a test registers (`FakeSalesforce.register_app`), and SOAP ``login()`` for the org's
  user, each issuing a new access token; `expire_sessions` ends every token issued, and
  `FakeSalesforce.sign_ins` tells which login host each sign-in was addressed to.

A test arranges the org through Python methods (`FakeSalesforce.put`, `delete`,
`hide_fields`, `fail`, ...) and lets the code under test talk to it over HTTP, so that
the client and the wire are tested too, not a mock of them. One lock guards the org and
each request runs whole under it, as one transaction.

With ``tls=True`` it serves HTTPS under a certificate it makes for 127.0.0.1, so that a
client built as in production (from an instance URL, trusting the CA bundle named by
``REQUESTS_CA_BUNDLE``) reaches it, in another process too.

With ``pubsub=True`` the org also publishes Change Data Capture events for every change
to its Accounts and Contacts (an arranging method's or an API write's) and serves them
over the Pub/Sub API (``eventbus.v1.PubSub``, grpc on 127.0.0.1 without TLS, at
`FakeSalesforce.pubsub_target`): Avro payloads with Salesforce's bitmaps, replay IDs,
flow control and keepalives, and the controls a test needs (retention, gap and overflow
events, dropped and refused subscriptions).

This module holds the public API and the HTTP server; the org behind it is in private
modules, each importing only those listed before it: ``_describe`` (the objects' fields,
their values, and Salesforce's error response), ``_soql`` (the SOQL parser and filters),
``_org`` (the rows, and the API's writes to them), ``_bulk`` (Bulk API 2.0 query
jobs), ``_avro`` (change events' Avro schemas, values and bitmaps), ``_events`` (the
change-event log), ``_rest`` (routing and the handlers of each resource), ``_oauth``
(the sign-in), ``_loopback`` (a client's session and a TLS fake's certificates) and
``_pubsub`` (the Pub/Sub API's grpc server).

Only the standard library, attrs and acctsync are imported here and in those modules
but ``_pubsub``; ``requests`` and ``simple_salesforce`` are imported when
`FakeSalesforce.client` is called, ``cryptography`` when a TLS fake starts, PyJWT when a
JWT assertion comes, and ``_pubsub`` with grpc and fastavro when an org is made with
``pubsub=True``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from attrs import frozen

from acctsync._errors import ConfigurationError, InvalidRecordError
from acctsync._ids import normalize_id
from acctsync._records import (
    OBJECT_PREFIXES,
    Account,
    Contact,
    FieldValue,
    ObjectType,
    Opportunity,
    check_field,
    parse_object_type,
)
from acctsync.testing.salesforce._describe import (
    KEY_PREFIXES,
    ORG_ID,
    Row,
    by_name,
    default_describe,
    field_entry,
    instant,
    modstamp,
    stored,
    system_fields,
    type_of,
)
from acctsync.testing.salesforce._events import (
    CHANNELS,
    GAP_TYPES,
    Change,
    ChangeLog,
    PublishedEvent,
)
from acctsync.testing.salesforce._loopback import issue_certificates, loopback_session
from acctsync.testing.salesforce._oauth import SOAP_PATH, TOKEN_PATH, App, SignIn, form_fields
from acctsync.testing.salesforce._org import Org
from acctsync.testing.salesforce._rest import MESSAGES, Failure, Request, Response, RestApi

# What the HTTP handler sends: the response, and the headers to send with it.
_Answer = tuple[Response, dict[str, str]]

if TYPE_CHECKING:
    from requests import Session
    from simple_salesforce.api import Salesforce

    from acctsync.testing.salesforce._pubsub import PubSubServer

__all__ = ["FakeSalesforce", "ServedRequest"]

_ROW_KEYS: Final = frozenset({"Id", "SystemModstamp", "IsDeleted", "MasterRecordId", "AccountId"})
# A body that is not JSON: the handlers refuse it, and the log shows it as None.
_UNREADABLE: Final = object()


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


class FakeSalesforce:
    """A Salesforce org that a real ``simple_salesforce.Salesforce`` client talks to.

    Use it as a context manager (or `start` and `stop`) and get a client from `client`.
    It serves queries in a small SOQL: ``SELECT f, ... FROM Object [WHERE cond AND ...]
    [ORDER BY f [ASC|DESC], ...] [LIMIT n]``, where ``f`` is a field or
    ``FIELDS(ALL|STANDARD|CUSTOM)`` (``ALL`` and ``CUSTOM`` with a ``LIMIT`` of at most
    200, as in Salesforce), a condition is ``Field op literal`` (``= != < <= > >=``) or
    ``Field IN (literal, ...)`` and a literal is a datetime (``2024-01-31T12:00:00Z``,
    with ``.000`` or ``+hh:mm``), a date, a quoted string, a number, ``true``, ``false``
    or ``null``. Anything else is ``MALFORMED_QUERY``. A compound field
    (``BillingAddress``) is selected as an object of its components.

    Writes through the API are checked as Salesforce checks them: fields must be in the
    describe and writable, required fields present, references live. The records one
    request writes are stamped with the org's `now` to the second, as Salesforce keeps
    ``SystemModstamp``; `now` then moves on by a millisecond, so requests in one second
    share a stamp. ``clock`` is the first `now`; the current time when None.
    ``latency`` delays each answer by that many seconds (see `latency`), so that a
    benchmark sees the round trips a real org costs.

    The client sees the org as an integration user whom field-level security may deny
    fields (`hide_fields`); the arranging and reading methods see everything.

    ``tls=True`` serves HTTPS (`url` is ``https://127.0.0.1:PORT``) under a certificate
    issued for 127.0.0.1 by a CA made at `start`, whose certificate is at `certificate`,
    and an HTTP proxy at `proxy_url` that tunnels ``CONNECT`` to Salesforce's login hosts
    here: a client in another process signs in with ``HTTPS_PROXY`` set to it.

    The org has one user, `username`, who signs in with `password` and `security_token`
    or through an app a test registers (`register_app`). Each sign-in issues a new access
    token and answers with this server's `url` as the ``instance_url``; `session_id` is
    the first token, which `client` uses.

    ``pubsub=True`` keeps a log of the change events Salesforce's Change Data Capture
    would publish for each change to the org's Accounts and Contacts, from the org's
    making, and serves it over the Pub/Sub API at `pubsub_target` once started: a
    ``PubSubStub`` on an insecure channel to it, with the metadata ``accesstoken`` (a
    session of the org's), ``instanceurl`` (`url`, ``http`` or ``https``) and
    ``tenantid`` (`org_id`), subscribes to ``/data/ChangeEvents``,
    ``/data/AccountChangeEvent`` or ``/data/ContactChangeEvent``. A subscription owed
    events but given none gets a keepalive every ``keepalive`` seconds. Each change the
    org's methods make is a transaction of its own (`put`, one a record) stamped as its
    records are; each API request one; `set_formula` and `purge` publish nothing. The
    controls: `change_events`, `expire_events`, `publish_gap`, `publish_overflow`,
    `without_events`, `drop_subscriptions` and `fail_subscriptions`.
    """

    def __init__(
        self,
        *,
        api_version: str = "59.0",
        clock: datetime | None = None,
        tls: bool = False,
        latency: float = 0.0,
        pubsub: bool = False,
        keepalive: float = 60.0,
    ) -> None:
        for name, seconds, least in (("latency", latency, 0), ("keepalive", keepalive, 1e-3)):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or seconds < least
            ):
                raise ConfigurationError(
                    f"{name} must be a number of seconds >= {least}: {seconds!r}"
                )
        self.latency = float(latency)
        """Seconds each answer waits before it is sent, as a round trip to a real org does.

        Outside the org's lock: requests in flight at once wait together, as on a network.
        """
        self.api_version = api_version
        """The API version `client` speaks."""
        self.keepalive = float(keepalive)
        """Seconds a Pub/Sub subscription that is owed events but has none waits before it
        is sent an empty keepalive response (Salesforce sends one within 270 seconds)."""
        self.session_id = f"{self.org_id}!{secrets.token_urlsafe(24)}"
        """The session ID a request must carry as ``Authorization: Bearer``."""
        self.username = "integration@acme.example"
        """The username of the org's user, whom every sign-in signs in as."""
        self.password = secrets.token_urlsafe(12)
        """The user's password, for a SOAP ``login()``."""
        self.security_token = secrets.token_urlsafe(8)
        """The user's security token, which follows the password in a SOAP ``login()``."""
        self._sign_in = SignIn(self.username, self.password, self.security_token)
        self._tokens = {self.session_id}
        self._lock = threading.Lock()
        start = datetime.now(UTC) if clock is None else clock
        org = Org({kind: {} for kind in KEY_PREFIXES}, instant(start, "clock"))
        self._api = RestApi(org, default_describe())
        self._changes: ChangeLog | None = None
        self._pubsub: PubSubServer | None = None
        self._pubsub_port: int | None = None
        if pubsub:
            from acctsync.testing.salesforce._pubsub import Publisher, PubSubServer

            condition = threading.Condition(self._lock)
            self._changes = self._api.changes = ChangeLog(condition.notify_all)
            self._pubsub = PubSubServer(
                Publisher(
                    condition=condition,
                    log=self._changes,
                    sessions=self._tokens,
                    org_id=ORG_ID,
                    describe=self._api.describe,
                    hidden=self._api.hidden,
                    keepalive=lambda: self.keepalive,
                )
            )
        self._deleted_with: dict[str, list[str]] = {}
        self._log: list[ServedRequest] = []
        self._sign_ins: list[tuple[str, str]] = []
        self._server: _Server | None = None
        self._proxy: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sessions: list[Session] = []
        self._tls = tls
        self._certificates: Path | None = None

    def __repr__(self) -> str:
        with self._lock:
            rows = {
                k: sum(not r["IsDeleted"] for r in v.values())
                for k, v in self._api.org.rows.items()
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
            context.load_cert_chain(*issue_certificates(self._certificates))
            # The handshake then happens in the request's thread, on its first read: a
            # client that never completes one cannot stall the accepting loop.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
            proxy = _Server(("127.0.0.1", 0), _ProxyHandler)
            proxy.org, proxy.context = self, context
            self._proxy = proxy
            threading.Thread(
                target=proxy.serve_forever,
                kwargs={"poll_interval": 0.01},
                name="FakeSalesforce proxy",
                daemon=True,
            ).start()
        self._server = server
        if self._pubsub is not None:
            self._pubsub_port = self._pubsub.start(self.url)
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
        if self._pubsub is not None:
            self._pubsub.stop()
            self._pubsub_port = None
        for running in (server, self._proxy):
            if running is not None:
                running.shutdown()
                running.server_close()
        thread.join()
        self._proxy = None
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
    def proxy_url(self) -> str:
        """``http://127.0.0.1:PORT``: a proxy to this org's login hosts (``tls`` only).

        It tunnels ``CONNECT`` to any ``*.salesforce.com`` host to this org, under its
        certificate, which names those hosts too; it refuses other hosts.
        """
        if not self._tls:
            raise ConfigurationError("the fake Salesforce serves plain HTTP: pass tls=True")
        if self._proxy is None:
            raise ConfigurationError("the fake Salesforce is not serving; call start()")
        return f"http://127.0.0.1:{self._proxy.server_address[1]}"

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

        return Salesforce(
            instance_url=self.url,
            session_id=self.session_id,
            version=self.api_version,
            session=self.session(timeout=timeout),
            **options,
        )

    def session(self, *, timeout: float = 10.0) -> Session:
        """A ``requests`` session that reaches this org, and its login hosts.

        What is sent to a login host (``https://login.salesforce.com``, a My Domain...)
        comes here, so that a client signing in with the session reaches this org's
        sign-in. Requests without a ``timeout`` get ``timeout`` seconds; `stop` closes it.
        """
        session = loopback_session(
            self.url, timeout, verify=str(self.certificate) if self._tls else True
        )
        self._sessions.append(session)
        return session

    # -- Signing in ------------------------------------------------------------------------

    def register_app(
        self,
        consumer_key: str,
        *,
        consumer_secret: str | None = None,
        public_key: bytes | None = None,
    ) -> None:
        """Let an External Client App sign in: with its secret, or a JWT signed for ``public_key``.

        ``public_key`` is the PEM of the public key (or certificate's key) the app holds.
        Both flows sign in as `username`.
        """
        if not consumer_key or (consumer_secret is None and public_key is None):
            raise ConfigurationError("an app needs a consumer key, and a secret or a key")
        with self._lock:
            self._sign_in.apps[consumer_key] = App(consumer_key, consumer_secret, public_key)

    @property
    def sign_ins(self) -> list[tuple[str, str]]:
        """The host and path each sign-in request was addressed to, oldest first.

        ``("acme.my.salesforce.com", "/services/oauth2/token")`` for a token request to a
        My Domain, ``("test.salesforce.com", "/services/Soap/u/59.0")`` for a SOAP
        ``login()`` on a sandbox. Every login host reaches this org (`session`,
        `proxy_url`): this is where a test sees which one the client chose. The host is
        the target of the proxy's ``CONNECT`` for a tunnelled request, else the request's
        ``Host`` header, in lower case.
        """
        with self._lock:
            return list(self._sign_ins)

    def expire_sessions(self) -> None:
        """End every session issued so far: the next request with one is ``INVALID_SESSION_ID``.

        As Salesforce does when a session times out or an admin revokes it; a new sign-in
        gets a new session.
        """
        with self._lock:
            self._tokens.clear()

    def _issue(self) -> str:
        # Under the lock, from a sign-in.
        token = f"{self.org_id}!{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        return token

    # -- The Pub/Sub API (pubsub=True) -------------------------------------------------------

    @property
    def org_id(self) -> str:
        """The org's ID (15 characters), the Pub/Sub ``tenantid``: each session ID starts
        with it, as Salesforce's do."""
        return ORG_ID[:15]

    @property
    def pubsub_target(self) -> str:
        """``127.0.0.1:PORT``, where the org serves the Pub/Sub API (``pubsub=True``), once
        started: a grpc target, without TLS."""
        self._publisher()
        if self._pubsub_port is None:
            raise ConfigurationError("the fake Salesforce is not serving; call start()")
        return f"127.0.0.1:{self._pubsub_port}"

    def change_events(self, topic: str = "/data/ChangeEvents") -> list[PublishedEvent]:
        """The events the org keeps on ``topic``, oldest first, as a subscriber decodes them."""
        server = self._publisher()
        objects = CHANNELS.get(topic)
        if objects is None:
            raise ConfigurationError(f"no such topic: {topic!r} (one of {', '.join(CHANNELS)})")
        with self._lock:
            events = [e for e in self._change_log().events if e.object_type in objects]
        return [server.decoded(event) for event in events]

    def expire_events(self, before: datetime | None = None) -> int:
        """Let the oldest events go, as Salesforce lets them go after 72 hours; how many.

        Those committed before ``before`` go (every event so far when None), up to the
        first committed at or after it. A replay ID of an event gone is then refused, as
        one past the retention window is (``INVALID_ARGUMENT``, error code
        ``sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted``), and so is
        a subscription still reading behind them.
        """
        point = None if before is None else instant(before, "before")
        with self._lock:
            return self._change_log().expire(point)

    def publish_gap(
        self, object_type: ObjectType, *record_ids: str, change_type: str = "UPDATE"
    ) -> None:
        """Publish a gap event (``GAP_UPDATE``...) for ``record_ids``, stamped `now`.

        Salesforce sends one, with no field values, in place of change events it could not
        make (Change Data Capture Developer Guide, "Gap Events"): to stand for a change so
        lost, make it inside `without_events` first. ``change_type`` is CREATE, UPDATE,
        DELETE or UNDELETE.
        """
        if change_type not in GAP_TYPES or not record_ids:
            raise ConfigurationError(
                f"a gap needs records and a change type of {GAP_TYPES}: {change_type!r}"
            )
        ids = [self._id(object_type, record_id) for record_id in record_ids]
        self._publish_gap(object_type, ids, f"GAP_{change_type}")

    def publish_overflow(self, object_type: ObjectType) -> None:
        """Publish a ``GAP_OVERFLOW`` event of ``object_type``, stamped `now`.

        Salesforce sends one for the changes of a transaction past the number it makes
        events for (Change Data Capture Developer Guide, "Overflow Events"); it names no
        record (the empty ID), so a subscriber re-reads the object.
        """
        self._publish_gap(object_type, [], "GAP_OVERFLOW")

    @contextmanager
    def without_events(self) -> Iterator[None]:
        """Make the changes of the block without their change events: changes Salesforce
        lost, for `publish_gap` or `publish_overflow` to announce."""
        log = self._change_log()
        with self._lock:
            log.quiet += 1
        try:
            yield
        finally:
            with self._lock:
                log.quiet -= 1

    def drop_subscriptions(self, *, cleanly: bool = False) -> None:
        """End every open Subscribe call: ``UNAVAILABLE``, as a connection lost; with
        ``cleanly``, a stream that ends without an error."""
        self._publisher().drop(why="closed" if cleanly else "dropped")

    def fail_subscriptions(self, *, times: int = 1) -> None:
        """Refuse the next ``times`` Subscribe calls with ``UNAVAILABLE`` and the error code
        ``sfdc.platform.eventbus.grpc.service.unavailable`` ("Handling Errors")."""
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ConfigurationError(f"times must be an integer >= 1: {times!r}")
        self._publisher().fail(times)

    def _publisher(self) -> PubSubServer:
        if self._pubsub is None:
            raise ConfigurationError("the fake Salesforce serves no Pub/Sub API: pass pubsub=True")
        return self._pubsub

    def _change_log(self) -> ChangeLog:
        self._publisher()
        assert self._changes is not None  # made with the server
        return self._changes

    def _publish_gap(self, object_type: ObjectType, ids: list[str], change_type: str) -> None:
        kind = parse_object_type(object_type)
        log = self._change_log()
        with self._lock:
            log.gap(
                kind,
                ids,
                change_type,
                at=modstamp(self._api.org.now, "now"),
                describe=self._api.describe,
            )

    # -- Arranging the org -----------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The org's clock (UTC, to the millisecond), which stamps what the API writes.

        Records are stamped with it to the second. It moves only by a millisecond after
        each request that wrote, or when set.
        """
        with self._lock:
            return self._api.org.now

    @now.setter
    def now(self, value: datetime) -> None:
        with self._lock:
            self._api.org.now = instant(value, "now")

    def put(self, *records: Account | Contact) -> None:
        """Create or replace live records as given, ``system_modstamp`` included.

        Datetimes are kept to the millisecond and ``system_modstamp`` to the second, as
        Salesforce keeps them. A field the describe lacks is added to it, typed after
        its value.
        """
        with self._lock:
            for record in records:
                if isinstance(record, Account):
                    kind = "Account"
                elif isinstance(record, Contact):
                    kind = "Contact"
                else:
                    raise InvalidRecordError(f"put takes Accounts and Contacts, not {record!r}")
                row: Row = {
                    "Id": record.id,
                    "IsDeleted": False,
                    "MasterRecordId": None,
                    "SystemModstamp": modstamp(record.system_modstamp, "SystemModstamp"),
                }
                if isinstance(record, Contact):
                    row["AccountId"] = record.account_id
                for name, value in record.fields.items():
                    row[self._known_field(kind, name, value)] = stored(value)
                # Each record is saved at its own stamp: a transaction of its own.
                before = self._api.org.rows[kind].get(record.id)
                self._commit([Change(kind, before, row)], row["SystemModstamp"])

    def delete(
        self,
        object_type: ObjectType,
        record_id: str,
        *,
        at: datetime,
        master_record_id: str | None = None,
    ) -> None:
        """Delete a live record into the recycle bin, stamped ``at`` (to the second).

        The row stays, with ``IsDeleted`` true, for queryAll only. Deleting an account
        deletes its contacts too; merging it (``master_record_id``, the live winner)
        moves them to the winner instead, leaving their ``SystemModstamp`` as it was.
        """
        record_id = self._id(object_type, record_id)
        stamp = modstamp(at, "at")
        with self._lock:
            row = self._api.org.live(object_type, record_id)
            if row is None:
                raise InvalidRecordError("no live record to delete", record_id=record_id)
            master = None
            if master_record_id is not None:
                master = self._id(object_type, master_record_id)
                if master == record_id or self._api.org.live(object_type, master) is None:
                    raise InvalidRecordError(
                        "the winner of a merge must be another live record", record_id=master
                    )
            deleted = {"IsDeleted": True, "SystemModstamp": stamp, "MasterRecordId": master}
            changes = [Change(object_type, row, {**row, **deleted})]
            members: list[Row] = []
            if object_type == "Account":
                contacts = self._api.org.rows["Contact"].values()
                members = [
                    c for c in contacts if c["AccountId"] == record_id and not c["IsDeleted"]
                ]
                # A merge moves the loser's contacts to the winner; a deletion takes them.
                moved = (
                    {"AccountId": master}
                    if master
                    else {"IsDeleted": True, "SystemModstamp": stamp}
                )
                changes += [Change("Contact", c, {**c, **moved}) for c in members]
            self._commit(changes, stamp)
            if object_type == "Account" and master is None:
                self._deleted_with[record_id] = [contact["Id"] for contact in members]

    def undelete(self, object_type: ObjectType, record_id: str, *, at: datetime) -> None:
        """Restore a record from the recycle bin, stamped ``at`` (to the second).

        An account comes back with the contacts that were deleted with it.
        """
        record_id = self._id(object_type, record_id)
        stamp = modstamp(at, "at")
        with self._lock:
            rows = self._api.org.rows[object_type]
            row = rows.get(record_id)
            if row is None or not row["IsDeleted"]:
                raise InvalidRecordError("not in the recycle bin", record_id=record_id)
            restored = {"IsDeleted": False, "SystemModstamp": stamp, "MasterRecordId": None}
            changes = [Change(object_type, row, {**row, **restored})]
            contacts = self._api.org.rows["Contact"]
            for contact_id in self._deleted_with.pop(record_id, []):
                contact = contacts.get(contact_id)
                if contact is not None and contact["IsDeleted"]:
                    changes.append(Change("Contact", contact, {**contact, **restored}))
            self._commit(changes, stamp)

    def purge(self, object_type: ObjectType, record_id: str) -> None:
        """Hard-delete a record, live or in the recycle bin: gone from query and queryAll.

        An account takes its contacts with it.
        """
        record_id = self._id(object_type, record_id)
        with self._lock:
            if self._api.org.rows[object_type].pop(record_id, None) is None:
                raise InvalidRecordError("no such record", record_id=record_id)
            if object_type == "Account":
                contacts = self._api.org.rows["Contact"]
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
            row = self._api.org.rows[object_type].get(record_id)
            if row is None:
                raise InvalidRecordError("no such record", record_id=record_id)
            changed = dict(row)
            for name, value in values.items():
                changed[self._known_field(object_type, name, value, calculated=True)] = stored(
                    value
                )
            self._api.org.rows[object_type][record_id] = changed

    def describe_fields(self, object_type: str, fields: list[dict[str, Any]]) -> None:
        """Replace the describe's fields of ``object_type``.

        Each entry needs ``name`` and ``type``; other keys default to those of a plain,
        writable, optional field. ``Id``, ``IsDeleted``, ``SystemModstamp``,
        ``MasterRecordId`` and a contact's ``AccountId`` are added when missing: they are
        always there to select.
        """
        if object_type not in KEY_PREFIXES:
            raise InvalidRecordError(f"unknown object type {object_type!r}")
        described = []
        for entry in fields:
            if not isinstance(entry.get("name"), str) or not isinstance(entry.get("type"), str):
                raise InvalidRecordError(f"a describe entry needs a name and a type: {entry!r}")
            described.append({**field_entry(entry["name"], entry["type"]), **entry})
        names = {entry["name"] for entry in described}
        system = [entry for entry in system_fields(object_type) if entry["name"] not in names]
        with self._lock:
            self._api.describe[object_type] = system + described

    def hide_fields(self, object_type: str, *names: str) -> None:
        """Deny the integration user the fields ``names``, as field-level security does.

        Salesforce then leaves them out of describe, of records and of ``FIELDS()``, and
        answers a query, a ``fields`` parameter or a write that names one with
        ``INVALID_FIELD``. Their values stay, to be seen again after `show_fields`. The
        fields every query selects (``Id``, ``SystemModstamp``, ...) cannot be hidden.
        """
        fields = self._hideable(object_type, names)
        with self._lock:
            self._api.hidden.setdefault(object_type, set()).update(fields)

    def show_fields(self, object_type: str, *names: str) -> None:
        """Let the integration user read the fields ``names`` again (see `hide_fields`)."""
        fields = self._hideable(object_type, names)
        with self._lock:
            self._api.hidden.get(object_type, set()).difference_update(fields)

    @property
    def api_used(self) -> int:
        """Requests to the REST API counted against the daily allowance, so far.

        Every REST request counts, an injected failure too, except one refused because
        the allowance was spent; sign-ins do not. Set it to start a test near the limit.
        """
        with self._lock:
            return self._api.api_used

    @api_used.setter
    def api_used(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"api_used must be an integer >= 0: {value!r}")
        with self._lock:
            self._api.api_used = value

    @property
    def api_allowance(self) -> int:
        """The org's daily allowance of API requests (15,000, a Developer Edition's).

        Once `api_used` reaches it, the REST API answers 403 ``REQUEST_LIMIT_EXCEEDED``
        "TotalRequests Limit exceeded.", as Salesforce does until its 24-hour window moves
        on: raise it, or lower `api_used`, to let requests through again.
        """
        with self._lock:
            return self._api.api_allowance

    @api_allowance.setter
    def api_allowance(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"api_allowance must be an integer >= 1: {value!r}")
        with self._lock:
            self._api.api_allowance = value

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
        defaults to Salesforce's own for the code. Too many long requests at once, say, is
        ``fail(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded")``;
        the spent daily allowance comes by itself (`api_allowance`).
        """
        if not 300 <= status <= 599 or times < 1:
            raise ConfigurationError(
                f"fail needs an error status and times >= 1: {status}, {times}"
            )
        text = message or MESSAGES.get(error_code or "", f"Injected {error_code or status} error")
        with self._lock:
            self._api.failures.append(Failure(status, error_code, text, path, times))

    def fail_bulk_jobs(self, message: str = "Query job failed", *, times: int = 1) -> None:
        """Let the next ``times`` Bulk API 2.0 query jobs end ``Failed``, not ``JobComplete``.

        Each is created and polled as usual; its last poll shows ``Failed`` with
        ``message`` as its ``errorMessage``, and its results cannot be read. To refuse a
        job at its creation instead (an object Bulk does not serve), use `fail` with
        ``path="jobs/query"``.
        """
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ConfigurationError(f"times must be an integer >= 1: {times!r}")
        with self._lock:
            self._api.bulk.failing.extend([message] * times)

    # -- Reading the org -------------------------------------------------------------------

    def records(self, object_type: ObjectType) -> list[Account | Contact]:
        """The live records of ``object_type``, by Id, with the fields each row holds."""
        with self._lock:
            rows = sorted(self._api.org.rows[object_type].items())
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
            rows = sorted(self._api.org.rows["Opportunity"].items())
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

    def _commit(self, changes: list[Change], at: datetime) -> None:
        """Write ``changes``' rows as one transaction stamped ``at``, with its change events.

        The events are made first: a value no event can carry leaves the org as it was.
        A test's arranging is no API call: its events' ``changeOrigin`` is empty (Apex
        Reference, "ChangeEventHeader Class").
        """
        if self._changes is not None:
            self._changes.commit(changes, at=at, origin="", describe=self._api.describe)
        for change in changes:
            assert change.after is not None  # arranging never purges
            self._api.org.rows[change.object_type][change.after["Id"]] = change.after

    def _hideable(self, object_type: str, names: tuple[str, ...]) -> set[str]:
        """``names``, in lower case, once each is known to name a field that may be hidden."""
        if object_type not in KEY_PREFIXES:
            raise InvalidRecordError(f"unknown object type {object_type!r}")
        always = {entry["name"].lower() for entry in system_fields(object_type)}
        with self._lock:
            described = by_name(self._api.describe[object_type])
        for name in names:
            if name.lower() not in described:
                raise InvalidRecordError(f"{object_type} has no such field", field=name)
            if name.lower() in always:
                raise InvalidRecordError(
                    "is always there to select: it cannot be hidden", field=name
                )
        return {name.lower() for name in names}

    @staticmethod
    def _id(object_type: str, record_id: str) -> str:
        return normalize_id(record_id, prefix=OBJECT_PREFIXES[parse_object_type(object_type)])

    def _known_field(
        self, object_type: str, name: str, value: FieldValue, *, calculated: bool = False
    ) -> str:
        """``name`` as the describe spells it, after adding it if it is missing."""
        entry = by_name(self._api.describe[object_type]).get(name.lower())
        if entry is None:
            writable = not calculated
            entry = field_entry(
                name,
                type_of(value),
                calculated=calculated,
                createable=writable,
                updateable=writable,
            )
            self._api.describe[object_type].append(entry)
        return str(entry["name"])

    # -- Answering requests -----------------------------------------------------------------

    def _serve(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes, host: str
    ) -> _Answer:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        body: Any = None
        form = "application/x-www-form-urlencoded"
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if raw and content_type.startswith(form):
            body = form_fields(raw)
        elif raw:
            try:
                body = json.loads(raw, parse_float=Decimal)
            except ValueError:
                body = _UNREADABLE
        request = Request(
            method, split.path, query, {k.lower(): v for k, v in headers.items()}, body
        )
        sent: dict[str, str] = {}
        with self._lock:
            too_long = _too_long(target, headers)
            if too_long is not None:
                response = too_long
            elif split.path == TOKEN_PATH:
                self._sign_ins.append((host, split.path))
                response = self._sign_in.token(request, self._api.org.now, self.url, self._issue)
            elif SOAP_PATH.fullmatch(split.path) and method == "POST":
                self._sign_ins.append((host, split.path))
                response = self._sign_in.soap_login(request, raw, self.url, self._issue)
            else:
                response = self._api.respond(request, self._tokens)
                sent.update(self._api.headers)
                sent["Sforce-Limit-Info"] = self._api.limit_info()
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
        return response, sent


# Salesforce Help, "Maximum number of rows returned by SOQL queries over the REST API"
# (article 000386264): a request's URI and headers together take at most 16,384 bytes.
_REQUEST_HEAD_BYTES: Final = 16_384


def _too_long(target: str, headers: Mapping[str, str]) -> tuple[int, str, bytes] | None:
    """Salesforce's answer to a request whose URI or head passes its limit, or None."""
    uri = len(target.encode())
    head = uri + sum(len(f"{k}: {v}\r\n".encode()) for k, v in headers.items())
    if uri > _REQUEST_HEAD_BYTES:
        status, reason = 414, "URI Too Long"
    elif head > _REQUEST_HEAD_BYTES:
        status, reason = 431, "Request Header Fields Too Large"
    else:
        return None
    return (
        status,
        "text/html;charset=UTF-8",
        f"<html><body>{status} {reason}</body></html>".encode(),
    )


class _Server(ThreadingHTTPServer):
    org: FakeSalesforce
    context: ssl.SSLContext


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # The host a tunnelled request was sent to: what the client asked the proxy for.
    tunnel_host: str | None = None

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        org = self.server.org
        host = self.tunnel_host or self.headers.get("Host") or ""
        (status, content_type, body), sent = org._serve(
            self.command, self.path, dict(self.headers.items()), raw, host.lower()
        )
        if org.latency:
            time.sleep(org.latency)
        self.send_response(status)
        for name, value in sent.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # The names http.server looks up: every method goes through the same routing.
    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a test's output is not the place for an access log."""


class _ProxyHandler(_Handler):
    """A proxy's ``CONNECT`` to a login host, served here under the org's certificate."""

    def do_CONNECT(self) -> None:
        host = self.path.rpartition(":")[0].lower()
        if not host.endswith(".salesforce.com"):
            self.send_error(403, "this proxy reaches Salesforce's login hosts only")
            return
        self.tunnel_host = host
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        # What the client sends next is TLS to the login host: this handler reads it, as
        # the org's own server would, on the same connection.
        tls = self.server.context.wrap_socket(self.connection, server_side=True)
        self.connection = self._tunnel = tls
        self.rfile = tls.makefile("rb")
        self.wfile = tls.makefile("wb")
        self.close_connection = False

    def finish(self) -> None:
        """Close the tunnel too: wrapping took the connection's socket from the server."""
        super().finish()
        tunnel: ssl.SSLSocket | None = getattr(self, "_tunnel", None)
        if tunnel is not None:
            tunnel.close()
