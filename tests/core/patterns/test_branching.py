"""Branching: the chosen downstream tasks run, the others are skipped, and skips spread by trigger rule."""

from __future__ import annotations

import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core import events as ev
from nbflow.core.patterns.branching import BranchError

from ...conftest import Calls


def diamond(pipe: Pipeline, calls: Calls, join_rule: str) -> None:
    @pipe.branch
    def choose_path(weekday: int):
        return "full_refresh" if weekday == 0 else "incremental_update"

    @pipe.task(after=["choose_path"])
    def full_refresh():
        calls("full")
        return "full"

    @pipe.task(after=["choose_path"])
    def incremental_update():
        calls("incremental")
        return "incremental"

    @pipe.task(after=["full_refresh", "incremental_update"], trigger_rule=join_rule)
    def join():
        calls("join")
        return "joined"


@pytest.mark.parametrize(
    ("weekday", "ran", "skipped"),
    [(0, "full_refresh", "incremental_update"), (3, "incremental_update", "full_refresh")],
)
def test_the_chosen_task_runs_and_the_other_is_skipped(
    pipe: Pipeline, calls: Calls, weekday: int, ran: str, skipped: str
) -> None:
    diamond(pipe, calls, "none_failed_min_one_success")
    r = pipe.run(params={"weekday": weekday})
    assert r.states[ran] == "done" and r.states[skipped] == "skipped"
    assert r.reasons[skipped] == f"branch `choose_path` chose `{ran}`"
    assert r.states["join"] == "done" and r.ok


def test_a_join_with_all_success_is_skipped(pipe: Pipeline, calls: Calls) -> None:
    diamond(pipe, calls, "all_success")
    r = pipe.run(params={"weekday": 0})
    assert r.states["join"] == "skipped" and "join" not in calls.names
    assert r.reasons["join"] == "upstream `incremental_update` skipped"


def test_a_cached_branch_still_chooses(pipe: Pipeline, calls: Calls) -> None:
    diamond(pipe, calls, "none_failed_min_one_success")
    pipe.run(params={"weekday": 0})
    r = pipe.run(params={"weekday": 0})
    assert r.states["choose_path"] == "cached" and r.states["incremental_update"] == "skipped"
    assert r.states["full_refresh"] == "cached"
    r = pipe.run(params={"weekday": 2})
    assert r.states["full_refresh"] == "skipped" and r.states["incremental_update"] == "done"


def test_several_names_and_none(pipe: Pipeline) -> None:
    @pipe.branch(name="fan")
    def choose(which: str):
        return None if which == "none" else ["a", "b"]

    for n in "abc":
        pipe.task(lambda: 0, name=n, after=["fan"])
    r = pipe.run(params={"which": "both"})
    assert [r.states[n] for n in "abc"] == ["done", "done", "skipped"]
    r = pipe.run(params={"which": "none"})
    assert [r.states[n] for n in "abc"] == ["skipped"] * 3
    assert r.reasons["a"] == "branch `fan` chose no downstream task"


def test_an_unknown_name_fails_the_branch_naming_the_choices(pipe: Pipeline) -> None:
    @pipe.branch
    def choose_path():
        return "ful_refresh"

    pipe.task(lambda: 1, name="full_refresh", after=["choose_path"])
    pipe.task(lambda: 2, name="incremental", after=["choose_path"])
    r = pipe.run(raise_on_failure=False)
    error = r.errors["choose_path"][0]
    assert isinstance(error, BranchError) and error.choices == ["full_refresh", "incremental"]
    assert "did you mean `full_refresh`" in str(error)
    assert "valid choices: `full_refresh`, `incremental`" in str(error)
    assert r.states["full_refresh"] == "upstream_failed"


def test_default_pipeline_branch_and_events(calls: Calls) -> None:
    @nf.branch
    def pick():
        return "left"

    @nf.task(after=["pick"])
    def left():
        return "L"

    @nf.task(after=["pick"])
    def right():
        return "R"

    seen: list[ev.Event] = []
    r = nf.run(listeners=[seen.append])
    assert r.states == {"pick": "done", "left": "done", "right": "skipped"}
    skipped = [e for e in seen if isinstance(e, ev.TaskSkipped)]
    assert [(e.task, e.reason) for e in skipped] == [("right", "branch `pick` chose `left`")]


def test_after_names_a_known_task(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="extract")
    pipe.task(lambda: 2, name="load", after=["extrct"])
    with pytest.raises(nf.UnknownDependencyError, match="did you mean `extract`"):
        pipe.run()
