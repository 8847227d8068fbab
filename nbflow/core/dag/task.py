"""A task: a function plus the options that say how to run and cache it.

Dependencies are bound by parameter name: a parameter named like another
task of the pipeline receives that task's value; `inputs=` binds a parameter
to a differently named task explicitly; every other parameter is a run
parameter (given with `run(params=...)`, or its default). Binding happens
when the pipeline is planned, not when the task is defined, so notebook
cells can define tasks in any order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbflow.core.errors import NbflowError

TRIGGER_RULES = (
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
)


@dataclass(kw_only=True)
class TaskOptions:
    retries: int = 0
    retry_delay: float = 0.0
    backoff: float = 1.0
    jitter: float = 0.0
    """Random extra delay, as a fraction of the computed delay (0.1 = up to 10% more)."""
    max_retry_delay: float | None = None
    timeout: float | None = None
    trigger_rule: str = "all_success"
    cache: bool = True
    ttl: float | None = None
    watch: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    """Parameters and inputs that do not count in the key (`log_level`, `verbose`): the task
    still receives them, but a change of their value reruns nothing. Checked by `Task.create`."""
    version: str | None = None
    pool: str | None = None
    priority: int = 0
    tags: tuple[str, ...] = ()
    owner: str | None = None
    description: str | None = None
    identity: Callable[[], Mapping[str, str]] | None = None
    """Extra named digests that count in the key (e.g. a notebook's code), shown by name in explanations."""
    metadata: Mapping[str, Any] | None = None
    """Static, JSON-able facts about the task (SLA, ...); not part of the key."""
    after: tuple[str, ...] = ()
    """Tasks this one runs after without taking their value (Airflow's `a >> b`); not part of the key."""
    map: str | None = None
    """The parameter to map over: the task runs once per element (see `nbflow.core.patterns.mapping`)."""
    branch: bool = False
    """The task returns the name(s) of the direct downstream tasks to follow (see `nbflow.core.patterns.branching`)."""
    sensor: Any = None
    """A `SensorSpec` when the task is a sensor (see `nbflow.core.patterns.sensors`)."""
    partitions: Any = None
    """A partitions definition; the task takes the key as parameter `partition`."""
    always_run: str | None = None
    """Never fresh, for this reason (sensors, sub-pipelines); results are still stored."""

    def __post_init__(self) -> None:
        if self.trigger_rule not in TRIGGER_RULES:
            from nbflow.core.errors import did_you_mean

            raise NbflowError(
                f"unknown trigger rule `{self.trigger_rule}`{did_you_mean(self.trigger_rule, TRIGGER_RULES)}; "
                f"choose one of {', '.join(TRIGGER_RULES)}"
            )
        if self.retries < 0:
            raise NbflowError(f"retries must be 0 or more, not {self.retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise NbflowError(f"timeout must be a positive number of seconds, not {self.timeout}")
        if isinstance(self.watch, str):
            self.watch = (self.watch,)
        self.watch = tuple(str(w) for w in self.watch)
        if isinstance(self.ignore, str):
            self.ignore = (self.ignore,)
        if not all(isinstance(i, str) for i in self.ignore):
            raise NbflowError("ignore= takes parameter names (strings), e.g. ignore=['log_level']")
        # Sorted and unique: the option is a set, and its order must not matter anywhere.
        self.ignore = tuple(sorted(set(self.ignore)))
        self.tags = tuple(self.tags)
        if isinstance(self.after, str):
            self.after = (self.after,)
        self.after = tuple(getattr(a, "name", a) for a in self.after)
        if self.map is not None and not isinstance(self.map, str):
            raise NbflowError(f"map= takes the name of a parameter, not {type(self.map).__name__}")

    def retry_delay_for(self, attempt: int) -> float:
        """Delay before the retry that follows failed attempt number `attempt` (1-based)."""
        import random

        delay = self.retry_delay * (self.backoff ** (attempt - 1))
        if self.max_retry_delay is not None:
            delay = min(delay, self.max_retry_delay)
        if self.jitter:
            delay += random.uniform(0, self.jitter * delay)
        return delay


@dataclass
class Task:
    """A registered task. Calling it calls the function directly (handy in tests)."""

    name: str
    fn: Callable[..., Any]
    inputs: dict[str, str] = field(default_factory=dict)
    """Explicit parameter -> task bindings."""
    options: TaskOptions = field(default_factory=TaskOptions)
    params: tuple[str, ...] = ()
    """The function's parameter names, in order."""
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        fn: Callable[..., Any],
        name: str | None,
        inputs: Mapping[str, str] | None,
        options: TaskOptions,
    ) -> Task:
        if not callable(fn):
            raise NbflowError(f"a task must be a function, not {type(fn).__name__}")
        name = name or getattr(fn, "__name__", None)
        if not name or name == "<lambda>":
            raise NbflowError("a lambda task needs a name: pipe.task(fn, name='...')")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise NbflowError(f"cannot read the signature of task `{name}`: {exc}") from exc
        params: list[str] = []
        defaults: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params.append(p.name)
            if p.default is not p.empty:
                defaults[p.name] = p.default
        inputs = dict(inputs or {})
        for param in inputs:
            if param not in params:
                from nbflow.core.errors import did_you_mean

                raise NbflowError(
                    f"`inputs` of task `{name}` names parameter `{param}`, which the function does "
                    f"not take{did_you_mean(param, params)}; its parameters are: {', '.join(params) or 'none'}"
                )
        if options.map is not None and options.map not in params:
            from nbflow.core.errors import did_you_mean

            raise NbflowError(
                f"task `{name}` maps over `{options.map}`, which is not one of its parameters"
                f"{did_you_mean(options.map, params)}; its parameters are: {', '.join(params) or 'none'}"
            )
        for param in options.ignore:
            if param not in params:
                from nbflow.core.errors import did_you_mean

                raise NbflowError(
                    f"task `{name}` ignores `{param}`, which is not one of its parameters"
                    f"{did_you_mean(param, params)}; ignore= names parameters or inputs of the "
                    f"task, and its parameters are: {', '.join(params) or 'none'}"
                )
            if param == options.map:
                raise NbflowError(
                    f"task `{name}` maps over `{param}` and ignores it; the elements of a mapped "
                    "parameter always count in the keys of its instances: drop it from ignore="
                )
        if options.partitions is not None and "partition" not in params:
            raise NbflowError(
                f"task `{name}` is partitioned, so it must take a parameter named `partition` "
                "(it receives the partition key, e.g. '2024-01-03')"
            )
        return cls(
            name=name,
            fn=fn,
            inputs=inputs,
            options=options,
            params=tuple(params),
            defaults=defaults,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<nbflow task {self.name!r}>"


def make_options(**kwargs: Any) -> TaskOptions:
    watch = kwargs.get("watch")
    if watch is not None and not isinstance(watch, str | Sequence):
        raise NbflowError("watch= takes a path, a glob, or a list of them")
    ignore = kwargs.get("ignore")
    if ignore is not None and not isinstance(ignore, str | Sequence):
        raise NbflowError("ignore= takes a parameter name or a list of them")
    return TaskOptions(**{k: v for k, v in kwargs.items() if v is not None or k in ("timeout",)})
