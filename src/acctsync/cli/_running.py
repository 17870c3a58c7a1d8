"""Running syncs for ``acctsync sync`` (and ``refresh-formulas``): pages counted, progress
shown, stops honoured, warnings printed.

The engine has no callback, and needs none: `ObservedSource` stands between it and the
real source, so it sees every page the engine pulls. The engine tells what a source can
do by the methods it has (`DescribedSource` and `FormulaSource` are runtime-checked
protocols), so `observed` wraps a source in a wrapper that has ``field_names`` and
``read_formulas`` exactly when the source has them. A stop request (Ctrl-C, SIGTERM)
only sets a flag; the next pull raises `Stopped`, which ends the sync between pages. The
store commits each batch with its watermark, so a stopped sync leaves whole batches and
the next one reads the rest. `Runner` runs one sync or a polling loop of them, each with
a source made for it, records each run in the store, and prints the source's warnings.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import UTC, datetime, timedelta
from queue import SimpleQueue
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, runtime_checkable

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from acctsync._engine import STREAMS, SyncEngine
from acctsync._errors import AcctSyncError, LockTimeoutError, SourceError
from acctsync._protocols import (
    DescribedSource,
    EventStream,
    FormulaSource,
    MeteredSource,
    Source,
    WarningSource,
)
from acctsync._records import Change, ObjectType
from acctsync._report import SyncReport
from acctsync.cli._exits import ExitCode
from acctsync.cli._output import Output, print_run, run_document
from acctsync.cli._sources import budget_exceeded

if TYPE_CHECKING:
    from acctsync.stores.sql import SqlStore, SyncRun

__all__ = [
    "CountedPages",
    "DescribedFormulaObservedSource",
    "DescribedObservedSource",
    "FormulaObservedSource",
    "ObservedSource",
    "Runner",
    "StopRequest",
    "Stopped",
    "observed",
    "progress_bar",
]

_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _now() -> datetime:
    return datetime.now(UTC)


class Stopped(BaseException):
    """A stop was requested: the sync ends before its next page.

    A `BaseException`, as `KeyboardInterrupt` is, so that no ``except Exception`` on the
    way out takes it for an error of the source.
    """


class StopRequest:
    """The flag that Ctrl-C (SIGINT) and SIGTERM set while `handling` is active.

    The first signal asks for a clean stop; a second SIGINT interrupts at once, as
    Ctrl-C does by default, and so does each after it until `cleaning_up` says the
    interruption was caught. Then they are ignored: what runs is the cleanup (the run
    recorded, the database closed), which another `KeyboardInterrupt` would cut short.

    The signal handler only notes the signal: a thread of the context's own wakes what
    waits (`wait`) and says "stopping". A handler runs between any two steps of the main
    thread, in the middle of an import too: printing from it once imported a module
    (rich's emoji table, on its first use) that the interrupted step was importing, and
    failed with a traceback; and an `Event` it sets may be locked by the step it
    interrupted.
    """

    def __init__(self, announce: Callable[[str], None]) -> None:
        self._announce = announce
        self._event = threading.Event()
        self._signalled = False
        self._notes: SimpleQueue[int | None] = SimpleQueue()
        self._cleaning = False
        self.signal: int | None = None
        """The signal that asked for the stop, if one did."""

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._signalled or self._event.is_set()

    def request(self, number: int | None = None) -> None:
        """Ask for a stop, as signal ``number`` (when one asked)."""
        if self.signal is None:
            self.signal = number
        self._event.set()

    @property
    def event(self) -> threading.Event:
        """The flag itself, for what waits on it or polls it (`SyncEngine.follow`)."""
        return self._event

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if a stop is asked for; whether one was."""
        return self._event.wait(seconds)

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Turn SIGINT and SIGTERM into stop requests inside the context.

        Leaving it, the handlers before it come back; but once a signal asked for a stop,
        or Ctrl-C interrupted the context, SIGINT stays ignored: what is left is the cleanup
        and the report (the database closed, "interrupted" said), and a Ctrl-C let in
        between them would end the command with a traceback or click's "Aborted!".
        """
        previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
        answering = threading.Thread(target=self._answer, name="acctsync-stop", daemon=True)
        answering.start()
        for number in _STOP_SIGNALS:
            signal.signal(number, self._on_signal)
        try:
            yield
        except KeyboardInterrupt:
            self.cleaning_up()
            raise
        finally:
            if self.signal is not None or self._cleaning:
                previous[signal.SIGINT] = signal.SIG_IGN
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._notes.put(None)
            answering.join()  # "stopping" said before what the command says next

    def cleaning_up(self) -> None:
        """Ignore Ctrl-C from now on: the interruption was caught, and is being cleaned up."""
        self._cleaning = True

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        # Nothing here but plain assignments and a put of `SimpleQueue`, which may
        # interrupt itself (https://docs.python.org/3/library/queue.html#queue.SimpleQueue.put).
        if self.requested:
            # Raised again for each Ctrl-C until one is caught: one raised inside a
            # finalizer (a connection's, collected just then) never reaches the sync.
            if number == signal.SIGINT and not self._cleaning:
                raise KeyboardInterrupt
            return
        self._signalled = True
        if self.signal is None:
            self.signal = number
        self._notes.put(number)

    def _answer(self) -> None:
        """Set the flag for each signal noted, and say so, until `handling` ends."""
        while (number := self._notes.get()) is not None:
            self._event.set()
            self._announce(
                f"{signal.Signals(number).name}: stopping; a sync in progress stops after its"
                " current batch"
                + (" (Ctrl-C again to stop at once)" if number == signal.SIGINT else "")
            )


@runtime_checkable
class CountedPages(Protocol):
    """Pages that know how many records they hold in all (an export folder's, once its
    files are indexed: `ExportPages`); None while they do not."""

    @property
    def total(self) -> int | None:
        """The records the pages hold in all, if known."""
        ...


def _total(pages: Iterator[Sequence[Change]]) -> int | None:
    return pages.total if isinstance(pages, CountedPages) else None


def _ignored(kind: ObjectType, number: int | None) -> None:
    pass


class ObservedSource:
    """A `Source` that passes another's pages on, counting them, and stops on request.

    ``on_page(object_type, records)`` is called for each page, ``on_read(object_type,
    total)`` when a read starts, with its total if its pages know it (`CountedPages`), and
    ``on_total`` when they learn it later.
    """

    def __init__(
        self,
        source: Source,
        stop: StopRequest,
        on_page: Callable[[ObjectType, int], None] = _ignored,
        *,
        on_read: Callable[[ObjectType, int | None], None] = _ignored,
        on_total: Callable[[ObjectType, int | None], None] = _ignored,
    ) -> None:
        self._source = source
        self._stop = stop
        self._on_page = on_page
        self._on_read = on_read
        self._on_total = on_total
        self.pages = 0
        """Pages pulled so far."""

    @property
    def requests_made(self) -> int:
        """The wrapped source's count (`MeteredSource`), or 0 for one that sends none.

        Always there, so that the engine reports the requests of a sync the command runs.
        """
        source = self._source
        return source.requests_made if isinstance(source, MeteredSource) else 0

    def take_warnings(self) -> Sequence[str]:
        """The wrapped source's warnings (`WarningSource`), or none for one that has none.

        Always there, so that the engine reports the warnings of a run the command runs.
        """
        source = self._source
        return source.take_warnings() if isinstance(source, WarningSource) else ()

    def read_changes(
        self, object_type: ObjectType, since: datetime | None, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """The source's pages; `Stopped` before the next one once a stop is asked for."""
        # Called now, not on the first pull, so that a source that checks its input up
        # front (an export folder indexes its files) fails where it would unwatched.
        pages = iter(self._source.read_changes(object_type, since, page_size=page_size))
        return self._watched(object_type, pages)

    def _watched(
        self, object_type: ObjectType, pages: Iterator[Sequence[Change]]
    ) -> Iterator[Sequence[Change]]:
        total = _total(pages)
        self._on_read(object_type, total)
        while True:
            if self._stop.requested:
                raise Stopped
            page = next(pages, None)
            if page is None:
                return
            self.pages += 1
            self._on_page(object_type, len(page))
            if _total(pages) != total:
                total = _total(pages)
                self._on_total(object_type, total)
            yield page


class DescribedObservedSource(ObservedSource):
    """An `ObservedSource` over a `DescribedSource`, and a `DescribedSource` itself.

    Without ``field_names`` the engine would not see the fields the source reads: it would
    take no spelling from describe, and never report a field that is no longer read.
    """

    def __init__(
        self,
        source: DescribedSource,
        stop: StopRequest,
        on_page: Callable[[ObjectType, int], None] = _ignored,
        *,
        on_read: Callable[[ObjectType, int | None], None] = _ignored,
        on_total: Callable[[ObjectType, int | None], None] = _ignored,
    ) -> None:
        super().__init__(source, stop, on_page, on_read=on_read, on_total=on_total)
        self._described = source

    def field_names(self, object_type: ObjectType) -> Collection[str]:
        """The wrapped source's (see `DescribedSource.field_names`)."""
        return self._described.field_names(object_type)


class FormulaObservedSource(ObservedSource):
    """An `ObservedSource` over a `FormulaSource`, and a `FormulaSource` itself.

    Its formula reads are counted and stopped as its reads of changes are.
    """

    def formula_fields(self, object_type: ObjectType) -> Collection[str]:
        """The wrapped source's (see `FormulaSource.formula_fields`)."""
        return cast(FormulaSource, self._source).formula_fields(object_type)

    def read_formulas(
        self, object_type: ObjectType, *, page_size: int
    ) -> Iterator[Sequence[Change]]:
        """The source's pages (see `FormulaSource.read_formulas`), watched."""
        # `observed` makes this class for a FormulaSource only.
        source = cast(FormulaSource, self._source)
        pages = iter(source.read_formulas(object_type, page_size=page_size))
        return self._watched(object_type, pages)


class DescribedFormulaObservedSource(DescribedObservedSource, FormulaObservedSource):
    """An `ObservedSource` over a source that is a `DescribedSource` and a `FormulaSource`."""


def observed(
    source: Source,
    stop: StopRequest,
    on_page: Callable[[ObjectType, int], None] = _ignored,
    *,
    on_read: Callable[[ObjectType, int | None], None] = _ignored,
    on_total: Callable[[ObjectType, int | None], None] = _ignored,
) -> ObservedSource:
    """``source`` observed: a `DescribedSource`, and a `FormulaSource`, exactly when
    ``source`` is one."""
    kind: type[ObservedSource] = ObservedSource
    if isinstance(source, DescribedSource):
        kind = (
            DescribedFormulaObservedSource
            if isinstance(source, FormulaSource)
            else DescribedObservedSource
        )
    elif isinstance(source, FormulaSource):
        kind = FormulaObservedSource
    return kind(source, stop, on_page, on_read=on_read, on_total=on_total)


class _RateColumn(ProgressColumn):
    """Records a second, as rich measures the task's speed (over the task so far, until it
    has samples enough)."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if speed is None and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(
            "" if speed is None else f"{speed:,.0f} records/s", style="progress.data.speed"
        )


class _CountColumn(ProgressColumn):
    """Records read, of how many when the source knows; pages read."""

    def render(self, task: Task) -> Text:
        of = "" if task.total is None else f" of {task.total:,.0f}"
        return Text(f"{task.completed:,.0f}{of} records, {task.fields['pages']:,} pages")


class _EtaColumn(ProgressColumn):
    """The time left at the rate so far, once the total is known."""

    def render(self, task: Task) -> Text:
        left = task.time_remaining
        if task.total is None or left is None:
            return Text("")
        return Text(f"ETA {timedelta(seconds=round(left))}", style="progress.remaining")


def progress_bar(console: Console) -> Progress:
    """A bar per object read: records and pages read (of the total, and the time left,
    where the source knows the total), the rate, the time spent."""
    # The figures whole on one line: the bar takes what room is left.
    whole = Column(no_wrap=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}", table_column=whole),
        BarColumn(bar_width=None),
        _CountColumn(table_column=whole),
        _RateColumn(table_column=whole),
        TimeElapsedColumn(table_column=whole),
        _EtaColumn(table_column=whole),
        console=console,
        transient=True,
    )


class Runner:
    """Runs syncs into one store and records each, for ``sync`` and ``sync --every``.

    ``make_source`` gives the source of each sync: a new one each time, or one kept for
    all (the Salesforce source, which keeps its describe and the org's API usage).
    ``operation`` is what a run asks of the engine (`SyncEngine.sync` by default), and
    ``name`` what its report calls it.
    """

    def __init__(
        self,
        *,
        out: Output,
        store: SqlStore,
        make_source: Callable[[], Source],
        label: str,
        stop: StopRequest,
        engine_options: dict[str, Any],
        progress: Console | None,
        operation: Callable[[SyncEngine], SyncReport] = SyncEngine.sync,
        name: str = "sync",
    ) -> None:
        self._out = out
        self._store = store
        self._make_source = make_source
        self._label = label
        self._stop = stop
        self._engine_options = engine_options
        self._progress = progress
        self._operation = operation
        self._name = name

    def once(self) -> ExitCode:
        """One sync; its exit code."""
        run = self._sync()
        self._show(run, one_line=False)
        if run.outcome == "interrupted":
            return (
                ExitCode.TERMINATED
                if self._stop.signal == signal.SIGTERM
                else ExitCode.INTERRUPTED
            )
        return ExitCode.REJECTED if run.outcome == "rejected" else ExitCode.OK

    def every(self, seconds: float) -> ExitCode:
        """Syncs ``seconds`` apart until a stop request: then `ExitCode.OK`.

        A sync that fails in a way the next may not (a lock held by another runner, a
        source error that is retryable, an API budget that ran out, which usage falling
        over the next hours lifts) is reported and the loop goes on; any other error ends
        it.
        """
        while not self._stop.requested:
            try:
                run = self._sync()
            except LockTimeoutError as error:
                self._skipped(error, f"skipped a sync: {error}")
            except SourceError as error:
                if budget_exceeded(error):
                    self._skipped(error, f"the API budget ran out, the next sync goes on: {error}")
                elif error.retryable:
                    self._skipped(error, f"a sync failed, the next will try again: {error}")
                else:
                    raise
            else:
                self._show(run, one_line=True)
            if self._stop.wait(seconds):
                break
        return ExitCode.OK

    def follow(self, stream: EventStream) -> ExitCode:
        """Follow ``stream`` until a stop request: then `ExitCode.OK`.

        A line (with ``--json``, a document) for the catch-up sync and for each batch of
        events applied. The runs are not recorded, one per batch being far too many for
        ``status``; a batch's position is stored with it (`SyncEngine.follow`).
        """
        from acctsync.stores.sql import SyncRun

        store = self._store
        source = observed(self._make_source(), self._stop)
        engine = SyncEngine(source=source, store=store, **self._engine_options)
        started = _now()
        try:
            for report in engine.follow(stream, stop=self._stop.event):
                self._warn(report.warnings)
                run = SyncRun.from_report(
                    report, started_at=started, finished_at=_now(), source=self._label
                )
                self._show(run, one_line=True)
                started = _now()
        except Stopped:
            pass  # asked for during the catch-up sync: its applied pages stay
        return ExitCode.OK

    def _skipped(self, error: Exception, note: str) -> None:
        """Report a sync the loop goes on after: on stderr, and a line with ``--json``."""
        self._out.note(note)
        if self._out.json:
            skipped = {"type": type(error).__name__, "message": str(error)}
            self._out.document({"skipped": skipped}, one_line=True)

    def _show(self, run: SyncRun, *, one_line: bool) -> None:
        org = self._store.org
        if self._out.json:
            self._out.document(run_document(run, org), one_line=one_line)
        else:
            print_run(self._out.console, run, title=f"{self._name} of org {org!r}")

    def _sync(self) -> SyncRun:
        """Sync once, and record the run."""
        from acctsync.stores.sql import SyncRun

        store = self._store
        bar = None if self._progress is None else progress_bar(self._progress)
        with bar if bar is not None else nullcontext():
            on_page, on_read, on_total = self._counters(bar)
            source = observed(
                self._make_source(), self._stop, on_page, on_read=on_read, on_total=on_total
            )
            engine = SyncEngine(source=source, store=store, **self._engine_options)
            # Held across the sync and its record, so that the record is of this sync.
            with store.exclusive():
                started = _now()
                requests_before = source.requests_made

                def ended(outcome: str, error: str) -> SyncRun:
                    # Where the batches it applied got to.
                    marks = {stream: store.watermark(stream) for stream in STREAMS}
                    return SyncRun(
                        started_at=started,
                        finished_at=_now(),
                        outcome=outcome,
                        source=self._label,
                        error=error,
                        pages=source.pages,
                        api_requests=source.requests_made - requests_before,
                        watermarks={k: v for k, v in marks.items() if v is not None},
                    )

                try:
                    report = self._operation(engine)
                except Stopped:
                    self._warn(source.take_warnings())
                    name = signal.Signals(self._stop.signal or signal.SIGINT).name
                    return store.record_run(ended("interrupted", f"stopped by {name}"))
                except (KeyboardInterrupt, AcctSyncError) as error:
                    if isinstance(error, KeyboardInterrupt):
                        self._stop.cleaning_up()
                    # The engine takes a run's warnings when it ends: these it did not.
                    self._warn(source.take_warnings())
                    # The run's own error is what the caller needs; a store that failed
                    # may not record this either.
                    with suppress(Exception):
                        outcome = "failed" if isinstance(error, AcctSyncError) else "interrupted"
                        store.record_run(ended(outcome, str(error) or type(error).__name__))
                    raise
                self._warn(report.warnings)
                run = SyncRun.from_report(
                    report, started_at=started, finished_at=_now(), source=self._label
                )
                return store.record_run(run)

    def _warn(self, warnings: Sequence[str]) -> None:
        """A run's warnings, on stderr: the store does not keep them with the run."""
        for warning in warnings:
            self._out.warning(warning)

    @staticmethod
    def _counters(
        bar: Progress | None,
    ) -> tuple[
        Callable[[ObjectType, int], None],
        Callable[[ObjectType, int | None], None],
        Callable[[ObjectType, int | None], None],
    ]:
        """What to do with each page the engine pulls, at the start of each read, and with
        a total learned later: move the bar of the object read, if there is a bar."""
        if bar is None:
            return _ignored, _ignored, _ignored
        tasks: dict[ObjectType, TaskID] = {}

        def task(kind: ObjectType) -> TaskID:
            if kind not in tasks:
                tasks[kind] = bar.add_task(kind, total=None, pages=0)
            return tasks[kind]

        def count(kind: ObjectType, size: int) -> None:
            pages = bar.tasks[task(kind)].fields["pages"] + 1
            bar.update(task(kind), advance=size, pages=pages)

        def read(kind: ObjectType, total: int | None) -> None:
            # A second read of an object (a reconciliation's) starts its count again.
            bar.reset(task(kind), total=total, pages=0)

        def learned(kind: ObjectType, total: int | None) -> None:
            bar.update(task(kind), total=total)

        return count, read, learned
