"""Binding, validation and ordering of the task graph."""

from __future__ import annotations

import pytest

from nbflow import (
    CycleError,
    MissingParameterError,
    Pipeline,
    UnknownDependencyError,
    UnknownTaskError,
)
from nbflow.core.errors import NbflowError


def test_dependencies_bind_by_parameter_name_and_inputs(pipe: Pipeline) -> None:
    pipe.task(lambda date: date, name="raw")
    pipe.task(lambda raw: raw + "!", name="clean")
    pipe.task(lambda df, suffix="?": df + suffix, name="report", inputs={"df": "clean"})
    g = pipe.graph()
    assert g.deps["clean"] == {"raw": "raw"}
    assert g.deps["report"] == {"df": "clean"}
    assert g.run_params["raw"] == ("date",)
    assert g.run_params["report"] == ("suffix",)
    assert list(g.order) == ["raw", "clean", "report"]
    r = pipe.run(params={"date": "2024-01-01"})
    assert r["report"] == "2024-01-01!?"


def test_tasks_may_be_defined_in_any_order(pipe: Pipeline) -> None:
    pipe.task(lambda a: a * 2, name="b")
    pipe.task(lambda: 21, name="a")
    assert pipe.run()["b"] == 42


def test_cycle_error_gives_the_path(pipe: Pipeline) -> None:
    pipe.task(lambda c: c, name="a")
    pipe.task(lambda a: a, name="b")
    pipe.task(lambda b: b, name="c")
    with pytest.raises(CycleError) as info:
        pipe.run()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert "`a`" in str(info.value) and "->" in str(info.value)


def test_unknown_input_suggests_close_matches(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="clean")
    pipe.task(lambda df: df, name="report", inputs={"df": "claen"})
    with pytest.raises(UnknownDependencyError) as info:
        pipe.run()
    assert info.value.task == "report" and info.value.dependency == "claen"
    assert info.value.matches == ["clean"]
    assert "did you mean `clean`?" in str(info.value)


def test_the_task_with_a_broken_dependency_can_be_removed(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="clean")
    pipe.task(lambda df: df, name="report", inputs={"df": "claen"})
    with pytest.raises(UnknownTaskError, match="no task named `reprot`.*did you mean `report`"):
        pipe.remove("reprot")
    pipe.remove("report")  # the graph does not resolve, but removing its culprit mends it
    assert list(pipe.tasks) == ["clean"] and pipe.run()["clean"] == 1


def test_inputs_must_name_a_parameter(pipe: Pipeline) -> None:
    with pytest.raises(NbflowError, match="does not take"):
        pipe.task(lambda df: df, name="report", inputs={"dff": "clean"})


def test_missing_run_parameter_names_the_task(pipe: Pipeline) -> None:
    pipe.task(lambda date: date, name="raw")
    with pytest.raises(MissingParameterError) as info:
        pipe.run()
    assert info.value.task == "raw" and info.value.param == "date"
    assert "task `raw` needs run parameter `date`" in str(info.value)


def test_missing_parameter_that_looks_like_a_task_typo(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="raw")
    pipe.task(lambda raww: raww, name="clean")
    with pytest.raises(MissingParameterError, match="did you mean `raw`"):
        pipe.run()


def test_redefining_a_task_replaces_it(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")
    pipe.task(lambda: 2, name="a")
    assert list(pipe.tasks) == ["a"]
    assert pipe.run()["a"] == 2


def test_unknown_target_is_named(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="load")
    with pytest.raises(UnknownTaskError, match="no task named `laod`.*did you mean `load`"):
        pipe.run(["laod"])


def test_targets_run_only_what_they_need(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")
    pipe.task(lambda a: a + 1, name="b")
    pipe.task(lambda: 10, name="other")
    r = pipe.run(["b"])
    assert r.executed == ["a", "b"]
    assert "other" not in r.states


def test_upstream_downstream_and_edges(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")
    pipe.task(lambda a: a, name="b")
    pipe.task(lambda b: b, name="c")
    assert pipe.upstream("c") == {"a", "b"}
    assert pipe.downstream("a") == {"b", "c"}
    assert pipe.edges() == [("a", "b"), ("b", "c")]


def test_bad_options_are_rejected_with_the_choices() -> None:
    p = Pipeline("x")
    with pytest.raises(
        NbflowError, match="unknown trigger rule `all_sucess`.*did you mean `all_success`"
    ):
        p.task(lambda: 1, name="a", trigger_rule="all_sucess")
    with pytest.raises(NbflowError, match="lambda task needs a name"):
        p.task(lambda: 1)
