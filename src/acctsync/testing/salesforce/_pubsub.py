"""The Pub/Sub API of `FakeSalesforce`'s org: a grpc server of ``eventbus.v1.PubSub``.

Theory of operation: `PubSubServer` serves the org's change-event log
(`acctsync.testing.salesforce._events`) on 127.0.0.1, without TLS, as Salesforce serves
its event bus (Pub/Sub API Developer Guide, "Subscribe RPC", "GetTopic RPC", "GetSchema
RPC", "Handling Errors"):

- every call carries ``accesstoken`` (a session the org issued and has not ended),
  ``instanceurl`` (this org's URL) and ``tenantid`` (the org's ID) as metadata; otherwise
  it ends ``UNAUTHENTICATED`` with the trailer ``error-code:
  sfdc.platform.eventbus.grpc.service.auth.error``. A topic other than
  ``/data/ChangeEvents``, ``/data/AccountChangeEvent`` and ``/data/ContactChangeEvent`` is
  ``PERMISSION_DENIED``; ``Publish`` and the beta RPCs are ``UNIMPLEMENTED``;
- ``Subscribe`` reads its first ``FetchRequest``'s topic and replay preset (``LATEST``:
  events from now; ``EARLIEST``: every event kept; ``CUSTOM``: those after the replay ID,
  which must name an event the log keeps, else ``INVALID_ARGUMENT`` with
  ``sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted``). Each request's
  ``num_requested`` (at most 100) adds to what the server owes, up to 100 in all ("Pull
  Subscription and Flow Control"); it sends events while it owes some, each response
  saying how many it still owes, and when it owes some but has none to send, an empty
  response with the latest replay ID every `keepalive` seconds;
- each event goes out as its schema's ID and its payload in schemaless Avro binary
  (fastavro), with the fields the integration user may not see left null.

The server's state is read and changed under the org's lock, through `Publisher`; a
subscription waits on a condition of that lock, which the log wakes when it grows. Each
``Subscribe`` holds a worker thread and a thread reading its requests.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import fastavro
import grpc
from attrs import define, frozen
from typing_extensions import override

from acctsync.sources.pubsub._proto import pubsub_api_pb2 as pb
from acctsync.sources.pubsub._proto import pubsub_api_pb2_grpc as pb_grpc
from acctsync.testing.salesforce._avro import EventSchema
from acctsync.testing.salesforce._describe import Described
from acctsync.testing.salesforce._events import CHANNELS, ChangeLog, Event, PublishedEvent

# Pub/Sub API Developer Guide, "Handling Errors": the error codes Salesforce sends in the
# error-code trailer.
AUTH_ERROR: Final = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ERROR: Final = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
UNAVAILABLE_ERROR: Final = "sfdc.platform.eventbus.grpc.service.unavailable"
# "Subscribe RPC": "The maximum value for num_requested is 100." "Pull Subscription and Flow
# Control": at most 100 across a call's requests; the server takes more as 100.
MAX_REQUESTED: Final = 100
_WORKERS: Final = 32
# The subscriptions' endings that end their calls with an error: its status, details and
# error-code trailer ("Handling Errors"; the replay ID's message as the guide quotes it).
_ERRORS: Final[dict[str, tuple[grpc.StatusCode, str, str | None]]] = {
    "dropped": (
        grpc.StatusCode.UNAVAILABLE,
        "The connection was closed by the server. Subscribe again.",
        None,
    ),
    "expired": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "The Replay ID validation failed. Ensure that the replay_id field value in"
        " FetchRequest is valid and refers to an event that is within the retention window.",
        REPLAY_ERROR,
    ),
    "topic": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "A FetchRequest named another topic than the subscription's.",
        None,
    ),
    "requested": (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"num_requested must be from 0 to {MAX_REQUESTED}.",
        None,
    ),
}


@frozen
class Publisher:
    """What the server reads of the org, each under ``condition`` (on the org's lock)."""

    condition: threading.Condition
    log: ChangeLog
    sessions: Collection[str]
    org_id: str
    describe: Mapping[str, Sequence[Described]]
    hidden: Mapping[str, Collection[str]]
    """Fields denied the integration user, by object type: lower-case names."""
    keepalive: Callable[[], float]


# One open Subscribe: what the server owes it and where it has read to; ``ended`` says why
# it must stop ("dropped", "closed", "cancelled", "stopped", "expired", or a bad request).
@define(eq=False)
class _Subscription:
    objects: frozenset[str]
    topic: str
    pending: int
    cursor: int
    ended: str | None = None


class PubSubServer:
    """The org's ``eventbus.v1.PubSub`` server, and the test's controls over it."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        """What the server reads of the org."""
        self._subscriptions: set[_Subscription] = set()  # under the publisher's lock
        self._failing = 0
        # Parsed by fastavro, by schema ID; two calls may parse one schema twice, harmlessly.
        self._schemas: dict[str, Any] = {}
        self._server: grpc.Server | None = None
        self._instance = ""

    def start(self, instance_url: str) -> int:
        """Serve on a free port of 127.0.0.1 for the org at ``instance_url``; the port."""
        server = grpc.server(ThreadPoolExecutor(_WORKERS, thread_name_prefix="FakePubSub"))
        pb_grpc.add_PubSubServicer_to_server(_Servicer(self), server)
        port = server.add_insecure_port("127.0.0.1:0")
        self._instance = urlsplit(instance_url).netloc
        server.start()
        self._server = server
        return port

    def stop(self) -> None:
        """End every subscription and stop serving."""
        self.drop(why="stopped")
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def drop(self, *, why: str = "dropped") -> None:
        """End every open subscription: ``dropped`` as a lost connection, ``closed`` cleanly."""
        with self.publisher.condition:
            for subscription in self._subscriptions:
                subscription.ended = why
            self.publisher.condition.notify_all()

    def opened(self, subscription: _Subscription) -> None:
        """Count ``subscription`` among the open ones (under the lock)."""
        self._subscriptions.add(subscription)

    def closed(self, subscription: _Subscription) -> None:
        """Forget ``subscription``: its call is over."""
        with self.publisher.condition:
            self._subscriptions.discard(subscription)

    def fail(self, times: int) -> None:
        """Refuse the next ``times`` Subscribe calls with ``UNAVAILABLE``."""
        with self.publisher.condition:
            self._failing += times

    def decoded(self, event: Event) -> PublishedEvent:
        """``event`` as a subscriber decodes it now (`FakeSalesforce.change_events`)."""
        with self.publisher.condition:
            hidden = frozenset(self.publisher.hidden.get(event.object_type, ()))
            replay_id = self.publisher.log.replay_id(event.position)
        denied = {path for name, path in event.schema.paths().items() if name in hidden}
        payload = fastavro.schemaless_reader(
            io.BytesIO(self.encode(event, hidden)), self.parsed(event.schema), None
        )
        assert isinstance(payload, dict)  # the schema is a record's
        return PublishedEvent(
            replay_id=replay_id,
            schema_id=event.schema.schema_id,
            payload=payload,
            changed_fields=tuple(p for p in event.changed if p not in denied),
            nulled_fields=tuple(p for p in event.nulled if p not in denied),
        )

    def parsed(self, schema: EventSchema) -> Any:
        """``schema`` as fastavro reads and writes with it (parsed once)."""
        parsed = self._schemas.get(schema.schema_id)
        if parsed is None:
            parsed = self._schemas[schema.schema_id] = fastavro.parse_schema(
                json.loads(schema.json)
            )
        return parsed

    def encode(self, event: Event, hidden: Collection[str]) -> bytes:
        """``event``'s payload in schemaless Avro binary, for a user denied ``hidden``."""
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.parsed(event.schema), event.payload(hidden))
        return out.getvalue()

    # -- Under the servicer ------------------------------------------------------------------

    def authorized(self, metadata: Mapping[str, str]) -> bool:
        """Whether a call's metadata names a live session of this org, and the org."""
        instance = urlsplit(metadata.get("instanceurl", "")).netloc
        tenant = metadata.get("tenantid", "")
        with self.publisher.condition:
            live = metadata.get("accesstoken") in self.publisher.sessions
        # simple-salesforce builds every URL as https://, whatever the org's scheme; an org
        # ID is given in its 15- or 18-character form.
        org = self.publisher.org_id
        return live and instance == self._instance and tenant in (org, org[:15])

    def failing(self) -> bool:
        """Whether this Subscribe call is one `fail` asked to refuse (and counts it)."""
        with self.publisher.condition:
            if self._failing == 0:
                return False
            self._failing -= 1
            return True


