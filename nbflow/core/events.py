"""Typed events of a run, and the listeners that receive them.

The runner emits events and calls no display code: the DAG widget, the
terminal progress bar, the logging listener and run history all subscribe
here. Every event is a frozen dataclass with keyword-only fields, so fields
can be added without breaking listeners. Events are delivered in the driver
process, in order, whatever executor ran the task.

A listener is any callable taking one event. A listener that raises is
reported once as a warning and removed from the run, so a broken display
never fails a pipeline.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from nbflow.core.errors import NbflowWarning


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    pipeline: str
    run_id: str
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted(Event):
    tasks: tuple[str, ...]
    """Every task the run will consider, in topological order."""
    stale: dict[str, str]
    """Tasks planned to execute, with the reason each is stale."""
    edges: tuple[tuple[str, str], ...] = ()
    quiet: tuple[tuple[str, str], ...] = ()
    """The edges along which a stale upstream does not make its task stale (`after=`
    edges, inputs named in `ignore=`)."""
    params: dict[str, Any] | None = None
    """The run parameters given to the run (a partition key as `partition`)."""
    parent: str = ""
    """The run id of the run whose task started this one (a sub-pipeline), if known."""
    source: str = ""
    """The file the pipeline's task code comes from ("" when none is on disk: a cell)."""
    running: Callable[[], dict[str, RunningTask]] | None = None
    """A live view of the run, callable from any thread while it goes: the tasks in flight
    now. A listener that ignores `TaskStarted` (the run history) reads it now and then
    instead of paying for an event per task."""


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task in flight, as `RunStarted.running` shows it."""

    started: float
    """When it was handed to an executor (epoch seconds)."""
    output: str = ""
    """What it printed so far (only for tasks run in the driver's process; a task run in
    another process shows its output when it ends)."""
    dropped: int = 0
    """Characters cut from the front of `output` (it keeps the tail)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished(Event):
    states: dict[str, str]
    duration: float
    ok: bool
    aborted: str = ""
    """Set when the run did not end normally: the exception that stopped it
    (`KeyboardInterrupt`, an error of nbflow's own); empty for a run that ended."""
    cached: dict[str, dict[str, Any]] | None = None
    """task -> the cache record it was loaded from (`key`, `digest`, `size`, `metadata`), for
    each task of the run satisfied from the cache: what a listener that ignores the
    `TaskCached` events (see `EventBus.wants`) learns of them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusComputed(Event):
    """A pipeline's status was computed outside a run (`pipe.status()`, `pipe.explain()`,
    the live widget's refresh): the planner's verdict on every task now. Sent to the
    default listeners only (the run history keeps the newest as the pipeline's snapshot);
    `run_id` is empty."""

    tasks: tuple[str, ...]
    """Every task of the pipeline, in topological order."""
    edges: tuple[tuple[str, str], ...]
    verdicts: dict[str, tuple[str, str, str]]
    """task -> (state, reason, note) as `pipe.status()` gives them (`TaskStatus`)."""
    source: str = ""
    """The file the pipeline's task code comes from ("" when none is on disk: a cell)."""


def emit_status(event: StatusComputed) -> None:
    """Give `event` to the default listeners (a listener that raises is warned about)."""
    listeners = default_listeners()
    if listeners:
        EventBus(listeners).emit(event)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEvent(Event):
    task: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskQueued(TaskEvent):
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskStarted(TaskEvent):
    attempt: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFinished(TaskEvent):
    duration: float
    attempts: int = 1
    metadata: dict[str, Any] | None = None
    output: str = ""
    """What the last attempt printed and logged (`nbflow.core.capture`)."""
    output_dropped: int = 0
    """Characters cut from the front of `output` (it keeps the tail)."""
    reason: str = ""
    """Why the task ran (the planner's stale reason)."""
    key: str = ""
    """The cache key the task ran under (empty when it has none)."""
    digest: str = ""
    size: int = 0
    """Digest and size in bytes of its stored value (empty / 0 when not cached)."""
    parts: dict[str, Any] | None = None
    shorts: dict[str, str] | None = None
    """The parts of its cache key and their short reprs, as its cache record keeps them
    (code fingerprint parts, parameter and upstream digests; None when not cached)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCached(TaskEvent):
    metadata: dict[str, Any] | None = None
    key: str = ""
    digest: str = ""
    size: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRetrying(TaskEvent):
    attempt: int
    """The attempt that failed (1-based)."""
    delay: float
    error: str
    output: str = ""
    """What the failed attempt printed and logged."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFailed(TaskEvent):
    error: str
    """`ExceptionType: message` of the last attempt."""
    traceback: str
    attempts: int = 1
    duration: float = 0.0
    output: str = ""
    """What the last attempt printed and logged."""
    output_dropped: int = 0
    reason: str = ""
    """Why the task ran (the planner's stale reason)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSkipped(TaskEvent):
    state: str
    """`skipped` or `upstream_failed`."""
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class MapExpanded(TaskEvent):
    """A mapped task was expanded into `size` instances; those in `cached` need not run."""

    size: int
    labels: tuple[Any, ...] = ()
    """Each element's label: its index, or its key when the input is a dict."""
    cached: tuple[int, ...] = ()
    """Indices of the instances loaded from the cache."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MapInstance(TaskEvent):
    """One instance of mapped task `task` changed state: `done`, `failed` or `retrying`."""

    index: int
    label: Any
    state: str
    duration: float = 0.0
    attempt: int = 1
    error: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckFinished(TaskEvent):
    """A check of task `task` ran."""

    check: str
    passed: bool
    message: str = ""
    blocking: bool = True
    cached: bool = False
    """The result of an earlier run, reused: same check code, same value."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SubpipelineEvent(TaskEvent):
    """An event of the inner run of sub-pipeline task `task`, forwarded while that task runs.

    Forwarded only when the sub-pipeline task runs in the driver's own thread
    (the sequential executor, the default); elsewhere the outer run learns the
    inner states from the task's metadata when it ends.
    """

    event: Event


Listener = Callable[[Event], None]

forward_inner: ContextVar[Callable[[str, Event], None] | None] = ContextVar(
    "nbflow_forward_inner", default=None
)
"""Set by a run for its own thread: how a sub-pipeline task running there hands its inner
events to the outer run (`forward(outer_task, event)`). Threads and processes that run tasks
do not inherit it, so events only ever reach listeners from the run's own thread."""


current_run: ContextVar[str | None] = ContextVar("nbflow_current_run", default=None)
"""The id of the run going on in this thread (set by the runner): a run started from inside
one of its tasks (a sub-pipeline, in the run's own thread) names it as its `parent`."""

_default_listeners: list[Listener] = []


def add_default_listener(listener: Listener) -> None:
    """Give `listener` every event of every run in this process, after the run's own listeners.

    How layers above core observe runs without core knowing them: the run history
    registers its recorder here when `nbflow` is imported.
    """
    if listener not in _default_listeners:
        _default_listeners.append(listener)


def remove_default_listener(listener: Listener) -> None:
    """Stop giving `listener` the events of new runs (unknown listeners are ignored)."""
    if listener in _default_listeners:
        _default_listeners.remove(listener)


def default_listeners() -> list[Listener]:
    """The listeners added with `add_default_listener`, in order."""
    return list(_default_listeners)


class SupportsEvents(Protocol):
    def __call__(self, event: Event) -> None: ...


class EventBus:
    """Delivers events to listeners in order; isolates the run from listener errors."""

    __slots__ = ("_listeners",)

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners: list[Listener] = list(listeners)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def wants(self, kind: type[Event]) -> bool:
        """Whether a listener wants events of `kind`: a listener with an `ignores` attribute
        (a set of event classes) does not want those. The runner skips making `TaskCached`
        events nobody wants: on a cached 1,000-task rerun they are most of its cost."""
        return any(kind not in getattr(listener, "ignores", ()) for listener in self._listeners)

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                # A display must never fail the pipeline it displays.
                self._listeners.remove(listener)
                warnings.warn(
                    f"event listener {listener!r} raised {type(exc).__name__}: {exc}; "
                    "it was removed for the rest of this run",
                    NbflowWarning,
                    stacklevel=2,
                )


class LoggingListener:
    """Logs each event through the `nbflow` logger (or `logger`): INFO for progress and
    skipped tasks, WARNING for retries, ERROR for failures."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("nbflow")

    def __call__(self, event: Event) -> None:
        log = self.logger
        match event:
            case RunStarted():
                log.info(
                    "run %s of %s: %d tasks, %d stale",
                    event.run_id,
                    event.pipeline,
                    len(event.tasks),
                    len(event.stale),
                )
            case TaskStarted():
                log.info("task %s started (attempt %d)", event.task, event.attempt)
            case TaskFinished():
                log.info("task %s done in %.3f s", event.task, event.duration)
            case TaskCached():
                log.info("task %s loaded from cache", event.task)
            case TaskRetrying():
                log.warning(
                    "task %s failed (attempt %d: %s); retrying in %.1f s",
                    event.task,
                    event.attempt,
                    event.error,
                    event.delay,
                )
            case TaskFailed():
                log.error(
                    "task %s failed after %d attempt(s): %s",
                    event.task,
                    event.attempts,
                    event.error,
                )
            case TaskSkipped():
                log.info("task %s %s: %s", event.task, event.state, event.reason)
            case RunFinished():
                log.info(
                    "run %s finished in %.3f s: %s",
                    event.run_id,
                    event.duration,
                    "ok" if event.ok else "FAILED",
                )


class ProgressListener:
    """A progress display for long runs outside Jupyter.

    On a terminal it is one line redrawn in place. Anywhere else (a file, a pipe,
    a notebook's captured stderr) carriage returns would pile up as raw control
    characters, so it writes plain lines instead, at most one every
    `PLAIN_INTERVAL` seconds (a log stays readable), and the final one. Redraws happen at most every
    `interval` seconds (and at the end), so it costs nothing measurable on a run
    of thousands of tiny tasks.
    """

    PLAIN_INTERVAL = 5.0

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        self.interval = interval if self.live else max(interval, self.PLAIN_INTERVAL)
        self._total = 0
        self._done = 0
        self._failed = 0
        self._running = ""
        self._start = 0.0
        self._last_draw = 0.0

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted():
                self._total, self._done, self._failed = len(event.tasks), 0, 0
                self._start = event.time
            case TaskStarted():
                self._running = event.task
            case TaskFinished() | TaskCached() | TaskSkipped():
                self._done += 1
            case TaskFailed():
                self._done += 1
                self._failed += 1
            case RunFinished():
                self._draw(final=True)
                return
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw()

    def _draw(self, final: bool = False) -> None:
        elapsed = time.time() - self._start if self._start else 0.0
        failed = f", {self._failed} failed" if self._failed else ""
        current = "" if final else f"  {self._running}"
        line = f"[nbflow] {self._done}/{self._total} tasks{failed}  {elapsed:.1f}s{current}"
        if self.live:
            # Back to the start and erase the rest: the line is rewritten in place.
            self.stream.write("\r\x1b[K" + line[:120] + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
