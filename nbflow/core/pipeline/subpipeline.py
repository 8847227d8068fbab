"""Sub-pipelines: a pipeline used as one task of another (Prefect's subflows).

    extract_flow = nf.Pipeline("extract", cache_dir=...)
    ...
    main = nf.Pipeline("main", cache_dir=...)
    main.subpipeline(extract_flow, name="extracted", inputs={"day": "pick_day"})
    # or: main.task(extract_flow, name="extracted")

Policy:

- The task's parameters are the inner pipeline's run parameters (with the
  defaults its tasks declare); they are bound like any task's, by name or
  with `inputs=`, and passed to the inner run as `params`.
- Its value is a dict: each *sink* task of the inner pipeline (a task no
  other task uses) -> its value.
- The inner pipeline keeps its own cache: the outer task runs every time
  ("always reruns: a sub-pipeline runs on every run; its own tasks are
  cached"), and the inner run executes only its stale tasks. When the sink
  values come out the same, the outer downstream stays cached (early cutoff).
- Sink values are handed on as stored in the inner cache (loaded back when
  the inner task just ran), so the outer value's bytes do not depend on
  whether the inner tasks ran or were cached.
- An inner failure fails the outer task with the inner `RunFailed` (which
  names the inner task and carries its traceback).
- The outer result's metadata for the task names the inner pipeline and the
  inner tasks that ran and were cached, for displays.
- While the task runs in the driver's own thread (the sequential executor),
  the inner run's events reach the outer run's listeners as they happen,
  wrapped in `SubpipelineEvent`, so the DAG widget colours the inner tasks
  live. With other executors the task runs elsewhere and the displays learn
  the inner states from the metadata when it ends.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

from nbflow.core.cache.fingerprint import FunctionPrint, fingerprint_function
from nbflow.core.cache.hashing import hash_bytes
from nbflow.core.events import forward_inner
from nbflow.core.patterns.output import Output

if TYPE_CHECKING:
    from nbflow.core.pipeline.pipeline import Pipeline

ALWAYS_RUN_REASON = "a sub-pipeline runs on every run; its own tasks are cached"


class SubpipelineCall:
    """The function of a sub-pipeline task: run the inner pipeline, return its sink values."""

    def __init__(self, inner: Pipeline, task: str) -> None:
        self.inner = inner
        self.task = task
        """The outer task's name, under which inner events are forwarded."""
        self.__name__ = inner.name
        self.__signature__ = _signature(inner)

    def __call__(self, **params: Any) -> Output:
        inner = self.inner
        forward = forward_inner.get()
        listeners = [functools.partial(forward, self.task)] if forward is not None else []
        result = inner.run(params=params, listeners=listeners)
        values = {}
        for sink in inner.graph().sinks():
            record = inner.store.last_record(inner.name, sink)
            if (
                result.states[sink] == "done"
                and record is not None
                and inner.tasks[sink].options.cache
            ):
                # Hand on the value as stored, not as computed: a value's pickle can
                # change once on its first round trip (pandas does this), and the
                # outer digest must be the same whether the inner task ran or not.
                values[sink] = inner.store.load(record)
            else:
                values[sink] = result[sink]
        return Output(
            values,
            metadata={
                "pipeline": inner.name,
                "executed": list(result.executed),
                "cached": list(result.cached),
            },
        )

    def __nbflow_fingerprint__(self) -> FunctionPrint:
        """The inner tasks' code, by name (the planner uses this instead of walking the object)."""
        parts = {}
        shorts: dict[str, str] = {}
        volatile: list[str] = []
        for name, task in self.inner.tasks.items():
            fp = fingerprint_function(task.fn, f"function `{name}`")
            parts[f"sub-pipeline task `{self.inner.name}.{name}`"] = fp.digest
            volatile.extend(fp.volatile)
        digest = hash_bytes(*(f"{k}={v}" for k, v in sorted(parts.items())))
        return FunctionPrint(digest, parts, shorts, volatile)


def _signature(inner: Pipeline) -> inspect.Signature:
    graph = inner.graph()
    defaults: dict[str, Any] = {}
    names: list[str] = []
    for name in graph.order:
        task = inner.tasks[name]
        for param in graph.run_params[name]:
            if param not in names:
                names.append(param)
            if param in task.defaults and param not in defaults:
                defaults[param] = task.defaults[param]
    params = [
        inspect.Parameter(
            n, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(n, inspect.Parameter.empty)
        )
        for n in names
    ]
    return inspect.Signature(params)
