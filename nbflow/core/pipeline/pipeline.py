"""`Pipeline`: a named set of tasks with a cache (the default pipeline's API: `default.py`).

Responsibilities:
- register tasks (decorator or call; re-registering a name replaces the task,
  which is how re-executing an edited notebook cell works);
- give a read-only `Graph` of the current tasks (cached until a task changes);
- own the cache store and the listeners of its runs;
- answer `run`, `status`, `explain`, `invalidate`, `clear_cache`; `show` and
  `to_dot` are views the upper layers attach (`attach_view`).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from nbflow.core import events as ev
from nbflow.core.cache.fsstore import FsStore, configured_url, is_url
from nbflow.core.cache.planner import Planner
from nbflow.core.cache.store import DiskStore
from nbflow.core.capture import ReplayListener
from nbflow.core.dag.graph import Graph, resolve_graph
from nbflow.core.dag.task import Task, make_options
from nbflow.core.errors import (
    MissingParameterError,
    NbflowError,
    ParameterError,
    UnknownTaskError,
)
from nbflow.core.home import home_dir
from nbflow.core.patterns.checks import Check, make_check
from nbflow.core.patterns.partitions import (
    BackfillResult,
    check_partition,
    missing_partition_error,
    partitioned,
)
from nbflow.core.patterns.resources import Resource, make_resource
from nbflow.core.result import RunResult, StatusReport, TaskStatus
from nbflow.core.run.runner import Runner, raise_for_failures, source_file
from nbflow.core.run.spec import RunSpec


class Pipeline:
    """A DAG of cached tasks. `Pipeline("etl", cache_dir="path")`; the default lives in the home."""

    def __init__(
        self,
        name: str = "default",
        cache_dir: str | os.PathLike[str] | None = None,
        size_limit: int | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise NbflowError("a pipeline needs a non-empty name")
        self.name = name
        # A URL (s3://bucket/prefix, file:///team/cache) is a cache shared through fsspec.
        self.cache_dir: Path | str | None = (
            str(cache_dir)
            if is_url(cache_dir)
            else Path(cache_dir).absolute()
            if cache_dir is not None
            else None
        )
        self.size_limit = size_limit
        self.tasks: dict[str, Task] = {}
        self._graph: Graph | None = None
        self._store: DiskStore | FsStore | None = None
        self._store_dir: Path | str | None = None
        self._listeners: list[ev.Listener] = []
        self._last_params: dict[str, Any] = {}
        self.resources: dict[str, Resource] = {}
        self.checks: dict[str, Check] = {}
        _PIPELINES.add(self)

    def __repr__(self) -> str:
        return f"<nbflow Pipeline {self.name!r}: {len(self.tasks)} tasks>"

    # --- definition ------------------------------------------------------------

    @overload
    def task(
        self,
        fn: Callable[..., Any],
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Task: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Any:
        """Register `fn` as a task (also usable as `@pipe.task` or `@pipe.task(...)`).

        Options: retries, retry_delay, backoff, jitter, max_retry_delay, timeout,
        trigger_rule, cache, ttl, watch, version, pool, priority, tags, owner,
        description, identity, metadata (static facts, not in the key), ignore
        (parameters and inputs that do not count in the key), after
        (tasks to run after without taking their value), map (a parameter to
        map over), branch, partitions.
        """
        if isinstance(fn, Pipeline):
            return self.subpipeline(fn, name=name, inputs=inputs, **options)
        opts = make_options(**options)

        def register(f: Callable[..., Any]) -> Task:
            t = Task.create(f, name, inputs, opts)
            self.add(t)
            return t

        return register(fn) if fn is not None else register

    def branch(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Any:
        """Register a branch task: it returns the name(s) of the direct downstream tasks to follow.

        See `nbflow.core.patterns.branching`. Bare (`@pipe.branch`) or with `name`, `inputs`
        (as in `task`) and task options.
        """
        return self.task(fn, name=name, inputs=inputs, branch=True, **options)

    def sensor(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        interval: float = 60.0,
        timeout: float | None = 3600.0,
        soft_fail: bool = False,
        **options: Any,
    ) -> Any:
        """Register a sensor: a task polled every `interval` s until it returns something truthy.

        See `nbflow.core.patterns.sensors`. `timeout` counts from the first check; on
        timeout the sensor fails, or is `skipped` with `soft_fail=True`.
        `name` and `inputs` are as in `task`.
        """
        from nbflow.core.patterns.sensors import sensor_options

        return self.task(
            fn, name=name, inputs=inputs, **sensor_options(interval, timeout, soft_fail, options)
        )

    def wait_for_file(
        self,
        pattern: str,
        *,
        name: str = "wait_for_file",
        interval: float = 60.0,
        timeout: float | None = 3600.0,
        soft_fail: bool = False,
        **options: Any,
    ) -> Task:
        """A sensor whose value is the sorted list of paths matching `pattern` (glob, `**` allowed)."""
        from nbflow.core.patterns.sensors import file_check

        return self.sensor(
            file_check(pattern),
            name=name,
            interval=interval,
            timeout=timeout,
            soft_fail=soft_fail,
            **options,
        )

    def resource(
        self,
        name: str | Callable[[], Any],
        factory: Callable[[], Any] | None = None,
        *,
        version: str | None = None,
    ) -> Any:
        """Register a resource injected into tasks by parameter name (see `nbflow.core.patterns.resources`).

        `pipe.resource("warehouse", connect)`, `@pipe.resource("warehouse")`
        or `@pipe.resource` on the factory (named after it). The factory is
        called once per run, lazily; the object is closed after the run.
        `version` makes it count in the keys of the tasks using it.
        """

        def register(resource: Resource) -> None:
            self.resources[resource.name] = resource
            self._graph = None

        return make_resource(name, factory, version, register)

    def check(
        self, target: Any, *, name: str | None = None, blocking: bool = True
    ) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        """`@pipe.check("task")`: a function judging the task's value after it runs.

        It returns a bool or `(bool, message)`. A failed blocking check stops
        the task's downstream (see `nbflow.core.patterns.checks`).
        """

        def register(check: Check) -> None:
            self.checks[check.name] = check

        return make_check(target, name, blocking, register)

    def subpipeline(
        self,
        inner: Pipeline,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Task:
        """Use pipeline `inner` as one task; its value is the dict of `inner`'s sink values.

        The task's parameters are `inner`'s run parameters. `inner` keeps its
        own cache (see `nbflow.core.pipeline.subpipeline`).
        """
        from nbflow.core.pipeline.subpipeline import ALWAYS_RUN_REASON, SubpipelineCall

        if inner is self:
            raise NbflowError(f"pipeline `{self.name}` cannot be a task of itself")
        options.setdefault("always_run", ALWAYS_RUN_REASON)
        task_name = name or inner.name
        t = Task.create(
            SubpipelineCall(inner, task_name), task_name, inputs, make_options(**options)
        )
        return self.add(t)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to worker processes as a sub-pipeline: the store and listeners stay here.
        state = dict(self.__dict__)
        state.update(_store=None, _store_dir=None, _graph=None, _listeners=[])
        return state

    def add(self, task: Task) -> Task:
        """Add or replace a task."""
        self.tasks[task.name] = task
        self._graph = None
        return task

    def remove(self, name: str) -> None:
        """Drop task `name` (e.g. one whose notebook cell was deleted); `UnknownTaskError` if
        there is none. Its cached results stay in the store."""
        if name not in self.tasks:
            # Not through the graph: a task whose dependency is broken must stay removable.
            raise UnknownTaskError(name, self.tasks, self.name)
        del self.tasks[name]
        self._graph = None

    def graph(self) -> Graph:
        """The resolved graph (raises on cycles and unknown dependencies)."""
        if self._graph is None:
            self._graph = resolve_graph(self.tasks, self.resources)
        return self._graph

    def run_spec(self) -> RunSpec:
        """What a run of this pipeline needs of it, as handed to the runner."""
        return RunSpec(
            name=self.name,
            tasks=self.tasks,
            graph=self.graph(),
            store=self.store,
            resources=self.resources,
            checks=self.checks,
            listeners=tuple(self._listeners),
        )

    def upstream(self, name: str) -> set[str]:
        """Every task `name` depends on, directly or not (what a run of `name` may need)."""
        g = self.graph()
        g.check_known([name], self.name)
        return g.ancestors([name])

    def downstream(self, name: str) -> set[str]:
        """Every task that depends on `name`, directly or not (what goes stale with it)."""
        g = self.graph()
        g.check_known([name], self.name)
        return g.descendants([name])

    def edges(self) -> list[tuple[str, str]]:
        """The dependencies as `(upstream, downstream)` pairs, e.g. to draw the graph elsewhere."""
        return self.graph().edges()

    # --- cache -----------------------------------------------------------------

    @property
    def store(self) -> DiskStore | FsStore:
        """The cache store of this pipeline: `cache_dir` (a folder, or a URL for a shared
        cache), else the shared cache the home is set to (`cache.url`, `$NBFLOW_CACHE_URL`),
        else the home's own cache (followed if `$NBFLOW_HOME` changes)."""
        location = self.cache_dir or configured_url(home_dir()) or home_dir() / "cache"
        if self._store is None or self._store_dir != location:
            # The default pipeline follows $NBFLOW_HOME if it changes (tests, notebooks).
            if isinstance(location, str):
                self._store = FsStore(location, size_limit=self.size_limit)
            else:
                self._store = DiskStore(location, size_limit=self.size_limit)
            self._store_dir = location
        return self._store

    def clear_cache(self) -> int:
        """Delete every cached result of this pipeline; returns how many were removed."""
        return self.store.clear(self.name)

    def invalidate(self, name: str) -> list[str]:
        """Mark `name` and everything downstream stale; returns the tasks marked."""
        g = self.graph()
        g.check_known([name], self.name)
        names = [n for n in g.order if n == name or n in g.descendants([name])]
        now = time.time()
        self.store.update_pipeline_state(self.name, invalidated=dict.fromkeys(names, now))
        return names

    # --- running ---------------------------------------------------------------

    @overload
    def run(
        self,
        targets: str | Iterable[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        executor: Any = None,
        max_workers: int | None = None,
        force: bool | str | Collection[str] = False,
        raise_on_failure: bool = True,
        listeners: Iterable[ev.Listener] = (),
        assume: Collection[str] | Mapping[str, Any] = (),
        partition: Any = None,
        partitions: None = None,
        replay_output: bool | Collection[str] = False,
    ) -> RunResult: ...
    @overload
    def run(
        self,
        targets: str | Iterable[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        executor: Any = None,
        max_workers: int | None = None,
        force: bool | str | Collection[str] = False,
        raise_on_failure: bool = True,
        listeners: Iterable[ev.Listener] = (),
        assume: Collection[str] | Mapping[str, Any] = (),
        partition: Any = None,
        partitions: Sequence[Any] | slice | range,
        replay_output: bool | Collection[str] = False,
    ) -> BackfillResult: ...

    def run(
        self,
        targets: str | Iterable[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        executor: Any = None,
        max_workers: int | None = None,
        force: bool | str | Collection[str] = False,
        raise_on_failure: bool = True,
        listeners: Iterable[ev.Listener] = (),
        assume: Collection[str] | Mapping[str, Any] = (),
        partition: Any = None,
        partitions: Any = None,
        replay_output: bool | Collection[str] = False,
    ) -> RunResult | BackfillResult:
        """Run `targets` (default: every sink) and the stale tasks they need.

        `assume`: sensors to mark satisfied without checking (a set of names,
        or a mapping name -> the value to give them).
        `partition`: the partition key for partitioned tasks (their parameter
        `partition`). `partitions`: several keys (a list, `slice(first, last)`
        or a `range` of positions): one run per key, returned as a
        `BackfillResult` (see `nbflow.core.patterns.partitions`).
        `replay_output`: for each task satisfied from the cache (True: every one; or these
        names), print what it printed in the run that computed its value, found in the run
        history (`nbflow.core.capture.ReplayListener`).
        """
        if replay_output:
            names = (
                None
                if replay_output is True
                else [replay_output]
                if isinstance(replay_output, str)
                else list(replay_output)
            )
            listeners = [*listeners, ReplayListener(names)]
        options: dict[str, Any] = {
            "executor": executor,
            "max_workers": max_workers,
            "force": force,
            "raise_on_failure": raise_on_failure,
            "listeners": listeners,
            "assume": assume,
        }
        if partitions is not None:
            if partition is not None:
                raise ParameterError("give either partition= or partitions=, not both")
            return self._backfill(targets, partitions, params or {}, options)
        params = self._with_partition(targets, dict(params or {}), partition)
        self._last_params = dict(params)
        runner = Runner(
            self.run_spec(),
            targets,
            params=params,
            executor=executor,
            max_workers=max_workers,
            force=force,
            listeners=listeners,
            assume=assume,
        )
        result = runner.run()
        if self.size_limit is not None:
            self.store.gc()
        if raise_on_failure:
            raise_for_failures(result)
        return result

    def _partitioned(self, targets: str | Iterable[str] | None) -> list[str]:
        """The partitioned tasks a run of `targets` includes (none: nothing to check)."""
        if not any(t.options.partitions is not None for t in self.tasks.values()):
            return []
        g = self.graph()
        wanted = [targets] if isinstance(targets, str) else list(targets or g.sinks())
        g.check_known(wanted, self.name)
        needed = set(wanted) | g.ancestors(wanted)
        return partitioned(self.tasks, [n for n in g.order if n in needed])

    def _with_partition(
        self, targets: str | Iterable[str] | None, params: dict[str, Any], partition: Any
    ) -> dict[str, Any]:
        names = self._partitioned(targets)
        if partition is None and "partition" in params and names:
            partition = params["partition"]
        if partition is None:
            if names:
                raise missing_partition_error(self.tasks, names[0])
            return params
        if not names:
            raise ParameterError(
                f"run(partition={partition!r}) was given, but no task of this run is partitioned"
            )
        params["partition"] = check_partition(self.tasks, names, partition)
        return params

    def _backfill(
        self,
        targets: str | Iterable[str] | None,
        partitions: Any,
        params: Mapping[str, Any],
        options: dict[str, Any],
    ) -> BackfillResult:
        names = self._partitioned(targets)
        if not names:
            raise ParameterError(
                "run(partitions=...) was given, but no task of this run is partitioned"
            )
        keys = self.tasks[names[0]].options.partitions.select(partitions)
        keys = [check_partition(self.tasks, names, k) for k in keys]  # all refused before any runs
        raise_on_failure = options.pop("raise_on_failure")
        runs: dict[str, RunResult] = {}
        for key in keys:
            runs[key] = self.run(
                targets, params=params, partition=key, raise_on_failure=False, **options
            )
        if raise_on_failure:
            for result in runs.values():
                raise_for_failures(result)
        return BackfillResult(runs)

    def status(self, params: Mapping[str, Any] | None = None) -> StatusReport:
        """Per task: fresh, stale or never-run, and why — without running or loading anything.

        Without `params`, the run parameters of this pipeline's last run are used.
        """
        g = self.graph()
        planner = Planner(
            self.name,
            self.tasks,
            g,
            self.store,
            self._last_params if params is None else params,
            resources=self.resources,
        )
        statuses: dict[str, TaskStatus] = {}
        planner.fingerprint(g.order)
        for name in g.order:
            try:
                planner.plan([name])
                d = planner.decisions[name]
            except MissingParameterError as exc:
                from nbflow.core.cache.planner import Decision

                d = Decision(
                    name,
                    False,
                    f"needs run parameter `{exc.param}`",
                    root=f"needs run parameter `{exc.param}`",
                )
                planner.decisions[name] = d
            if d.fresh:
                state = "fresh"
            elif d.reason == "never run" or (
                d.root_task and self.store.last_record(self.name, name) is None
            ):
                state = "never-run"
            else:
                state = "stale"
            statuses[name] = TaskStatus(
                name, state, d.reason, d.note or planner.key_note(self.tasks[name])
            )
        if statuses and ev.default_listeners():  # the run history keeps it as a snapshot
            ev.emit_status(
                ev.StatusComputed(
                    pipeline=self.name,
                    run_id="",
                    tasks=tuple(g.order),
                    edges=tuple(g.edges()),
                    verdicts={n: (s.state, s.reason, s.note) for n, s in statuses.items()},
                    source=source_file(self.tasks.values()),
                )
            )
        return StatusReport(self.name, statuses)

    def explain(self, name: str, params: Mapping[str, Any] | None = None) -> str:
        """One line: "fresh: ..." or "stale: <root cause>"."""
        self.graph().check_known([name], self.name)
        return self.status(params)[name].explained()

    # --- listeners and display ---------------------------------------------------

    def add_listener(self, listener: ev.Listener) -> None:
        """Call `listener(event)` for every event of every run of this pipeline."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: ev.Listener) -> None:
        """Stop calling `listener` (added with `add_listener`); unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def show(self, *, interval: float = 0.1, widget: bool | None = None) -> Any:
        """The live DAG widget (Jupyter), redrawn at most every `interval` s while tasks run.

        `widget=False` draws a static graph only; the default uses the widget when a
        browser front end is attached. Drawn by the Jupyter layer (`attach_view`).
        """
        return _view("show")(self, interval=interval, widget=widget)

    def to_dot(self, states: Mapping[str, str] | None = None) -> Any:
        """The graph as a `graphviz.Digraph`, coloured by `states` (task -> state; default:
        the current status). Drawn by the viz layer (`attach_view`)."""
        return _view("to_dot")(self, states)


_VIEWS: dict[str, Callable[..., Any]] = {}


def attach_view(name: str, view: Callable[..., Any]) -> None:
    """Give `Pipeline.show` or `Pipeline.to_dot` its implementation.

    The engine draws nothing itself and imports no upper layer: `nbflow.viz` and
    `nbflow.jupyter` attach their views when the `nbflow` package is imported.
    """
    if name not in ("show", "to_dot"):
        raise ValueError(f"no pipeline view `{name}`: the views are `show` and `to_dot`")
    _VIEWS[name] = view


def _view(name: str) -> Callable[..., Any]:
    view = _VIEWS.get(name)
    if view is None:
        raise NbflowError(
            f"`Pipeline.{name}` is drawn by nbflow's {'Jupyter' if name == 'show' else 'viz'} "
            "layer, which is not loaded; `import nbflow` loads it"
        )
    return view


_PIPELINES: weakref.WeakSet[Pipeline] = weakref.WeakSet()
"""Every live pipeline (so `nf.check(task_obj)` finds the one that holds a task)."""
