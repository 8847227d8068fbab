"""What the pages read, on a real home: a pipeline run into its cache and history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.history.recorder import drain
from nbflow.ui import cached, queries

VALUES = {
    "frame": pd.DataFrame({"a": [1, 2], "b": ["x", "<i>y</i>"]}),
    "series": pd.Series([1.5, 2.5]),
    "array": np.arange(5),
    "big_array": np.zeros(100_000),  # a value file, not inline
    "mapping": {"k": 1},
    "items": [1, 2],
    "text": "hello",
    "number": 7,
    "fraction": 0.5,
    "nothing": None,
    "flag": True,
}
TYPES = {
    "frame": "pandas.DataFrame",
    "series": "pandas.Series",
    "array": "numpy.ndarray",
    "big_array": "numpy.ndarray",
    "mapping": "dict",
    "items": "list",
    "text": "str",
    "number": "int",
    "fraction": "float",
    "nothing": "NoneType",
    "flag": "bool",
}


@pytest.fixture
def sources(home: Path) -> queries.Sources:
    pipe = nf.Pipeline("kinds")
    for name, value in VALUES.items():
        pipe.task(lambda value=value: value, name=name)

    @pipe.task(inputs={"df": "frame"})
    def rows(df: pd.DataFrame) -> int:
        print("counting")
        return len(df)

    pipe.run()
    drain()
    return queries.Sources(home)


def test_the_type_of_each_cached_value_is_read_without_unpickling_it(sources):
    view = cached.cached_results(sources, "kinds")
    found = {r["task"]: r["type"] for r in view["results"]}
    assert found == {**TYPES, "rows": "int"}
    assert sources.cache.loads == 0  # nothing was unpickled for the table
    rows = {r["task"]: r for r in view["results"]}
    assert rows["rows"]["upstream"] == ["frame"] and rows["frame"]["downstream"] == ["rows"]
    assert rows["frame"]["run"] is not None and rows["frame"]["previewable"]
    assert not rows["array"]["previewable"]


def test_a_dataframe_preview_has_shape_dtypes_and_escaped_rows(sources):
    preview = cached.cached_value_preview(sources, "kinds", "frame")
    assert preview["shape"] == "2 x 2"
    assert preview["dtypes"][0] == ("a", "int64")
    assert "&lt;i&gt;y&lt;/i&gt;" in preview["head"]
    with pytest.raises(nf.NbflowError, match="holds a numpy.ndarray; only DataFrames preview"):
        cached.cached_value_preview(sources, "kinds", "array")


def test_the_pipeline_page_draws_the_dag_and_says_why_tasks_are_stale(sources):
    pipe = nf.Pipeline("kinds")
    for name, value in VALUES.items():
        pipe.task(lambda value=value: value, name=name)
    pipe.task(lambda df: len(df), name="rows", inputs={"df": "frame"})
    pipe.invalidate("frame")
    view = queries.pipeline_page(sources, "kinds")
    stale = {t["name"]: t["stale"] for t in view["tasks"]}
    assert stale["frame"] == "stale: invalidated"
    assert stale["rows"] == "stale: upstream `frame` is stale"
    assert stale["text"].startswith("fresh in the cache")
    assert view["dag"] is not None and view["dag"].startswith("<svg")
    assert all(t["chart"].startswith('<svg class="chart"') for t in view["tasks"])


@pytest.mark.parametrize(
    ("index", "state", "expected"),
    [
        ({}, {}, {"a": "stale: no cached value", "b": "stale: upstream `a` is stale"}),
        (
            {"a": {"created": 1.0}, "b": {"created": 1.0}},
            {"failed": {"a": {"error": "boom"}}},
            {"a": "stale: last attempt failed: boom", "b": "stale: upstream `a` is stale"},
        ),
        (
            {"a": {"created": 5.0}, "b": {"created": 5.0}},
            {"invalidated": {"a": 1.0}},  # invalidated before the value was made: fresh
            {"a": "fresh in the cache", "b": "fresh in the cache"},
        ),
    ],
)
def test_stale_reasons(index, state, expected):
    found = queries.stale_reasons(["a", "b"], [("a", "b")], index, state)
    for task, start in expected.items():
        assert found[task].startswith(start), (task, found[task])


def test_times_sizes_and_durations_read_well():
    assert queries.seconds(0.012) == "12 ms"
    assert queries.seconds(3.44) == "3.4 s"
    assert queries.seconds(125) == "2 min 5 s"
    assert queries.size(2048) == "2.0 KB" and queries.size(12) == "12 B"
    assert queries.when(0.0, "Europe/Berlin") == "1970-01-01 01:00:00 CET"


def test_the_overviews_queries_read_indexes(sources):
    """The overview's look-ups stay cheap however long the history is (the benchmark
    measures the time; this checks the plans)."""
    history = sqlite3.connect(sources.home / "history.sqlite")
    plans = {
        "names": "SELECT name, MAX(started) FROM runs WHERE kind='pipeline' GROUP BY name",
        "runs": "SELECT * FROM runs WHERE name='kinds' AND kind='pipeline' ORDER BY started DESC LIMIT 10",
        "children": "SELECT * FROM runs WHERE parent='x'",
    }
    for what, sql in plans.items():
        plan = " ".join(row[3] for row in history.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "INDEX" in plan, (what, plan)
    jobs = sqlite3.connect(sources.jobs.path)
    plan = " ".join(
        row[3]
        for row in jobs.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM runs WHERE job='j' ORDER BY logical_date DESC, id DESC LIMIT 25"
        )
    )
    assert "INDEX runs_by_job_date" in plan, plan


def test_the_next_run_is_remembered_until_the_job_changes(home: Path):
    from nbflow.jobs.runstore import RunStore, utc_now
    from nbflow.jobs.schedules import Schedule

    store = RunStore(home / "nbflow.db")
    spec = Schedule(name="daily", notebook="/nowhere.ipynb", cron="0 2 * * *").to_dict()
    store.add_job("daily", spec)
    src = queries.Sources(home)
    now = utc_now()
    first = src.next_run(store.get_job("daily"), now)
    assert first is not None and first > now
    assert src.next_run(store.get_job("daily"), now) == first
    store.pause_job("daily")
    assert src.next_run(store.get_job("daily"), now) is None
    store.resume_job("daily")
    assert src.next_run(store.get_job("daily"), now) == first
    assert queries.overview(src)["jobs"][0]["next_run"] != "-"


def test_a_run_page_draws_the_runs_own_graph_with_the_tasks_that_never_ran(home: Path):
    """A failed task has no cache record, so only the run's recorded graph knows its edge to
    the downstream task that never ran; the run page draws both and the edge."""
    pipe = nf.Pipeline("broken")

    @pipe.task
    def load() -> int:
        raise ValueError("no input")

    @pipe.task(inputs={"x": "load"})
    def report(x: int) -> int:
        return x

    with pytest.raises(nf.RunFailed):
        pipe.run()
    drain()
    src = queries.Sources(home)
    row = src.history.runs(name="broken")[0]
    view = queries.pipeline_run_view(src, src.history.run(row["id"]))
    assert view["dag"] is not None
    assert ">report<" in view["dag"] and ">load<" in view["dag"]
    assert "load&#45;&gt;report" in view["dag"]  # Graphviz's title of the edge
