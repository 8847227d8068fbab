"""Where task functions run: the executor interface and the sequential executor.

The runner keeps everything that is not computing: it plans, decides
freshness, retries, applies trigger rules, serializes and stores results,
and emits events. An executor only computes: it receives `TaskAttempt`s (one attempt
of one task, with its arguments already loaded) and hands back `TaskOutcome`s.
Executors start their workers lazily, on the first `submit`, so a fully
cached run starts nothing.

Parallel and distributed executors (threads, processes, Dask) implement the
same protocol; `resolve_executor` turns the `executor=` argument of `run()`
into an instance.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import traceback as tb
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from nbflow.core import capture
from nbflow.core import events as ev
from nbflow.core.errors import NbflowError, TaskTimeout


@dataclass(kw_only=True, slots=True)
class TaskAttempt:
    """One attempt of one task: everything a worker needs to compute it."""

    id: int
    task: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    attempt: int = 1
    timeout: float | None = None
    pool: str | None = None
    priority: int = 0
    started: float = 0.0
    """When the runner handed it to an executor (epoch seconds)."""
    run_id: str = ""
    """The run it belongs to: a run started by the task (a sub-pipeline) names it as its
    parent, in whichever thread of this process the task runs (`execute_job`)."""
    output: capture.Captured | None = None
    """What it printed so far, while it runs in the driver's process (set by `execute_job`;
    a job run in another process shows its output when it ends)."""

    def next_attempt(self, job_id: int) -> TaskAttempt:
        """The same job, to be run again as the next attempt (a retry)."""
        return dataclasses.replace(self, id=job_id, attempt=self.attempt + 1)


@dataclass(kw_only=True, slots=True)
class TaskOutcome:
    """What came back from a job: a value, or an error with its formatted traceback."""

    job: TaskAttempt
    value: Any = None
    error: BaseException | None = None
    traceback: str = ""
    duration: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Executor(Protocol):
    """Runs jobs and reports their outcomes; never touches the cache."""

    max_workers: int

    def submit(self, job: TaskAttempt) -> None:
        """Queue a job. Starts workers on first use."""

    def poll(self, timeout: float | None = None) -> list[TaskOutcome]:
        """Block until at least one job finished (or `timeout` passed); return the finished ones."""

    def pending(self) -> int:
        """Number of submitted jobs whose outcome was not yet returned by `poll`."""

    def shutdown(self) -> None:
        """Release workers. Called once at the end of every run, also after errors."""


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of `exc` without nbflow's own frames, as a user wants to read it."""
    frames = [f for f in tb.extract_tb(exc.__traceback__) if "/nbflow/core/" not in f.filename]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += tb.format_list(frames)
    lines += tb.format_exception_only(type(exc), exc)
    return "".join(lines)


class _AlarmTimeout(BaseException):
    """Raised inside the task by SIGALRM; a BaseException so task code's `except Exception` can't swallow it."""


def call_with_timeout(job: TaskAttempt) -> Any:
    """Call `job.fn(**job.kwargs)`, enforcing `job.timeout` where the platform allows.

    In the main thread on Unix the timeout is a SIGALRM that interrupts the
    task's Python code. Elsewhere the call runs in a helper thread that is
    abandoned at the deadline (a thread cannot be killed; use
    executor="processes" when a timeout must stop the work).
    """
    if not job.timeout:
        return job.fn(**job.kwargs)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):

        def on_alarm(signum: int, frame: Any) -> None:
            raise _AlarmTimeout

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, job.timeout)
        try:
            return job.fn(**job.kwargs)
        except _AlarmTimeout:
            raise TaskTimeout(job.task, job.timeout) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, Any] = {}
    captured = capture.current()
    run = ev.current_run.get()

    def target() -> None:
        token = ev.current_run.set(run)  # a new thread starts with no context of its own
        try:
            with capture.adopt(captured):  # what the task prints belongs to its capture
                box["value"] = job.fn(**job.kwargs)
        except BaseException as exc:
            box["error"] = exc
        finally:
            ev.current_run.reset(token)

    thread = threading.Thread(target=target, name=f"nbflow-task-{job.task}", daemon=True)
    thread.start()
    thread.join(job.timeout)
    if thread.is_alive():
        raise TaskTimeout(job.task, job.timeout)
    if "error" in box:
        raise box["error"]
    return box["value"]


