"""Drawing a pipeline: Graphviz layout once per graph shape, cheap recolouring after.

- `shape_of(pipe)` gives the nodes, edges and sub-pipeline groups: the shape.
- `graph_to_dot(nodes, edges, groups, states)` builds the one `graphviz.Digraph`
  every drawing uses (the widget, `pipe.to_dot()`, `nbflow dag`).
- `layout(nodes, edges, groups)` runs `dot` and returns a `Layout`: the SVG
  text with each node's `<g>` carrying a stable id (`nbfn<i>`), plus a
  template that swaps node fill colours by string joining — no new layout per
  status change. Layouts are memoized per shape.
- `Layout.static_svg(states)` gives a self-contained SVG coloured by state,
  for the output's mime bundle (papermill output notebooks, nbconvert HTML).
- `pipeline_to_dot(pipe)` is that graph coloured by the current status (what
  `pipe.to_dot()` returns).
- Without Graphviz's `dot`, `GraphvizMissing` carries how to install it, and
  `fallback_html` shows a readable table of tasks and states instead.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.core.errors import NbflowError

if TYPE_CHECKING:
    from nbflow.core.pipeline.pipeline import Pipeline

# State -> (fill colour, label). The order is the legend's. The colours differ in hue
# *and* lightness, so neighbours in meaning stay apart: before a run, "fresh" is a
# pale green; in a run, "ran" is a strong green and "loaded from cache" cyan;
# "never run" is white and "skipped" a mid grey.
STATES: dict[str, tuple[str, str]] = {
    "never-run": ("#ffffff", "never run"),
    "stale": ("#fcd34d", "stale (would rerun)"),
    "fresh": ("#bbf7d0", "fresh (up to date)"),
    "queued": ("#c4b5fd", "queued"),
    "running": ("#3b82f6", "running"),
    "retrying": ("#fb923c", "retrying"),
    "done": ("#16a34a", "ran"),
    "cached": ("#22d3ee", "loaded from cache"),
    "failed": ("#dc2626", "failed"),
    "skipped": ("#9ca3af", "skipped"),
    "upstream_failed": ("#fda4af", "upstream failed"),
}
BEFORE_A_RUN = ("never-run", "stale", "fresh")
"""States a task shows between runs (from `status()`); the others are states within a run."""
_SENTINEL = "#fefefd"
_NODE_RE = re.compile(r'<g id="nbfn(\d+)" class="node')

INSTALL_HINT = (
    "Graphviz's `dot` program was not found on PATH, so the DAG cannot be laid out. "
    "Install it: `sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` "
    "(macOS), or `conda install -c conda-forge graphviz`; then restart the kernel."
)


class GraphvizMissing(NbflowError):
    """Graphviz's `dot` is not installed; the message says how to install it."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def dot_available() -> bool:
    return shutil.which("dot") is not None


def colour(state: str) -> str:
    return STATES.get(state, ("#ffffff", state))[0]


@dataclass(frozen=True, slots=True)
class Layout:
    """One laid-out graph: the SVG, node ids, and a template for recolouring."""

    nodes: tuple[str, ...]
    svg: str
    """The SVG with every node filled with a placeholder colour."""
    node_ids: dict[str, str]
    _chunks: tuple[str, ...]
    _order: tuple[int, ...]
    """The node index whose fill goes between chunk i and chunk i+1."""

    def static_svg(self, states: Mapping[str, str]) -> str:
        """The SVG with each node filled by its state's colour (O(nodes) string work)."""
        nodes = self.nodes
        parts = [self._chunks[0]]
        for i, chunk in zip(self._order, self._chunks[1:], strict=True):
            parts.append(colour(states.get(nodes[i], "never-run")))
            parts.append(chunk)
        return "".join(parts)


Group = tuple[str, str, tuple[str, ...]]
"""A sub-pipeline drawn as a cluster: (outer task, caption, its inner nodes)."""


def graph_to_dot(
    nodes: tuple[str, ...],
    edges: tuple[tuple[str, str], ...],
    groups: tuple[Group, ...] = (),
    states: Mapping[str, str] | None = None,
) -> Any:
    """A `graphviz.Digraph`: nodes filled by `states`, or (None) with the placeholder fill
    that `Layout` swaps for state colours. Node ids (`nbfn<i>`) follow `nodes`' order."""
    import graphviz

    def fill(name: str) -> str:
        return _SENTINEL if states is None else colour(states.get(name, "never-run"))

    dot = graphviz.Digraph("nbflow", format="svg")
    dot.attr(rankdir="LR" if len(nodes) > 12 else "TB", bgcolor="transparent")
    dot.attr(
        "node",
        shape="box",
        style="rounded,filled",
        color="#374151",
        fontname="Helvetica",
        fontsize="12",
    )
    dot.attr("edge", color="#6b7280", arrowsize="0.7")
    index = {name: i for i, name in enumerate(nodes)}
    grouped = {inner for _, _, members in groups for inner in members}
    for name in nodes:
        if name not in grouped:
            dot.node(name, label=name, id=f"nbfn{index[name]}", fillcolor=fill(name))
    for i, (_outer, caption, members) in enumerate(groups):
        with dot.subgraph(name=f"cluster_{i}") as cluster:
            cluster.attr(label=caption, style="rounded,dashed", color="#6b7280", fontsize="11")
            for name in members:
                cluster.node(
                    name,
                    label=name.partition("/")[2],
                    id=f"nbfn{index[name]}",
                    fillcolor=fill(name),
                )
    for up, down in edges:
        if up in grouped and down not in grouped:
            dot.edge(up, down, style="dashed")  # an inner sink feeds the sub-pipeline's value
        else:
            dot.edge(up, down)
    return dot


