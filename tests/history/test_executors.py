"""Captured output and links under each executor: mapped instances, sub-pipelines in worker
threads, tasks run on a real local Dask cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core.executors.dask import DaskExecutor
from nbflow.history import get_run
from tests.core.conftest import _dask_cluster, dask_executor  # noqa: F401  (fixtures)


@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_each_mapped_instance_output_is_kept_in_its_own_section(
    pipe: Pipeline, executor: str
) -> None:
    @pipe.task
    def regions() -> list[str]:
        return ["north", "south", "east"]

    @pipe.task(map="regions")
    def load(regions: str) -> int:
        print(f"loading {regions}")
        if regions == "south":
            print("south is slow")
        return len(regions)

    r = pipe.run(executor=executor, max_workers=2)
    expected = (
        "--- load[0]\nloading north\n"
        "--- load[1]\nloading south\nsouth is slow\n"
        "--- load[2]\nloading east\n"
    )
    assert r.logs["load"] == expected
    assert get_run(r.run_id).task("load").log == expected


def test_a_sub_pipeline_run_in_a_worker_thread_links_to_its_outer_run(home: Path) -> None:
    inner = Pipeline("inner_threads")
    inner.task(lambda: print("inner ran") or 1, name="one")
    outer = Pipeline("outer_threads")

    @outer.task
    def nested() -> int:
        return inner.run()["one"]

    @outer.task
    def other() -> int:
        return 2

    r = outer.run(executor="threads", max_workers=2)
    [child] = nf.history("inner_threads")
    assert child.parent == r.run_id
    assert child.task("one").log == "inner ran\n"


def test_a_sub_pipeline_in_a_timed_worker_thread_links_to_its_outer_run(home: Path) -> None:
    # A task with a timeout outside the main thread runs in a helper thread of its own.
    inner = Pipeline("inner_timed")
    inner.task(lambda: 1, name="one")
    outer = Pipeline("outer_timed")
    outer.task(lambda: inner.run()["one"], name="nested", timeout=60)
    r = outer.run(executor="threads")
    [child] = nf.history("inner_timed")
    assert child.parent == r.run_id


def shout(x: int) -> int:
    print(f"computed on a Dask worker: {x}")
    return x * 2


def test_a_dask_run_captures_each_tasks_output(
    pipe: Pipeline,
    dask_executor: DaskExecutor,  # noqa: F811
) -> None:
    pipe.task(lambda: 21, name="x")
    pipe.task(shout, name="doubled", inputs={"x": "x"})
    r = pipe.run(executor=dask_executor)
    assert r["doubled"] == 42
    assert r.logs == {"doubled": "computed on a Dask worker: 21\n"}
    record: Any = get_run(r.run_id).task("doubled")
    assert record.log == "computed on a Dask worker: 21\n"
