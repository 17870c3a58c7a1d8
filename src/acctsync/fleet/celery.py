"""The fleet's Celery application, configured by the environment (see `fleet_from_environ`).

Celery finds it as ``celery -A acctsync.fleet``::

    ACCTSYNC_DB=postgresql+psycopg://sync@db/acctsync \\
    CELERY_BROKER_URL=amqp://sync:secret@rabbitmq// \\
        celery -A acctsync.fleet worker --concurrency 8
    celery -A acctsync.fleet beat --schedule /var/lib/acctsync/beat-schedule
"""

import os

from acctsync.fleet._app import fleet_from_environ, make_app

__all__ = ["app"]

_fleet, _tick, _settings = fleet_from_environ(os.environ)
app = make_app(_fleet, tick=_tick, **_settings)
"""The application: its ``fleet`` is the `Fleet` the environment describes."""
