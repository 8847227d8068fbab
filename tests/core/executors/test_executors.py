"""Whole runs through every executor: values, events, retries, dead workers, timeouts, pools.

The `executor` fixture (tests/core/conftest.py) runs each test with
"sequential", "threads", "processes" and the session's Dask cluster. Tests
that kill a worker process run only where a task has a process of its own.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow import Pipeline, WorkerDied
from nbflow.core import events as ev
from nbflow.core.errors import UnpicklableTask
from nbflow.core.executors.dask import DaskExecutor
from nbflow.core.executors.parallel import ProcessExecutor, ThreadExecutor

from ...conftest import FIXTURES
from ..cells import define
from .test_parallel import pid_alive

IN_WORKER_PROCESSES = pytest.mark.parametrize("executor", ["processes", "dask"], indirect=True)
PARALLEL = pytest.mark.parametrize("executor", ["threads", "processes", "dask"], indirect=True)


def diamond(pipe: Pipeline) -> None:
    @pipe.task
    def source(n: int) -> list[int]:
        return list(range(n))

    @pipe.task
    def evens(source: list[int]) -> list[int]:
        return [x for x in source if x % 2 == 0]

    @pipe.task
    def odds(source: list[int]) -> list[int]:
        return [x for x in source if x % 2]

    @pipe.task
    def total(evens: list[int], odds: list[int]) -> tuple[int, int]:
        return sum(evens), sum(odds)


def test_values_and_states_are_the_same_with_every_executor(pipe: Pipeline, executor: Any) -> None:
    diamond(pipe)
    r = pipe.run(params={"n": 10}, executor=executor, max_workers=2)
    assert r.ok and r["total"] == (20, 25) and r["evens"] == [0, 2, 4, 6, 8]
    assert r.states == dict.fromkeys(["source", "evens", "odds", "total"], "done")
    assert r.executed[0] == "source" and r.executed[-1] == "total"
    again = pipe.run(params={"n": 10}, executor=executor, max_workers=2)
    assert again.executed == [] and again["total"] == (20, 25)


@PARALLEL
def test_a_task_starts_when_its_own_upstream_is_done(pipe: Pipeline, executor: Any) -> None:
    """Not level by level: `after_fast` need not wait for `slow`, its upstream's sibling."""
    pipe.task(lambda: time.sleep(1) or "slow", name="slow")
    pipe.task(lambda: "fast", name="fast")
    pipe.task(lambda fast: fast + "!", name="after_fast")
    pipe.task(lambda slow, after_fast: (slow, after_fast), name="end")
    r = pipe.run(executor=executor, max_workers=2)
    assert r["end"] == ("slow", "fast!")
    assert r.executed.index("after_fast") < r.executed.index("slow")


def test_events_reach_listeners_in_the_driver_in_order(pipe: Pipeline, executor: Any) -> None:
    diamond(pipe)
    seen: list[tuple[ev.Event, bool]] = []
    pipe.add_listener(
        lambda e: seen.append((e, threading.current_thread() is threading.main_thread()))
    )
    pipe.run(params={"n": 4}, executor=executor, max_workers=2)
    assert all(in_main for _, in_main in seen)
    events = [e for e, _ in seen]
    assert isinstance(events[0], ev.RunStarted) and isinstance(events[-1], ev.RunFinished)
    assert events[-1].ok and len(events) == 2 + 3 * 4

    def at(kind: type[ev.TaskEvent], task: str) -> int:
        (index,) = [i for i, e in enumerate(events) if type(e) is kind and e.task == task]
        return index

    for task in ("source", "evens", "odds", "total"):
        assert at(ev.TaskQueued, task) < at(ev.TaskStarted, task) < at(ev.TaskFinished, task)
    for up, down in pipe.edges():
        assert at(ev.TaskFinished, up) < at(ev.TaskQueued, down)


def flaky(marker: str) -> str:
    """Fails on its first call, succeeds on the next (the marker file remembers)."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        raise ConnectionError("database went away")
    return "recovered"


def test_a_failed_task_is_retried(pipe: Pipeline, executor: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "failed-once")
    pipe.task(lambda: flaky(marker), name="load", retries=1, retry_delay=0.1)
    retries: list[ev.TaskRetrying] = []
    pipe.add_listener(lambda e: retries.append(e) if isinstance(e, ev.TaskRetrying) else None)
    r = pipe.run(executor=executor)
    assert r["load"] == "recovered" and r.attempts["load"] == 2
    assert [(e.attempt, e.error) for e in retries] == [(1, "ConnectionError: database went away")]


def kill_once(marker: str) -> str:
    """Kills its own process on the first call; returns on the next."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), 9)
    return "survived"


