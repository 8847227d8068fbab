"""The resolved shape of a pipeline: who feeds whom, and in which order.

`resolve_graph` binds each task's parameters (explicit `inputs=` first, then
parameters named like a task, then parameters named like a resource of the
pipeline; the rest are run parameters), adds the order-only edges of
`after=` (upstream for trigger rules, never part of a key), rejects unknown
dependencies with near matches, rejects cycles naming their path, and
computes a stable topological order (registration order among equals). The
result is read-only and cached by the pipeline until a task is (re)defined.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from nbflow.core.dag.task import Task
from nbflow.core.errors import CycleError, UnknownDependencyError, UnknownTaskError


@dataclass(frozen=True, slots=True)
class Graph:
    order: tuple[str, ...]
    """All tasks, topologically sorted."""
    deps: Mapping[str, Mapping[str, str]]
    """task -> {parameter: upstream task}."""
    run_params: Mapping[str, tuple[str, ...]]
    """task -> parameters that are run parameters."""
    upstream: Mapping[str, tuple[str, ...]]
    """task -> direct upstream tasks (distinct, in parameter order)."""
    downstream: Mapping[str, tuple[str, ...]]
    """task -> direct downstream tasks."""
    resources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """task -> parameters that receive a resource of the same name."""
    quiet: tuple[tuple[str, str], ...] = ()
    """The edges (upstream, task) along which a stale upstream does not make the task
    stale: `after=` edges, and inputs the task names only in `ignore=`."""

    def ancestors(self, names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            for up in self.upstream[n]:
                if up not in seen:
                    seen.add(up)
                    stack.append(up)
        return seen

    def descendants(self, names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            for down in self.downstream[n]:
                if down not in seen:
                    seen.add(down)
                    stack.append(down)
        return seen

    def sinks(self) -> list[str]:
        return [n for n in self.order if not self.downstream[n]]

    def edges(self) -> list[tuple[str, str]]:
        return [(up, n) for n in self.order for up in self.upstream[n]]

    def check_known(self, names: Iterable[str], pipeline: str) -> None:
        for n in names:
            if n not in self.deps:
                raise UnknownTaskError(n, self.order, pipeline)


def resolve_graph(tasks: Mapping[str, Task], resources: Collection[str] = ()) -> Graph:
    deps: dict[str, dict[str, str]] = {}
    run_params: dict[str, tuple[str, ...]] = {}
    injected: dict[str, tuple[str, ...]] = {}
    for name, task in tasks.items():
        bound: dict[str, str] = {}
        free: list[str] = []
        uses: list[str] = []
        for param in task.params:
            if param in task.inputs:
                upstream = task.inputs[param]
                if upstream not in tasks:
                    raise UnknownDependencyError(name, upstream, tasks)
                bound[param] = upstream
            elif param in tasks and param != name:
                bound[param] = param
            elif param in resources:
                uses.append(param)
            else:
                free.append(param)
        for upstream in task.options.after:
            if upstream not in tasks:
                raise UnknownDependencyError(name, upstream, tasks)
        deps[name] = bound
        run_params[name] = tuple(free)
        if uses:
            injected[name] = tuple(uses)
    ups_of = {
        n: tuple(dict.fromkeys([*d.values(), *tasks[n].options.after])) for n, d in deps.items()
    }
    downstream: dict[str, list[str]] = {n: [] for n in tasks}
    for n, ups in ups_of.items():
        for up in ups:
            downstream[up].append(n)
    order = _toposort(list(tasks), ups_of)
    quiet = []
    for n, ups in ups_of.items():
        ignored = tasks[n].options.ignore
        if tasks[n].options.after or ignored:
            carrying = {up for p, up in deps[n].items() if p not in ignored}
            quiet += [(up, n) for up in ups if up not in carrying]
    return Graph(
        tuple(order),
        deps,
        run_params,
        ups_of,
        {n: tuple(v) for n, v in downstream.items()},
        injected,
        tuple(quiet),
    )


def _toposort(names: list[str], upstream: Mapping[str, tuple[str, ...]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in names:
        if state.get(root):
            continue
        # Iterative DFS keeping the path, so a cycle can be reported in full.
        path: list[str] = [root]
        iters = [iter(upstream[root])]
        state[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                done = path.pop()
                iters.pop()
                state[done] = 2
                order.append(done)
            elif state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise CycleError(list(reversed(cycle)))
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(upstream[nxt]))
    return order
