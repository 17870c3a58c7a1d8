"""Change Data Capture over Salesforce's Pub/Sub API (extra ``pubsub``).

Needs the ``pubsub`` extra (``pip install 'acctsync[pubsub]'``): grpcio and protobuf for
the API, fastavro for its payloads::

    from acctsync.sources.pubsub import PubSubStream

    stream = PubSubStream(client, topic="/data/ChangeEvents", login=login)
    for report in engine.follow(stream):
        ...

`PubSubStream` is an `EventStream`: it subscribes, decodes each event with its schema
(`ChangeEventSchema`), reconnects and renews its session by itself. `PubSubError` is how a
call fails.
"""

try:
    from acctsync.sources.pubsub._avro import ChangeEventSchema
    from acctsync.sources.pubsub._stream import PubSubError, PubSubStream
except ImportError as error:
    if error.name is None or error.name.startswith("acctsync"):
        raise
    raise ImportError(
        f"acctsync.sources.pubsub needs the pubsub extra ({error.name} is missing):"
        " pip install 'acctsync[pubsub]'",
        name=error.name,
    ) from error

__all__ = ["ChangeEventSchema", "PubSubError", "PubSubStream"]