def kill_always() -> None:
    os.kill(os.getpid(), 9)


@IN_WORKER_PROCESSES
def test_a_dead_worker_fails_its_task_and_the_run_goes_on(
    pipe: Pipeline, executor: Any, tmp_path: Path
) -> None:
    marker = str(tmp_path / "killed-once")
    pipe.task(kill_always, name="victim")
    pipe.task(lambda victim: victim, name="after_victim")
    pipe.task(lambda: kill_once(marker), name="phoenix", retries=1)
    pipe.task(lambda: "fine", name="bystander")
    pipe.task(lambda bystander, phoenix: (bystander, phoenix), name="after_bystander")
    r = pipe.run(executor=executor, max_workers=2, raise_on_failure=False)
    assert r.states == {
        "victim": "failed",
        "after_victim": "upstream_failed",
        "phoenix": "done",
        "bystander": "done",
        "after_bystander": "done",
    }
    error, trace = r.errors["victim"]
    assert isinstance(error, WorkerDied) and error.task == "victim" and "died" in trace
    assert r["after_bystander"] == ("fine", "survived") and r.attempts["phoenix"] == 2
    with pytest.raises(nf.RunFailed, match="task `victim` failed: WorkerDied"):
        pipe.run(["victim"], executor=executor)


@IN_WORKER_PROCESSES
def test_a_task_that_cannot_be_pickled_fails_with_the_fix_named(
    pipe: Pipeline, executor: Any
) -> None:
    lock = threading.Lock()
    pipe.task(lambda: lock.locked(), name="uses_lock")
    pipe.task(lambda: 1, name="plain")
    r = pipe.run(executor=executor, raise_on_failure=False)
    assert r.states == {"uses_lock": "failed", "plain": "done"}
    error, trace = r.errors["uses_lock"]
    assert isinstance(error, UnpicklableTask) and 'executor="threads"' in trace
    assert pipe.run(["uses_lock"], executor="threads")["uses_lock"] is False


