"""How the runner expands a mapped task into instances and assembles their results.

The policy (per-element keys, what is reused, states and events) is in
`nbflow.core.patterns.mapping`; these are the runner's steps for it, kept apart so
`runner.py` reads as the story of an ordinary run. `Runner` inherits them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nbflow.core import events as ev
from nbflow.core.cache.planner import Decision, Planner
from nbflow.core.cache.serialize import serialize
from nbflow.core.cache.store import Record
from nbflow.core.errors import IntegrityError, MapInputError, UnpicklableResult, short_trace
from nbflow.core.executors.base import TaskAttempt, TaskOutcome
from nbflow.core.patterns.mapping import MapRun, assemble, instance_base, instance_key, split
from nbflow.core.types import CacheKey

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Mapping

    from nbflow.core.cache.store import Store
    from nbflow.core.events import EventBus
    from nbflow.core.result import RunResult
    from nbflow.core.run.spec import RunSpec

# Decisions after which a mapped task reuses none of its cached instances.
_RERUN_ALL = ("forced", "invalidated", "expired", "always reruns", "caching is off")


class MapSteps:
    """The mapped-task steps of `Runner` (a mixin: `self` is the runner)."""

    if TYPE_CHECKING:  # what these steps use of the runner
        spec: RunSpec
        store: Store
        bus: EventBus
        result: RunResult
        name: str
        run_id: str
        not_retried: tuple[type[BaseException], ...]
        _job_ids: int
        _instances: dict[str, tuple[MapRun, int]]
        _backlog: deque[TaskAttempt]
        _waiting: dict[str, int]
        _ready: list[tuple[int, int, str]]
        _index: dict[str, int]
        _decisions: dict[str, Decision]
        _output: dict[str, tuple[str, int]]
        planner: Planner

        def _fail(self, name: str, error: BaseException, trace: str, attempts: int) -> None: ...
        def _done(self, name: str, duration: float, attempts: int) -> None: ...
        def _maybe_flush(self) -> None: ...
        def _emit(self, kind: type[ev.TaskEvent], task: str, **fields: Any) -> None: ...
        def _store_result(
            self, name: str, value: Any, duration: float, extra: Mapping[str, Any] | None = None
        ) -> None: ...
        def _release(
            self,
            name: str,
            waiting: dict[str, int],
            ready: list[tuple[int, int, str]],
            index: dict[str, int],
        ) -> None: ...

    def _expand(
        self, name: str, decision: Decision, kwargs: dict[str, Any]
    ) -> list[TaskAttempt] | None:
        """Look up each element's instance; return jobs for the missing ones (None: settled now)."""
        task = self.spec.tasks[name]
        opts = task.options
        param = opts.map
        assert param is not None
        try:
            labels, elements, is_dict = split(name, param, kwargs[param])
        except MapInputError as exc:
            self._fail(name, exc, short_trace(exc), 1)
            return None
        n = len(elements)
        keys: list[CacheKey | None] = [None] * n
        if opts.cache and decision.key is not None:
            base = instance_base(self.name, name, decision.parts, param)
            keys = [instance_key(base, e) for e in elements]
        # A forced, invalidated, expired or uncacheable task reruns every element.
        reuse = not decision.root.startswith(_RERUN_ALL)
        mrun = MapRun(name, param, labels, is_dict, keys, [None] * n, ["pending"] * n)
        jobs: list[TaskAttempt] = []
        get_record, load = self.store.get_record, self.store.load
        previous = self._previous_instances(name) if reuse else {}
        cached: list[int] = []
        for i, element in enumerate(elements):
            key = keys[i]
            if key is not None and key in previous:
                mrun.values[i] = previous[key]
                mrun.states[i] = "cached"
                cached.append(i)
                continue
            if reuse and key is not None:
                record = get_record(self.name, key)
                if record is not None:
                    try:
                        mrun.values[i] = load(record)
                    except IntegrityError:
                        pass  # the store dropped the entry; the element runs again
                    else:
                        mrun.states[i] = "cached"
                        cached.append(i)
                        continue
            self._job_ids += 1
            job_name = f"{name}[{i}]"
            job_kwargs = dict(kwargs)
            job_kwargs[param] = element
            jobs.append(
                TaskAttempt(
                    id=self._job_ids,
                    task=job_name,
                    fn=task.fn,
                    kwargs=job_kwargs,
                    timeout=opts.timeout,
                    pool=opts.pool,
                    priority=opts.priority,
                )
            )
            self._instances[job_name] = (mrun, i)
        mrun.pending = len(jobs)
        if self.bus:
            self._emit(ev.MapExpanded, name, size=n, labels=tuple(labels), cached=tuple(cached))
            if jobs:
                self._emit(ev.TaskStarted, name)
        if not jobs:
            self._finish_map(mrun)
            return None
        return jobs

    def _previous_instances(self, name: str) -> dict[CacheKey, Any]:
        """Instance key -> value, from the task's last result and its manifest (two loads).

        Rerunning after one element changed then costs two unpickles instead
        of one look-up and one unpickle per unchanged element. Keys missing
        here (older results, a reverted edit) are still looked up one by one.
        """
        latest = self.planner.index.get(name)
        manifest_key = latest.get("map_manifest") if latest is not None else None
        if not manifest_key:
            return {}
        assert latest is not None
        manifest = self.store.get_record(self.name, manifest_key)
        if manifest is None:
            return {}
        try:
            keys = self.store.load(manifest)
            value = self.store.load(latest)
        except IntegrityError:
            return {}
        values = list(value.values()) if isinstance(value, dict) else value
        if not isinstance(values, list) or len(values) != len(keys):
            return {}
        return {k: v for k, v in zip(keys, values, strict=True) if k is not None}

    def _complete_instance(
        self, outcome: TaskOutcome, mrun: MapRun, i: int
    ) -> tuple[float, int, TaskAttempt] | None:
        job = outcome.job
        mrun.duration += outcome.duration
        mrun.attempts = max(mrun.attempts, job.attempt)
        if "output" in outcome.extra:  # the last attempt's, as for a task
            mrun.outputs[i] = (outcome.extra["output"], outcome.extra.get("dropped", 0))
        else:
            mrun.outputs.pop(i, None)
        error, trace = outcome.error, outcome.traceback
        value = outcome.value
        unwrap = getattr(value, "__nbflow_output__", None)
        if unwrap is not None:  # an instance's metadata is not kept: its value is
            value = unwrap()[0]
        key = mrun.keys[i]
        if error is None and key is not None:
            try:
                payload = serialize(value, job.task)
            except UnpicklableResult as exc:
                error, trace = exc, short_trace(exc)
            else:
                record: Record = {
                    "key": key,
                    "pipeline": self.name,
                    "task": job.task,
                    "instance": True,
                    "created": time.time(),
                    "duration": outcome.duration,
                }
                self.store.put(record, payload)
        state = "done"
        if error is None:
            mrun.values[i] = value
            mrun.executed.append(mrun.labels[i])
        else:
            task = self.spec.tasks[mrun.task]
            if job.attempt <= task.options.retries and not isinstance(error, self.not_retried):
                delay = task.options.retry_delay_for(job.attempt)
                self._emit_instance(mrun, i, "retrying", outcome, error)
                self._job_ids += 1
                retry = job.next_attempt(self._job_ids)
                return (time.monotonic() + delay, retry.id, retry)
            state = "failed"
            mrun.errors[i] = (error, trace)
        mrun.states[i] = state
        if self.bus:
            self._emit_instance(mrun, i, state, outcome, error)
        self._maybe_flush()
        mrun.pending -= 1
        if not mrun.pending:
            self._finish_map(mrun)
            self._release(mrun.task, self._waiting, self._ready, self._index)
        return None

    def _emit_instance(
        self,
        mrun: MapRun,
        i: int,
        state: str,
        outcome: TaskOutcome,
        error: BaseException | None,
    ) -> None:
        self._emit(
            ev.MapInstance,
            mrun.task,
            index=i,
            label=mrun.labels[i],
            state=state,
            duration=outcome.duration,
            attempt=outcome.job.attempt,
            error=f"{type(error).__name__}: {error}" if error is not None else "",
        )

    def _finish_map(self, mrun: MapRun) -> None:
        """Every instance settled: fail the task, or assemble and store its value."""
        name, result = mrun.task, self.result
        if mrun.outputs:
            # The mapped task's output: what each instance printed, one section each, in the
            # order of the elements (the history keeps it as the task's log); a dict's key named.
            text = "".join(
                f"--- {mrun.instance_name(i)}"
                + (f" (key {mrun.labels[i]!r})" if mrun.is_dict else "")
                + f"\n{out}"
                + ("" if out.endswith("\n") else "\n")
                for i, (out, _) in sorted(mrun.outputs.items())
            )
            self._output[name] = (text, sum(cut for _, cut in mrun.outputs.values()))
            result.logs[name] = text
        result.map_states[name] = mrun.label_states()
        result.map_executed[name] = mrun.executed
        result.durations[name] = mrun.duration
        result.attempts[name] = mrun.attempts
        if mrun.errors:
            i, error, trace = mrun.first_error()
            header = (
                f"instance `{mrun.instance_name(i)}` (element {mrun.labels[i]!r}) failed; "
                f"{len(mrun.errors)} of {len(mrun.labels)} instances failed\n"
            )
            self._fail(name, error, header + trace, mrun.attempts)
            return
        value = assemble(mrun.labels, mrun.values, mrun.is_dict)
        extra: dict[str, Any] = {
            "map_size": len(mrun.labels),
            "map_labels": mrun.labels if mrun.is_dict else None,
        }
        decision = self._decisions[name]
        if decision.key is not None and any(k is not None for k in mrun.keys):
            # The manifest: which instance key each element had, for the next expansion.
            manifest_key = CacheKey(f"{decision.key}-map")
            manifest: Record = {
                "key": manifest_key,
                "pipeline": self.name,
                "task": f"{name}[manifest]",
                "instance": True,
                "created": time.time(),
                "duration": 0.0,
            }
            self.store.put(manifest, serialize(mrun.keys, name))
            extra["map_manifest"] = manifest_key
        try:
            self._store_result(name, value, mrun.duration, extra)
        except UnpicklableResult as exc:
            self._fail(name, exc, short_trace(exc), mrun.attempts)
            return
        self._done(name, mrun.duration, mrun.attempts)
