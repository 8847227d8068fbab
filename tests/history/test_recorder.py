"""Pipeline runs record themselves: states, reasons, attempts, cache keys, logs, links."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import NbflowError, Pipeline
from nbflow.history import get_run
from nbflow.history.recorder import open_store


def test_a_run_is_recorded_with_its_tasks_reasons_and_output(pipe: Pipeline, home: Path) -> None:
    @pipe.task
    def raw(date: str) -> int:
        print("reading", date)
        logging.getLogger("etl").warning("slow source")
        return 1

    @pipe.task
    def clean(raw: int) -> int:
        return raw + 1

    r = pipe.run(params={"date": "2024-01-01"})
    assert r.logs == {"raw": "reading 2024-01-01\nWARNING etl: slow source\n"}
    [rec] = nf.history()
    assert (rec.id, rec.kind, rec.name, rec.state) == (r.run_id, "pipeline", "test", "ok")
    assert rec.params == {"date": "2024-01-01"}
    assert rec.pid is not None and rec.duration is not None and rec.version
    assert [t.name for t in rec.tasks] == ["raw", "clean"]
    first = rec.task("raw")
    assert first.state == "done" and first.reason.startswith("never run")
    assert first.key and first.digest and first.size
    assert first.log == r.logs["raw"]
    assert Path(first.log_path or "").parent.parent == home / "logs"
    assert (home / "logs").stat().st_mode & 0o077 == 0
    assert [a.number for a in first.attempts] == [1]

    again = pipe.run(params={"date": "2024-01-01"})
    latest = nf.last_run("test")
    assert latest is not None and latest.id == again.run_id
    assert {t.name: t.state for t in latest.tasks} == {"raw": "cached", "clean": "cached"}
    assert latest.task("raw").key == first.key


def test_retries_failures_and_skips_are_recorded(pipe: Pipeline, tmp_path: Path) -> None:
    marker = tmp_path / "tries"

    @pipe.task(retries=1, retry_delay=0)
    def flaky() -> int:
        with open(marker, "a") as fh:
            fh.write("x")
        print("try", len(marker.read_text()))
        if len(marker.read_text()) < 2:
            raise ValueError("first time")
        return 1

    @pipe.task
    def boom(flaky: int) -> int:
        raise RuntimeError("no")

    @pipe.task
    def after(boom: int) -> int:
        return boom

    r = pipe.run(raise_on_failure=False)
    rec = get_run(r.run_id)
    assert rec.state == "failed" and "boom" in rec.error
    task = rec.task("flaky")
    assert [a.error for a in task.attempts] == ["ValueError: first time", ""]
    assert "--- attempt 1 failed: ValueError: first time\ntry 1\n" in task.log
    assert task.log.endswith("try 2\n")
    failed = rec.task("boom")
    assert failed.state == "failed" and failed.error == "RuntimeError: no"
    assert "raise RuntimeError" in failed.traceback
    assert rec.task("after").state == "upstream_failed"


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_output_is_captured_with_each_executor(pipe: Pipeline, executor: str) -> None:
    for i in range(3):
        pipe.task(lambda i=i: print(f"task {i}") or i, name=f"t{i}")
    r = pipe.run(executor=executor, max_workers=2)
    assert r.logs == {f"t{i}": f"task {i}\n" for i in range(3)}
    rec = get_run(r.run_id)
    assert {t.name: t.log for t in rec.tasks} == r.logs


def test_a_sub_pipeline_run_links_to_its_outer_run(home: Path) -> None:
    inner = Pipeline("inner")
    inner.task(lambda: 1, name="one")
    outer = Pipeline("outer")

    @outer.task
    def nested() -> int:
        return inner.run()["one"]

    r = outer.run()
    [child] = nf.history("inner")
    assert child.parent == r.run_id


def test_a_log_keeps_its_tail_under_the_cap(
    pipe: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBFLOW_LOG_LIMIT", "10")

    @pipe.task
    def loud() -> int:
        print("a" * 50 + "THE END")
        return 1

    r = pipe.run()
    task = get_run(r.run_id).task("loud")
    assert task.log == "aaTHE END\n"
    assert (task.log_size, task.log_dropped, task.log_limit) == (10, 48, 10)


def test_recording_can_be_switched_off(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe.task(lambda: 1, name="one")
    monkeypatch.setenv("NBFLOW_HISTORY", "0")
    pipe.run()
    monkeypatch.setenv("NBFLOW_HISTORY", "1")
    assert nf.history() == []


def test_a_locked_history_is_a_warning_and_the_run_goes_on(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="one")
    store = open_store()
    store._conn.execute("PRAGMA busy_timeout = 50")
    holder = sqlite3.connect(store.path, isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock for longer than we wait
    try:
        with pytest.warns(nf.NbflowWarning, match="could not record run .* not affected"):
            r = pipe.run()
    finally:
        holder.execute("ROLLBACK")
        store._conn.execute("PRAGMA busy_timeout = 10000")
    assert r.ok and r["one"] == 1
    assert pipe.run().cached == ["one"]  # the cache was written all the same
    assert [run.id for run in nf.history()] != [r.run_id]


def test_bad_filters_name_the_choices() -> None:
    with pytest.raises(NbflowError, match="unknown run kind `pipe`; choose one of pipeline"):
        nf.history(kind="pipe")
    with pytest.raises(NbflowError, match="unknown run state"):
        nf.history(state="done")
    with pytest.raises(NbflowError, match="no run `nope`"):
        get_run("nope")


class _Big:
    """A value a test can watch being freed."""


def test_recording_keeps_no_run_alive_after_it_is_written(home: Path) -> None:
    import gc
    import time
    import weakref

    from nbflow.history.recorder import FLUSH_INTERVAL, drain

    seen: list[weakref.ref[_Big]] = []
    pipe = Pipeline("held")

    @pipe.task
    def big() -> _Big:
        value = _Big()
        seen.append(weakref.ref(value))
        return value

    @pipe.task
    def slow(big: _Big) -> int:
        time.sleep(FLUSH_INTERVAL * 1.5)  # the heartbeat thread writes this run meanwhile
        return 1

    r = pipe.run(force=True)
    drain()
    time.sleep(FLUSH_INTERVAL * 1.5)  # the heartbeat thread is asleep again
    del r, pipe, big, slow
    gc.collect()
    # Neither the writer nor the heartbeat thread holds the run's runner and its values.
    assert seen and seen[0]() is None
