"""Change Data Capture events as a `Source`: push from a subscriber, pull by the engine.

`ChangeEventSource` holds the events a subscriber of the caller's (CometD, the Pub/Sub
API) hands it, and reads them to the engine in order, re-reading from a fallback source
what the events cannot tell. It lives in the core, which `SyncEngine.follow` uses it
from: it does no I/O of its own. The theory of operation is in its module,
``acctsync._cdc``.
"""

from acctsync._cdc import ChangeEventSource, ReplayId

__all__ = ["ChangeEventSource", "ReplayId"]
