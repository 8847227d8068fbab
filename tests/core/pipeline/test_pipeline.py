"""The Pipeline class: tasks registered and replaced, the graph cached until a task changes,
what a run is handed (RunSpec), the views the upper layers attach, and the default-pipeline API
with the methods' own signatures."""

from __future__ import annotations

import inspect

import pytest

import nbflow as nf
from nbflow.core.errors import NbflowError
from nbflow.core.pipeline import default
from nbflow.core.pipeline import pipeline as pipeline_module


def test_re_registering_a_name_replaces_the_task_and_the_graph(tmp_path) -> None:
    pipe = nf.Pipeline("p", cache_dir=tmp_path)
    pipe.task(lambda: 1, name="raw")
    pipe.task(lambda raw: raw + 1, name="clean")
    first = pipe.graph()
    assert pipe.graph() is first, "the graph is cached while no task changes"
    pipe.task(lambda: 2, name="raw")  # an edited cell registers its task again
    assert pipe.graph() is not first
    assert pipe.run()["clean"] == 3


def test_a_run_is_handed_a_spec_of_the_pipeline(tmp_path) -> None:
    pipe = nf.Pipeline("p", cache_dir=tmp_path)
    pipe.task(lambda: 1, name="raw")
    seen = []
    pipe.add_listener(seen.append)
    spec = pipe.run_spec()
    assert spec.name == "p" and list(spec.tasks) == ["raw"]
    assert spec.graph is pipe.graph() and spec.store is pipe.store
    assert spec.listeners == (seen.append,)


def test_show_and_to_dot_are_views_attached_by_the_upper_layers(tmp_path, monkeypatch) -> None:
    pipe = nf.Pipeline("p", cache_dir=tmp_path)
    pipe.task(lambda: 1, name="raw")
    assert "raw" in pipe.to_dot().source  # attached by nbflow.viz when nbflow is imported
    monkeypatch.setattr(pipeline_module, "_VIEWS", {})
    with pytest.raises(NbflowError, match=r"`Pipeline.to_dot` is drawn by nbflow's viz layer"):
        pipe.to_dot()
    with pytest.raises(ValueError, match="no pipeline view `draw`"):
        pipeline_module.attach_view("draw", lambda pipe: None)


def test_the_default_api_is_each_method_on_the_default_pipeline() -> None:
    for name in ("task", "run", "status", "explain", "invalidate", "clear_cache"):
        method = getattr(nf.Pipeline, name)
        function = getattr(default, name)
        expected = list(inspect.signature(method).parameters)[1:]  # without self
        assert list(inspect.signature(function).parameters) == expected, name
        assert getattr(nf, name) is function
    assert nf.default_pipeline() is default.default_pipeline()


def test_nf_task_and_nf_run_use_the_default_pipeline() -> None:
    @nf.task
    def answer() -> int:
        return 42

    assert "answer" in nf.default_pipeline().tasks
    assert nf.run()["answer"] == 42
    assert nf.status()["answer"].state == "fresh"


def test_nf_check_on_a_task_object_finds_the_pipeline_that_holds_it(tmp_path) -> None:
    pipe = nf.Pipeline("mine", cache_dir=tmp_path)
    raw = pipe.task(lambda: 1, name="raw")

    @nf.check(raw)
    def positive(value: int) -> bool:
        return value > 0

    assert "positive" in pipe.checks and "positive" not in nf.default_pipeline().checks
