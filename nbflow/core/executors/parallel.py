"""Run tasks at the same time on this machine: a thread executor and a process executor.

Policy:

- **Threads** (`executor="threads"`) suit tasks that wait (I/O, network, a
  database) or release the GIL (NumPy, pandas). Jobs run in the driver
  process, so nothing is pickled. A timeout cannot stop a thread: the task is
  reported as timed out and its thread abandoned (see `call_with_timeout`).
- **Processes** (`executor="processes"`) suit CPU-bound Python. Each worker
  is a fresh interpreter (not a fork of the driver) running the small loop
  of `nbflow.core.executors.worker`, talking to the driver over two private pipes.
  Jobs go there pickled with cloudpickle, so functions and classes defined
  in a notebook cell or in `__main__` work, and the user's script is never
  re-imported (no `if __name__ == "__main__"` guard needed). A large
  argument travels to each worker once per run, and jobs prefer the idle
  worker that already holds theirs.
- **One worker, one job, one process to kill.** The driver knows which worker
  runs which job. A worker that vanishes (SIGKILL, a segfault, the OOM
  killer) fails only the job it was running, with `WorkerDied`; a task past
  its `timeout` has its worker killed and fails with `TaskTimeout`. In both
  cases a replacement worker is started when the next job needs one, and the
  runner retries the task like any other failure. (concurrent.futures'
  process pool would instead break as a whole on the first dead worker.)
- **Lazy and owned.** Workers start on the first `submit` that needs one, so a
  fully cached run starts none. An executor made from a name by `run()`
  closes its workers when the run ends; an executor object the user builds
  keeps them warm across runs until `close()` (or garbage collection), and
  `shutdown()` only stops what a finished run left running.
- **Order.** Jobs waiting for a free worker start by `priority` (higher
  first), then in submission order.
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
import queue
import threading
import time
import weakref
from multiprocessing.connection import wait
from typing import Any

from nbflow.core.errors import NbflowError, TaskTimeout, WorkerDied
from nbflow.core.executors.base import (
    TaskAttempt,
    TaskOutcome,
    execute_job,
    format_user_traceback,
    register_executor,
)
from nbflow.core.executors.worker import (
    SCATTER_THRESHOLD,
    RemoteError,
    WorkerProcess,
    encode_job,
    stop_workers,
    unpicklable_task,
)

__all__ = ["ProcessExecutor", "RemoteError", "ThreadExecutor"]


def default_thread_workers() -> int:
    """The thread count concurrent.futures uses: enough to overlap waiting tasks."""
    return min(32, (os.cpu_count() or 1) + 4)


def default_process_workers() -> int:
    return os.cpu_count() or 1


def _check_max_workers(max_workers: int | None, default: int, kind: str) -> int:
    if max_workers is None:
        return default
    if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
        raise NbflowError(
            f"max_workers of the {kind} executor must be a positive integer, not {max_workers!r}"
        )
    return max_workers


class _JobQueue:
    """Jobs waiting for a worker: highest priority first, then first submitted."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, TaskAttempt]] = []
        self._order = itertools.count()

    def push(self, job: TaskAttempt) -> None:
        heapq.heappush(self._heap, (-job.priority, next(self._order), job))

    def pop(self) -> TaskAttempt:
        return heapq.heappop(self._heap)[2]

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)


# --------------------------------------------------------------------------- threads


