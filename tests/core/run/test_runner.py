"""Running: states, retries, timeouts, trigger rules, failures, events, lazy values."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import Pipeline, RunFailed
from nbflow.core import events as ev
from nbflow.core.patterns.trigger_rules import evaluate

from ...conftest import Calls


def test_default_pipeline_api(calls: Calls) -> None:
    @nf.task
    def raw(date: str):
        calls("raw")
        return {"date": date, "rows": [3, 1, 2]}

    @nf.task(retries=3, retry_delay=0.0)
    def clean(raw):
        calls("clean")
        return sorted(raw["rows"])

    @nf.task(name="report", inputs={"df": "clean"})
    def make_report(df):
        return f"{len(df)} rows"

    r = nf.run(params={"date": "2024-01-01"})
    assert r.ok and r.executed == ["raw", "clean", "report"] and r["report"] == "3 rows"
    assert r.states == {"raw": "done", "clean": "done", "report": "done"}
    assert set(r.durations) == {"raw", "clean", "report"} and r.attempts["clean"] == 1
    r2 = nf.run(params={"date": "2024-01-01"})
    assert r2.executed == [] and r2.cached == ["raw", "clean", "report"]
    assert r2["clean"] == [1, 2, 3]  # loaded lazily from the cache
    assert nf.explain("clean").startswith("fresh")  # status uses the last run's parameters
    assert nf.status(params={})["raw"].reason == "needs run parameter `date`"
    assert nf.invalidate("clean") == ["clean", "report"]
    assert nf.run(params={"date": "2024-01-01"}).executed == ["clean", "report"]
    assert nf.clear_cache() == 3  # reruns after invalidate() overwrite their records
    assert {s.state for s in nf.status().values()} == {"never-run"}
    assert calls.count("raw") == 1


def test_values_are_loaded_only_when_needed(pipe: Pipeline) -> None:
    pipe.task(lambda: list(range(5)), name="a")
    pipe.task(lambda a: sum(a), name="b")
    pipe.run()
    r = pipe.run()
    assert pipe.store.loads == 0
    assert r["b"] == 10 and pipe.store.loads == 1


def test_retries_with_exponential_backoff(pipe: Pipeline, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    @pipe.task(retries=3, retry_delay=0.01, backoff=2.0, max_retry_delay=0.03)
    def flaky():
        n = len(attempts.read_text()) if attempts.exists() else 0
        attempts.write_text("x" * (n + 1))
        if n < 2:
            raise ConnectionError(f"try {n}")
        return "ok"

    seen: list[ev.Event] = []
    r = pipe.run(listeners=[seen.append])
    assert r["flaky"] == "ok" and r.attempts["flaky"] == 3
    retrying = [e for e in seen if isinstance(e, ev.TaskRetrying)]
    assert [e.attempt for e in retrying] == [1, 2]
    assert [e.delay for e in retrying] == [0.01, 0.02]
    assert retrying[0].error == "ConnectionError: try 0"


def test_failure_raises_run_failed_with_the_original_traceback(
    pipe: Pipeline, calls: Calls
) -> None:
    pipe.task(lambda: 1, name="ok")

    @pipe.task(retries=1)
    def broken(ok):
        calls("broken")
        return {}["missing"]

    pipe.task(lambda broken: broken, name="after")
    pipe.task(lambda ok: ok + 1, name="independent")
    with pytest.raises(RunFailed) as info:
        pipe.run()
    err = info.value
    assert err.task == "broken" and isinstance(err.error, KeyError)
    assert err.__cause__ is err.error
    assert 'return {}["missing"]' in err.traceback and "nbflow/core" not in err.traceback
    assert err.result.states == {
        "ok": "done",
        "broken": "failed",
        "after": "upstream_failed",
        "independent": "done",
    }
    assert not err.result.ok and calls.count("broken") == 2
    assert err._render_traceback_()[0] == "RunFailed: task `broken` failed"
    r = pipe.run(raise_on_failure=False)
    assert r.states["broken"] == "failed" and r.cached == ["ok", "independent"]
    with pytest.raises(nf.NbflowError, match="has no value: it ended `upstream_failed`"):
        r["after"]


def test_timeout_interrupts_the_task(pipe: Pipeline) -> None:
    @pipe.task(timeout=0.2, retries=1)
    def slow():
        threading.Event().wait(5)

    r = pipe.run(raise_on_failure=False)
    assert r.states["slow"] == "failed" and r.attempts["slow"] == 2
    error, _ = r.errors["slow"]
    assert isinstance(error, nf.TaskTimeout) and "within its timeout of 0.2 s" in str(error)
    assert r.durations["slow"] < 2


def test_unpicklable_result_fails_that_task_only(pipe: Pipeline) -> None:
    pipe.task(lambda: 41, name="good")
    pipe.task(lambda good: (i for i in range(good)), name="gen", retries=2)
    r = pipe.run(raise_on_failure=False)
    error, _ = r.errors["gen"]
    assert isinstance(error, nf.UnpicklableResult) and error.task == "gen"
    assert "generator" in str(error) and r.attempts["gen"] == 1
    r2 = pipe.run(["good"])
    assert r2.cached == ["good"] and r2["good"] == 41


# (rule, upstream states, expected) — Airflow's meanings
TRIGGER_CASES = [
    ("all_success", ["done", "cached"], "run"),
    ("all_success", ["done", "failed"], "upstream_failed"),
    ("all_success", ["done", "skipped"], "skipped"),
    ("all_failed", ["failed", "upstream_failed"], "run"),
    ("all_failed", ["failed", "done"], "skipped"),
    ("all_done", ["failed", "skipped"], "run"),
    ("one_success", ["failed", "done"], "run"),
    ("one_success", ["skipped", "skipped"], "skipped"),
    ("one_success", ["failed", "skipped"], "upstream_failed"),
    ("one_failed", ["done", "failed"], "run"),
    ("one_failed", ["done", "done"], "skipped"),
    ("none_failed", ["done", "skipped"], "run"),
    ("none_failed", ["done", "upstream_failed"], "upstream_failed"),
    ("none_failed_min_one_success", ["skipped", "done"], "run"),
    ("none_failed_min_one_success", ["skipped", "skipped"], "skipped"),
    ("none_failed_min_one_success", ["failed", "done"], "upstream_failed"),
    ("none_skipped", ["done", "skipped"], "skipped"),
    ("always", ["upstream_failed"], "run"),
]


@pytest.mark.parametrize(("rule", "states", "expected"), TRIGGER_CASES)
def test_trigger_rule_table(rule: str, states: list[str], expected: str) -> None:
    assert evaluate(rule, states) == expected


def test_trigger_rules_in_a_run(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="ok")
    pipe.task(lambda: 1 / 0, name="bad")
    pipe.task(lambda ok, bad: "cleanup", name="cleanup", trigger_rule="all_done")
    pipe.task(lambda ok, bad: "alert", name="alert", trigger_rule="one_failed")
    pipe.task(lambda ok, bad: "never", name="join")
    pipe.task(lambda join: "after", name="after_join", trigger_rule="none_failed")
    r = pipe.run(raise_on_failure=False)
    assert r.states == {
        "ok": "done",
        "bad": "failed",
        "cleanup": "done",
        "alert": "done",
        "join": "upstream_failed",
        "after_join": "upstream_failed",
    }
    assert r["cleanup"] == "cleanup"


def test_events_arrive_in_order(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")
    pipe.task(lambda a: a, name="b")
    seen: list[ev.Event] = []
    pipe.add_listener(seen.append)
    pipe.run()
    kinds = [(type(e).__name__, getattr(e, "task", None)) for e in seen]
    assert kinds == [
        ("RunStarted", None),
        ("TaskQueued", "a"),
        ("TaskStarted", "a"),
        ("TaskFinished", "a"),
        ("TaskQueued", "b"),
        ("TaskStarted", "b"),
        ("TaskFinished", "b"),
        ("RunFinished", None),
    ]
    assert seen[0].stale == {"a": "never run", "b": "upstream `a` is stale: never run"}
    assert seen[0].edges == (("a", "b"),)
    seen.clear()
    pipe.run()
    assert [type(e).__name__ for e in seen] == [
        "RunStarted",
        "TaskCached",
        "TaskCached",
        "RunFinished",
    ]


def test_a_broken_listener_never_fails_the_run(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")

    def broken(event: ev.Event) -> None:
        raise RuntimeError("display crashed")

    with pytest.warns(nf.NbflowWarning, match="display crashed"):
        assert pipe.run(listeners=[broken]).ok


def test_pools_and_priority_order_ready_tasks(pipe: Pipeline) -> None:
    nf.pool("db", slots=1)
    order: list[str] = []
    for name, prio in [("low", 0), ("high", 5), ("mid", 2)]:
        pipe.task(
            lambda n=name: order.append(n) or n, name=name, priority=prio, pool="db", cache=False
        )
    pipe.run()
    assert order == ["high", "mid", "low"]
    pipe.task(lambda: 1, name="x", pool="dbb")
    with pytest.raises(nf.NbflowError, match="unknown pool `dbb`.*did you mean `db`"):
        pipe.run(["x"])


def test_logging_and_progress_listeners(pipe: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    import io
    import logging

    pipe.task(lambda: 1, name="a")
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="nbflow"):
        pipe.run(listeners=[nf.LoggingListener(), nf.ProgressListener(stream)])
    assert "task a done" in caplog.text
    assert "1/1 tasks" in stream.getvalue()


def test_run_failed_shows_user_frames_only() -> None:
    p = Pipeline("tb")

    def inner():
        raise ValueError("bad row")

    p.task(lambda: inner(), name="t")
    with pytest.raises(RunFailed) as info:
        p.run()
    text = "".join(traceback.format_exception(info.value.error))
    assert "bad row" in text and "in inner" in info.value.traceback
