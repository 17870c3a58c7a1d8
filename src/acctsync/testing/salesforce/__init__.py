"""A fake Salesforce org on a loopback server, for a real ``simple_salesforce`` client.

`FakeSalesforce` serves the org over HTTP; its modules, one per part of the API it
speaks, are private: ``_fake`` (the public class and the HTTP server), ``_rest`` (REST
routing and resources), ``_bulk`` (Bulk API 2.0 query jobs), ``_oauth`` (the sign-in
flows), ``_org`` (the rows), ``_soql`` (the query language), ``_describe`` (the
objects' fields) and ``_loopback`` (a client's session, and certificates for TLS).
"""

from acctsync.testing.salesforce._fake import FakeSalesforce, ServedRequest

__all__ = ["FakeSalesforce", "ServedRequest"]
