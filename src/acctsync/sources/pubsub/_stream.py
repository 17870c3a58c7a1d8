"""`PubSubStream`: Change Data Capture events from Salesforce's Pub/Sub API, an `EventStream`.

Theory of operation
-------------------
`PubSubStream.events` opens a gRPC channel and holds one ``Subscribe`` call on it at a
time. ``Subscribe`` is pull-based (Pub/Sub API Developer Guide, "Pull Subscription and
Flow Control"): the client asks for a number of events in ``FetchRequest`` messages and the
server sends at most that many, in responses that each say how many it still owes. The
stream keeps its own count of what it asked for and was sent, and asks for more as soon
as half of ``batch_size`` is left, so that events keep flowing while the engine applies the
last batch and no more than ``batch_size`` (at most 100, "Pub/Sub API and Event
Allocations") are ever owed.

gRPC reads the call's requests from an iterator and its responses into a queue, in threads
of its own; a reader thread moves each response, or the error that ended the call, to a
queue of ours, so that waiting for the next can time out: after ``heartbeat`` seconds it
yields an empty batch (its reader can stop between batches), after ``idle_timeout`` it
gives the call up. Salesforce sends an empty response, a keepalive, at least every 270
seconds while no event comes (proto comment on ``FetchResponse``).

Each response becomes one `EventBatch`, with the responses that came while the reader
applied the last batch, up to ``batch_size`` events in all: a reader that takes longer
over a batch than the server over a response then applies what waits in one store
transaction, not in one each, and keeps up; nothing is waited for to fill a batch. A
batch holds the events decoded with their schemas (fetched once per schema id by
``GetSchema``, then kept), events of objects other than Account and Contact left out,
and the position after them: the last event's replay id, or a keepalive's
``latest_replay_id``.

Failures: a call that ends, fails with a passing status (``UNAVAILABLE``...) or goes
silent is made again from the last position yielded, under the retry policy's backoff.
``UNAUTHENTICATED`` makes a new session through the stream's `SalesforceLogin`, once per
failure, as `SalesforceSource` does. Salesforce's error code rides in the ``error-code``
trailer (Pub/Sub API Developer Guide, "Handling Errors"): ``...replayid.corrupted`` or
``...replayid.validation.failed`` means the replay id is past retention or invalid.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

import grpc

from acctsync._errors import ConfigurationError, ReplayUnavailableError, SourceError
from acctsync._protocols import EventBatch
from acctsync._records import RawChangeEvent
from acctsync.sources.pubsub._avro import ChangeEventSchema
from acctsync.sources.pubsub._proto import pubsub_api_pb2_grpc
from acctsync.sources.pubsub._proto.pubsub_api_pb2 import (
    CUSTOM,
    LATEST,
    FetchRequest,
    FetchResponse,
    SchemaInfo,
    SchemaRequest,
)
from acctsync.sources.salesforce import RetryPolicy

if TYPE_CHECKING:
    from simple_salesforce.api import Salesforce

    from acctsync.sources.salesforce import SalesforceLogin

__all__ = ["PubSubError", "PubSubStream"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# "Pub/Sub API and Event Allocations": the server owes a Subscribe call at most 100 events,
# whatever the client asked for.
_MAX_REQUESTED: Final = 100
_STREAMS: Final = frozenset({"Account", "Contact"})
# Replay ids Salesforce no longer holds, past the 72-hour retention or never valid, fail
# with INVALID_ARGUMENT and the first code (Pub/Sub API Developer Guide, "Handling
# Errors"), or the second, which Salesforce's Java example (Subscribe.java) takes alike.
_REPLAY_ERRORS: Final = frozenset(
    {
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted",
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed",
    }
)
# gRPC's status codes that a later call may get past ("Status codes and their use in
# gRPC"); the Pub/Sub API's guide ("Retry RPC Calls") asks for a new Subscribe after them.
_PASSING: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
# Events are up to 1 MB each ("Pub/Sub API and Event Allocations") and up to 100 come in
# one response: past gRPC's default limit of 4 MB a message.
_CHANNEL_OPTIONS: Final = (("grpc.max_receive_message_length", -1),)

_Metadata = tuple[tuple[str, str], ...]


class PubSubError(SourceError):
    """The Pub/Sub API refused or failed a call.

    ``status`` is the gRPC status code's name (``UNAVAILABLE``, ``PERMISSION_DENIED``...),
    None when the stream gave up on its own (no answer in ``idle_timeout``, a call the
    server ended); ``error_code`` is Salesforce's code from the call's ``error-code``
    trailer (``sfdc.platform.eventbus.grpc.service.auth.error``...), when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: str | None = None,
        error_code: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.status = status
        self.error_code = error_code
        super().__init__(message, retryable=retryable)


