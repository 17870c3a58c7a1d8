"""Many orgs, many machines: org syncs as Celery jobs (extra ``fleet``).

A registry of orgs lives in the store's database (`Registry`): for each org its source
kind, a reference to its credentials (the secrets come from the environment or a
resolver, never from the database), how often it syncs, reconciles and refreshes its
formula fields, and whether it is paused. Celery beat ticks; each tick claims the due
jobs, each org's once, and sends them to the workers, which run each under the store's
per-org lock (`Fleet`). A failed org backs off or is paused, alone (`Backoff`)::

    acctsync fleet add acme --db "$ACCTSYNC_DB" --credentials ACME
    celery -A acctsync.fleet worker         # as many as the orgs need, on any machines
    celery -A acctsync.fleet beat           # one

See ``docs/scale.md``.
"""

from acctsync.fleet._app import RUN, TICK, fleet_from_environ, make_app
from acctsync.fleet._jobs import Fleet
from acctsync.fleet._registry import Claim, FleetOrg, Registry, UnknownOrgError
from acctsync.fleet._schedule import JOBS, Backoff, Job, Pause, Retry, auth_failure
from acctsync.fleet._sources import (
    ENTRY_POINT_GROUP,
    CredentialsError,
    CredentialsResolver,
    SourceFactory,
    environment_credentials,
    salesforce_login,
    salesforce_source,
    source_factory,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "JOBS",
    "RUN",
    "TICK",
    "Backoff",
    "Claim",
    "CredentialsError",
    "CredentialsResolver",
    "Fleet",
    "FleetOrg",
    "Job",
    "Pause",
    "Registry",
    "Retry",
    "SourceFactory",
    "UnknownOrgError",
    "auth_failure",
    "environment_credentials",
    "fleet_from_environ",
    "make_app",
    "salesforce_login",
    "salesforce_source",
    "source_factory",
]
