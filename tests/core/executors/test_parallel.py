"""Thread and process executors, driven directly through submit/poll (no runner)."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.core.errors import (
    NbflowError,
    TaskTimeout,
    UnpicklableResult,
    UnpicklableTask,
    WorkerDied,
)
from nbflow.core.executors.base import TaskAttempt, TaskOutcome, resolve_executor
from nbflow.core.executors.parallel import ProcessExecutor, RemoteError, ThreadExecutor

from ..cells import define

_ids = iter(range(1, 1_000_000))


def job(fn: Callable[..., Any], task: str = "t", **kwargs: Any) -> TaskAttempt:
    options = {k: kwargs.pop(k) for k in ("timeout", "priority") if k in kwargs}
    return TaskAttempt(id=next(_ids), task=task, fn=fn, kwargs=kwargs, **options)


def drain(executor: Any, timeout: float = 60) -> dict[str, TaskOutcome]:
    """Poll until nothing is pending; outcomes by task name."""
    outcomes: dict[str, TaskOutcome] = {}
    deadline = time.monotonic() + timeout
    while executor.pending():
        assert time.monotonic() < deadline, "executor did not finish in time"
        for outcome in executor.poll(1.0):
            outcomes[outcome.job.task] = outcome
    return outcomes


@pytest.fixture(params=["threads", "processes"])
def executor(request: pytest.FixtureRequest) -> Iterator[ThreadExecutor | ProcessExecutor]:
    kind = ThreadExecutor if request.param == "threads" else ProcessExecutor
    with kind(2) as ex:
        yield ex


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> None:
    time.sleep(seconds)


def fail(message: str) -> None:
    raise ValueError(message)


def hold(started: str, gate: str) -> None:
    """Say it started, then wait until `gate` exists (keeps a worker busy for as long as needed)."""
    Path(started).touch()
    while not os.path.exists(gate):
        time.sleep(0.01)


def wait_for_path(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def meet(mine: str, other: str) -> int:
    """Create `mine`, then wait for `other`: both return only if they ran at the same time."""
    Path(mine).touch()
    deadline = time.monotonic() + 20
    while not Path(other).exists():
        if time.monotonic() > deadline:
            raise AssertionError("the other job never ran alongside this one")
        time.sleep(0.01)
    return os.getpid()


def kill_self(signal_name: str) -> None:
    import signal

    os.kill(os.getpid(), getattr(signal, signal_name))


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def sleep_and_record(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def returns_lock() -> Any:
    return threading.Lock()


class LockedError(Exception):
    def __init__(self) -> None:
        super().__init__("holding a lock")
        self.lock = threading.Lock()


def raise_locked_error() -> None:
    raise LockedError


def raise_timeout() -> None:
    raise TaskTimeout("inner-call", 2.5)


class Payload:
    """A large value that records, in a file, every process that unpickles it."""

    def __init__(self, log: str, size: int) -> None:
        self.log = log
        self.data = b"x" * size

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + len(self.data)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()}\n")


def payload_size(payload: Payload, i: int) -> tuple[int, int]:
    return len(payload.data), i


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until reaped; the executor reaps it.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_values_come_back(executor: Any) -> None:
    for i in range(6):
        executor.submit(job(square, f"sq{i}", x=i))
    assert executor.pending() == 6
    outcomes = drain(executor)
    assert {name: o.value for name, o in outcomes.items()} == {f"sq{i}": i * i for i in range(6)}
    assert all(o.ok and o.error is None for o in outcomes.values())
    assert executor.poll(0) == []


def test_jobs_run_at_the_same_time(executor: Any, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    executor.submit(job(meet, "first", mine=a, other=b))
    executor.submit(job(meet, "second", mine=b, other=a))
    outcomes = drain(executor)
    assert outcomes["first"].ok and outcomes["second"].ok, outcomes
    if isinstance(executor, ProcessExecutor):
        assert outcomes["first"].value != outcomes["second"].value != os.getpid()


def test_an_error_comes_back_with_the_users_traceback(executor: Any) -> None:
    executor.submit(job(fail, "bad", message="no rows"))
    executor.submit(job(square, "good", x=3))
    outcomes = drain(executor)
    bad = outcomes["bad"]
    assert isinstance(bad.error, ValueError) and str(bad.error) == "no rows"
    assert "in fail" in bad.traceback and "raise ValueError(message)" in bad.traceback
    assert "nbflow/core" not in bad.traceback
    assert outcomes["good"].value == 9


def test_waiting_jobs_start_by_priority(tmp_path: Path) -> None:
    order = tmp_path / "order"

    def record(name: str) -> None:
        with open(order, "a") as fh:
            fh.write(name + "\n")

    for kind in (ThreadExecutor, ProcessExecutor):
        order.write_text("")
        started, gate = tmp_path / f"{kind.__name__}.started", tmp_path / f"{kind.__name__}.gate"
        with kind(1) as ex:
            # The one worker is busy until all three wait: no timing involved.
            ex.submit(job(hold, "blocker", started=str(started), gate=str(gate)))
            wait_for_path(started)
            ex.submit(job(record, "low", name="low", priority=1))
            ex.submit(job(record, "high", name="high", priority=5))
            ex.submit(job(record, "mid", name="mid", priority=3))
            gate.touch()
            drain(ex)
        assert order.read_text().split() == ["high", "mid", "low"], kind


def test_workers_start_lazily_and_at_most_max_workers(tmp_path: Path) -> None:
    with ProcessExecutor(2) as ex:
        assert ex.workers_started == 0
        for i in range(5):
            ex.submit(job(square, f"sq{i}", x=i))
        assert ex.workers_started == 2
        pids = {o.extra["worker"] for o in drain(ex).values()}
        assert len(pids) <= 2 and os.getpid() not in pids
    with ThreadExecutor(3) as threads:
        assert not [t for t in threading.enumerate() if t.name.startswith("nbflow-thread")]
        threads.submit(job(square, "one", x=2))
        assert drain(threads)["one"].value == 4
        assert len([t for t in threading.enumerate() if t.name.startswith("nbflow-thread")]) == 1


@pytest.mark.parametrize(
    ("fn", "detail"),
    [
        (lambda: kill_self("SIGKILL"), "killed by SIGKILL"),
        (segfault, "killed by SIGSEGV"),
        (lambda: os._exit(3), "exit code 3"),
    ],
    ids=["sigkill", "segfault", "exit"],
)
def test_a_dead_worker_fails_only_its_task(fn: Callable[[], None], detail: str) -> None:
    with ProcessExecutor(2) as ex:
        ex.submit(job(fn, "dies"))
        for i in range(4):
            ex.submit(job(square, f"sq{i}", x=i))
        outcomes = drain(ex)
        died = outcomes.pop("dies")
        assert isinstance(died.error, WorkerDied) and died.error.task == "dies"
        assert detail in str(died.error) and "died" in died.traceback
        assert {n: o.value for n, o in outcomes.items()} == {f"sq{i}": i * i for i in range(4)}
        # A replacement worker takes the next job.
        ex.submit(job(square, "after", x=7))
        assert drain(ex)["after"].value == 49
        assert ex.workers_started <= 2


def test_timeout_kills_the_tasks_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with ProcessExecutor(2) as ex:
        # 3 s, not less: a busy machine may take a second to start the worker,
        # and the task must have written its pid before the timeout kills it.
        ex.submit(job(sleep_and_record, "slow", path=str(pid_file), seconds=60, timeout=3))
        ex.submit(job(square, "quick", x=2, timeout=5))
        outcomes = drain(ex)
        slow = outcomes["slow"]
        assert isinstance(slow.error, TaskTimeout) and slow.error.timeout == 3
        assert 3 <= slow.duration < 15
        assert not pid_alive(int(pid_file.read_text()))
        assert outcomes["quick"].value == 4


def test_thread_timeout_reports_without_waiting_for_the_task() -> None:
    with ThreadExecutor(1) as ex:
        ex.submit(job(nap, "slow", seconds=2, timeout=0.2))
        slow = drain(ex)["slow"]
        assert isinstance(slow.error, TaskTimeout) and slow.duration < 1.5


def test_notebook_defined_functions_and_classes_run_in_processes() -> None:
    ns = define(
        """
        SCALE = 10

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def norm1(self):
                return abs(self.x) + abs(self.y)

        def make(x):
            return Point(x * SCALE, -x)

        def measure(p):
            return p.norm1()
        """
    )
    with ProcessExecutor(2) as ex:
        ex.submit(job(ns["make"], "make", x=2))
        made = drain(ex)["make"]
        assert isinstance(made.value, ns["Point"]) and (made.value.x, made.value.y) == (20, -2)
        ex.submit(job(ns["measure"], "measure", p=made.value))
        assert drain(ex)["measure"].value == 22


def test_unpicklable_values_and_errors_are_reported() -> None:
    with ProcessExecutor(1) as ex:
        ex.submit(job(returns_lock, "lock"))
        ex.submit(job(raise_locked_error, "locked"))
        outcomes = drain(ex)
    lock = outcomes["lock"].error
    assert isinstance(lock, UnpicklableResult) and lock.task == "lock" and lock.type_name == "lock"
    locked = outcomes["locked"].error
    assert isinstance(locked, RemoteError) and str(locked) == "LockedError: holding a lock"
    assert "raise LockedError" in outcomes["locked"].traceback


def test_a_job_that_cannot_be_pickled_fails_without_a_worker() -> None:
    lock = threading.Lock()
    with ProcessExecutor(1) as ex:
        ex.submit(job(lambda: lock.locked(), "closure"))
        ex.submit(job(square, "holds_lock", x=lock))
        outcomes = drain(ex)
        assert ex.workers_started == 0
    for name in ("closure", "holds_lock"):
        error = outcomes[name].error
        assert isinstance(error, UnpicklableTask) and error.task == name
        assert "cannot pickle '_thread.lock' object" in str(error)
        assert 'executor="threads"' in str(error)


def test_shutdown_stops_running_jobs_and_keeps_idle_workers_of_a_user_executor(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    with ProcessExecutor(2) as ex:
        a, b = str(tmp_path / "a"), str(tmp_path / "b")
        ex.submit(job(meet, "warm-a", mine=a, other=b))
        ex.submit(job(meet, "warm-b", mine=b, other=a))
        warm = {o.value for o in drain(ex).values()}
        ex.submit(job(sleep_and_record, "left", path=str(pid_file), seconds=60))
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.01)
        busy = int(pid_file.read_text())
        ex.shutdown()
        assert ex.pending() == 0 and ex.poll(0) == []
        assert not pid_alive(busy)
        (idle,) = warm - {busy}
        assert pid_alive(idle)
        ex.submit(job(square, "next", x=5))
        again = drain(ex)["next"]
        assert again.value == 25 and again.extra["worker"] == idle
    assert not pid_alive(idle)
    with pytest.raises(NbflowError, match="closed"):
        ex.submit(job(square, "late", x=1))


def test_named_executors_close_their_workers_at_shutdown() -> None:
    ex = resolve_executor("processes", 1)
    assert isinstance(ex, ProcessExecutor) and ex.max_workers == 1
    ex.submit(job(square, "one", x=3))
    pid = drain(ex)["one"].extra["worker"]
    ex.shutdown()
    assert not pid_alive(pid)
    threads = resolve_executor("threads", None)
    assert isinstance(threads, ThreadExecutor) and threads.max_workers == min(
        32, (os.cpu_count() or 1) + 4
    )


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_workers_must_be_a_positive_integer(bad: Any) -> None:
    for kind in (ThreadExecutor, ProcessExecutor):
        with pytest.raises(
            NbflowError, match="max_workers of the .* executor must be a positive integer"
        ):
            kind(bad)


def test_nbflow_errors_raised_in_a_worker_come_back_whole() -> None:
    with ProcessExecutor(1) as ex:
        ex.submit(job(raise_timeout, "inner"))
        error = drain(ex)["inner"].error
    assert isinstance(error, TaskTimeout) and error.task == "inner-call" and error.timeout == 2.5
    assert pickle.loads(pickle.dumps(WorkerDied("t", "x"))).task == "t"


def test_a_large_argument_travels_once_per_worker(tmp_path: Path) -> None:
    log = tmp_path / "loads"
    log.write_text("")
    value = Payload(str(log), 200_000)
    with ProcessExecutor(2) as ex:
        for i in range(6):
            ex.submit(job(payload_size, f"use{i}", payload=value, i=i))
        outcomes = drain(ex)
        assert sorted(o.value for o in outcomes.values()) == [(200_000, i) for i in range(6)]
        loads = Counter(log.read_text().split())
        assert 1 <= sum(loads.values()) <= 2 and set(loads.values()) == {1}, loads
        assert str(os.getpid()) not in loads
        # The run ends: workers forget what they held, and the next run sends it again.
        ex.shutdown()
        log.write_text("")
        ex.submit(job(payload_size, "again", payload=value, i=0))
        assert drain(ex)["again"].value == (200_000, 0)
        assert sum(Counter(log.read_text().split()).values()) == 1

    log.write_text("")
    with ProcessExecutor(2, scatter_threshold=10**12) as inline:
        for i in range(6):
            inline.submit(job(payload_size, f"use{i}", payload=value, i=i))
        drain(inline)
    assert sum(Counter(log.read_text().split()).values()) == 6
