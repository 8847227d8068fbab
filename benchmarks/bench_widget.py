"""DAG widget benchmarks (issue 3), measured against baselines in the same run.

Run: `.venv/bin/python benchmarks/bench_widget.py` (or `make bench`). Nothing is
asserted; the figures go to the notes. Targets: a status update of a 500-node
graph costs <= 5 ms in Python; a 1,000-task run with the widget attached takes
<= 1.5x the time without it.

The widget runs outside a kernel, so its comm drops messages; U2 therefore
adds the JSON encoding of the update message (states, details, progress of
all 500 nodes) that a kernel would put on the wire.

  U1  Graphviz layout of a 500-node graph (once per graph shape)
  U2  one status change of a 500-node graph, pushed to the browser (forced push)
  U3  one event while throttled (no push), and rendering the static SVG
  R1  a cold run of 1,000 tiny tasks, without and with the widget attached
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")


def layered(pipe, n: int, width: int = 10) -> None:
    """n tasks in layers of `width`, each reading two tasks of the previous layer."""

    def step(a=0, b=0):
        return a + b + 1

    for i in range(n):
        layer, pos = divmod(i, width)
        if layer == 0:
            pipe.task(step, name=f"t{i}")
        else:
            up = (layer - 1) * width
            pipe.task(
                step,
                name=f"t{i}",
                inputs={"a": f"t{up + pos}", "b": f"t{up + (pos + 1) % width}"},
            )


def bench_updates() -> None:
    import nbflow as nf
    from nbflow.core import events as ev
    from nbflow.jupyter.widget import DagWidget
    from nbflow.viz import render

    with tempfile.TemporaryDirectory() as d:
        pipe = nf.Pipeline("w500", cache_dir=d)
        layered(pipe, 500)
        start = time.perf_counter()
        render.layout(*render.shape_of(pipe))
        layout_s = time.perf_counter() - start
        view = DagWidget(pipe, interval=0.1)
        names = list(pipe.tasks)
        view(ev.RunStarted(pipeline="w500", run_id="b", tasks=tuple(names), stale={}))
        pushed = []
        for i in range(200):
            t0 = time.perf_counter()
            view(ev.TaskStarted(pipeline="w500", run_id="b", task=names[i]))
            view.push()
            # What the kernel's comm would put on the wire for this update.
            json.dumps(view.get_state(["states", "info", "progress"]))
            pushed.append(time.perf_counter() - t0)
        throttled = []
        for i in range(200, 400):
            t0 = time.perf_counter()
            view(
                ev.TaskFinished(pipeline="w500", run_id="b", task=names[i], duration=0.0, time=0.0)
            )
            throttled.append(time.perf_counter() - t0)
        svg = []
        for _ in range(50):
            t0 = time.perf_counter()
            view.static_svg()
            svg.append(time.perf_counter() - t0)
        print(f"U1 layout of 500 nodes (once per shape):        {layout_s * 1000:8.1f} ms")
        print(
            f"U2 one status update of 500 nodes, pushed:      {statistics.median(pushed) * 1000:8.2f} ms"
            f"  (target <= 5 ms; p90 {sorted(pushed)[180] * 1000:.2f} ms)"
        )
        print(
            f"U3 one event while throttled (no push):         {statistics.median(throttled) * 1e6:8.1f} µs"
        )
        print(
            f"   static SVG of 500 nodes:                     {statistics.median(svg) * 1000:8.2f} ms"
        )


def bench_run() -> None:
    import nbflow as nf
    from nbflow.jupyter.widget import DagWidget

    def chain(d: str, name: str):
        pipe = nf.Pipeline(name, cache_dir=d)

        def step(x):
            return x + 1

        pipe.task(lambda: 0, name="t0")
        for i in range(1, 1000):
            pipe.task(step, name=f"t{i}", inputs={"x": f"t{i - 1}"})
        return pipe

    without, with_widget = [], []
    for rep in range(3):
        for attach, times in ((False, without), (True, with_widget)):
            with tempfile.TemporaryDirectory() as d:
                pipe = chain(d, f"r{rep}{attach}")
                if attach:
                    DagWidget(pipe)
                start = time.perf_counter()
                pipe.run()
                times.append(time.perf_counter() - start)
    a, b = min(without), min(with_widget)
    print(
        f"R1 cold run of 1,000 tasks: without widget {a * 1000:.0f} ms, with widget {b * 1000:.0f} ms,"
        f" ratio {b / a:.2f}x (target <= 1.5x; best of 3)"
    )


if __name__ == "__main__":
    bench_updates()
    bench_run()
