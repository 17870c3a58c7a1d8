"""What the fleet's tests and benchmark share: loopback orgs, a source kind that reaches
them from a worker process, the brokers, and the worker and beat processes themselves.

The workers are real ``celery worker`` processes. They import this module (``PYTHONPATH``
names its folder) for the source kind ``fleet_support:loopback_source``, which signs in
to a loopback org with the URL and session the environment gives (the fleet's default
credentials resolver) and journals, per job, when its reads ran: the tests check from
the journal, apart from the store's lock, that no org was read by two jobs at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from acctsync import Account, Contact
from acctsync.fleet import FleetOrg
from acctsync.sources.salesforce import RetryPolicy, SalesforceSource
from acctsync.testing import make_id
from acctsync.testing.salesforce import FakeSalesforce

__all__ = [
    "FIELDS",
    "JOURNAL",
    "RABBITMQ_URL",
    "REDIS_URL",
    "Processes",
    "broker_or_skip",
    "celery_config",
    "credentials_of",
    "forget_queue",
    "journal_intervals",
    "loopback_org",
    "loopback_source",
    "overlaps",
    "store_matches_org",
    "wait_until",
]

RABBITMQ_URL: Final = os.environ.get(
    "ACCTSYNC_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"
)
REDIS_URL: Final = os.environ.get("ACCTSYNC_REDIS_URL", "redis://127.0.0.1:6379/0")
JOURNAL: Final = "FLEET_TEST_JOURNAL"
"""The environment variable naming the folder the source kind journals its reads in."""
FIELDS: Final = {"Account": ["Name", "Industry"], "Contact": ["LastName", "Email"]}
TESTS: Final = Path(__file__).resolve().parent


# -- The source kind the workers run ------------------------------------------------------


class JournaledSource(SalesforceSource):
    """A `SalesforceSource` that notes in the journal when each of its reads runs."""

    def __init__(self, client: Any, *, org: str, journal: Path | None, **options: Any) -> None:
        super().__init__(client, **options)
        self._org = org
        self._journal = journal
        self._run = uuid.uuid4().hex

    def _touch(self) -> None:
        if self._journal is None:
            return
        line = f"{self._org} {self._run} {os.getpid()} {time.time():.6f}\n"
        with open(self._journal / f"{os.getpid()}.log", "a") as journal:
            journal.write(line)

    def _journaled(self, pages: Iterable[Any]) -> Iterator[Any]:
        self._touch()

        def read() -> Iterator[Any]:
            for page in pages:
                self._touch()
                yield page
            self._touch()

        return read()

    def read_changes(self, object_type: Any, since: Any, *, page_size: int) -> Iterator[Any]:
        return self._journaled(super().read_changes(object_type, since, page_size=page_size))

    def read_all(self, object_type: Any, *, page_size: int) -> Iterator[Any]:
        return self._journaled(super().read_all(object_type, page_size=page_size))


def loopback_source(org: FleetOrg, credentials: Mapping[str, str]) -> SalesforceSource:
    """The source kind of the tests: a loopback org, at the credentials' ``instance_url``
    with their ``session_id``."""
    from simple_salesforce.api import Salesforce

    from acctsync.testing.salesforce._loopback import loopback_session

    url = credentials["instance_url"]
    client = Salesforce(
        instance_url=url,
        session_id=credentials["session_id"],
        version="59.0",
        session=loopback_session(url, 30.0, verify=True),
        parse_float=Decimal,
    )
    journal = os.environ.get(JOURNAL)
    return JournaledSource(
        client,
        org=org.org,
        journal=Path(journal) if journal else None,
        fields=org.options.get("fields", FIELDS),
        retry=RetryPolicy(attempts=2, initial=0.1, maximum=0.2),
    )


# -- Loopback orgs ------------------------------------------------------------------------


def loopback_org(
    number: int, *, accounts: int = 2, contacts: int = 3, latency: float = 0.0
) -> FakeSalesforce:
    """A started loopback org of ``accounts`` accounts with ``contacts`` contacts each,
    stamped two minutes ago (the org's clock is the real one)."""
    org = FakeSalesforce(latency=latency)
    org.start()
    stamp = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    records: list[Account | Contact] = []
    for a in range(accounts):
        account_id = make_id("001", number * 10_000 + a)
        records.append(
            Account(
                id=account_id,
                fields={"Name": f"Org {number} account {a}", "Industry": "Tech"},
                system_modstamp=stamp,
            )
        )
        for c in range(contacts):
            records.append(
                Contact(
                    id=make_id("003", (number * 10_000 + a) * 100 + c),
                    account_id=account_id,
                    fields={"LastName": f"Person {a}.{c}", "Email": f"p{a}.{c}@org{number}.test"},
                    system_modstamp=stamp,
                )
            )
    org.put(*records)
    return org


def credentials_of(reference: str, org: FakeSalesforce) -> dict[str, str]:
    """The environment that the fleet's default resolver reads ``reference``'s from."""
    return {f"{reference}_INSTANCE_URL": org.url, f"{reference}_SESSION_ID": org.session_id}


def store_matches_org(store: Any, org: FakeSalesforce) -> list[str]:
    """How ``store`` differs from ``org`` (accounts, contacts: IDs, fields, accounts)."""
    problems = []
    for kind, held in (("Account", store.accounts()), ("Contact", store.contacts())):
        want = {r.id: (r.fields, getattr(r, "account_id", None)) for r in org.records(kind)}
        have = {r.id: (dict(r.fields), getattr(r, "account_id", None)) for r in held}
        if want != have:
            problems.append(f"{kind}: org has {want}, store has {have}")
    return problems


# -- Journal --------------------------------------------------------------------------------


def journal_intervals(folder: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Per org, the (first, last, pid) read times of each job's source."""
    runs: dict[tuple[str, str], list[float]] = {}
    pids: dict[tuple[str, str], str] = {}
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            org, run, pid, at = line.split()
            runs.setdefault((org, run), []).append(float(at))
            pids[(org, run)] = pid
    found: dict[str, list[tuple[float, float, str]]] = {}
    for (org, run), times in runs.items():
        found.setdefault(org, []).append((min(times), max(times), pids[(org, run)]))
    return {org: sorted(intervals) for org, intervals in found.items()}


def overlaps(intervals: Iterable[tuple[Any, Any, *tuple[Any, ...]]]) -> list[Any]:
    """The intervals (start, end, ...) that begin before an earlier one ended."""
    found = []
    end = None
    for interval in sorted(intervals):
        if end is not None and interval[0] < end:
            found.append(interval)
        end = interval[1] if end is None else max(end, interval[1])
    return found


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    every: float = 0.2,
    detail: Callable[[], str] = str,
) -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` (and ``detail()``)
    after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}\n{detail()}")
        time.sleep(every)


# -- Brokers --------------------------------------------------------------------------------


def broker_or_skip(kind: str) -> str:
    """The URL of the test broker ``kind`` (``rabbitmq``, ``redis``); skip the test when it
    does not answer, unless ``ACCTSYNC_REQUIRE_RABBITMQ`` / ``..._REDIS`` is 1."""
    import pytest

    required = f"ACCTSYNC_REQUIRE_{kind.upper()}"
    url = RABBITMQ_URL if kind == "rabbitmq" else REDIS_URL
    try:
        from kombu import Connection

        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as error:  # ImportError too: without Celery there is no broker to use
        if os.environ.get(required) == "1":
            pytest.fail(f"{required}=1 but {kind} cannot be used at {url}: {error!r}")
        pytest.skip(f"no {kind} at {url}: {error!r}")
    return url


def celery_config(broker: str, *, queue: str, redis_visibility: float = 3600.0) -> dict[str, Any]:
    """Celery settings of a test: its own queue, which RabbitMQ drops a while after the
    test, and for Redis how soon a lost worker's message is given to another."""
    settings: dict[str, Any] = {"broker_url": broker, "task_default_queue": queue}
    if broker.startswith("redis"):
        settings["broker_transport_options"] = {
            "visibility_timeout": redis_visibility,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    else:
        from kombu import Queue

        settings["task_queues"] = [Queue(queue, queue_arguments={"x-expires": 300_000})]
    return settings


def forget_queue(broker: str, queue: str) -> None:
    """Delete ``queue`` (a test's own) from ``broker``, with what Redis keeps of it."""
    if broker.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker)
        try:
            # The queue's list, and kombu's bindings of it: every key that names it.
            keys = list(client.scan_iter(match=f"*{queue}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    else:
        from kombu import Connection

        with Connection(broker, connect_timeout=3) as conn:
            conn.default_channel.queue_delete(queue)


class Processes:
    """The workers and beat of one test, in ``folder``: started, stopped, killed.

    Each process writes its log to ``folder``; ``environ`` is added to this process's
    environment, and the settings are written to a configuration module there that
    ``CELERY_CONFIG_MODULE`` names.
    """

    def __init__(self, folder: Path, environ: Mapping[str, str], settings: Mapping[str, Any]):
        self._folder = folder
        self._broker = str(settings["broker_url"])
        self._queue = str(settings["task_default_queue"])
        config = folder / f"fleet_config_{uuid.uuid4().hex[:8]}.py"
        lines = ["from kombu import Queue"]
        for name, value in settings.items():
            if name == "task_queues":
                queues = ", ".join(
                    f"Queue({q.name!r}, queue_arguments={q.queue_arguments!r})" for q in value
                )
                lines.append(f"task_queues = [{queues}]")
            else:
                lines.append(f"{name} = {value!r}")
        config.write_text("\n".join(lines) + "\n")
        path = os.pathsep.join(
            filter(None, [str(TESTS), str(folder), os.environ.get("PYTHONPATH")])
        )
        self.environ = {
            **os.environ,
            **environ,
            "PYTHONPATH": path,
            "CELERY_CONFIG_MODULE": config.stem,
        }
        self._running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def _start(self, name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        log = self._folder / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "acctsync.fleet", *arguments],
                env=self.environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._folder,
            )
        self._running[name] = (process, log)
        return process

    def worker(
        self, name: str, *, concurrency: int = 4, ready: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start worker ``name``; wait until it consumes, if ``ready``."""
        process = self._start(
            name,
            [
                "worker",
                "--hostname",
                f"{name}@%h",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
        )
        if ready:
            wait_until(lambda: "ready." in self.log(name), timeout=30, what=f"{name} to start")
        return process

    def beat(self) -> subprocess.Popen[bytes]:
        """Start Celery beat, the scheduler."""
        return self._start(
            "beat",
            ["beat", "--schedule", str(self._folder / "beat-schedule"), "--loglevel", "INFO"],
        )

    def log(self, name: str) -> str:
        """What process ``name`` wrote so far."""
        return self._running[name][1].read_text(errors="replace")

    def tails(self, lines: int = 15) -> str:
        """The last ``lines`` of each process's log, for a failing test's message."""
        return "\n".join(
            f"--- {name}\n" + "\n".join(self.log(name).splitlines()[-lines:])
            for name in self._running
        )

    def kill(self, name: str) -> None:
        """SIGKILL process ``name``: no shutdown of any kind."""
        process = self._running[name][0]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        """Stop every process still running: SIGTERM (a worker finishes its jobs), and
        SIGKILL what has not stopped after 20 seconds. Then delete the test's queue."""
        for process, _ in self._running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process, _ in self._running.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        forget_queue(self._broker, self._queue)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def dump(value: Any) -> str:
    """``value`` as JSON, for a failing assertion's message."""
    return json.dumps(value, default=str, indent=1)
