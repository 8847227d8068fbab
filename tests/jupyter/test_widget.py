"""The DAG widget's state after runs, its static SVG, its actions, and life without `dot`."""

from __future__ import annotations

import re
import time

import graphviz
import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.jupyter import render
from nbflow.jupyter.widget import DagView


@pytest.fixture
def etl(pipe: nf.Pipeline) -> nf.Pipeline:
    @pipe.task
    def extract(n: int = 3):
        return list(range(n))

    @pipe.task(retries=1)
    def clean(extract):
        return [x for x in extract if x]

    @pipe.task
    def report(clean):
        if len(clean) > 5:
            raise ValueError("too many rows")
        return sum(clean)

    @pipe.task
    def archive(report):
        return f"archived {report}"

    return pipe


def fills(svg: str) -> dict[str, str]:
    """Node title -> fill colour, read back from the SVG text."""
    out = {}
    for m in re.finditer(
        r'<g id="nbfn\d+" class="node">\s*<title>([^<]+)</title>\s*<path fill="([^"]+)"', svg
    ):
        out[m.group(1)] = m.group(2)
    return out


def test_before_a_run_the_graph_shows_what_would_rerun(etl):
    view = DagView(etl)
    assert view.states == dict.fromkeys(["extract", "clean", "report", "archive"], "never-run")
    etl.run()
    fresh = DagView(etl)
    assert set(fresh.states.values()) == {"fresh"}
    etl.invalidate("report")
    fresh.refresh()
    assert fresh.states == {
        "extract": "fresh",
        "clean": "fresh",
        "report": "stale",
        "archive": "stale",
    }
    assert "invalidated" in fresh.info["report"]["reason"]
    assert fresh.progress["stale"] == 2


def test_node_states_follow_runs_done_cached_failed_upstream_failed(etl):
    view = DagView(etl, interval=0)
    etl.run()
    assert view.states == dict.fromkeys(["extract", "clean", "report", "archive"], "done")
    assert view.progress["done"] == 4 and view.progress["total"] == 4
    assert view.widget.states == view.states, "the browser got the final states"
    etl.run(params={"n": 10}, raise_on_failure=False)
    assert view.states == {
        "extract": "done",
        "clean": "done",
        "report": "failed",
        "archive": "upstream_failed",
    }
    assert view.info["report"]["error"] == "ValueError: too many rows"
    assert view.progress["failed"] == 1
    etl.run(["clean"], params={"n": 10})
    assert view.states["extract"] == "cached" and view.states["clean"] == "cached"
    assert view.states["report"] == "failed", "tasks outside the run keep their last state"


def test_per_node_details_duration_attempts_reason(etl):
    view = DagView(etl, interval=0)
    etl.run()
    info = view.info["clean"]
    assert info["attempts"] == 1 and info["duration"] >= 0
    assert "upstream `extract`" in info["reason"]


def test_retrying_state_is_shown_while_a_task_retries(pipe, tmp_path):
    marker = tmp_path / "tried"
    seen: list[str] = []

    @pipe.task(retries=1)
    def flaky():
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("first try")
        return 1

    view = DagView(pipe, interval=0)
    pipe.add_listener(lambda e: seen.append(view.states.get("flaky", "")))
    pipe.run()
    assert "retrying" in seen
    assert view.states["flaky"] == "done" and view.info["flaky"]["attempts"] == 2


def test_static_svg_is_coloured_by_state_and_refreshed_at_run_end(etl):
    view = DagView(etl, interval=0)
    etl.run(params={"n": 10}, raise_on_failure=False)
    bundle = view.mimebundle()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    colours = fills(bundle["image/svg+xml"])
    assert colours == {
        "extract": render.colour("done"),
        "clean": render.colour("done"),
        "report": render.colour("failed"),
        "archive": render.colour("upstream_failed"),
    }
    assert "failed" in bundle["text/plain"]
    assert "upstream failed" in bundle["text/html"], "the HTML version carries a legend"


def test_layout_runs_once_per_graph_shape(etl):
    render.layout.cache_clear()
    view = DagView(etl, interval=0)
    for _ in range(3):
        etl.run(force=True)
    assert render.layout.cache_info().misses == 1
    first_svg = view.widget.svg

    @etl.task
    def extra(archive):
        return archive

    etl.run()
    assert render.layout.cache_info().misses == 2, "a new task is a new shape"
    assert view.widget.svg != first_svg and "extra" in view.widget.node_ids


def test_actions_run_run_downstream_invalidate_explain(etl):
    view = DagView(etl, interval=0)
    assert view.act("run", "clean").startswith("ran 2 (extract, clean)")
    assert view.states["clean"] == "done" and view.states["report"] == "never-run"
    assert view.act("run_downstream", "clean").startswith("ran 2 (report, archive)")
    assert view.act("invalidate", "report") == "invalidated report, archive"
    assert view.states["report"] == "stale"
    assert view.act("explain", "report") == "report: stale: invalidated"
    assert "UnknownTaskError" in view.act("explain", "nope")
    assert view.widget.message.startswith("UnknownTaskError")


