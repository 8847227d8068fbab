"""`RunSpec`: what one run needs of a pipeline, handed to the runner.

The runner is given this, not the `Pipeline`: the run layer then depends on
tasks, the graph and the store, never on the class that builds them, and
`Pipeline.run` (above it) is the only place that knows both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbflow.core import events as ev
    from nbflow.core.cache.store import Store
    from nbflow.core.dag.graph import Graph
    from nbflow.core.dag.task import Task
    from nbflow.core.patterns.checks import Check
    from nbflow.core.patterns.resources import Resource

__all__ = ["RunSpec"]


@dataclass(frozen=True, slots=True)
class RunSpec:
    """A pipeline as one run sees it: its name, tasks and their graph, resources, checks,
    the cache store and the listeners registered on the pipeline."""

    name: str
    tasks: Mapping[str, Task]
    graph: Graph
    store: Store
    resources: Mapping[str, Resource]
    checks: Mapping[str, Check]
    listeners: tuple[ev.Listener, ...] = ()
