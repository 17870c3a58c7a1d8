"""The fleet on Celery: the application, its two tasks, and its settings.

Theory of operation: Celery beat sends the task ``acctsync.fleet.tick`` every few seconds,
each tick expiring when the next is sent, so that ticks do not pile up behind a backlog of
jobs (while there is one, every due org is claimed already). Whichever worker takes it
claims the due jobs in the registry and sends one ``acctsync.fleet.run`` message
per job. A worker runs each under the org's store lock (`Fleet.run`).

A message is acknowledged only once its job is done (``task_acks_late``): a worker that
dies in the middle of a job, even by SIGKILL, leaves its messages unacknowledged, and the
broker gives them to another worker. RabbitMQ does so as soon as the dead worker's
connection closes; Redis once the message has been unacknowledged for the transport's
``visibility_timeout`` (one hour by default: set it above the longest job). A prefork
child that dies is noticed by its parent, which gives the message back
(``task_reject_on_worker_lost``). The job runs again from the store's watermarks, and
what the killed run had applied is recognised, never applied or logged twice.

Syncs wait on Salesforce, not on the processor, so a worker runs several at once in
threads (``worker_pool = "threads"``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from datetime import timedelta
from types import ModuleType
from typing import Any, Final

from acctsync._errors import ConfigurationError, StoreError
from acctsync.fleet._jobs import Fleet
from acctsync.fleet._sources import load

__all__ = ["RUN", "TICK", "fleet_from_environ", "make_app"]

_log = logging.getLogger("acctsync.fleet")

TICK: Final = "acctsync.fleet.tick"
"""The scheduler's task: claim the due jobs and send them to the workers."""
RUN: Final = "acctsync.fleet.run"
"""A worker's task: run one job of one org (arguments: the org, the job)."""


def _settings(tick: float) -> dict[str, Any]:
    return {
        # A job's message is acknowledged once the job is done, and given to another
        # worker when its worker is lost first.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # The broker gives a worker no job it has no thread free for: a job waiting in
        # a busy worker's buffer is a job another worker could have run.
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": 8,
        # A worker that lost its broker connection cannot acknowledge what it runs: the
        # broker gives those messages to another worker. A prefork pool stops the jobs;
        # a thread cannot be stopped, and its job ends while the org's lock keeps the
        # redelivered one waiting.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_default_queue": "acctsync.fleet",
        "beat_schedule": {
            TICK: {"task": TICK, "schedule": tick, "options": {"expires": tick}},
        },
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(fleet: Fleet, *, tick: float = 10.0, **settings: Any) -> Any:
    """The Celery application of ``fleet``, whose beat ticks every ``tick`` seconds.

    ``settings`` are Celery settings over the fleet's own (late acknowledgement, a
    threads pool of 8, the queue ``acctsync.fleet``, the beat schedule); the broker is
    Celery's default unless ``broker_url`` or ``CELERY_BROKER_URL`` names one. The
    application's ``fleet`` attribute is ``fleet``.
    """
    if isinstance(tick, bool) or not isinstance(tick, int | float) or not tick > 0:
        raise ConfigurationError(f"tick must be a number of seconds > 0: {tick!r}")
    # Here, not at the top: the registry and its commands need no Celery.
    from celery import Celery

    app = Celery("acctsync.fleet")
    app.conf.update({**_settings(float(tick)), **settings})
    app.fleet = fleet

    def run(org: str, job: str) -> str:
        return fleet.run(org, job)

    def send_due() -> int:
        claims = fleet.tick()
        for number, claim in enumerate(claims):
            try:
                app.send_task(RUN, (claim.org, claim.job))
            except Exception:
                # Unsent, the rest would wait for their claims to time out.
                for unsent in claims[number:]:
                    fleet.registry.release(unsent.org)
                raise
        if claims:
            _log.info("sent %d jobs", len(claims))
        return len(claims)

    # Not shared (Celery's default): a shared task joins every app made later in the
    # process, whose own task of that name would then run this app's fleet.
    # Only a failure of the registry's database reaches Celery (`Fleet.run` records the
    # org's own): the job is sent again later, with a growing wait, until it is back.
    app.task(
        name=RUN,
        shared=False,
        autoretry_for=(StoreError,),
        retry_backoff=True,
        retry_backoff_max=600,
        max_retries=None,
    )(run)
    app.task(name=TICK, shared=False)(send_due)
    return app


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be a number > 0: {text!r}")
    return value


def fleet_from_environ(environ: Mapping[str, str]) -> tuple[Fleet, float, dict[str, Any]]:
    """The fleet, the tick and the Celery settings that the environment describes.

    ``ACCTSYNC_DB`` is the database (required); ``ACCTSYNC_FLEET_CREDENTIALS`` a
    ``module:attribute`` path to the credentials resolver (the environment by default);
    ``ACCTSYNC_FLEET_TICK``, ``ACCTSYNC_FLEET_LOCK_TIMEOUT`` and
    ``ACCTSYNC_FLEET_CLAIM_TIMEOUT`` are seconds, ``ACCTSYNC_FLEET_PAGE_SIZE`` the
    engine's page size. Celery settings come from the module ``CELERY_CONFIG_MODULE``
    names (``celery --config``), if any; the broker from ``CELERY_BROKER_URL``
    (``celery -b``), which Celery reads itself.
    """
    database = environ.get("ACCTSYNC_DB")
    if not database:
        raise ConfigurationError("ACCTSYNC_DB must name the fleet's database (a SQLAlchemy URL)")
    options: dict[str, Any] = {
        "lock_timeout": _number(environ, "ACCTSYNC_FLEET_LOCK_TIMEOUT", 10.0),
        "claim_timeout": timedelta(
            seconds=_number(environ, "ACCTSYNC_FLEET_CLAIM_TIMEOUT", 3600.0)
        ),
    }
    page_size = _number(environ, "ACCTSYNC_FLEET_PAGE_SIZE", 2000)
    if page_size != int(page_size):
        raise ConfigurationError(f"ACCTSYNC_FLEET_PAGE_SIZE must be an integer: {page_size!r}")
    options["page_size"] = int(page_size)
    resolver = environ.get("ACCTSYNC_FLEET_CREDENTIALS")
    if resolver:
        options["credentials"] = load(resolver)
    settings: dict[str, Any] = {}
    module = environ.get("CELERY_CONFIG_MODULE")
    if module:
        try:
            found = importlib.import_module(module)
        except ImportError as error:
            raise ConfigurationError(f"CELERY_CONFIG_MODULE {module!r}: {error}") from None
        # Celery's settings are the module's lower-case names, as config_from_object reads.
        settings = {
            name: value
            for name, value in vars(found).items()
            if name.islower() and not name.startswith("_") and not isinstance(value, ModuleType)
        }
    tick = _number(environ, "ACCTSYNC_FLEET_TICK", 10.0)
    return Fleet(database, **options), tick, settings
