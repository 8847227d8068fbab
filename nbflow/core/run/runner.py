"""The runner: executes a plan, task by task, as soon as each task's upstream is final.

The story of one run:
1. Resolve the graph, pick the targets (default: every sink) and what they need.
2. Check run parameters (a missing one fails before anything runs), then plan:
   every task gets a static decision (fresh, or stale with a reason).
3. Walk the graph. A task whose upstream are all final is evaluated against
   its trigger rule; if it runs, its key is computed from the *actual*
   upstream output digests — so a rerun upstream that returned the same
   bytes leaves it fresh (early cutoff). Fresh tasks are marked `cached`
   without loading anything. Stale tasks become jobs for the executor, with
   their upstream values loaded lazily (memory first, then the cache).
4. Outcomes come back; a result is serialized, digested and stored (value
   first, then its record); a failure is retried after its delay or marked
   failed. Downstream tasks become ready. Records are committed in batches.
5. Events go to the listeners throughout; at the end, `RunFailed` is raised
   when a task failed (unless `raise_on_failure=False`).

The runner calls no display code; the executor never touches the cache.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nbflow.core import events as ev
from nbflow.core.cache.hashing import Unfingerprintable, digest_value
from nbflow.core.cache.planner import Decision, Planner
from nbflow.core.cache.serialize import serialize
from nbflow.core.cache.store import Record
from nbflow.core.errors import (
    IntegrityError,
    NbflowError,
    NbflowWarning,
    UnknownTaskError,
    UnpicklableResult,
    UnpicklableTask,
    short_trace,
)
from nbflow.core.executors.base import (
    Executor,
    TaskAttempt,
    TaskOutcome,
    check_executor,
    execute_job,
    format_user_traceback,
    resolve_executor,
)
from nbflow.core.patterns.branching import BranchError, chosen_branches, describe_choice
from nbflow.core.patterns.checks import Check, run_check
from nbflow.core.patterns.mapping import MapRun, assemble, split
from nbflow.core.patterns.pools import pool_slots
from nbflow.core.patterns.resources import ResourceError, ResourceScope
from nbflow.core.patterns.sensors import ASSUMED_REASON, SensorTimeout, assumed, poke
from nbflow.core.patterns.trigger_rules import RUN, evaluate
from nbflow.core.result import CheckResult, RunFailed, RunResult
from nbflow.core.run.expansion import MapSteps
from nbflow.core.types import Digest

if TYPE_CHECKING:
    from nbflow.core.dag.task import Task
    from nbflow.core.run.spec import RunSpec

_FLUSH_INTERVAL = 0.25
# Retrying cannot help these: the same value or job will not pickle next time either.
_NOT_RETRIED = (UnpicklableResult, UnpicklableTask, BranchError, SensorTimeout)
_NO_OUTPUT = ("", 0)
"""What `_output` holds for a task that printed nothing (its text, characters dropped)."""


class Runner(MapSteps):
    """One run of a pipeline (create, call `run()` once)."""

    not_retried = _NOT_RETRIED

    def __init__(
        self,
        spec: RunSpec,
        targets: Iterable[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        executor: Any = None,
        max_workers: int | None = None,
        force: bool | Collection[str] = False,
        listeners: Iterable[ev.Listener] = (),
        assume: Collection[str] | Mapping[str, Any] = (),
    ) -> None:
        self.spec = spec
        self.graph = spec.graph
        self.store = spec.store
        self.name = spec.name
        self.run_id = uuid.uuid4().hex[:12]
        if isinstance(targets, str):
            targets = [targets]
        self.targets = list(targets) if targets is not None else self.graph.sinks()
        self.graph.check_known(self.targets, self.name)
        if not isinstance(force, bool):
            force = {force} if isinstance(force, str) else set(force)
            self.graph.check_known(force, self.name)
        self.assume = self._check_assume(assume)
        self.planner = Planner(
            self.name,
            spec.tasks,
            self.graph,
            self.store,
            params or {},
            force,
            resources=spec.resources,
        )
        self.resources = ResourceScope(spec.resources)
        self._checks: dict[str, list[Check]] = {}
        for check in spec.checks.values():
            if check.task not in spec.tasks:
                raise UnknownTaskError(check.task, spec.tasks, self.name)
            self._checks.setdefault(check.task, []).append(check)
        # A misspelt executor fails now, not after the first stale task is planned.
        check_executor(executor)
        self.executor_spec, self.max_workers = executor, max_workers
        self.bus = ev.EventBus([*spec.listeners, *listeners, *ev.default_listeners()])
        self.params = dict(params or {})
        self._cached_events = True
        """Whether a listener wants `TaskCached` events (set when the run starts)."""
        self._unwanted: frozenset[type[ev.Event]] = frozenset()
        self._output: dict[str, tuple[str, int]] = {}
        """task -> (what its last attempt printed, characters dropped from its front)."""
        self.result = RunResult(self.name, self.run_id)
        # The digests that feed downstream keys; the result shows them too.
        self._outputs: dict[str, Digest | None] = self.result.digests
        self._records: dict[str, Record] = {}
        self._pool_use: Counter[str] = Counter()
        self._decisions: dict[str, Decision] = {}
        self._job_ids = 0
        self._last_flush = time.monotonic()
        self._gates: dict[str, list[tuple[str, str]]] = {}
        """task -> (state, reason) imposed by a branch upstream that did not choose it."""
        self._blocked: dict[str, str] = {}
        """task -> why its downstream must not run (a failed blocking check)."""
        self._backlog: deque[TaskAttempt] = deque()
        self._delayed: list[tuple[float, int, TaskAttempt]] = []
        """Retries waiting for their delay: (due, id, attempt), a heap."""
        self._executor: Executor | None = None
        """Started on the first submit: a fully cached run starts none."""
        self._in_flight = 0
        self._running: dict[str, TaskAttempt] = {}
        """TaskAttempt task name -> the job in flight (`running_now`)."""
        self._instances: dict[str, tuple[MapRun, int]] = {}
        """TaskAttempt task name (`process[3]`) -> its mapped task's expansion and index."""

    def _check_assume(self, assume: Collection[str] | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(assume, str):
            assume = {assume}
        values = dict(assume) if isinstance(assume, Mapping) else dict.fromkeys(assume, True)
        self.graph.check_known(values, self.name)
        sensors = [n for n, t in self.spec.tasks.items() if t.options.sensor is not None]
        for name in values:
            if self.spec.tasks[name].options.sensor is None:
                raise NbflowError(
                    f"assume= marks sensors satisfied, and task `{name}` is not a sensor; "
                    f"sensors of pipeline `{self.name}`: {', '.join(sensors) or 'none'}"
                )
        return values

    # --- the run -------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the plan: decide every needed task (`_begin`), start stale ones and collect
        what finishes until every task is final (`_dispatch`), then report the run."""
        start = time.perf_counter()
        emit = self._begin()
        forwarding = ev.forward_inner.set(self._forward_inner if emit else None)
        running = ev.current_run.set(self.run_id)
        try:
            self._dispatch()
        except BaseException as exc:
            if emit:  # listeners (the history) learn that this run will not finish
                emit(
                    ev.RunFinished(
                        pipeline=self.name,
                        run_id=self.run_id,
                        states=dict(self.result.states),
                        duration=time.perf_counter() - start,
                        ok=False,
                        aborted=f"{type(exc).__name__}: {exc}",
                    )
                )
            raise
        finally:
            ev.current_run.reset(running)
            ev.forward_inner.reset(forwarding)
            if self._executor is not None:
                self._executor.shutdown()
            self.resources.close()
            self.store.flush()
        self.result.duration = time.perf_counter() - start
        if emit:
            emit(
                ev.RunFinished(
                    pipeline=self.name,
                    run_id=self.run_id,
                    states=dict(self.result.states),
                    duration=self.result.duration,
                    ok=self.result.ok,
                    cached={n: self._records[n] for n in self.result.cached},
                )
            )
        return self.result

    def _begin(self) -> Callable[[ev.Event], None] | None:
        """Plan the needed tasks, tell the listeners the run started, and queue the tasks
        that wait for nothing. Returns the bus's `emit` (None: no listener)."""
        graph = self.graph
        needed = set(self.targets) | graph.ancestors(self.targets)
        order = [n for n in graph.order if n in needed]
        self.planner.check_params(order)
        self.static = self.planner.plan(needed)
        emit = self.bus.emit if self.bus else None
        # Events no listener wants are not made (see `EventBus.wants`).
        self._unwanted = frozenset(
            k for k in (ev.TaskCached, ev.TaskQueued, ev.TaskStarted) if not self.bus.wants(k)
        )
        self._cached_events = bool(emit) and ev.TaskCached not in self._unwanted
        if emit:
            emit(
                ev.RunStarted(
                    pipeline=self.name,
                    run_id=self.run_id,
                    tasks=tuple(order),
                    stale={n: d.reason for n, d in self.static.items() if not d.fresh},
                    edges=tuple((u, n) for n in order for u in graph.upstream[n]),
                    quiet=graph.quiet,
                    params=self.params,
                    parent=ev.current_run.get() or "",
                    source=source_file(self.spec.tasks.values()),
                    running=self.running_now,
                )
            )
        settled = self._settle_cached(order)
        self._index = {n: i for i, n in enumerate(order)}
        upstream, tasks = graph.upstream, self.spec.tasks
        self._waiting = {
            n: sum(u not in settled for u in upstream[n]) for n in order if n not in settled
        }
        self._ready = []
        for n, waiting in self._waiting.items():
            if not waiting:
                heapq.heappush(self._ready, (-tasks[n].options.priority, self._index[n], n))
        return emit

    def _settle_cached(self, order: list[str]) -> set[str]:
        """Settle, in one pass before dispatching, each task that is fresh and whose upstream
        are all cached: `_start` takes it from the cache (or skips it by its trigger rule),
        as dispatching would, without a queue.

        A fully cached run of 1,000 tasks then costs its plan plus a loop. Tasks with a
        branch, a check or a mapped expansion (their outcome gates what follows), and
        those downstream of one, are left to the dispatcher.
        """
        settled: set[str] = set()
        upstream, tasks, static, states = (
            self.graph.upstream,
            self.spec.tasks,
            self.static,
            self.result.states,
        )
        for name in order:
            options = tasks[name].options
            if (
                not static[name].fresh
                or options.branch
                or options.map is not None
                or name in self._checks
                or not all(states.get(u) == "cached" for u in upstream[name])
            ):
                continue
            attempt = self._start(name)
            assert attempt is None  # fresh, upstream cached: the static decision stands
            settled.add(name)
        return settled

    def _dispatch(self) -> None:
        """Until every needed task is final: start what may start, then collect outcomes."""
        while True:
            self._start_what_may()
            if self._in_flight == 0:
                if self._delayed:  # only retries wait: sleep until the first is due
                    time.sleep(max(0.0, self._delayed[0][0] - time.monotonic()))
                    continue
                if self._ready or self._backlog:
                    continue
                return
            self._collect()

    def _free(self) -> bool:
        """A worker is free (before the first submit, the executor is not started: yes)."""
        executor = self._executor
        return executor is None or self._in_flight < executor.max_workers

    def _send(self, job: TaskAttempt) -> None:
        """Submit `job`, starting the executor on the first one (a cached run starts none)."""
        if self._executor is None:
            self._executor = resolve_executor(self.executor_spec, self.max_workers)
        self._submit(self._executor, job)
        self._in_flight += 1

    def _start_what_may(self) -> None:
        """Submit, while workers are free and pools have slots: mapped instances waiting for
        a worker, then ready tasks by priority, then retries whose delay has passed."""
        backlog, ready = self._backlog, self._ready
        while backlog and self._free():
            job = backlog[0]
            if job.pool and self._pool_use[job.pool] >= pool_slots(job.pool):
                break
            backlog.popleft()
            self._send(job)
        blocked: list[tuple[int, int, str]] = []
        while ready and not backlog and self._free():
            item = heapq.heappop(ready)
            name = item[2]
            pool = self.spec.tasks[name].options.pool
            if pool and self._pool_use[pool] >= pool_slots(pool):
                blocked.append(item)  # waits for a slot of its pool
                continue
            started = self._start(name)
            if started is None:
                self._release(name, self._waiting, ready, self._index)
            elif isinstance(started, list):  # a mapped task's instances
                backlog.extend(started)
            else:
                self._send(started)
        for item in blocked:
            heapq.heappush(ready, item)
        now = time.monotonic()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now and self._free():
            _, _, job = heapq.heappop(delayed)
            self._send(job)

    def _collect(self) -> None:
        """Wait for outcomes (at most until the next retry is due) and take each one in."""
        executor = self._executor
        assert executor is not None
        delayed = self._delayed
        wait = max(0.0, delayed[0][0] - time.monotonic()) if delayed else None
        for outcome in executor.poll(wait):
            self._in_flight -= 1
            job = outcome.job
            self._running.pop(job.task, None)
            if job.pool:
                self._pool_use[job.pool] -= 1
            instance = self._instances.get(job.task)
            if instance is not None:
                retry = self._complete_instance(outcome, *instance)
            else:
                retry = self._complete(outcome)
            if retry is not None:
                heapq.heappush(delayed, retry)
            elif instance is None:
                self._release(job.task, self._waiting, self._ready, self._index)

    def _release(
        self,
        name: str,
        waiting: dict[str, int],
        ready: list[tuple[int, int, str]],
        index: dict[str, int],
    ) -> None:
        for down in self.graph.downstream[name]:
            if down in waiting:
                waiting[down] -= 1
                if not waiting[down]:
                    heapq.heappush(
                        ready, (-self.spec.tasks[down].options.priority, index[down], down)
                    )

    # --- one task ------------------------------------------------------------

    def _start(self, name: str) -> TaskAttempt | list[TaskAttempt] | None:
        """Settle `name` now (skipped or upstream_failed by its trigger rule, cached) or
        return its first attempt (a mapped task: its instances' attempts)."""
        task = self.spec.tasks[name]
        verdict, reason = self._trigger_verdict(name)
        if verdict != RUN:
            self._skip(name, verdict, reason)
            return None
        decision = self._decision(name)
        self._decisions[name] = decision
        if decision.fresh:
            assert decision.record is not None
            self._take_cached(name, decision.record)
            return None
        self.result.reasons[name] = decision.reason
        kwargs = self._arguments(name)
        if kwargs is None:
            return None
        self._emit(ev.TaskQueued, name, reason=decision.reason)
        if task.options.map is not None:
            return self._expand(name, decision, kwargs)
        return self._first_attempt(name, kwargs)

    def _trigger_verdict(self, name: str) -> tuple[str, str]:
        """RUN, or the state its trigger rule (or a branch upstream) gives `name`, and why."""
        result = self.result
        ups = self.graph.upstream[name]
        if self._gates or self._blocked:
            verdict, reason = self._gated(name, ups)
        else:
            rule = self.spec.tasks[name].options.trigger_rule
            verdict, reason = evaluate(rule, (result.states[u] for u in ups)), ""
        if verdict != RUN and not reason:
            failed_up = [u for u in ups if result.states[u] not in ("done", "cached")]
            if failed_up:
                reason = f"upstream {', '.join(f'`{u}`' for u in failed_up)} {result.states[failed_up[0]]}"
        return verdict, reason

    def _take_cached(self, name: str, record: Record) -> None:
        """`name` is fresh: its stored value stands for this run (loaded only when asked)."""
        task, result = self.spec.tasks[name], self.result
        self._records[name] = record
        if task.options.branch:
            try:
                self._choose(name, self._value(name))
            except BranchError as exc:  # the graph changed since the choice was cached
                self._fail(name, exc, short_trace(exc), 1)
                return
        result.states[name] = "cached"
        result.cached.append(name)
        self._outputs[name] = record["digest"]
        result._loaders[name] = functools.partial(self._load, name, record)
        if name in self._checks:
            self._run_checks(name, cached=True)
        if record.get("metadata"):
            result.metadata[name] = record["metadata"]
        if task.options.map is not None:
            labels = record.get("map_labels") or range(record.get("map_size", 0))
            result.map_states[name] = dict.fromkeys(labels, "cached")
            result.map_executed[name] = []
        if self._cached_events:
            self._emit(
                ev.TaskCached,
                name,
                metadata=record.get("metadata"),
                key=record.get("key") or "",
                digest=record.get("digest") or "",
                size=record.get("size") or 0,
            )

    def _arguments(self, name: str) -> dict[str, Any] | None:
        """The task's arguments: upstream values, run parameters, resources (None: a
        resource failed, and so did the task)."""
        graph, result, task = self.graph, self.result, self.spec.tasks[name]
        kwargs: dict[str, Any] = {}
        for param, upstream in graph.deps[name].items():
            kwargs[param] = (
                self._value(upstream) if result.states[upstream] in ("done", "cached") else None
            )
        for param in graph.run_params[name]:
            kwargs[param] = self.planner.param_value(task, param)
        for param in graph.resources.get(name, ()):
            try:
                kwargs[param] = self.resources.get(param, name)
            except ResourceError as exc:
                self._fail(name, exc, format_user_traceback(exc.__cause__ or exc), 1)
                return None
        return kwargs

    def _first_attempt(self, name: str, kwargs: dict[str, Any]) -> TaskAttempt:
        """Attempt 1 of `name` (a sensor pokes; an assumed sensor returns its assumed value)."""
        task = self.spec.tasks[name]
        fn = task.fn
        if task.options.sensor is not None:
            if name in self.assume:
                fn, kwargs = functools.partial(assumed, self.assume[name]), {}
                self.result.reasons[name] = ASSUMED_REASON
            else:
                fn = functools.partial(poke, task.options.sensor, name, fn)
        self._job_ids += 1
        return TaskAttempt(
            id=self._job_ids,
            task=name,
            fn=fn,
            kwargs=kwargs,
            attempt=1,
            timeout=task.options.timeout,
            pool=task.options.pool,
            priority=task.options.priority,
        )

    def _skip(self, name: str, state: str, reason: str) -> None:
        self.result.states[name] = state
        self.result.reasons[name] = reason
        self._outputs[name] = None
        self._emit(ev.TaskSkipped, name, state=state, reason=reason)

    def _decision(self, name: str) -> Decision:
        static = self.static[name]
        # The static decision stands when every upstream was fresh at planning time.
        if static.key is not None and all(
            self.result.states[u] == "cached" for u in self.graph.upstream[name]
        ):
            return static
        digests = {p: self._outputs.get(u) for p, u in self.graph.deps[name].items()}
        decision = self.planner.decide(name, digests)
        if decision.reason.startswith("upstream `") and static.reason.startswith("upstream `"):
            decision.reason = static.reason  # keep the root cause found at planning time
        return decision

    def _submit(self, executor: Any, job: TaskAttempt) -> None:
        if job.pool:
            self._pool_use[job.pool] += 1
        if job.task not in self._instances:
            self._emit(ev.TaskStarted, job.task, attempt=job.attempt)
        job.started, job.output = time.time(), None  # a retry's copy holds the last attempt's
        job.run_id = self.run_id
        self._running[job.task] = job
        executor.submit(job)

    def running_now(self) -> dict[str, ev.RunningTask]:
        """The tasks in flight now (`RunStarted.running`), read from any thread.

        The instances of a mapped task show as the mapped task: since its first instance
        started, with what its running instances printed so far, one section each.
        """
        # A copy first, in one step under the GIL: the run's thread changes the dict meanwhile.
        jobs = list(self._running.values())
        shown: dict[str, tuple[float, list[str], int]] = {}
        for job in jobs:
            text, dropped = job.output.snapshot() if job.output is not None else ("", 0)
            instance = self._instances.get(job.task)
            name = instance[0].task if instance is not None else job.task
            if instance is not None and text:
                text = f"--- {job.task}\n{text}"
            started, parts, cut = shown.get(name, (job.started, [], 0))
            if text:
                parts.append(text)
            shown[name] = (min(started, job.started), parts, cut + dropped)
        return {
            name: ev.RunningTask(started=started, output="".join(parts), dropped=cut)
            for name, (started, parts, cut) in shown.items()
        }

    def _complete(self, outcome: TaskOutcome) -> tuple[float, int, TaskAttempt] | None:
        job, name, result = outcome.job, outcome.job.task, self.result
        task = self.spec.tasks[name]
        result.attempts[name] = job.attempt
        result.durations[name] = result.durations.get(name, 0.0) + outcome.duration
        error, trace = outcome.error, outcome.traceback
        if "output" in outcome.extra:
            output = (outcome.extra["output"], outcome.extra.get("dropped", 0))
            self._output[name] = output
            result.logs[name] = output[0]
        else:
            self._output.pop(name, None)
            result.logs.pop(name, None)
        if error is None and task.options.branch:
            try:
                self._choose(name, outcome.value)
            except BranchError as exc:
                error, trace = exc, short_trace(exc)
        if error is None:
            try:
                self._store_result(name, outcome.value, outcome.duration)
            except UnpicklableResult as exc:
                error, trace = exc, short_trace(exc)
        if error is None:
            self._done(name, result.durations[name], job.attempt)
            return None
        if isinstance(error, SensorTimeout) and error.soft_fail:
            self._skip(name, "skipped", f"soft fail: {error}")
            return None
        if job.attempt <= task.options.retries and not isinstance(error, _NOT_RETRIED):
            delay = task.options.retry_delay_for(job.attempt)
            self._emit(
                ev.TaskRetrying,
                name,
                attempt=job.attempt,
                delay=delay,
                error=f"{type(error).__name__}: {error}",
                output=self._output.get(name, ("", 0))[0],
            )
            self._job_ids += 1
            retry = job.next_attempt(self._job_ids)
            return (time.monotonic() + delay, retry.id, retry)
        self._fail(name, error, trace, job.attempt)
        return None

    def _done(self, name: str, duration: float, attempts: int) -> None:
        """`name` ran and its value is stored: record it, tell listeners, run its checks."""
        result = self.result
        result.states[name] = "done"
        result.executed.append(name)
        if self.bus:
            # Made here in one call, not through `_emit`: this is once per task of every cold
            # run with a listener (the run history is one), and what recording costs is
            # mostly what it costs to make this event (no `**fields` dict, one key look-up).
            key = self._decision_key(name) or ""
            record = self._records.get(name)
            stored = record is not None and bool(key) and record.get("key") == key
            output, dropped = self._output.get(name, _NO_OUTPUT)
            self.bus.emit(
                ev.TaskFinished(
                    pipeline=self.name,
                    run_id=self.run_id,
                    task=name,
                    duration=duration,
                    attempts=attempts,
                    metadata=result.metadata.get(name),
                    output=output,
                    output_dropped=dropped,
                    reason=result.reasons.get(name, ""),
                    key=key,
                    digest=(record.get("digest") or "") if stored and record else "",
                    size=(record.get("size") or 0) if stored and record else 0,
                    parts=record.get("parts") if stored and record else None,
                    shorts=record.get("shorts") if stored and record else None,
                )
            )
        if name in self._checks:
            self._run_checks(name)

    def _fail(self, name: str, error: BaseException, trace: str, attempts: int) -> None:
        result = self.result
        result.states[name] = "failed"
        result.errors[name] = (error, trace)
        result.attempts[name] = attempts
        self._outputs[name] = None
        summary = f"{type(error).__name__}: {error}"
        key = self._decisions[name].key if name in self._decisions else None
        self.store.update_pipeline_state(
            self.name, failed={name: {"key": key, "error": summary[:300]}}
        )
        output, dropped = self._output.get(name, ("", 0))
        self._emit(
            ev.TaskFailed,
            name,
            error=summary,
            traceback=trace,
            attempts=attempts,
            duration=result.durations.get(name, 0.0),
            output=output,
            output_dropped=dropped,
            reason=result.reasons.get(name, ""),
        )

    def _decision_key(self, name: str) -> str | None:
        decision = self._decisions.get(name)
        return decision.key if decision is not None else None

    def _store_result(
        self, name: str, value: Any, duration: float, extra: Mapping[str, Any] | None = None
    ) -> None:
        task = self.spec.tasks[name]
        decision = self._decisions[name]
        metadata = None
        unwrap = getattr(value, "__nbflow_output__", None)
        if unwrap is not None:
            value, metadata = unwrap()
            self.result.metadata[name] = metadata
        if task.options.cache and decision.key is not None:
            payload = serialize(value, name)
            record: Record = {
                "key": decision.key,
                "pipeline": self.name,
                "task": name,
                "parts": decision.parts,
                "shorts": decision.shorts,
                "created": time.time(),
                "duration": duration,
                "metadata": metadata,
            }
            if extra:
                record.update(extra)
            self.store.put(record, payload)
            self._records[name] = record
            self._outputs[name] = payload.digest
        else:
            try:
                self._outputs[name] = digest_value(value)
            except Unfingerprintable:
                # Nothing to compare with next time: downstream must rerun too.
                self._outputs[name] = Digest(f"volatile-{uuid.uuid4().hex}")
        self.result._values[name] = value
        if name in self.planner.state["failed"]:
            self.store.update_pipeline_state(self.name, failed={name: None})
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Commit buffered cache records at most every `_FLUSH_INTERVAL` seconds."""
        now = time.monotonic()
        if now - self._last_flush > _FLUSH_INTERVAL:
            self.store.flush()
            self._last_flush = now

    def _emit(self, kind: type[ev.TaskEvent], task: str, **fields: Any) -> None:
        """Tell the listeners, if there are any, that `kind` happened to `task`."""
        # `_unwanted` first: a set look-up ends most calls (the TaskQueued and TaskStarted of
        # each task, when only the history listens), and `bool(self.bus)` is a method call.
        if kind not in self._unwanted and self.bus:
            self.bus.emit(kind(pipeline=self.name, run_id=self.run_id, task=task, **fields))

    def _forward_inner(self, task: str, event: ev.Event) -> None:
        """An event of sub-pipeline task `task`'s inner run, running in this thread."""
        self._emit(ev.SubpipelineEvent, task, event=event)

    # --- gates: branches and blocking checks ----------------------------------

    def _choose(self, name: str, value: Any) -> None:
        """Record a branch task's choice; its other direct downstream tasks will be skipped."""
        chosen = chosen_branches(name, value, self.graph.downstream[name])
        reason = describe_choice(name, chosen)
        for down in self.graph.downstream[name]:
            if down not in chosen:
                self._gates.setdefault(down, []).append(("skipped", reason))

    def _run_checks(self, name: str, *, cached: bool = False) -> None:
        """Judge `name`'s value. For a cached task, a check whose code and value are those of
        its last run is not run again: its result is reused, and the value is not loaded."""
        digest = self._outputs.get(name)
        memos = self.planner.state.get("checks", {}) if cached else {}
        remember: dict[str, dict[str, Any]] = {}
        for check in self._checks[name]:
            code = self._check_print(check)
            memo = memos.get(check.name)
            if (
                code is not None
                and memo is not None
                and (memo["task"], memo["value"], memo["code"]) == (name, digest, code)
            ):
                outcome = CheckResult(
                    check.name, name, memo["passed"], memo["message"], check.blocking, cached=True
                )
            else:
                outcome = run_check(check, self._value(name))
                if code is not None and digest is not None and not digest.startswith("volatile-"):
                    remember[check.name] = {
                        "task": name,
                        "value": digest,
                        "code": code,
                        "passed": outcome.passed,
                        "message": outcome.message,
                    }
            self.result.checks[check.name] = outcome
            if not outcome.passed and check.blocking and name not in self._blocked:
                self._blocked[name] = str(outcome).replace(" FAILED", " failed")
            self._emit(
                ev.CheckFinished,
                name,
                check=check.name,
                passed=outcome.passed,
                message=outcome.message,
                blocking=check.blocking,
                cached=outcome.cached,
            )
        if remember:
            self.store.update_pipeline_state(self.name, checks=remember)

    def _check_print(self, check: Check) -> str | None:
        """The digest of a check's code, or None when it cannot be trusted unchanged."""
        try:
            fp = self.planner.function_print(check.fn, f"check `{check.name}`")
        except Exception:
            return None
        return None if fp.volatile else str(fp.digest)

    def _gated(self, name: str, upstream: tuple[str, ...]) -> tuple[str, str]:
        """Verdict and reason for a task that a branch or a failed blocking check may stop."""
        states = self.result.states
        gates = self._gates.get(name, ())
        for state, reason in gates:
            if state == "skipped":  # a branch that did not choose it: skipped, whatever its rule
                return "skipped", reason
        blocked = self._blocked
        verdict = evaluate(
            self.spec.tasks[name].options.trigger_rule,
            ("failed" if u in blocked else states[u] for u in upstream),
        )
        if verdict != RUN:
            for u in upstream:
                if u in blocked:
                    return verdict, blocked[u]
        return verdict, ""

    # --- values --------------------------------------------------------------

    def _value(self, name: str) -> Any:
        values = self.result._values
        if name in values:
            return values[name]
        value = self._load(name, self._records[name])
        values[name] = value
        return value

    def _load(self, name: str, record: Record) -> Any:
        try:
            return self.store.load(record)
        except IntegrityError as exc:
            warnings.warn(
                f"cached value of task `{name}` was unusable ({exc}); recomputing it",
                NbflowWarning,
                stacklevel=2,
            )
            return self._recompute(name)

    def _recompute(self, name: str) -> Any:
        """Run a task again in this process because its cached value failed its integrity check."""
        task = self.spec.tasks[name]
        kwargs = {p: self._value(u) for p, u in self.graph.deps[name].items()}
        for p in self.graph.run_params[name]:
            kwargs[p] = self.planner.param_value(task, p)
        for p in self.graph.resources.get(name, ()):
            kwargs[p] = self.resources.get(p, name)
        fn = task.fn
        if task.options.map is not None:
            fn = functools.partial(_map_in_process, name, task.options.map, task.fn)
        outcome = execute_job(
            TaskAttempt(id=-1, task=name, fn=fn, kwargs=kwargs, timeout=task.options.timeout)
        )
        if outcome.error is not None:
            raise outcome.error
        self._store_result(name, outcome.value, outcome.duration)
        self.store.flush()
        return outcome.value


_NBFLOW_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
"""The nbflow package folder (this file is nbflow/core/run/runner.py)."""


def source_file(tasks: Iterable[Task]) -> str:
    """The file the first task whose code is on disk comes from ("" for cells and `exec`):
    the module or notebook that defines the pipeline, for `RunStarted.source`. nbflow's own
    task functions (a notebook task's) do not count. Only the first 16 tasks are looked at:
    a 1,000-cell pipeline costs no more than a small one."""
    for task in itertools.islice(tasks, 16):
        fn = task.fn
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        code = getattr(fn, "__code__", None)
        path = getattr(code, "co_filename", "") or ""
        if not path or path.startswith("<") or path.startswith(_NBFLOW_DIR):
            continue
        if os.path.isfile(path):
            return os.path.abspath(path)
    return ""


def _map_in_process(task: str, param: str, fn: Any, **kwargs: Any) -> Any:
    labels, elements, is_dict = split(task, param, kwargs[param])
    values = [fn(**{**kwargs, param: e}) for e in elements]
    return assemble(labels, values, is_dict)


def raise_for_failures(result: RunResult) -> None:
    """Raise `RunFailed` for the first task that failed in `result`, chaining its exception."""
    for name in result.states:
        if result.states[name] == "failed":
            error, trace = result.errors[name]
            raise RunFailed(result, name, error, trace) from error