def test_pipeline_to_dot_is_a_digraph_coloured_by_status(etl):
    etl.run(["extract"])
    dot = etl.to_dot()
    assert isinstance(dot, graphviz.Digraph)
    source = dot.source
    assert re.search(rf'\textract \[[^\]]*fillcolor="{render.colour("fresh")}"', source)
    assert re.search(rf'\tclean \[[^\]]*fillcolor="{render.colour("never-run")}"', source)


def test_without_dot_the_widget_says_how_to_install_graphviz_and_shows_a_table(etl, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    render.layout.cache_clear()
    try:
        view = DagView(etl, interval=0)
        etl.run()
        bundle = view.mimebundle()
        assert "image/svg+xml" not in bundle
        assert "apt-get install graphviz" in bundle["text/html"]
        assert "<td><code>archive</code></td>" in bundle["text/html"]
        assert "apt-get install graphviz" in view.widget.fallback
        with pytest.raises(render.GraphvizMissing, match="conda install -c conda-forge graphviz"):
            render.layout(("a",), ())
    finally:
        render.layout.cache_clear()


def test_updates_are_throttled_during_a_run(pipe):
    for i in range(200):
        pipe.task(lambda i=i: i, name=f"t{i}")
    view = DagView(pipe, interval=3600)
    pushes: list[float] = []
    original = view.push

    def counting_push():
        pushes.append(time.time())
        original()

    view.push = counting_push
    pipe.run()
    # One push when the run starts and one when it ends, none per task.
    assert len(pushes) == 2
    assert set(view.widget.states.values()) == {"done"}


def test_mapped_instances_are_grouped_under_their_task(pipe):
    @pipe.task
    def customers():
        return [1, 2, 3]

    @pipe.task(map="customer_id", inputs={"customer_id": "customers"})
    def process(customer_id):
        if customer_id == 3:
            raise ValueError("bad customer")
        return customer_id * 10

    view = DagView(pipe, interval=0)
    pipe.run(raise_on_failure=False)
    assert view.info["process"]["instances"] == {"0": "done", "1": "done", "2": "failed"}
    assert view.states["process"] == "failed"
    assert view.widget.info["process"]["instances"]["2"] == "failed"


def with_sub_pipeline(tmp_path) -> nf.Pipeline:
    """Pipeline `main`: sub-pipeline task `extracted` (download -> parse), then `report`."""
    inner = nf.Pipeline("extract_flow", cache_dir=tmp_path / "inner")

    @inner.task
    def download(day: str = "2024-01-01"):
        return [day] * 3

    @inner.task
    def parse(download):
        return len(download)

    outer = nf.Pipeline("main", cache_dir=tmp_path / "outer")
    outer.subpipeline(inner, name="extracted")

    @outer.task
    def report(extracted):
        return extracted["parse"] * 2

    return outer


def test_a_sub_pipeline_is_drawn_as_a_group_with_its_own_tasks_states(home, tmp_path):
    outer = with_sub_pipeline(tmp_path)
    render.layout.cache_clear()
    view = DagView(outer, interval=0)
    assert view.states["extracted/download"] == "never-run"
    svg = view.widget.svg
    assert ">sub&#45;pipeline `extract_flow`</text>" in svg  # the cluster's caption
    assert svg.count('class="cluster"') == 1
    outer.run()
    assert view.states["extracted/download"] == "done" and view.states["extracted/parse"] == "done"
    assert view.states["report"] == "done"
    outer.run()
    assert view.states["extracted/download"] == "cached", "the inner pipeline keeps its own cache"
    colours = fills(view.static_svg())
    assert colours["extracted/parse"] == render.colour("cached")


def test_a_sub_pipelines_tasks_are_coloured_while_it_runs(home, tmp_path):
    outer = with_sub_pipeline(tmp_path)
    view = DagView(outer, interval=0)
    seen = []

    def snapshot(event):
        # DagView is the first listener: at each forwarded event it has already recoloured.
        if isinstance(event, ev.SubpipelineEvent) and isinstance(event.event, ev.TaskEvent):
            seen.append((type(event.event).__name__, event.event.task, dict(view.states)))

    outer.run(listeners=[snapshot])
    started = [(kind, task, s) for kind, task, s in seen if kind == "TaskStarted"]
    assert [task for _, task, _ in started] == ["download", "parse"]
    # While `parse` runs, `download` is already done, and the outer task is still running.
    _, _, states = started[1]
    assert states["extracted/download"] == "done" and states["extracted/parse"] == "running"
    assert states["extracted"] == "running"
    assert view.states["extracted/parse"] == "done" and view.states["extracted"] == "done"
