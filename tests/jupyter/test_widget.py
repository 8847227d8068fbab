"""The DAG widget's state after runs, its static SVG, its actions, and life without `dot`."""

from __future__ import annotations

import re
import time

import graphviz
import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.jupyter.widget import DagWidget
from nbflow.viz import render


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
    view = DagWidget(etl)
    assert view.states == dict.fromkeys(["extract", "clean", "report", "archive"], "never-run")
    etl.run()
    fresh = DagWidget(etl)
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


def test_a_widget_redrawn_on_every_redefined_cell_writes_few_status_snapshots(etl, home):
    from nbflow.history.recorder import drain, open_store

    view = DagWidget(etl)
    start = time.monotonic()
    for i in range(100):  # a cell redefining `report`, run again and again
        etl.task(lambda clean, i=i: (clean, i), name="report")
        view.refresh()
    elapsed = time.monotonic() - start
    drain()
    store = open_store(home)
    assert 1 <= store.snapshot_count(etl.name) <= 2 + int(elapsed)
    snap = store.snapshot(etl.name)
    assert snap is not None and snap["origin"] == "status"
    assert snap["tasks"] == ["extract", "clean", "report", "archive"]
    assert snap["verdicts"]["report"][0] == "never-run"


def test_node_states_follow_runs_done_cached_failed_upstream_failed(etl):
    view = DagWidget(etl, interval=0)
    etl.run()
    assert view.states == dict.fromkeys(["extract", "clean", "report", "archive"], "done")
    assert view.progress["done"] == 4 and view.progress["total"] == 4
    assert view.states == view._states, "the browser got the final states"
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
    view = DagWidget(etl, interval=0)
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

    view = DagWidget(pipe, interval=0)
    pipe.add_listener(lambda e: seen.append(view.states.get("flaky", "")))
    pipe.run()
    assert "retrying" in seen
    assert view.states["flaky"] == "done" and view.info["flaky"]["attempts"] == 2


def test_static_svg_is_coloured_by_state_and_refreshed_at_run_end(etl):
    view = DagWidget(etl, interval=0)
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
    view = DagWidget(etl, interval=0)
    for _ in range(3):
        etl.run(force=True)
    assert render.layout.cache_info().misses == 1
    first_svg = view.svg

    @etl.task
    def extra(archive):
        return archive

    etl.run()
    assert render.layout.cache_info().misses == 2, "a new task is a new shape"
    assert view.svg != first_svg and "extra" in view.node_ids


def test_actions_run_run_downstream_invalidate_explain(etl):
    view = DagWidget(etl, interval=0)
    assert view.act("run", "clean").startswith("ran 2 (extract, clean)")
    assert view.states["clean"] == "done" and view.states["report"] == "never-run"
    assert view.act("run_downstream", "clean").startswith("ran 2 (report, archive)")
    assert view.act("invalidate", "report") == "invalidated report, archive"
    assert view.states["report"] == "stale"
    assert view.act("explain", "report") == "report: stale: invalidated"
    assert "UnknownTaskError" in view.act("explain", "nope")
    assert view.message.startswith("UnknownTaskError")


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
        view = DagWidget(etl, interval=0)
        etl.run()
        bundle = view.mimebundle()
        assert "image/svg+xml" not in bundle
        assert "apt-get install graphviz" in bundle["text/html"]
        assert '<td style="text-align:left"><code>archive</code></td>' in bundle["text/html"]
        # Jupyter right-aligns table cells; the names and the why column read from the left.
        assert bundle["text/html"].count('<th style="text-align:left">') == 3
        assert "apt-get install graphviz" in view.fallback
        with pytest.raises(render.GraphvizMissing, match="conda install -c conda-forge graphviz"):
            render.layout(("a",), ())
    finally:
        render.layout.cache_clear()


def test_updates_are_throttled_during_a_run(pipe):
    for i in range(200):
        pipe.task(lambda i=i: i, name=f"t{i}")
    view = DagWidget(pipe, interval=3600)
    pushes: list[float] = []
    original = view.push

    def counting_push():
        pushes.append(time.time())
        original()

    view.push = counting_push
    pipe.run()
    # One push when the run starts and one when it ends, none per task.
    assert len(pushes) == 2
    assert set(view.states.values()) == {"done"}


def test_mapped_instances_are_grouped_under_their_task(pipe):
    @pipe.task
    def customers():
        return [1, 2, 3]

    @pipe.task(map="customer_id", inputs={"customer_id": "customers"})
    def process(customer_id):
        if customer_id == 3:
            raise ValueError("bad customer")
        return customer_id * 10

    view = DagWidget(pipe, interval=0)
    pipe.run(raise_on_failure=False)
    assert view.info["process"]["instances"] == {"0": "done", "1": "done", "2": "failed"}
    assert view.states["process"] == "failed"
    assert view.info["process"]["instances"]["2"] == "failed"


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
    view = DagWidget(outer, interval=0)
    assert view.states["extracted/download"] == "never-run"
    svg = view.svg
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
    view = DagWidget(outer, interval=0)
    seen = []

    def snapshot(event):
        # The widget is the first listener: at each forwarded event it has already recoloured.
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


# --- the widget is an ipywidgets widget (issue 13, item 8) ----------------------------------


