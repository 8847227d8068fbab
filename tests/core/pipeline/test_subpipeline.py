"""Sub-pipelines: a pipeline as a task of another, with its own cache; its value is its sinks' values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow import Pipeline, RunFailed
from nbflow.core import events as ev

from ...conftest import Calls


def flows(tmp_path: Path, calls: Calls) -> tuple[Pipeline, Pipeline, Pipeline]:
    extract_flow = Pipeline("extract_flow", cache_dir=tmp_path / "cache")

    @extract_flow.task
    def extract_customers(source: str = "crm"):
        calls("extract")
        return [{"id": 1, "source": source}, {"id": 1, "source": source}, {"id": 2}]

    transform_flow = Pipeline("transform_flow", cache_dir=tmp_path / "cache")

    @transform_flow.task
    def transform_customers(data):
        calls("transform")
        unique = {row["id"]: row for row in data}
        return list(unique.values())

    main = Pipeline("main_etl_flow", cache_dir=tmp_path / "cache")
    main.subpipeline(extract_flow, name="extracted")
    main.task(lambda extracted: extracted["extract_customers"], name="data")
    main.task(transform_flow, name="transformed", inputs={"data": "data"})

    @main.task
    def load_customers(transformed):
        calls("load")
        return len(transformed["transform_customers"])

    return extract_flow, transform_flow, main


def test_sub_flows_compose_into_a_main_flow(tmp_path: Path, calls: Calls) -> None:
    extract_flow, _, main = flows(tmp_path, calls)
    r = main.run()
    assert r["load_customers"] == 2
    assert r["extracted"] == {"extract_customers": [{"id": 1, "source": "crm"}] * 2 + [{"id": 2}]}
    assert r.metadata["extracted"] == {
        "pipeline": "extract_flow",
        "executed": ["extract_customers"],
        "cached": [],
    }
    assert calls.names == ["extract", "transform", "load"]
    assert main.tasks["extracted"].params == ("source",)


def test_inner_pipelines_keep_their_own_cache(tmp_path: Path, calls: Calls) -> None:
    extract_flow, _, main = flows(tmp_path, calls)
    main.run()
    calls.reset()
    r = main.run()
    # The sub-pipeline tasks run (cheaply: their tasks are cached) and downstream stays cached.
    assert r.states["extracted"] == "done" and r.metadata["extracted"]["cached"] == [
        "extract_customers"
    ]
    assert r.states["load_customers"] == "cached" and calls.names == []
    assert main.explain("extracted") == (
        "stale: always reruns: a sub-pipeline runs on every run; its own tasks are cached"
    )
    # The inner pipeline is a pipeline of its own: it can run alone, from the same cache.
    assert extract_flow.run().executed == []


def test_parameters_flow_into_the_inner_run(tmp_path: Path, calls: Calls) -> None:
    _, _, main = flows(tmp_path, calls)
    r = main.run(params={"source": "erp"})
    assert r["data"][0]["source"] == "erp"


def test_an_inner_failure_fails_the_outer_task(tmp_path: Path) -> None:
    inner = Pipeline("inner", cache_dir=tmp_path / "cache")

    @inner.task
    def broken():
        raise ValueError("bad row")

    outer = Pipeline("outer", cache_dir=tmp_path / "cache")
    outer.subpipeline(inner, name="sub")
    with pytest.raises(RunFailed) as info:
        outer.run()
    assert info.value.task == "sub" and isinstance(info.value.error, RunFailed)
    assert "task `broken` failed: ValueError: bad row" in str(info.value.error)


def test_sub_pipelines_run_in_worker_processes(tmp_path: Path, calls: Calls, executor: Any) -> None:
    _, _, main = flows(tmp_path, calls)
    assert main.run(executor=executor)["load_customers"] == 2


def test_a_pipeline_is_not_a_task_of_itself(pipe: Pipeline) -> None:
    with pytest.raises(nf.NbflowError, match="cannot be a task of itself"):
        pipe.subpipeline(pipe)


def test_inner_events_reach_the_outer_listeners_while_the_sub_pipeline_runs(
    tmp_path: Path, calls: Calls
) -> None:
    _, _, main = flows(tmp_path, calls)
    seen: list[ev.Event] = []
    main.run(listeners=[seen.append])

    def position(kind: type, task: str) -> int:
        return next(i for i, e in enumerate(seen) if isinstance(e, kind) and e.task == task)

    forwarded = [
        i
        for i, e in enumerate(seen)
        if isinstance(e, ev.SubpipelineEvent) and e.task == "transformed"
    ]
    # In order: the outer task starts, its inner run happens, then it finishes.
    assert forwarded
    assert position(ev.TaskStarted, "transformed") < forwarded[0]
    assert forwarded[-1] < position(ev.TaskFinished, "transformed")
    inner = [
        (type(e.event).__name__, getattr(e.event, "task", None))
        for e in seen
        if isinstance(e, ev.SubpipelineEvent) and e.task == "transformed"
    ]
    assert inner == [
        ("RunStarted", None),
        ("TaskQueued", "transform_customers"),
        ("TaskStarted", "transform_customers"),
        ("TaskFinished", "transform_customers"),
        ("RunFinished", None),
    ]
    assert all(e.pipeline == "main_etl_flow" for e in seen if isinstance(e, ev.SubpipelineEvent))
    assert {e.event.pipeline for e in seen if isinstance(e, ev.SubpipelineEvent)} == {
        "extract_flow",
        "transform_flow",
    }


def test_inner_events_are_not_forwarded_from_other_threads(tmp_path: Path, calls: Calls) -> None:
    _, _, main = flows(tmp_path, calls)
    seen: list[ev.Event] = []
    main.run(listeners=[seen.append], executor="threads")
    assert not [e for e in seen if isinstance(e, ev.SubpipelineEvent)]
    # The displays learn the inner states when the task ends, from its metadata.
    finished = [e for e in seen if isinstance(e, ev.TaskFinished) and e.task == "transformed"]
    assert finished[0].metadata["executed"] == ["transform_customers"]