class _Servicer(pb_grpc.PubSubServicer):
    def __init__(self, server: PubSubServer) -> None:
        self._server = server
        self._publisher = server.publisher

    @override
    def GetTopic(self, request: pb.TopicRequest, context: grpc.ServicerContext) -> pb.TopicInfo:
        rpc_id = self._authorize(context)
        objects = self._objects(request.topic_name, context, rpc_id)
        schema_id = ""  # a channel of several objects has no one schema (pozil client #34)
        if len(objects) == 1:
            (object_type,) = objects
            with self._publisher.condition:
                schema_id = self._publisher.log.schema(
                    object_type, self._publisher.describe[object_type]
                ).schema_id
        return pb.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=self._publisher.org_id,
            can_publish=False,
            can_subscribe=True,
            schema_id=schema_id,
            rpc_id=rpc_id,
        )

    @override
    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> pb.SchemaInfo:
        rpc_id = self._authorize(context)
        if not request.schema_id:
            # As Salesforce answers it (pozil/pub-sub-api-node-client issue 34).
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "Schema validation failed. The schema ID can't be blank.",
                rpc_id=rpc_id,
            )
        with self._publisher.condition:
            schema = self._publisher.log.schemas.get(request.schema_id)
        if schema is None:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Schema validation failed. No schema has the ID {request.schema_id}.",
                rpc_id=rpc_id,
            )
        return pb.SchemaInfo(schema_json=schema.json, schema_id=schema.schema_id, rpc_id=rpc_id)

    @override
    def Subscribe(
        self, request_iterator: Iterator[pb.FetchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.FetchResponse]:
        rpc_id = str(uuid.uuid4())
        if self._server.failing():
            _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "The service is unavailable. Try again later.",
                UNAVAILABLE_ERROR,
                rpc_id=rpc_id,
            )
        self._authorize(context, rpc_id)
        first = next(request_iterator, None)
        if first is None:
            return
        objects = self._objects(first.topic_name, context, rpc_id)
        if not _requested(first):
            _fail(context, "requested", rpc_id)
        log, condition = self._publisher.log, self._publisher.condition
        with condition:
            if first.replay_preset == pb.CUSTOM:
                position = log.position(first.replay_id)
            elif first.replay_preset == pb.EARLIEST:
                position = log.expired
            else:
                position = log.last
            subscription = _Subscription(objects, first.topic_name, first.num_requested, 0)
            if position is not None:
                subscription.cursor = position
                self._server.opened(subscription)
        if position is None:
            _fail(context, "expired", rpc_id)

        def cancelled() -> None:
            self._end(subscription, "cancelled")

        context.add_callback(cancelled)
        threading.Thread(
            target=self._read_requests,
            args=(request_iterator, subscription),
            name="FakePubSub requests",
            daemon=True,
        ).start()
        try:
            yield from self._deliver(subscription, context, rpc_id)
        finally:
            self._server.closed(subscription)

    def _deliver(
        self, subscription: _Subscription, context: grpc.ServicerContext, rpc_id: str
    ) -> Iterator[pb.FetchResponse]:
        log, condition = self._publisher.log, self._publisher.condition
        sent = time.monotonic()
        while True:
            events: list[Event] = []
            with condition:
                while subscription.ended is None:
                    wait = None
                    if subscription.pending > 0:
                        read = log.read(
                            subscription.cursor,
                            subscription.objects,
                            min(subscription.pending, MAX_REQUESTED),
                        )
                        if read is None:
                            subscription.ended = "expired"
                            break
                        events, subscription.cursor = read
                        wait = sent + self._publisher.keepalive() - time.monotonic()
                        if events or wait <= 0:
                            break
                    condition.wait(wait)
                ended = subscription.ended
                subscription.pending -= len(events)
                pending, latest = subscription.pending, log.replay_id(subscription.cursor)
                hidden = {
                    kind: frozenset(self._publisher.hidden.get(kind, ()))
                    for kind in subscription.objects
                }
            if ended is not None:
                if ended in _ERRORS:
                    _fail(context, ended, rpc_id)
                return  # closed by the test, or by the client, or the server stops
            yield pb.FetchResponse(
                events=[
                    pb.ConsumerEvent(
                        event=pb.ProducerEvent(
                            id=event.uuid,
                            schema_id=event.schema.schema_id,
                            payload=self._server.encode(event, hidden[event.object_type]),
                        ),
                        replay_id=log.replay_id(event.position),
                    )
                    for event in events
                ],
                latest_replay_id=latest,
                rpc_id=rpc_id,
                pending_num_requested=pending,
            )
            sent = time.monotonic()

    def _read_requests(
        self, requests: Iterator[pb.FetchRequest], subscription: _Subscription
    ) -> None:
        # The proto's comments: a later request may leave out the topic but not name
        # another, and its replay preset and ID are ignored.
        try:
            for request in requests:
                if request.topic_name and request.topic_name != subscription.topic:
                    self._end(subscription, "topic")
                    return
                if not _requested(request):
                    self._end(subscription, "requested")
                    return
                with self._publisher.condition:
                    subscription.pending = min(
                        subscription.pending + request.num_requested, MAX_REQUESTED
                    )
                    self._publisher.condition.notify_all()
        except grpc.RpcError:
            pass  # the call is over: its requests with it

    def _end(self, subscription: _Subscription, why: str) -> None:
        with self._publisher.condition:
            if subscription.ended is None:
                subscription.ended = why
            self._publisher.condition.notify_all()

    def _authorize(self, context: grpc.ServicerContext, rpc_id: str | None = None) -> str:
        rpc_id = rpc_id or str(uuid.uuid4())
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        if not self._server.authorized(metadata):
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "An authentication exception occurred. Provide valid authentication via"
                " metadata headers.",
                AUTH_ERROR,
                rpc_id=rpc_id,
            )
        return rpc_id

    def _objects(self, topic: str, context: grpc.ServicerContext, rpc_id: str) -> frozenset[str]:
        objects = CHANNELS.get(topic)
        if objects is None:
            # As Salesforce answers a topic it does not know or allow (pozil client tests).
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"Topic {topic} does not exist or you do not have access to it.",
                rpc_id=rpc_id,
            )
        return objects


def _requested(request: pb.FetchRequest) -> bool:
    # Salesforce's answer to more than 100 is not published: the fake refuses it, so that a
    # client's flow control that asks for more shows.
    return 0 <= request.num_requested <= MAX_REQUESTED


def _fail(context: grpc.ServicerContext, why: str, rpc_id: str) -> NoReturn:
    _abort(context, *_ERRORS[why], rpc_id=rpc_id)


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    error_code: str | None = None,
    *,
    rpc_id: str,
) -> NoReturn:
    # "Handling Errors": the status's details end with the call's rpcId, and a Pub/Sub
    # error code rides in the error-code trailer.
    if error_code is not None:
        context.set_trailing_metadata((("error-code", error_code),))
    context.abort(code, f"{message} rpcId: {rpc_id}")