def execute_job(job: TaskAttempt) -> TaskOutcome:
    """Run one job in this process and capture its outcome (used by in-process executors).

    What the task prints and logs is captured (`nbflow.core.capture`) and kept in
    `outcome.extra["output"]` (with `"dropped"`, the characters cut from its front).
    """
    start = time.perf_counter()
    # A worker thread of the thread executor has no run of its own in its context: the job
    # says which run it belongs to (the run's own thread already has it: no change there).
    token = ev.current_run.set(job.run_id) if job.run_id else None
    try:
        with capture.capture_output() as captured:
            job.output = captured  # readable while it runs: the history shows it live
            try:
                value = call_with_timeout(job)
            except Exception as exc:
                outcome = TaskOutcome(
                    job=job,
                    error=exc,
                    traceback=format_user_traceback(exc),
                    duration=time.perf_counter() - start,
                )
            else:
                outcome = TaskOutcome(job=job, value=value, duration=time.perf_counter() - start)
    finally:
        if token is not None:
            ev.current_run.reset(token)
    output_into(outcome, captured)
    return outcome


def output_into(outcome: TaskOutcome, captured: capture.Captured) -> None:
    """Keep what a job printed in its outcome (nothing when it printed nothing)."""
    text = captured.text
    if text:
        outcome.extra["output"] = text
        if captured.dropped:
            outcome.extra["dropped"] = captured.dropped


class SequentialExecutor:
    """Runs each job in the calling thread, one at a time, in submission order."""

    max_workers = 1

    def __init__(self) -> None:
        self._queue: deque[TaskAttempt] = deque()

    def submit(self, job: TaskAttempt) -> None:
        self._queue.append(job)

    def poll(self, timeout: float | None = None) -> list[TaskOutcome]:
        if not self._queue:
            return []
        return [execute_job(self._queue.popleft())]

    def pending(self) -> int:
        return len(self._queue)

    def shutdown(self) -> None:
        self._queue.clear()


ExecutorFactory = Callable[[int | None], Executor]
_FACTORIES: dict[str, ExecutorFactory] = {"sequential": lambda max_workers: SequentialExecutor()}
# Registered for internal use, not names for `run(executor=...)`: "dask-client"
# (nbflow.core.executors.dask) wraps a `distributed.Client` passed as the executor.
_INTERNAL = frozenset({"dask-client"})


def _public_names() -> list[str]:
    """The names `run(executor=...)` accepts, sorted (the optional executors once imported)."""
    return sorted(n for n in _FACTORIES if n not in _INTERNAL)


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Make `run(executor=name)` build an executor with `factory(max_workers)`."""
    _FACTORIES[name] = factory


def check_executor(executor: Any) -> None:
    """Raise the error `resolve_executor` would, without starting anything (a cached run starts no worker)."""
    if isinstance(executor, str) and executor not in _public_names():
        _load_builtin_executors()
        if executor not in _public_names():
            resolve_executor(executor, None)


def resolve_executor(executor: Any, max_workers: int | None) -> Executor:
    """Turn `run(executor=...)` into an executor instance (a name, an instance, or a Dask client)."""
    if executor is None:
        executor = "sequential"
    if isinstance(executor, str):
        if executor not in _FACTORIES:
            _load_builtin_executors()
        if executor not in _public_names():
            from nbflow.core.errors import did_you_mean

            names = _public_names()
            raise NbflowError(
                f"unknown executor `{executor}`{did_you_mean(executor, names)}; "
                f"choose one of {', '.join(names)} or pass an executor object"
            )
        return _FACTORIES[executor](max_workers)
    if type(executor).__module__.startswith("distributed") and type(executor).__name__ == "Client":
        _load_builtin_executors()
        client_factory: Any = _FACTORIES["dask-client"]  # takes (client, max_workers)
        return client_factory(executor, max_workers)
    if isinstance(executor, Executor):
        return executor
    raise NbflowError(
        f"executor must be a name, an Executor or a distributed.Client, not {type(executor).__name__}"
    )


def _load_builtin_executors() -> None:
    """Import the optional executor modules, which register themselves."""
    import importlib

    for module in ("nbflow.core.executors.parallel", "nbflow.core.executors.dask"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name not in (module, "distributed", "dask"):
                raise