@functools.lru_cache(maxsize=32)
def layout(
    nodes: tuple[str, ...], edges: tuple[tuple[str, str], ...], groups: tuple[Group, ...] = ()
) -> Layout:
    """Run Graphviz once for this graph shape (memoized)."""
    import graphviz

    if not dot_available():
        raise GraphvizMissing()
    try:
        svg = graph_to_dot(nodes, edges, groups).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizMissing() from exc
    svg = svg[svg.index("<svg") :]  # drop the XML prolog: the SVG is embedded in HTML
    chunks: list[str] = []
    order: list[int] = []
    cursor = 0
    for match in _NODE_RE.finditer(svg):
        at = svg.find(f'fill="{_SENTINEL}"', match.end())
        if at < 0:
            continue
        at += len('fill="')
        chunks.append(svg[cursor:at])
        order.append(int(match.group(1)))
        cursor = at + len(_SENTINEL)
    chunks.append(svg[cursor:])
    return Layout(
        nodes=nodes,
        svg=svg,
        node_ids={name: f"nbfn{i}" for i, name in enumerate(nodes)},
        _chunks=tuple(chunks),
        _order=tuple(order),
    )


def shape_of(
    pipe: Pipeline,
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[Group, ...]]:
    """The pipeline's nodes (topological order), edges and sub-pipeline groups: the key of
    its layout. A sub-pipeline task's inner tasks are nodes named `outer/inner`."""
    from nbflow.core.pipeline.subpipeline import SubpipelineCall

    g = pipe.graph()
    nodes = list(g.order)
    edges = sorted(g.edges())
    groups: list[Group] = []
    for name in g.order:
        fn = pipe.tasks[name].fn
        if isinstance(fn, SubpipelineCall):
            inner = fn.inner.graph()
            members = tuple(f"{name}/{n}" for n in inner.order)
            nodes.extend(members)
            edges.extend((f"{name}/{u}", f"{name}/{d}") for u, d in sorted(inner.edges()))
            edges.extend((f"{name}/{s}", name) for s in inner.sinks())
            groups.append((name, f"sub-pipeline `{fn.inner.name}`", members))
    return tuple(nodes), tuple(edges), tuple(groups)


def pipeline_to_dot(pipe: Pipeline, states: Mapping[str, str] | None = None) -> Any:
    """A `graphviz.Digraph` of the pipeline, nodes filled by state (default: current status)."""
    if states is None:
        states = {n: s.state for n, s in pipe.status().items()}
    return graph_to_dot(*shape_of(pipe), states=states)


def legend_group(state: str) -> str:
    """The legend's heading for `state`: between runs, or within a run."""
    return "before a run" if state in BEFORE_A_RUN else "in a run"


def legend_html(states: Iterable[str] = STATES) -> str:
    items: list[str] = []
    group = ""
    for s in states:
        if s not in STATES:
            continue
        if legend_group(s) != group:
            group = legend_group(s)
            items.append(f'<span class="nbflow-group">{group}:</span>')
        items.append(
            f'<span class="nbflow-key"><i style="background:{STATES[s][0]}"></i>'
            f"{html.escape(STATES[s][1])}</span>"
        )
    return f'<div class="nbflow-legend">{"".join(items)}</div>'


def fallback_html(
    pipeline: str, states: Mapping[str, str], info: Mapping[str, Mapping[str, Any]]
) -> str:
    """A table of tasks and states, for when `dot` is missing."""
    # Jupyter right-aligns table cells by default; names and reasons read from the left.
    left = ' style="text-align:left"'
    rows = []
    for name, state in states.items():
        detail = info.get(name, {})
        why = detail.get("error") or detail.get("reason") or ""
        dur = detail.get("duration")
        rows.append(
            f"<tr><td{left}><code>{html.escape(name)}</code></td>"
            f'<td style="text-align:left;background:{colour(state)}">'
            f"{html.escape(STATES.get(state, ('', state))[1])}</td>"
            f"<td>{'' if dur is None else f'{dur:.3f} s'}</td>"
            f"<td{left}>{html.escape(str(why))}</td></tr>"
        )
    return (
        f'<div class="nbflow-fallback"><p><b>nbflow</b>: {html.escape(INSTALL_HINT)}</p>'
        f"<table><thead><tr><th{left}>task ({html.escape(pipeline)})</th><th{left}>state</th>"
        f"<th>duration</th><th{left}>why</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
