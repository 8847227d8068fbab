"""Dynamic mapping: one instance per element, each cached on its own, run with the run's executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow import Pipeline, RunFailed
from nbflow.core import events as ev

from ...conftest import Calls


def squares_pipeline(pipe: Pipeline, calls: Calls, items: list[Any]) -> None:
    pipe.task(lambda: items, name="numbers")

    @pipe.task(map="n", inputs={"n": "numbers"})
    def square(n):
        calls(f"square:{n}")
        return n * n

    @pipe.task
    def total(square):
        return sum(square)


def test_runs_once_per_element_and_collects_in_order(pipe: Pipeline, calls: Calls) -> None:
    squares_pipeline(pipe, calls, [3, 1, 2])
    r = pipe.run()
    assert r["square"] == [9, 1, 4] and r["total"] == 14
    assert r.map_states["square"] == {0: "done", 1: "done", 2: "done"}
    assert sorted(r.map_executed["square"]) == [0, 1, 2]
    assert sorted(calls.names) == ["square:1", "square:2", "square:3"]


def test_changing_one_element_reruns_exactly_one_instance(tmp_path: Path, calls: Calls) -> None:
    def build(items: list[int]) -> Pipeline:
        pipe = Pipeline("m", cache_dir=tmp_path / "cache")
        squares_pipeline(pipe, calls, items)
        return pipe

    build(list(range(20))).run()
    calls.reset()
    r = build(list(range(20))).run()
    assert r.executed == [] and r.states["square"] == "cached"
    assert set(r.map_states["square"].values()) == {"cached"} and len(r.map_states["square"]) == 20
    items = list(range(20))
    items[7] = 100
    r = build(items).run()
    assert calls.names == ["square:100"]
    assert r.map_executed["square"] == [7]
    assert r.map_states["square"][7] == "done" and r.map_states["square"][8] == "cached"
    assert r["total"] == sum(i * i for i in items)
    # Appending reruns only the new element; reordering reruns none.
    calls.reset()
    r = build([*items, 5000]).run()
    assert calls.names == ["square:5000"]
    calls.reset()
    r = build(list(reversed(items))).run()
    assert calls.names == [] and r["square"] == [i * i for i in reversed(items)]


def test_empty_input_gives_an_empty_result(pipe: Pipeline, calls: Calls) -> None:
    squares_pipeline(pipe, calls, [])
    r = pipe.run()
    assert r["square"] == [] and r["total"] == 0 and r.map_states["square"] == {}


def test_dict_input_maps_over_values_and_keeps_keys(pipe: Pipeline) -> None:
    pipe.task(lambda: {"a": 1, "b": 2}, name="prices")

    @pipe.task(map="price", inputs={"price": "prices"})
    def with_tax(price, rate: float = 0.2):
        return round(price * (1 + rate), 2)

    r = pipe.run()
    assert r["with_tax"] == {"a": 1.2, "b": 2.4}
    assert r.map_states["with_tax"] == {"a": "done", "b": "done"}
    r = pipe.run()
    assert r.map_states["with_tax"] == {"a": "cached", "b": "cached"}
    # Another value of a parameter the instances share reruns them all.
    r = pipe.run(params={"rate": 0.5})
    assert sorted(r.map_executed["with_tax"]) == ["a", "b"] and r["with_tax"]["b"] == 3.0


def test_a_run_parameter_can_be_mapped(pipe: Pipeline, calls: Calls) -> None:
    @pipe.task(map="customer_id")
    def process_customer(customer_id: int):
        calls(str(customer_id))
        return f"Processed customer {customer_id}"

    r = pipe.run(params={"customer_id": [1, 2, 3]})
    assert r["process_customer"][2] == "Processed customer 3"
    r = pipe.run(params={"customer_id": [1, 2, 3, 4]})
    assert r.map_executed["process_customer"] == [3] and calls.names == ["1", "2", "3", "4"]


def test_instances_run_with_the_runs_executor(pipe: Pipeline, calls: Calls, executor: Any) -> None:
    squares_pipeline(pipe, calls, list(range(8)))
    r = pipe.run(executor=executor, max_workers=2)
    assert r["square"] == [i * i for i in range(8)] and r["total"] == 140
    assert sorted(calls.names) == sorted(f"square:{i}" for i in range(8))


def test_a_failing_instance_fails_the_task_naming_it(pipe: Pipeline, calls: Calls) -> None:
    pipe.task(lambda: [1, 0, 2], name="divisors")

    @pipe.task(map="d", inputs={"d": "divisors"}, retries=1)
    def invert(d):
        calls(str(d))
        return 1 / d

    with pytest.raises(RunFailed) as info:
        pipe.run()
    r = info.value.result
    assert info.value.task == "invert" and isinstance(info.value.error, ZeroDivisionError)
    assert "instance `invert[1]` (element 1) failed" in info.value.traceback
    assert r.map_states["invert"] == {0: "done", 1: "failed", 2: "done"}
    assert calls.count("0") == 2  # retried once
    # The instances that succeeded were cached: the fix reruns only the failed one.
    calls.reset()
    pipe.task(lambda: [1, 5, 2], name="divisors")
    r = pipe.run()
    assert calls.names == ["5"] and r["invert"] == [1.0, 0.2, 0.5]


def test_a_mapped_input_that_is_not_a_list_fails_clearly(pipe: Pipeline) -> None:
    pipe.task(lambda: "abc", name="text")
    pipe.task(lambda t: t, name="each", inputs={"t": "text"}, map="t")
    r = pipe.run(raise_on_failure=False)
    error = r.errors["each"][0]
    assert "must be a list, tuple or dict; it received a `str`" in str(error)


def test_map_names_a_parameter_of_the_function(pipe: Pipeline) -> None:
    with pytest.raises(nf.NbflowError, match="maps over `item`.*did you mean `items`"):
        pipe.task(lambda items: items, name="x", map="item")


def test_events_carry_the_instance_index(pipe: Pipeline, calls: Calls) -> None:
    squares_pipeline(pipe, calls, [1, 2])
    seen: list[ev.Event] = []
    pipe.run(listeners=[seen.append])
    expanded = [e for e in seen if isinstance(e, ev.MapExpanded)]
    assert len(expanded) == 1 and expanded[0].size == 2 and expanded[0].cached == ()
    instances = [e for e in seen if isinstance(e, ev.MapInstance)]
    assert sorted((e.task, e.index, e.state) for e in instances) == [
        ("square", 0, "done"),
        ("square", 1, "done"),
    ]
    # Instances never appear as tasks of their own.
    assert all("[" not in e.task for e in seen if isinstance(e, ev.TaskStarted | ev.TaskFinished))


def test_forcing_a_mapped_task_reruns_every_instance(pipe: Pipeline, calls: Calls) -> None:
    squares_pipeline(pipe, calls, [1, 2, 3])
    pipe.run()
    calls.reset()
    r = pipe.run(force="square")
    assert sorted(r.map_executed["square"]) == [0, 1, 2]


def test_downstream_stays_fresh_when_the_mapped_result_is_unchanged(
    pipe: Pipeline, calls: Calls
) -> None:
    pipe.task(lambda: [-2, 3], name="numbers")

    @pipe.task(map="n", inputs={"n": "numbers"})
    def square(n):
        return n * n

    @pipe.task
    def total(square):
        calls("total")
        return sum(square)

    pipe.run()
    pipe.task(lambda: [2, 3], name="numbers")  # new element, same square
    r = pipe.run()
    assert r.map_executed["square"] == [0] and r.states["total"] == "cached"
    assert calls.count("total") == 1


def test_a_reverted_element_is_found_again(tmp_path: Path, calls: Calls) -> None:
    def build(items: list[int]) -> Pipeline:
        pipe = Pipeline("m", cache_dir=tmp_path / "cache")
        squares_pipeline(pipe, calls, items)
        return pipe

    build([1, 2, 3]).run()
    build([1, 20, 3]).run()
    calls.reset()
    r = build([1, 2, 3]).run()  # element 1 is back to 2: its old instance is still cached
    assert calls.names == [] and r["square"] == [1, 4, 9]
    assert r.map_states["square"] == {0: "cached", 1: "cached", 2: "cached"}


def test_one_changed_value_of_a_dict_reruns_one_instance(pipe: Pipeline, calls: Calls) -> None:
    pipe.task(lambda: {"a": 1, "b": 2, "c": 3}, name="numbers")

    @pipe.task(map="n", inputs={"n": "numbers"})
    def square(n):
        calls(f"square:{n}")
        return n * n

    pipe.run()
    pipe.task(lambda: {"a": 1, "b": 5, "c": 3}, name="numbers")
    r = pipe.run()
    assert r.map_executed["square"] == ["b"] and r["square"] == {"a": 1, "b": 25, "c": 9}


def test_an_instance_returning_output_keeps_its_value(pipe: Pipeline) -> None:
    pipe.task(lambda: [1, 2], name="numbers")
    pipe.task(
        lambda n: nf.Output(n * 10, metadata={"n": n}),
        name="tens",
        map="n",
        inputs={"n": "numbers"},
    )
    assert pipe.run()["tens"] == [10, 20]
