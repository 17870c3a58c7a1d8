"""A fake Salesforce org on a loopback server, for a real ``simple_salesforce`` client.

`FakeSalesforce` serves the org over HTTP, and with ``pubsub=True`` its change events
over the Pub/Sub API (grpc); its modules, one per part of the API it speaks, are
private: ``_fake`` (the public class and the HTTP server), ``_rest`` (REST routing and
resources), ``_bulk`` (Bulk API 2.0 query jobs), ``_oauth`` (the sign-in flows), ``_org``
(the rows), ``_soql`` (the query language), ``_describe`` (the objects' fields),
``_loopback`` (a client's session, and certificates for TLS), ``_events`` (the
change-event log Change Data Capture would publish), ``_avro`` (the events' Avro schemas
and bitmaps) and ``_pubsub`` (the Pub/Sub API server).
"""

from acctsync.testing.salesforce._events import PublishedEvent
from acctsync.testing.salesforce._fake import FakeSalesforce, ServedRequest

__all__ = ["FakeSalesforce", "PublishedEvent", "ServedRequest"]
