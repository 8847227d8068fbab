"""One worker process of the process executor: its loop, its messages, and the driver's handle on it.

Policy:

- **A fresh interpreter, not a fork.** `WorkerProcess.start` runs
  `python -c ...` with two private pipes passed as file descriptors; the
  driver's `sys.path` is the first message, read before nbflow is imported,
  so whatever the driver could import, the worker can. The user's script is
  never re-imported, and the driver's threads and locks are not copied.
- **Messages** are pickles framed by multiprocessing's `Connection`.
  Driver → worker: `("job", task, fn, inline, refs, new)` (`refs` name
  arguments by token, `new` brings values to keep) or `("forget",)`.
  Worker → driver: `(ok, value_or_error, traceback, duration, output)`
  (`output`: what the task printed and logged, captured in the worker). Jobs and
  results go through cloudpickle, so functions and classes defined in a
  notebook cell travel by value.
- **Large values once per worker.** An argument of `SCATTER_THRESHOLD` bytes
  or more is sent to a worker once and kept there under a token (the value's
  `id` in the driver, which keeps the value alive meanwhile); later jobs on
  that worker name the token. Downstream tasks share one object, as they do
  in the driver with the sequential executor. `("forget",)` drops them when
  the run ends.
- **A job that does not pickle** (a lambda holding a connection or a lock)
  fails as `UnpicklableTask`, naming the fix, without reaching a worker.
- **Errors travel whole** when they pickle; otherwise as `RemoteError` with
  the type name and message. Tracebacks are formatted in the worker, without
  nbflow's frames. A result that cannot be pickled fails as
  `UnpicklableResult` rather than killing the worker.
- **Ctrl-C belongs to the driver.** Workers ignore SIGINT (a terminal sends
  it to the whole process group); the driver kills what must stop.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from nbflow.core import capture
from nbflow.core.errors import UnpicklableResult, UnpicklableTask
from nbflow.core.executors.base import TaskAttempt, TaskOutcome, format_user_traceback

SCATTER_THRESHOLD = 64 * 1024
"""Arguments at least this large (bytes, as `approx_size` estimates) travel once per worker."""


def approx_size(value: Any) -> int:
    """Bytes of `value`: deep for arrays, frames, str and bytes; one level deep for containers."""
    try:
        size = sys.getsizeof(value)
        if isinstance(value, list | tuple | set | frozenset):
            size += sum(sys.getsizeof(item) for item in value)
        elif isinstance(value, dict):
            size += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in value.items())
    except Exception:
        # An object whose __sizeof__ fails is simply sent with each job.
        return 0
    return size


def unpicklable_task(job: TaskAttempt, exc: Exception) -> TaskOutcome:
    """The failed outcome of a job that could not be pickled, naming the task and the fix."""
    error = UnpicklableTask(job.task, f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return TaskOutcome(job=job, error=error, traceback=f"UnpicklableTask: {error}\n")


class RemoteError(Exception):
    """Stands for an exception raised in a worker that could not be pickled back."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message))


def picklable_error(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a `RemoteError` with its type and message."""
    try:
        cloudpickle.dumps(exc)
    except Exception:
        # The user's exception holds something unpicklable (a lock, a socket).
        return RemoteError(type(exc).__qualname__, str(exc))
    return exc


# --- the worker side ------------------------------------------------------------


def worker_main(inbox: Connection, write_fd: int) -> None:
    """The loop of one worker process; it ends when the driver closes its pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outbox = Connection(write_fd, readable=False)
    held: dict[int, Any] = {}
    while True:
        try:
            message = inbox.recv_bytes()
        except EOFError:
            return
        start = time.perf_counter()
        task = "?"
        with capture.capture_output() as captured:
            try:
                request = cloudpickle.loads(message)
                if request[0] == "forget":
                    held.clear()
                    continue
                _, task, fn, kwargs, refs, new = request
                held.update(new)
                kwargs.update({name: held[token] for name, token in refs.items()})
                value = fn(**kwargs)
            except Exception as exc:
                error_box: BaseException | None = exc
            else:
                error_box = None
        output = captured.text
        if error_box is not None:
            outbox.send_bytes(_pack_error(error_box, time.perf_counter() - start, output))
            continue
        duration = time.perf_counter() - start
        try:
            payload = cloudpickle.dumps((True, value, "", duration, output), protocol=5)
        except Exception as exc:
            error = UnpicklableResult(task, type(value).__name__, f"{type(exc).__name__}: {exc}")
            payload = _pack_error(error, duration, output)
        outbox.send_bytes(payload)


def _pack_error(exc: BaseException, duration: float, output: str = "") -> bytes:
    traceback = format_user_traceback(exc)
    return cloudpickle.dumps((False, picklable_error(exc), traceback, duration, output), protocol=5)


_WORKER_CODE = """\
import pickle, sys
from multiprocessing.connection import Connection
inbox = Connection(int(sys.argv[1]), writable=False)
sys.path[:] = pickle.loads(inbox.recv_bytes())
from nbflow.core.executors.worker import worker_main
worker_main(inbox, int(sys.argv[2]))
"""


# --- the driver side ------------------------------------------------------------


def encode_job(
    job: TaskAttempt, held: dict[int, Any], threshold: int
) -> tuple[bytes, dict[int, Any]]:
    """Pickle `job` for a worker holding `held`; large arguments it lacks go along (and are returned)."""
    inline: dict[str, Any] = {}
    refs: dict[str, int] = {}
    new: dict[int, Any] = {}
    for name, value in job.kwargs.items():
        token = id(value)
        if token in held or approx_size(value) >= threshold:
            refs[name] = token
            if token not in held:
                new[token] = value
        else:
            inline[name] = value
    return cloudpickle.dumps(("job", job.task, job.fn, inline, refs, new), protocol=5), new


@dataclass(eq=False)
class WorkerProcess:
    """The driver's handle on one worker: its process, pipes, current job and held values."""

    process: subprocess.Popen[bytes]
    inbox: Connection
    outbox: Connection
    job: TaskAttempt | None = None
    deadline: float = float("inf")
    started: float = field(default_factory=time.perf_counter)
    held: dict[int, Any] = field(default_factory=dict)
    """Values this worker keeps, by token; the driver holds them too, so tokens stay unique."""

    @classmethod
    def start(cls) -> WorkerProcess:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(to_worker_r), str(from_worker_w)],
                pass_fds=(to_worker_r, from_worker_w),
                stdin=subprocess.DEVNULL,
            )
        finally:
            # The child has its own copies; closing ours makes a dead child read as EOF.
            os.close(to_worker_r)
            os.close(from_worker_w)
        worker = cls(
            process=process,
            inbox=Connection(from_worker_r, writable=False),
            outbox=Connection(to_worker_w, readable=False),
        )
        worker.outbox.send_bytes(pickle.dumps(list(sys.path)))
        return worker

    def forget(self) -> None:
        """Let the worker drop the values it keeps (when a run ends)."""
        if self.held:
            self.held.clear()
            self.outbox.send_bytes(cloudpickle.dumps(("forget",)))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for end in (self.inbox, self.outbox):
            if not end.closed:
                end.close()

    def death_detail(self) -> str:
        code = self.process.wait()
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


def stop_workers(workers: list[WorkerProcess]) -> None:
    """Close idle workers gently (they exit at EOF) and kill busy ones."""
    for worker in workers:
        if worker.job is None:
            worker.outbox.close()
        else:
            worker.process.kill()
    for worker in workers:
        try:
            worker.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        worker.close_pipes()
    workers.clear()