def test_show_returns_a_dom_widget_that_composes_and_stays_live(etl):
    import ipywidgets

    w = etl.show()
    assert isinstance(w, ipywidgets.DOMWidget)
    box = ipywidgets.VBox([ipywidgets.HTML("<b>ETL</b>"), w])
    tabs = ipywidgets.Tab(children=[box])
    assert tabs.children[0].children[1] is w
    etl.run(params={"n": 10}, raise_on_failure=False)
    # Inside the containers it still follows the runs: the synced state the browser reads.
    assert w.states["report"] == "failed" and w.states["archive"] == "upstream_failed"
    assert w.progress["failed"] == 1


def test_close_detaches_the_widget_from_the_pipelines_events(etl):
    w = nf.show(etl)
    assert etl._listeners == [w]
    w.close()
    assert etl._listeners == [], "no listener of the closed widget remains"
    assert w.comm is None, "the front-end model is closed too"
    etl.run()
    assert set(w.states.values()) == {"never-run"}, "a closed widget no longer changes"
    w.close()  # closing twice is harmless


def test_a_headless_widget_has_no_front_end_model_and_shows_the_static_graph(etl):
    w = etl.show(widget=False)
    assert w.comm is None
    etl.run()
    bundle = w.mimebundle()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert set(fills(bundle["image/svg+xml"]).values()) == {render.colour("done")}


# --- what the widget says (issue 17, item 10) -------------------------------------------------


def test_the_header_says_cached_when_everything_came_from_the_cache(etl):
    w = DagWidget(etl, interval=0)
    etl.run()
    assert w.progress["text"] == "4/4 done"
    etl.run()
    assert w.progress["text"] == "4 cached"
    etl.invalidate("report")
    etl.run()
    assert w.progress["text"] == "4/4 done (2 cached)"
    etl.run(params={"n": 10}, raise_on_failure=False)
    assert w.progress["text"] == "4/4 done (1 failed)"


def _distance(a: str, b: str) -> float:
    """Colour distance in RGB (0..441): under ~60 two fills look alike at a glance."""
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (a, b)]
    return sum((x - y) ** 2 for x, y in zip(*rgb, strict=True)) ** 0.5


def test_every_state_has_its_own_label_and_a_colour_apart_from_the_others():
    labels = [label for _, label in render.STATES.values()]
    assert len(set(labels)) == len(labels)
    # "fresh (cached)" and "loaded from cache" read as the same thing: one says cache.
    assert sum("cache" in label for label in labels) == 1
    colours = {state: fill for state, (fill, _) in render.STATES.items()}
    close = [
        (a, b, round(_distance(colours[a], colours[b])))
        for i, a in enumerate(colours)
        for b in list(colours)[i + 1 :]
        if _distance(colours[a], colours[b]) < 60
    ]
    assert close == []
    assert _distance(colours["fresh"], colours["cached"]) > 100
    assert _distance(colours["never-run"], colours["skipped"]) > 100


def test_the_legend_groups_states_before_a_run_and_in_a_run(etl):
    w = DagWidget(etl)
    groups = [group for _, _, _, group in w.legend]
    assert groups[:3] == ["before a run"] * 3 and set(groups[3:]) == {"in a run"}
    html = render.legend_html()
    assert html.index("before a run:") < html.index("fresh (up to date)") < html.index("in a run:")


def test_a_task_that_starts_right_after_another_is_shown_running_while_it_runs(pipe):
    """The throttle drops events that come too soon after a push; the last of them is
    still sent, `interval` later, not only when the next event comes (here: the end of
    a long task)."""
    seen: dict[str, str] = {}

    @pipe.task
    def quick():
        return 1

    @pipe.task
    def slow(quick):
        # Wait (up to 30 s, the run goes on meanwhile) for the browser's copy to say so.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and w.states.get("slow") != "running":
            time.sleep(0.01)
        seen["slow"] = w.states.get("slow", "")
        return quick

    w = DagWidget(pipe, interval=0.2)
    pipe.run()
    assert seen["slow"] == "running"
    assert w.states["slow"] == "done"


def test_the_selection_panel_gets_the_tasks_last_runs_and_output_lines_from_the_history(pipe):
    @pipe.task
    def extract(n: int = 3):
        for i in range(15):
            print(f"row {i}")
        return list(range(n))

    @pipe.task
    def clean(extract):
        return extract

    view = DagWidget(pipe, interval=0)
    view._on_message(view, {"action": "history", "task": "extract"}, [])
    assert view.task_history == {"task": "extract", "runs": [], "output": None}  # nothing ran
    first = pipe.run()
    second = pipe.run()
    third = pipe.run(force=True)
    # What the browser asks when a node is selected (and after each run).
    view._on_message(view, {"action": "history", "task": "extract"}, [])
    panel = view.task_history
    assert panel["task"] == "extract"
    assert [(r["run"], r["state"]) for r in panel["runs"]] == [
        (third.run_id, "done"),
        (second.run_id, "cached"),
        (first.run_id, "done"),
    ]
    assert all(isinstance(r["duration"], float) for r in panel["runs"])
    assert panel["output"]["run"] == third.run_id
    assert panel["output"]["lines"] == [f"row {i}" for i in range(3, 15)]  # the last 12
    assert panel["output"]["more"] is True
    # A run from the widget's own button refreshes the panel of the task it ran.
    view._on_message(view, {"action": "run", "task": "clean"}, [])
    assert [r["state"] for r in view.task_history["runs"]][:1] == ["cached"]
    assert view.task_history["task"] == "clean"