class ThreadExecutor:
    """Runs jobs on up to `max_workers` threads of the driver process."""

    def __init__(self, max_workers: int | None = None, *, close_on_shutdown: bool = False) -> None:
        self.max_workers = _check_max_workers(max_workers, default_thread_workers(), "threads")
        self._close_on_shutdown = close_on_shutdown
        self._lock = threading.Condition()
        self._waiting = _JobQueue()
        self._done: queue.SimpleQueue[TaskOutcome] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._pending = 0
        # Outcomes of jobs from before a shutdown() belong to a finished run: drop them.
        self._generation = 0
        self._closed = False

    def submit(self, job: TaskAttempt) -> None:
        with self._lock:
            if self._closed:
                raise NbflowError("this ThreadExecutor was closed; create a new one")
            self._waiting.push(job)
            self._pending += 1
            # Idle threads may not have woken for earlier jobs yet: count those jobs too.
            if len(self._waiting) > self._idle and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"nbflow-thread-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._lock.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
                while not self._waiting and not self._closed:
                    self._lock.wait()
                self._idle -= 1
                if self._closed:
                    self._threads.remove(threading.current_thread())
                    return
                job = self._waiting.pop()
                generation = self._generation
            outcome = execute_job(job)
            outcome.extra["worker"] = threading.current_thread().name
            with self._lock:
                if generation == self._generation:
                    self._done.put(outcome)

    def poll(self, timeout: float | None = None) -> list[TaskOutcome]:
        if self._pending == 0:
            return []
        try:
            outcomes = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                outcomes.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._pending -= len(outcomes)
        return outcomes

    def pending(self) -> int:
        return self._pending

    def shutdown(self) -> None:
        """Forget unfinished jobs; close the threads too if this executor belongs to one run."""
        with self._lock:
            self._generation += 1
            self._waiting.clear()
            self._pending = 0
            while not self._done.empty():
                self._done.get_nowait()
        if self._close_on_shutdown:
            self.close()

    def close(self) -> None:
        """Stop the idle threads; a thread still inside a task ends when the task returns."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def __enter__(self) -> ThreadExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.close()


# --------------------------------------------------------------------------- processes


class ProcessExecutor:
    """Runs jobs in up to `max_workers` worker processes, one job per process at a time."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        scatter_threshold: int = SCATTER_THRESHOLD,
        close_on_shutdown: bool = False,
    ) -> None:
        self.max_workers = _check_max_workers(max_workers, default_process_workers(), "processes")
        self.scatter_threshold = scatter_threshold
        self._close_on_shutdown = close_on_shutdown
        self._workers: list[WorkerProcess] = []
        self._waiting = _JobQueue()
        self._ready: list[TaskOutcome] = []
        self._closed = False
        # Workers must not outlive the executor, even if nobody calls close().
        self._finalizer = weakref.finalize(self, stop_workers, self._workers)

    @property
    def workers_started(self) -> int:
        """Live worker processes (0 until the first job needs one)."""
        return len(self._workers)

    def submit(self, job: TaskAttempt) -> None:
        if self._closed:
            raise NbflowError("this ProcessExecutor was closed; create a new one")
        self._waiting.push(job)
        self._dispatch()

    def pending(self) -> int:
        busy = sum(1 for w in self._workers if w.job is not None)
        return len(self._waiting) + busy + len(self._ready)

    def poll(self, timeout: float | None = None) -> list[TaskOutcome]:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            busy = [w for w in self._workers if w.job is not None]
            if not busy:
                break
            limits = [w.deadline - time.perf_counter() for w in busy if w.deadline < float("inf")]
            if end is not None:
                limits.append(end - time.monotonic())
            readable = wait(
                [w.inbox for w in busy], timeout=max(0.0, min(limits)) if limits else None
            )
            for worker in busy:
                if worker.inbox in readable:
                    self._receive(worker)
            self._expire(time.perf_counter())
            self._dispatch()
            if end is not None and time.monotonic() >= end:
                break
        outcomes, self._ready = self._ready, []
        return outcomes

    def _dispatch(self) -> None:
        """Hand waiting jobs to idle workers, starting workers up to `max_workers`."""
        while self._waiting:
            idle = [w for w in self._workers if w.job is None]
            if not idle and len(self._workers) >= self.max_workers:
                return
            job = self._waiting.pop()
            worker = None
            if idle:
                # Prefer the worker that already holds the job's large arguments.
                tokens = {id(v) for v in job.kwargs.values()}
                worker = max(idle, key=lambda w: len(tokens & w.held.keys()))
            try:
                message, new = encode_job(
                    job, worker.held if worker else {}, self.scatter_threshold
                )
            except Exception as exc:
                self._ready.append(unpicklable_task(job, exc))
                continue
            if worker is None:
                worker = WorkerProcess.start()
                self._workers.append(worker)
            worker.held.update(new)
            worker.job = job
            worker.started = time.perf_counter()
            worker.deadline = worker.started + job.timeout if job.timeout else float("inf")
            try:
                worker.outbox.send_bytes(message)
            except OSError:
                # It died while idle or while reading the job; the job never ran
                # there, but the honest report is still that its worker died.
                self._bury(worker, WorkerDied(job.task, worker.death_detail()))

    def _receive(self, worker: WorkerProcess) -> None:
        job = worker.job
        assert job is not None
        try:
            message = worker.inbox.recv_bytes()
        except (EOFError, OSError):
            self._bury(worker, WorkerDied(job.task, worker.death_detail()))
            return
        worker.job, worker.deadline = None, float("inf")
        try:
            ok, payload, traceback, duration, output = pickle.loads(message)
        except Exception as exc:
            # The value pickled in the worker but needs a module the driver lacks.
            self._ready.append(_failed(job, exc))
            return
        extra: dict[str, Any] = {"worker": worker.process.pid}
        if output:
            extra["output"] = output
        if ok:
            self._ready.append(TaskOutcome(job=job, value=payload, duration=duration, extra=extra))
            return
        self._ready.append(
            TaskOutcome(job=job, error=payload, traceback=traceback, duration=duration, extra=extra)
        )

    def _expire(self, now: float) -> None:
        for worker in [w for w in self._workers if w.job is not None and w.deadline <= now]:
            job = worker.job
            assert job is not None and job.timeout is not None
            self._bury(worker, TaskTimeout(job.task, job.timeout))

    def _bury(self, worker: WorkerProcess, error: Exception) -> None:
        """Kill `worker`, fail its job with `error`; the next dispatch starts a replacement."""
        job = worker.job
        assert job is not None
        worker.kill()
        self._workers.remove(worker)
        self._ready.append(
            TaskOutcome(
                job=job,
                error=error,
                traceback=f"{type(error).__name__}: {error}\n",
                duration=time.perf_counter() - worker.started,
                extra={"worker": worker.process.pid},
            )
        )

    def shutdown(self) -> None:
        """Stop what the run left unfinished; close every worker if this executor belongs to one run."""
        self._waiting.clear()
        self._ready.clear()
        for worker in [w for w in self._workers if w.job is not None]:
            worker.kill()
            self._workers.remove(worker)
        if self._close_on_shutdown:
            self.close()
            return
        for worker in list(self._workers):
            try:
                worker.forget()
            except OSError:
                # It died while idle; the next job starts a replacement.
                worker.kill()
                self._workers.remove(worker)

    def close(self) -> None:
        """Stop every worker process."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.close()


def _failed(job: TaskAttempt, exc: Exception) -> TaskOutcome:
    return TaskOutcome(job=job, error=exc, traceback=format_user_traceback(exc))


register_executor("threads", lambda n: ThreadExecutor(n, close_on_shutdown=True))
register_executor("processes", lambda n: ProcessExecutor(n, close_on_shutdown=True))
