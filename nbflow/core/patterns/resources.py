"""Resources: shared objects (a database connection, a client) injected into tasks by parameter name.

`pipe.resource("warehouse", factory)` (or `nf.resource(...)` for the default
pipeline, or `@pipe.resource` on the factory itself) registers a resource.
A task parameter named `warehouse` then receives the object — unless a task
of that name exists, or `inputs=` binds the parameter: tasks come first.

Policy:

- **Once per run, lazily.** The factory is called the first time a task that
  needs the resource is about to run, in the driver, and the object is shared
  by every task of the run. A fully cached run calls no factory.
- **Closed after the run**, in reverse order of creation, whatever the
  outcome:
  * a generator function factory: its value is what it yields; the rest of
    the generator runs at the end (put clean-up after the `yield`);
  * a context manager (it has `__enter__`/`__exit__`): entered, and exited at
    the end; if it entered as itself and also has `close()` (an
    `sqlite3.Connection`, which commits on exit but stays open), it is closed too;
  * any other object with `close()`: closed.
  A clean-up that raises is reported as an `NbflowWarning`; it cannot fail
  a run that has finished.
- **Not in cache keys** — a connection is not data — unless the resource
  declares `version="..."`: then that version counts in the key of every task
  using it, and changing it reruns them ("resource `warehouse` version changed").
- The object goes to the executor with the task's other arguments: threads and
  the sequential executor share it as is; process and Dask workers need it to
  pickle (most connections do not — build those inside the task instead).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nbflow.core.errors import NbflowError, NbflowWarning, ResourceError


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    factory: Callable[[], Any]
    version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise NbflowError(f"a resource name must be a valid parameter name, not {self.name!r}")
        if not callable(self.factory):
            raise NbflowError(
                f"resource `{self.name}` needs a factory: a function that returns the object, "
                f"not a {type(self.factory).__name__}"
            )


class ResourceScope:
    """The resources of one run: created on first use, closed by `close()`."""

    def __init__(self, resources: Mapping[str, Resource]) -> None:
        self._resources = resources
        self._values: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[], Any]]] = []
        self.created: list[str] = []
        """Names of the resources created in this run, in order."""

    def get(self, name: str, task: str) -> Any:
        if name in self._values:
            return self._values[name]
        resource = self._resources[name]
        try:
            value = self._open(resource)
        except Exception as exc:
            raise ResourceError(task, name, exc) from exc
        self._values[name] = value
        self.created.append(name)
        return value

    def _open(self, resource: Resource) -> Any:
        obj = resource.factory()
        if inspect.isgenerator(obj):
            value = next(obj)
            self._closers.append((resource.name, lambda: _finish_generator(obj)))
            return value
        if hasattr(obj, "__enter__") and hasattr(obj, "__exit__"):
            value = obj.__enter__()

            def leave() -> None:
                obj.__exit__(None, None, None)
                if value is obj and callable(getattr(obj, "close", None)):
                    obj.close()

            self._closers.append((resource.name, leave))
            return value
        if callable(getattr(obj, "close", None)):
            self._closers.append((resource.name, obj.close))
        return obj

    def close(self) -> None:
        while self._closers:
            name, closer = self._closers.pop()
            try:
                closer()
            except Exception as exc:
                warnings.warn(
                    f"closing resource `{name}` raised {type(exc).__name__}: {exc}",
                    NbflowWarning,
                    stacklevel=2,
                )
        self._values.clear()


def _finish_generator(gen: Any) -> None:
    try:
        next(gen)
    except StopIteration:
        return
    gen.close()
    raise NbflowError("a resource generator must yield exactly once")


def make_resource(
    name: str | Callable[[], Any],
    factory: Callable[[], Any] | None,
    version: str | None,
    register: Callable[[Resource], None],
) -> Any:
    """The logic of `pipe.resource(...)` in its three forms (call, decorator, bare decorator)."""
    if callable(name) and factory is None:  # @pipe.resource on the factory
        resource = Resource(name.__name__, name, version)
        register(resource)
        return name
    assert isinstance(name, str)
    if factory is None:

        def decorate(fn: Callable[[], Any]) -> Callable[[], Any]:
            register(Resource(name, fn, version))
            return fn

        return decorate
    resource = Resource(name, factory, version)
    register(resource)
    return resource
