"""`ignore=`: parameters and inputs a task receives but that do not count in its cache key."""

from __future__ import annotations

import pytest

from nbflow import NbflowError, Pipeline
from nbflow.core.cache.fingerprint import FunctionPrint
from nbflow.core.cache.planner import Planner
from nbflow.core.types import Digest

from ...conftest import Calls


def _etl(calls: Calls, **report_options):
    pipe = Pipeline("ignore")

    @pipe.task
    def raw(day, verbose=False):
        calls("raw")
        return [len(day), 2]

    @pipe.task(**report_options)
    def report(raw, day, log_level="info"):
        calls("report")
        return f"{day}: {sum(raw)} ({log_level})"

    return pipe


def test_changing_an_ignored_parameter_reruns_nothing(calls: Calls) -> None:
    pipe = _etl(calls, ignore=["log_level"])
    first = pipe.run(params={"day": "2024-01-01", "log_level": "info"})
    assert first.executed == ["raw", "report"]
    calls.reset()

    again = pipe.run(params={"day": "2024-01-01", "log_level": "debug"})

    assert again.executed == [] and again.cached == ["raw", "report"]
    assert calls.names == []
    # The value the task received is the one it was computed with (it was not rerun).
    assert again["report"] == "2024-01-01: 12 (info)"
    status = pipe.status(params={"day": "2024-01-01", "log_level": "warning"})
    assert status["report"].state == "fresh"


def test_changing_a_parameter_that_is_not_ignored_still_reruns(calls: Calls) -> None:
    pipe = _etl(calls, ignore=["log_level"])
    pipe.run(params={"day": "2024-01-01"})
    calls.reset()

    assert pipe.explain("report", params={"day": "2024-01-02"}).startswith(
        "stale: upstream `raw` is stale"
    )
    again = pipe.run(params={"day": "2024-01-02", "log_level": "debug"})

    assert again.executed == ["raw", "report"]
    assert again["report"] == "2024-01-02: 12 (debug)"


def test_without_ignore_the_parameter_counts(calls: Calls) -> None:
    pipe = _etl(calls)
    pipe.run(params={"day": "2024-01-01"})
    calls.reset()

    again = pipe.run(params={"day": "2024-01-01", "log_level": "debug"})

    assert again.executed == ["report"]
    assert pipe.explain("report", params={"day": "2024-01-01", "log_level": "x"}) == (
        "stale: parameter `log_level` changed: 'debug' → 'x'"
    )


def test_an_ignored_upstream_input_does_not_make_the_task_stale(calls: Calls) -> None:
    pipe = Pipeline("ignore-input")

    @pipe.task
    def settings(verbose=False):
        calls("settings")
        return {"verbose": verbose}

    @pipe.task
    def data(day):
        calls("data")
        return [1, 2, 3]

    @pipe.task(ignore="settings")
    def total(data, settings):
        calls("total")
        return sum(data)

    pipe.run(params={"day": "d1"})
    calls.reset()

    # `settings` reruns and returns another value; `total`'s key does not see it.
    status = pipe.status(params={"day": "d1", "verbose": True})
    assert status["settings"].state == "stale" and status["total"].state == "fresh"
    again = pipe.run(params={"day": "d1", "verbose": True})
    assert again.executed == ["settings"] and again.cached == ["data", "total"]
    assert calls.names == ["settings"]

    # An input that is not ignored still counts.
    pipe.invalidate("data")
    assert pipe.run(params={"day": "d1", "verbose": True}).executed == ["data", "total"]


def test_explain_and_status_list_what_is_not_in_the_key(calls: Calls) -> None:
    pipe = _etl(calls, ignore=["log_level", "raw"])
    pipe.run(params={"day": "2024-01-01"})

    note = "not in its key: `log_level`, `raw` (ignore=)"
    assert pipe.explain("report", params={"day": "2024-01-01"}) == (
        f"fresh: unchanged since it last ran; its result is cached ({note})"
    )
    assert pipe.status(params={"day": "2024-01-01"})["report"].note == note
    assert pipe.status(params={"day": "2024-01-01"})["raw"].note == ""


def test_an_input_bound_under_another_name_is_named_with_its_upstream(calls: Calls) -> None:
    pipe = Pipeline("ignore-bound")
    pipe.task(lambda: 1, name="config")

    @pipe.task(inputs={"cfg": "config"}, ignore=["cfg"])
    def use(cfg):
        return cfg

    assert pipe.explain("use") == "stale: never run (not in its key: `cfg` from `config` (ignore=))"


def test_a_name_that_is_no_parameter_is_refused_with_the_near_miss() -> None:
    pipe = Pipeline("ignore-bad")

    def report(raw, day, log_level="info"):
        return raw

    with pytest.raises(NbflowError) as info:
        pipe.task(report, ignore=["log_levl"])

    assert str(info.value) == (
        "task `report` ignores `log_levl`, which is not one of its parameters "
        "(did you mean `log_level`?); ignore= names parameters or inputs of the task, "
        "and its parameters are: raw, day, log_level"
    )
    with pytest.raises(NbflowError, match="ignore= takes parameter names"):
        pipe.task(report, ignore=[1])
    with pytest.raises(NbflowError, match="always count in the keys of its instances"):
        pipe.task(report, map="raw", ignore=["raw"])
    assert "report" not in pipe.tasks


def test_ignore_is_normalized_like_watch() -> None:
    pipe = Pipeline("ignore-normalized")

    def report(raw, day, log_level="info"):
        return raw

    assert pipe.task(report, ignore="log_level").options.ignore == ("log_level",)
    assert pipe.task(report, ignore=["log_level", "day", "log_level"]).options.ignore == (
        "day",
        "log_level",
    )


def _fixed_print(digest: str):
    return lambda: FunctionPrint(Digest(digest), {"function `x`": Digest(digest)})


def test_keys_without_ignore_are_the_keys_from_before_ignore_existed() -> None:
    """Existing caches stay valid: the digests below were computed by the planner before
    `ignore=` was added (same pipeline, code prints fixed so only the key's layout counts)."""
    pipe = Pipeline("keys")

    def raw(day):
        return day

    def report(raw, day, log_level="info"):
        return raw

    raw.__nbflow_fingerprint__ = _fixed_print("1" * 40)  # type: ignore[attr-defined]
    report.__nbflow_fingerprint__ = _fixed_print("2" * 40)  # type: ignore[attr-defined]
    pipe.task(raw)
    pipe.task(report, watch=[], version="v1")
    planner = Planner(pipe.name, pipe.tasks, pipe.graph(), pipe.store, {"day": "2024-01-01"})

    assert planner.key_for("raw", {}).key == "3bcb992c59c06a90088b6d5de52e36d120c2161c"
    report_key = planner.key_for("report", {"raw": Digest("3" * 40)}).key
    assert report_key == "d471cfbd2199c06c530c0e3a46d6c419f4951329"

    # Ignoring a parameter changes the key (it leaves that parameter out) ...
    pipe.task(report, watch=[], version="v1", ignore=["log_level"])
    planner = Planner(pipe.name, pipe.tasks, pipe.graph(), pipe.store, {"day": "2024-01-01"})
    ignoring = planner.key_for("report", {"raw": Digest("3" * 40)})
    assert ignoring.key != report_key
    assert "log_level" not in ignoring.parts["params"] and "day" in ignoring.parts["params"]
    # ... and then the ignored value does not move it.
    planner = Planner(
        pipe.name, pipe.tasks, pipe.graph(), pipe.store, {"day": "2024-01-01", "log_level": "x"}
    )
    assert planner.key_for("report", {"raw": Digest("3" * 40)}).key == ignoring.key
