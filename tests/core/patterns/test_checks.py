"""Metadata (`nf.Output`, owner/tags/description) and checks (blocking and not)."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core import events as ev

from ...conftest import Calls

ROWS = [{"id": 1, "age": 20}, {"id": 2, "age": 40}, {"id": 2, "age": 40}]


def test_output_value_goes_downstream_and_metadata_is_kept(pipe: Pipeline) -> None:
    @pipe.task(owner="data-team", tags=["customers"], description="analytics per age group")
    def customer_analytics():
        groups = {"<30": 1, "30+": 2}
        return nf.Output(groups, metadata={"num_rows": len(groups), "preview": "| <30 | 1 |"})

    pipe.task(lambda customer_analytics: sum(customer_analytics.values()), name="total")
    seen: list[ev.Event] = []
    r = pipe.run(listeners=[seen.append])
    assert r["customer_analytics"] == {"<30": 1, "30+": 2} and r["total"] == 3
    assert r.metadata["customer_analytics"] == {"num_rows": 2, "preview": "| <30 | 1 |"}
    finished = [
        e for e in seen if isinstance(e, ev.TaskFinished) and e.task == "customer_analytics"
    ]
    assert finished[0].metadata == {"num_rows": 2, "preview": "| <30 | 1 |"}
    options = pipe.tasks["customer_analytics"].options
    assert (options.owner, options.tags) == ("data-team", ("customers",))

    # A cached load reports the metadata too, without unpickling the value.
    seen.clear()
    loads = pipe.store.loads
    r = pipe.run(listeners=[seen.append])
    cached = [e for e in seen if isinstance(e, ev.TaskCached) and e.task == "customer_analytics"]
    assert cached[0].metadata == {"num_rows": 2, "preview": "| <30 | 1 |"}
    assert r.metadata["customer_analytics"]["num_rows"] == 2 and pipe.store.loads == loads


def test_output_metadata_must_be_json(pipe: Pipeline) -> None:
    with pytest.raises(nf.NbflowError, match="metadata `when` of an nf.Output must be JSON-able"):
        nf.Output(1, metadata={"when": object()})


def test_static_metadata_is_not_part_of_the_key(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a", metadata={"sla_minutes": 60})
    pipe.run()
    pipe.task(lambda: 1, name="a", metadata={"sla_minutes": 30})
    assert pipe.run().executed == []


def checked(pipe: Pipeline, calls: Calls, blocking: bool) -> None:
    pipe.task(lambda: ROWS, name="customers")

    @pipe.check("customers", blocking=blocking)
    def unique_ids(customers):
        ids = [row["id"] for row in customers]
        return len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate ids"

    @pipe.check("customers")
    def no_nulls(customers):
        return all(None not in row.values() for row in customers)

    @pipe.task
    def report(customers):
        calls("report")
        return len(customers)


def test_a_failed_blocking_check_stops_the_downstream(pipe: Pipeline, calls: Calls) -> None:
    checked(pipe, calls, blocking=True)
    seen: list[ev.Event] = []
    r = pipe.run(listeners=[seen.append])
    assert r.states["customers"] == "done" and r.states["report"] == "upstream_failed"
    assert r.reasons["report"] == "check `unique_ids` of `customers` failed: 1 duplicate ids"
    assert not r.checks["unique_ids"].passed and r.checks["no_nulls"].passed
    assert not r.ok and calls.names == []
    finished = [(e.check, e.passed) for e in seen if isinstance(e, ev.CheckFinished)]
    assert finished == [("unique_ids", False), ("no_nulls", True)]
    # A cached task keeps its checks' verdict: the downstream stays stopped.
    r = pipe.run()
    assert r.states["customers"] == "cached" and r.states["report"] == "upstream_failed"
    assert r.reasons["report"] == "check `unique_ids` of `customers` failed: 1 duplicate ids"
    assert r.checks["unique_ids"].cached and not r.checks["unique_ids"].passed


def test_a_failed_non_blocking_check_is_only_reported(pipe: Pipeline, calls: Calls) -> None:
    checked(pipe, calls, blocking=False)
    r = pipe.run()
    assert r.states["report"] == "done" and r.ok
    assert (
        str(r.checks["unique_ids"]) == "check `unique_ids` of `customers` FAILED: 1 duplicate ids"
    )


def test_a_lambda_check_needs_a_name(pipe: Pipeline) -> None:
    pipe.task(lambda: [], name="rows")
    with pytest.raises(nf.NbflowError, match="a lambda check needs a name"):
        pipe.check("rows")(lambda rows: len(rows) > 0)


def test_one_failed_runs_after_a_failed_check(pipe: Pipeline) -> None:
    pipe.task(lambda: [], name="rows")
    pipe.check("rows", name="not_empty")(lambda rows: len(rows) > 0)
    pipe.task(lambda rows: "alert", name="alert", trigger_rule="one_failed")
    r = pipe.run()
    assert r["alert"] == "alert"


def test_a_check_that_raises_has_failed(pipe: Pipeline) -> None:
    pipe.task(lambda: {"a": 1}, name="data")

    @pipe.check("data", blocking=False)
    def has_b(data):
        return data["b"] > 0

    r = pipe.run()
    assert r.checks["has_b"].message == "raised KeyError: 'b'"


def test_check_takes_a_task_object_and_finds_its_pipeline(pipe: Pipeline) -> None:
    t = pipe.task(lambda: 5, name="five")

    @nf.check(t, blocking=False)
    def is_five(value):
        return value == 5

    assert "is_five" in pipe.checks and pipe.run().checks["is_five"].passed


def test_unknown_check_target(pipe: Pipeline) -> None:
    pipe.task(lambda: 5, name="five")
    pipe.check("fiv", name="positive")(lambda v: v > 0)
    with pytest.raises(nf.UnknownTaskError, match="did you mean `five`"):
        pipe.run()


class Unpickled:
    """A value that notes each time it is unpickled (each time the cache loads it)."""

    def __init__(self, rows: list[int], log: str) -> None:
        self.rows, self.log = rows, log

    def __reduce__(self) -> tuple[object, ...]:
        return (_unpickle, (self.rows, self.log))


def _unpickle(rows: list[int], log: str) -> Unpickled:
    with open(log, "a") as fh:
        fh.write("loaded\n")
    return Unpickled(rows, log)


def test_a_cached_task_reuses_its_check_results_without_loading_its_value(
    pipe: Pipeline, calls: Calls, tmp_path: Path
) -> None:
    log = tmp_path / "loads.txt"
    log.write_text("")
    pipe.task(lambda size: Unpickled(list(range(size)), str(log)), name="rows")

    @pipe.check("rows")
    def not_empty(rows):
        calls("not_empty")
        return len(rows.rows) > 0, f"{len(rows.rows)} rows"

    seen: list[ev.Event] = []
    first = pipe.run(params={"size": 3})
    assert first.checks["not_empty"].passed and not first.checks["not_empty"].cached
    assert calls.names == ["not_empty"]

    log.write_text("")
    again = pipe.run(params={"size": 3}, listeners=[seen.append])
    assert again.states["rows"] == "cached"
    result = again.checks["not_empty"]
    assert (result.passed, result.message, result.cached) == (True, "3 rows", True)
    assert calls.names == ["not_empty"]  # not called again
    assert log.read_text() == ""  # and the cached value was not loaded for it
    assert [(e.check, e.cached) for e in seen if isinstance(e, ev.CheckFinished)] == [
        ("not_empty", True)
    ]

    # The check's code changed: it runs again, on the cached value.
    @pipe.check("rows")
    def not_empty(rows):  # noqa: F811 - the same check, edited
        calls("not_empty")
        return len(rows.rows) > 5, f"{len(rows.rows)} rows, want more than 5"

    edited = pipe.run(params={"size": 3})
    assert edited.states["rows"] == "cached" and not edited.checks["not_empty"].cached
    assert not edited.checks["not_empty"].passed and calls.names == ["not_empty"] * 2
    assert log.read_text() == "loaded\n"

    # A different value (another parameter): the task and its check run.
    bigger = pipe.run(params={"size": 8})
    assert bigger.states["rows"] == "done" and bigger.checks["not_empty"].passed
    assert calls.names == ["not_empty"] * 3
