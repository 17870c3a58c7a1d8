"""Sources shipped with acctsync, each behind its own extra where it needs one.

- `acctsync.sources.salesforce`: a live org through a ``simple_salesforce`` client.
- `acctsync.sources.files`: a folder of CSV or JSON Lines exports.
- `acctsync.sources.cdc`: Change Data Capture events from the caller's subscriber.
- `acctsync.sources.pubsub`: an org's change events over the Pub/Sub API, to follow live.

The core never imports them; `acctsync.sources.cdc` re-exports a part of the core (it
needs no extra), which `SyncEngine.follow` uses itself.
"""