def hang_once(marker: str) -> str:
    """Hangs on its first call (after leaving its pid in `marker`); returns on the next."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        time.sleep(120)
    return "in time"


@IN_WORKER_PROCESSES
def test_a_timeout_kills_the_task_and_is_retried(
    pipe: Pipeline, executor: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "hung-once"
    pipe.task(lambda: hang_once(str(marker)), name="slow", timeout=1.0, retries=1)
    seen: list[ev.Event] = []
    r = pipe.run(executor=executor, listeners=[seen.append])
    assert r["slow"] == "in time" and r.attempts["slow"] == 2
    (retry,) = [e for e in seen if isinstance(e, ev.TaskRetrying)]
    assert retry.error.startswith(
        "TaskTimeout: task `slow` did not finish within its timeout of 1 s"
    )
    assert not pid_alive(int(marker.read_text()))


def record_interval(log: str, name: str) -> str:
    start = time.time()
    time.sleep(0.3)
    with open(log, "a") as fh:
        fh.write(f"{name} {start} {time.time()}\n")
    return name


def test_a_pool_limits_how_many_of_its_tasks_run_at_once(
    pipe: Pipeline, executor: Any, tmp_path: Path
) -> None:
    nf.pool("warehouse", slots=1)
    log = str(tmp_path / "intervals")
    for i in range(3):
        pipe.task(lambda i=i: record_interval(log, f"db{i}"), name=f"db{i}", pool="warehouse")
    pipe.task(lambda: record_interval(log, "free"), name="free")
    assert pipe.run(executor=executor, max_workers=3).ok
    rows = [line.split() for line in Path(log).read_text().splitlines()]
    pooled = sorted((float(s), float(e)) for name, s, e in rows if name.startswith("db"))
    assert len(pooled) == 3
    for (_, end), (next_start, _) in itertools.pairwise(pooled):
        assert end <= next_start, pooled


@IN_WORKER_PROCESSES
def test_tasks_defined_in_notebook_cells_run_in_worker_processes(
    pipe: Pipeline, executor: Any
) -> None:
    ns = define(
        """
        import os

        FACTOR = 3

        class Reading:
            def __init__(self, value):
                self.value = value

        def scale(x):
            return x * FACTOR

        def readings(n):
            return [Reading(scale(i)) for i in range(n)], os.getpid()

        def summary(readings):
            values, pid = readings
            return sum(r.value for r in values), pid, os.getpid()
        """
    )
    pipe.task(ns["readings"])
    pipe.task(ns["summary"])
    r = pipe.run(params={"n": 4}, executor=executor, max_workers=2)
    total, made_in, summed_in = r["summary"]
    assert total == 18 and os.getpid() not in (made_in, summed_in)
    values, _ = r["readings"]
    assert isinstance(values[0], ns["Reading"])


def test_a_fully_cached_rerun_starts_no_worker(pipe: Pipeline) -> None:
    diamond(pipe)
    pipe.run(params={"n": 6})
    processes, threads, dask = ProcessExecutor(2), ThreadExecutor(2), DaskExecutor(max_workers=1)
    before = {t.name for t in threading.enumerate()}
    for executor in (processes, threads, dask):
        r = pipe.run(params={"n": 6}, executor=executor)
        assert r.executed == [] and r["total"] == (6, 9)
    assert processes.workers_started == 0 and dask._cluster is None and dask._client is None
    assert {t.name for t in threading.enumerate()} == before


def test_max_workers_bounds_the_worker_processes(pipe: Pipeline) -> None:
    for i in range(4):
        pipe.task(lambda: os.getpid(), name=f"t{i}", cache=False)
    r = pipe.run(executor="processes", max_workers=1)
    pids = {r[f"t{i}"] for i in range(4)}
    assert len(pids) == 1 and os.getpid() not in pids


def test_an_existing_dask_client_runs_the_pipeline(
    pipe: Pipeline, dask_executor: DaskExecutor
) -> None:
    diamond(pipe)
    client = dask_executor.client
    r = pipe.run(params={"n": 10}, executor=client)
    assert r["total"] == (20, 25)
    assert client.status == "running"


def test_tasks_defined_in_a_real_notebook_run_in_processes_and_on_dask(
    tmp_path: Path, dask_executor: DaskExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real kernel: the cells' `__main__` functions and class travel to the workers."""
    import papermill

    # ipykernel forwards its process's file descriptors to the cell, except under pytest.
    monkeypatch.delenv("PYTEST_CURRENT_TEST")

    notebook = FIXTURES / "notebooks" / "tasks_defined_in_cells_run_in_workers.ipynb"
    # The cluster speaks TLS: the notebook connects with its credentials, as files.
    tls = dask_executor.client.security
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    for name, pem in (
        ("ca.pem", tls.tls_ca_file),
        ("client.pem", tls.tls_client_cert),
        ("client.key", tls.tls_client_key),
    ):
        (credentials / name).write_text(pem)
    executed = papermill.execute_notebook(
        str(notebook),
        str(tmp_path / "out.ipynb"),
        parameters={
            "scheduler": dask_executor.client.scheduler.address,
            "credentials": str(credentials),
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    text = "".join(
        output.get("text", "") for cell in executed.cells for output in cell.get("outputs", [])
    )
    # Worker processes share the kernel's output streams: their prints reach the cell.
    assert "summing 3 readings\nprocesses: 303 True\n" in text
    assert "dask: 406 True\n" in text


def test_an_unknown_executor_name_suggests_the_near_miss(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")
    with pytest.raises(
        nf.NbflowError, match=r"unknown executor `proceses` \(did you mean `processes`\?\); "
    ):
        pipe.run(executor="proceses")
    # "dask-client" is registered for executor=<distributed.Client> only: not a name to use.
    with pytest.raises(
        nf.NbflowError, match=r"unknown executor `dask-client`; choose one of"
    ) as info:
        pipe.run(executor="dask-client")
    assert str(info.value).count("dask-client") == 1
    with pytest.raises(
        nf.NbflowError, match="max_workers of the threads executor must be a positive"
    ):
        pipe.run(executor="threads", max_workers=0)
