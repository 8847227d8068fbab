"""The module-level API on the default pipeline: `@nf.task`, `nf.run()`, `nf.status()`, ….

Each call is the `Pipeline` method of the same name on `default_pipeline()`, with
the method's signature and docs (written once, in `pipeline.py`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from nbflow.core.dag.task import Task
from nbflow.core.pipeline.pipeline import _PIPELINES, Pipeline

_DEFAULT: Pipeline | None = None


def default_pipeline() -> Pipeline:
    """The pipeline `@nf.task` and `nf.run()` use when none is given."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Pipeline("default")
    return _DEFAULT


P = ParamSpec("P")
R = TypeVar("R")


def on_default_pipeline(method: Callable[Concatenate[Pipeline, P], R]) -> Callable[P, R]:
    """`method` as a module-level call on the default pipeline (`nf.run`, `@nf.task`, ...).

    It keeps the method's signature, so help(), editors and mypy (overloads
    included) show the same options with the same defaults, written once.
    """

    @functools.wraps(method)
    def on_default(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(default_pipeline(), *args, **kwargs)

    signature = inspect.signature(method)
    on_default.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]  # without `self`
    )
    on_default.__doc__ = (
        f"`Pipeline.{method.__name__}` on the default pipeline.\n\n{method.__doc__}"
    )
    return on_default


task = on_default_pipeline(Pipeline.task)
branch = on_default_pipeline(Pipeline.branch)
sensor = on_default_pipeline(Pipeline.sensor)
wait_for_file = on_default_pipeline(Pipeline.wait_for_file)
resource = on_default_pipeline(Pipeline.resource)
run = on_default_pipeline(Pipeline.run)
status = on_default_pipeline(Pipeline.status)
explain = on_default_pipeline(Pipeline.explain)
invalidate = on_default_pipeline(Pipeline.invalidate)
clear_cache = on_default_pipeline(Pipeline.clear_cache)


def check(target: Any, *, name: str | None = None, blocking: bool = True) -> Any:
    """`@nf.check("task")` or `@nf.check(task_obj, blocking=False)` (see `Pipeline.check`).

    Given a task object, the check goes to the pipeline that holds it;
    given a name, to the default pipeline.
    """
    pipe = default_pipeline()
    if isinstance(target, Task):
        for candidate in list(_PIPELINES):
            if candidate.tasks.get(target.name) is target:
                pipe = candidate
                break
    return pipe.check(target, name=name, blocking=blocking)