def _is_loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]") if ":" in target else target
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Subscription:
    """One ``Subscribe`` call: its requests in through one queue, its answers out of another.

    The answers queue holds responses, then the error that ended the call, or None when
    the server ended it.
    """

    def __init__(
        self,
        subscribe: grpc.StreamStreamMultiCallable[FetchRequest, FetchResponse],
        first: FetchRequest,
        metadata: _Metadata,
        batch_size: int,
    ) -> None:
        self._batch_size = batch_size
        self._owed = first.num_requested
        self._requests: queue.SimpleQueue[FetchRequest | None] = queue.SimpleQueue()
        self._requests.put(first)
        self._answers: queue.SimpleQueue[FetchResponse | grpc.RpcError | None] = (
            queue.SimpleQueue()
        )
        # An answer `waiting` took but left for `take`; a list, since None is an answer.
        self._held: list[FetchResponse | grpc.RpcError | None] = []
        self._call = subscribe(iter(self._requests.get, None), metadata=metadata)
        self.heard = time.monotonic()
        threading.Thread(target=self._read, name="acctsync pubsub", daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._answers.put(response)
        except grpc.RpcError as error:
            self._answers.put(error)
        else:
            self._answers.put(None)

    def take(self, timeout: float) -> FetchResponse | grpc.RpcError | None:
        """The next answer; raises `queue.Empty` when none came in ``timeout`` seconds."""
        answer = self._held.pop() if self._held else self._answers.get(timeout=timeout)
        self.heard = time.monotonic()
        if isinstance(answer, FetchResponse):
            self._count(answer)
        return answer

    def waiting(self, room: int) -> list[FetchResponse]:
        """The responses that already came, up to ``room`` events in all; none waited for.

        An answer that is no response, or would not fit, is kept for the next `take`.
        """
        taken: list[FetchResponse] = []
        while not self._held:
            try:
                answer = self._answers.get_nowait()
            except queue.Empty:
                break
            if isinstance(answer, FetchResponse) and len(answer.events) <= room:
                self._count(answer)
                room -= len(answer.events)
                taken.append(answer)
            else:
                self._held.append(answer)
        return taken

    def _count(self, response: FetchResponse) -> None:
        """Asks the server for more events once half the batch is left."""
        self._owed -= len(response.events)
        if self._owed <= self._batch_size // 2:
            self._requests.put(FetchRequest(num_requested=self._batch_size - self._owed))
            self._owed = self._batch_size

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()


class PubSubStream:
    """Change events of one Pub/Sub API channel, as an `EventStream` for `SyncEngine.follow`.

    ``client`` is the org's ``simple_salesforce.Salesforce`` client, whose session the
    stream sends as the call metadata Salesforce asks for: ``accesstoken`` (its session
    id), ``instanceurl`` (``https://`` and its instance) and ``tenantid`` (the org id,
    which is the part of a Salesforce session id before its ``!``).

    ``topic`` is a change event channel: ``/data/ChangeEvents`` (every object with Change
    Data Capture on), ``/data/AccountChangeEvent``, ``/data/ContactChangeEvent``, or a
    custom channel (``/data/Sync__chn``). Names are case-sensitive. Events of objects other
    than Account and Contact are left out; their positions still move.

    ``target`` is the Pub/Sub API endpoint, reached over TLS with gRPC's own trust roots,
    or with ``credentials`` when given. ``insecure=True`` connects without TLS, for a test
    server on the loopback interface only: any other host raises `ConfigurationError`, so
    that no session id crosses a network in the clear.

    ``batch_size`` (1 to 100) is how many events may be owed by the server at once, and
    so the largest batch. ``retry`` is the backoff between failed calls; ``login`` signs in
    again when Salesforce refuses the session (without it, that failure is final).
    ``idle_timeout`` is how long a call may stay silent (Salesforce sends a keepalive at
    least every 270 seconds) before it is made again; ``heartbeat`` how often, while no
    event comes, an empty batch is yielded at the last position, so that the reader can
    stop. Secrets never show in its repr, its log lines or its errors.
    """

    def __init__(
        self,
        client: Salesforce,
        *,
        topic: str = "/data/ChangeEvents",
        target: str = "api.pubsub.salesforce.com:7443",
        credentials: grpc.ChannelCredentials | None = None,
        insecure: bool = False,
        login: SalesforceLogin | None = None,
        batch_size: int = 100,
        retry: RetryPolicy | None = None,
        idle_timeout: float = 300.0,
        heartbeat: float = 5.0,
    ) -> None:
        if not isinstance(topic, str) or not topic.startswith("/data/"):
            raise ConfigurationError(
                f"a change event channel is named /data/...: {topic!r}"
                " (/data/ChangeEvents, /data/AccountChangeEvent, /data/Sync__chn)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise ConfigurationError(f"batch_size must be an integer: {batch_size!r}")
        if not 1 <= batch_size <= _MAX_REQUESTED:
            raise ConfigurationError(f"batch_size must be 1 to 100: {batch_size}")
        for name, seconds in (("idle_timeout", idle_timeout), ("heartbeat", heartbeat)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0: {seconds!r}")
        if not isinstance(target, str) or not target:
            raise ConfigurationError(f"target is a host and port: {target!r}")
        if insecure and credentials is not None:
            raise ConfigurationError("give credentials, or insecure=True, not both")
        if insecure and not _is_loopback(target):
            raise ConfigurationError(
                f"insecure=True connects to a loopback address only, not {target!r}:"
                " the session id would cross the network in the clear"
            )
        self._client = client
        self._topic = topic
        self._target = target
        self._credentials = credentials
        self._insecure = insecure
        self._login = login
        self._batch_size = batch_size
        self._retry = retry or RetryPolicy()
        self._idle_timeout = float(idle_timeout)
        self._heartbeat = float(heartbeat)
        self._schemas: dict[str, ChangeEventSchema] = {}
        self._metadata()  # a client without an org id in its session fails here

    def __repr__(self) -> str:
        return f"<PubSubStream {self._topic} at {self._target} schemas={len(self._schemas)}>"

    @property
    def name(self) -> str:
        """The checkpoint's name: ``pubsub`` and the topic (``pubsub /data/ChangeEvents``)."""
        return f"pubsub {self._topic}"

    def events(self, after: bytes | None) -> Generator[EventBatch, None, None]:
        """Batches of the channel's events after ``after`` (a replay id), or from now.

        Runs until the caller closes the iterator. The first batch comes once Salesforce
        answered the subscription: then `ReplayUnavailableError` says that ``after`` is
        past retention or invalid. A failure that reconnecting, backoff and a new session
        cannot get past raises `PubSubError` (a `SourceError`), or `SalesforceError` from
        the sign-in.
        """
        if after is not None and (not isinstance(after, bytes) or not after):
            raise ConfigurationError(f"a position is a replay id, non-empty bytes: {after!r}")
        if self._insecure:
            channel = grpc.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
        else:
            credentials = self._credentials or grpc.ssl_channel_credentials()
            channel = grpc.secure_channel(self._target, credentials, options=_CHANNEL_OPTIONS)
        with channel:
            stub = pubsub_api_pb2_grpc.PubSubStub(channel)
            yield from self._follow(stub.Subscribe, stub.GetSchema, after)

    def _follow(
        self,
        subscribe: grpc.StreamStreamMultiCallable[FetchRequest, FetchResponse],
        get_schema: grpc.UnaryUnaryMultiCallable[SchemaRequest, SchemaInfo],
        position: bytes | None,
    ) -> Generator[EventBatch, None, None]:
        what = f"Subscribe to {self._topic}"
        answered = False  # Salesforce answered a subscription: the position is sure
        while True:
            subscription, answer = self._session_call(
                what, partial(self._subscribe, subscribe, position, answered)
            )
            try:
                while True:
                    if isinstance(answer, FetchResponse):
                        answered = True
                        # Responses that came while the last batch was applied join
                        # this one: one store transaction for them all, not one each.
                        room = self._batch_size - len(answer.events)
                        responses = [answer, *subscription.waiting(room)]
                        batch = self._batch(get_schema, responses, position)
                        if batch is not None:
                            position = batch.position
                            yield batch
                    elif answered and position is not None:
                        yield EventBatch(events=(), position=position)
                    try:
                        answer = self._next(what, subscription, position)
                    except PubSubError as error:
                        if not (error.retryable or self._renewable(error)):
                            raise
                        _log.warning("%s; subscribing again", error)
                        break
            finally:
                subscription.close()

    def _subscribe(
        self,
        subscribe: grpc.StreamStreamMultiCallable[FetchRequest, FetchResponse],
        position: bytes | None,
        answered: bool,
    ) -> tuple[_Subscription, FetchResponse | None]:
        """A new call from ``position``, and its first response.

        A first subscription waits for Salesforce's answer (up to ``idle_timeout``); a
        later one, from a position Salesforce gave, for ``heartbeat`` seconds at most, so
        that a failure to connect is retried here, under the backoff.
        """
        first = FetchRequest(topic_name=self._topic, num_requested=self._batch_size)
        if position is None:
            first.replay_preset = LATEST
        else:
            first.replay_preset = CUSTOM
            first.replay_id = position
        subscription = _Subscription(subscribe, first, self._metadata(), self._batch_size)
        try:
            wait = self._heartbeat if answered else self._idle_timeout
            while True:
                answer = self._next(f"Subscribe to {self._topic}", subscription, position)
                if answer is not None or time.monotonic() - subscription.heard >= wait:
                    return subscription, answer
        except BaseException:
            subscription.close()
            raise

    def _next(
        self, what: str, subscription: _Subscription, position: bytes | None
    ) -> FetchResponse | None:
        """The call's next response; None after ``heartbeat`` seconds without one."""
        silent = time.monotonic() - subscription.heard
        if silent >= self._idle_timeout:
            raise PubSubError(
                f"{what}: no answer, not even a keepalive, in {self._idle_timeout:g} s",
                retryable=True,
            )
        try:
            answer = subscription.take(min(self._heartbeat, self._idle_timeout - silent))
        except queue.Empty:
            return None
        if answer is None:
            raise PubSubError(f"{what}: the server ended the call", retryable=True)
        if isinstance(answer, grpc.RpcError):
            raise self._error(what, answer, position) from None
        return answer

    def _batch(
        self,
        get_schema: grpc.UnaryUnaryMultiCallable[SchemaRequest, SchemaInfo],
        responses: Sequence[FetchResponse],
        position: bytes | None,
    ) -> EventBatch | None:
        """Responses' events of Account and Contact, and the position after them."""
        events: list[RawChangeEvent] = []
        after = position
        for response in responses:
            self._decode(get_schema, response, events)
            if response.events:
                after = response.events[-1].replay_id
            else:
                after = response.latest_replay_id or after
        return None if after is None else EventBatch(events=events, position=after)

    def _decode(
        self,
        get_schema: grpc.UnaryUnaryMultiCallable[SchemaRequest, SchemaInfo],
        response: FetchResponse,
        events: list[RawChangeEvent],
    ) -> None:
        """Add a response's events of Account and Contact to ``events``."""
        for delivered in response.events:
            schema = self._schema(get_schema, delivered.event.schema_id)
            try:
                event = schema.event(delivered.event.payload)
            except (ValueError, TypeError, KeyError, IndexError, EOFError) as error:
                raise PubSubError(
                    f"the event at replay id {delivered.replay_id.hex()} of {self._topic}"
                    f" does not read as schema {schema.schema_id!r} says:"
                    f" {type(error).__name__}: {error}"
                ) from None
            if event["ChangeEventHeader"].get("entityName") in _STREAMS:
                origin = f"replay {delivered.replay_id.hex()}"
                events.append(RawChangeEvent(payload=event, origin=origin))

    def _schema(
        self, get_schema: grpc.UnaryUnaryMultiCallable[SchemaRequest, SchemaInfo], schema_id: str
    ) -> ChangeEventSchema:
        """The schema ``schema_id``, asked of Salesforce the first time only."""
        schema = self._schemas.get(schema_id)
        if schema is not None:
            return schema
        what = f"GetSchema {schema_id!r}"

        def ask() -> SchemaInfo:
            try:
                return get_schema(
                    SchemaRequest(schema_id=schema_id),
                    metadata=self._metadata(),
                    timeout=self._idle_timeout,
                )
            except grpc.RpcError as error:
                raise self._error(what, error, None) from None

        info = self._session_call(what, ask)
        try:
            schema = ChangeEventSchema(info.schema_json, schema_id=schema_id)
        except ConfigurationError as error:
            raise ConfigurationError(f"{self._topic}: {error}") from None
        self._schemas[schema_id] = schema
        return schema

    def _metadata(self) -> _Metadata:
        # Python's gRPC takes metadata keys in lower case only.
        token = self._client.session_id
        org_id, bang, _ = token.partition("!") if isinstance(token, str) else ("", "", "")
        if not bang or not org_id.startswith("00D"):
            raise ConfigurationError(
                "the client's session id does not start with its org id and '!', as"
                " Salesforce's access tokens do: the Pub/Sub API needs the org id"
            )
        return (
            ("accesstoken", token),
            ("instanceurl", f"https://{self._client.sf_instance}"),
            ("tenantid", org_id),
        )

    def _renewable(self, error: PubSubError) -> bool:
        login = self._login
        return error.status == "UNAUTHENTICATED" and login is not None and login.renewable

    def _session_call(self, what: str, attempt: Callable[[], _T]) -> _T:
        """``attempt()`` under the retry policy, again after a new session if it was refused."""
        try:
            return self._retry.call(what, attempt)
        except PubSubError as error:
            login = self._login
            if login is None or not self._renewable(error):
                raise
        _log.warning("%s: Salesforce refused the session; signing in again (%r)", what, login)
        old = self._client
        self._client = login.connect(session=old.session, version=old.sf_version)
        return self._retry.call(what, attempt)

    def _error(self, what: str, error: grpc.RpcError, position: bytes | None) -> SourceError:
        """What a failed call means, as an error that shows no secret.

        Raised ``from None``: the gRPC error's own text repeats the server's message as it
        came, session id and all; the translation keeps its status, code and message.
        """
        status = error.code()
        trailers = {item.key: item.value for item in error.trailing_metadata() or ()}
        raw_code = trailers.get("error-code")
        code = raw_code.decode(errors="replace") if isinstance(raw_code, bytes) else raw_code
        details = (error.details() or "").replace(self._client.session_id, "***")
        said = f"{status.name}: {details}" + (f" ({code})" if code else "")
        if status is grpc.StatusCode.INVALID_ARGUMENT and code in _REPLAY_ERRORS:
            asked = "its position" if position is None else f"replay id {position.hex()}"
            return ReplayUnavailableError(
                f"{what}: Salesforce no longer holds {asked}: past its 72-hour retention,"
                f" or invalid ({said})",
                position=position,
            )
        if status is grpc.StatusCode.PERMISSION_DENIED:
            said += (
                "; no such channel (names are case-sensitive), or the integration user"
                " may not subscribe to it"
            )
        elif status is grpc.StatusCode.UNAUTHENTICATED and self._login is None:
            said += "; the session expired or was revoked, and the stream has no login"
        return PubSubError(
            f"{what} failed: {said}",
            status=status.name,
            error_code=code,
            retryable=status in _PASSING,
        )
