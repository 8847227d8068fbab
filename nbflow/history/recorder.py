"""The recorder: a listener of every run's events that writes the run into the history.

Responsibilities:

- **Batches.** A run costs one transaction when it starts (so a run that is
  killed is still found) and one when it ends; between them the task rows
  that finished, and the tasks in flight with what they printed so far, are
  written at most once a `FLUSH_INTERVAL` by the heartbeat thread (and a
  heartbeat), never one transaction per task. In the run's thread a finished
  task costs appending its event, a cached task a tuple.
- **Links.** A run's parent is the run whose task started it in this thread
  (`RunStarted.parent`, a sub-pipeline), else `$NBFLOW_PARENT_RUN` (set by a
  notebook run for its kernel, and by a job run for its notebook run).
- **The last write off the run's thread.** The end of a run (its task rows) is
  written by a writer thread, so `run()` returns without waiting for it;
  readers in this process wait for it (`drain`), and so does the interpreter's
  exit. A process killed in that moment leaves its run `interrupted`.
- **Environment.** The start row holds the run's environment (`env.py`: Python,
  platform, nbflow, the source file's digest, git) and names its package set,
  written once per set and process; the git answer, when it had to be asked,
  comes with the end row. Each computed task's key parts (from `TaskFinished`)
  are written once per key with its row, for `diff_runs`.
- **Status snapshots.** At a run's end, the verdict on its tasks after it (`after_run`:
  from its plan and its states, no second plan), in the end's transaction. And each
  `StatusComputed` (`pipe.status()`, `pipe.explain()`, the widget), coalesced: at most
  one write per pipeline per `SNAPSHOT_INTERVAL`, the newest, by the writer thread.
- **Never in the way.** A write that fails (a locked or full disk, a home
  that cannot be used) is one `NbflowWarning` per run; the run goes on and its
  cache is untouched, the rest of that run is not recorded.
- **Off switch.** `$NBFLOW_HISTORY=0` (read at each run start) or
  `set_recording(False)`: nothing is recorded and the recorder is not even a
  listener (the baseline of `benchmarks/bench_history.py`).

`track_run` records runs that are not pipeline runs (notebook runs, job runs).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import queue
import socket
import sys
import threading
import time
import uuid
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from nbflow.core import events as ev
from nbflow.core.errors import NbflowWarning
from nbflow.core.home import home_dir
from nbflow.history import logs
from nbflow.history.env import SOURCE_ENV, GitLook, environment
from nbflow.history.env import source_file as env_source_file
from nbflow.history.store import FILENAME, HEARTBEAT, HistoryStore

FLUSH_INTERVAL = 1.0
"""Seconds between the batched writes of a run's finished tasks and of what its running
tasks printed so far (`nbflow logs --follow` shows a line within about this)."""
PARENT_ENV = "NBFLOW_PARENT_RUN"
SWITCH_ENV = "NBFLOW_HISTORY"

_STORES: OrderedDict[Path, HistoryStore] = OrderedDict()
_STORES_LOCK = threading.Lock()
_KEEP_OPEN = 4


def enabled() -> bool:
    """Whether runs are recorded: `$NBFLOW_HISTORY` is not `0`/`false`/`off`."""
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def open_store(home: Path | None = None) -> HistoryStore:
    """The history store of `home` (default: the active home), one connection per process."""
    home = home if home is not None else home_dir()
    path = home / FILENAME
    with _STORES_LOCK:
        store = _STORES.get(path)
        if store is None:
            store = HistoryStore(path)
            _STORES[path] = store
            while len(_STORES) > _KEEP_OPEN:  # test suites and tools switch homes
                # Forgotten, not closed: a run still writing holds it; the connection
                # closes when the last holder lets it go.
                _STORES.popitem(last=False)
        else:
            _STORES.move_to_end(path)
        return store


def _version() -> str:
    """The version of the nbflow code that runs (read when a run starts: `nbflow` imports us)."""
    module = sys.modules.get("nbflow")
    return str(getattr(module, "__version__", "unknown"))


_HOST = socket.gethostname()
# Whatever a write raises (sqlite3.Error, OSError, HomeError...) is a warning, never the run's.
_WRITE_ERRORS = (Exception,)


class _Run:
    """What the recorder holds of one pipeline run until it is written."""

    __slots__ = (
        "attempts",
        "broken",
        "cached",
        "checks",
        "errors",
        "git",
        "graph",
        "home",
        "id",
        "key_parts",
        "last_flush",
        "live",
        "name",
        "pending",
        "quiet",
        "reasons",
        "row",
        "running",
        "started",
        "store",
    )

    def __init__(self, run_id: str, name: str, home: Path, store: HistoryStore) -> None:
        self.id, self.name, self.home, self.store = run_id, name, home, store
        self.row: dict[str, Any] = {}
        self.graph: dict[str, Any] | None = None
        self.reasons: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.attempts: dict[str, list[dict[str, Any]]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.quiet: frozenset[tuple[str, str]] = frozenset()
        """The run's edges that carry no staleness (`RunStarted.quiet`)."""
        self.errors: dict[str, str] = {}
        """task -> the error of its last attempt, for the tasks that failed (the snapshot)."""
        self.pending: deque[dict[str, Any] | ev.TaskFinished] = deque()
        """Finished tasks not yet written: rows (with `output` to write as a log file), or the
        `TaskFinished` event itself, made into a row by the thread that writes it. A deque:
        the run's thread appends while a writing thread pops from the left, both atomic, so
        neither needs the lock and no item falls between them."""
        self.cached: deque[tuple[str, str, str, int, Any, float]] = deque()
        self.key_parts: list[tuple[str, Any, Any]] = []
        """(key, parts, shorts) of the tasks computed, not yet written (see `store.key_parts`);
        filled by the writing thread as it makes rows of `TaskFinished` events."""
        self.last_flush = time.monotonic()
        self.running: Callable[[], dict[str, ev.RunningTask]] | None = None
        """The run's live view of its tasks in flight (`RunStarted.running`)."""
        self.live: dict[str, tuple[tuple[float, int, int], dict[str, Any]]] = {}
        """task -> (what was last written of it while it ran, the log columns written)."""
        self.broken = False
        self.git: GitLook | None = None
        """The look at the source's repository still under way when the run started."""


class Recorder:
    """The listener `nbflow` registers with `nbflow.core.events.add_default_listener`.

    It ignores `TaskCached`, `TaskQueued` and `TaskStarted` events (the runner then makes
    none for it, which keeps recording cheap): the tasks loaded from the cache come with
    `RunFinished.cached` (written as one column of the run), a task's reason and duration
    with its `TaskFinished`/`TaskFailed`, each failed attempt with its `TaskRetrying`. The
    tasks in flight, and what they printed so far, are read from the run's live view
    (`RunStarted.running`) by each batched write: a run killed mid-task shows the tasks it
    finished and the one it was running (`interrupted`), at no cost per task.
    """

    ignores = frozenset({ev.TaskCached, ev.TaskQueued, ev.TaskStarted})

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._beat: threading.Thread | None = None
        self._writes: queue.Queue[Callable[[], None]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._snapshots: dict[tuple[Path, str], tuple[ev.StatusComputed, Path]] = {}
        """(history file, pipeline) -> the newest status not yet written, and its home."""
        self._snapshot_due: dict[tuple[Path, str], threading.Timer | None] = {}
        """The snapshots whose write is planned: by a timer (None: already submitted)."""
        self._snapshot_written: dict[tuple[Path, str], float] = {}
        """When (monotonic) each pipeline's last snapshot was written."""
        self._snapshot_lock = threading.Lock()

    # --- the writer thread -------------------------------------------------------

    def _submit(self, write: Callable[[], None]) -> None:
        """Do `write` on the writer thread: a run's last write costs the run nothing."""
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="nbflow-history-writer", daemon=True
                )
                self._writer.start()
        self._writes.put(write)

    def _write_loop(self) -> None:
        while True:
            write = self._writes.get()
            try:
                write()
            except Exception:
                # `_warn` raised (warnings as errors): the writer must go on for other runs.
                pass
            finally:
                # Not held while waiting for the next: it holds a run's rows until then.
                del write
                self._writes.task_done()

    def drain(self) -> None:
        """Wait until every run that ended in this process is written (readers call this),
        and every status snapshot still waiting for its second."""
        with self._snapshot_lock:
            waiting = [k for k, timer in self._snapshot_due.items() if timer is not None]
            for key in waiting:
                timer = self._snapshot_due[key]
                if timer is not None:
                    timer.cancel()
                self._snapshot_due[key] = None
        for key in waiting:
            self._submit(functools.partial(self._write_snapshot, key))
        if self._writer is not None and threading.current_thread() is not self._writer:
            self._writes.join()

    # --- status snapshots --------------------------------------------------------

    def _status(self, event: ev.StatusComputed) -> None:
        """Keep the newest status of a pipeline and have it written: at once when its last
        snapshot was written over `SNAPSHOT_INTERVAL` ago, else when that has passed (the
        statuses computed meanwhile are coalesced into the newest). Costs the caller a dict
        update; the write is the writer thread's."""
        if not enabled():
            return
        try:
            home = home_dir()
        except _WRITE_ERRORS:
            return
        key = (home / FILENAME, event.pipeline)
        with self._snapshot_lock:
            self._snapshots[key] = (event, home)
            if key in self._snapshot_due:
                return  # a write is planned: it takes this one
            wait = self._snapshot_written.get(key, -1e9) + SNAPSHOT_INTERVAL - time.monotonic()
            if wait > 0:
                timer = threading.Timer(wait, self._snapshot_timer, (key,))
                timer.daemon = True
                self._snapshot_due[key] = timer
                timer.start()
                return
            self._snapshot_due[key] = None
        self._submit(functools.partial(self._write_snapshot, key))

    def _snapshot_timer(self, key: tuple[Path, str]) -> None:
        with self._snapshot_lock:
            if self._snapshot_due.get(key) is None:
                return  # drained meanwhile
            self._snapshot_due[key] = None
        self._submit(functools.partial(self._write_snapshot, key))

    def _write_snapshot(self, key: tuple[Path, str]) -> None:
        """On the writer thread: write the newest status of `key` as a snapshot."""
        with self._snapshot_lock:
            self._snapshot_due.pop(key, None)
            found = self._snapshots.pop(key, None)
            self._snapshot_written[key] = time.monotonic()
        if found is None:
            return
        event, home = found
        source = env_source_file(event.source)
        verdicts = {
            task: list(verdict)
            for task, verdict in event.verdicts.items()
            if verdict[0] != "fresh" or verdict[2]
        }
        row = {
            "pipeline": event.pipeline,
            "taken": event.time,
            "origin": "status",
            "host": _HOST,
            "pid": os.getpid(),
            "source": str(source) if source is not None else None,
            "tasks": list(event.tasks),
            "edges": [list(e) for e in event.edges],
            "verdicts": verdicts,
        }
        try:
            open_store(home).write(snapshots=[row])
        except _WRITE_ERRORS as exc:
            warnings.warn(
                f"the run history could not record the status of `{event.pipeline}` "
                f"({type(exc).__name__}: {exc})",
                NbflowWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return "<nbflow history recorder>"

    # --- events ----------------------------------------------------------------

    def __call__(self, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.TaskFinished:
            # The hot path of a cold run, in the run's own thread: keep the event, nothing more
            # (no row, no lock, no clock, no I/O). The heartbeat thread writes it within a
            # `FLUSH_INTERVAL` (so a killed run still shows it), else the end of the run does,
            # on the writer thread; either makes its row (`_finished_row`). Events are frozen:
            # holding one is as safe as holding a row built from it.
            run = self._runs.get(event.run_id)
            if run is not None:
                run.pending.append(event)  # type: ignore[arg-type]
            return
        if kind is ev.TaskCached:  # not sent by the runner (`ignores`); a listener may
            run = self._runs.get(event.run_id)
            if run is not None:
                e: Any = event
                run.cached.append((e.task, e.key, e.digest, e.size, e.metadata, e.time))
            return
        if kind is ev.RunStarted:
            self._start(event)  # type: ignore[arg-type]
            return
        if kind is ev.StatusComputed:
            self._status(event)  # type: ignore[arg-type]
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return
        with self._lock:
            self._handle(run, event)
            if kind is ev.RunFinished:
                self._finish(run, event)  # type: ignore[arg-type]

    @staticmethod
    def _finished_row(run: _Run, event: ev.TaskFinished) -> dict[str, Any]:
        """The row of a task that finished, made by the thread that writes it.

        `run.attempts[task]` is complete by then: a task's `TaskRetrying` events come before
        its `TaskFinished`, and no event of the task follows it."""
        attempts = run.attempts.get(event.task)
        start = event.time - event.duration
        if attempts:  # retried: the earlier attempts came with TaskRetrying
            attempts[0]["start"] = start
            attempts.append({"number": event.attempts, "end": event.time})
        if event.parts is not None and event.key:
            run.key_parts.append((event.key, event.parts, event.shorts))
        return {
            "run_id": run.id,
            "task": event.task,
            "state": "done",
            "cached": 0,
            "reason": event.reason or run.reasons.get(event.task, ""),
            "attempts": attempts,
            "started": start,
            "ended": event.time,
            "duration": event.duration,
            "key": event.key or None,
            "digest": event.digest or None,
            "size": event.size or None,
            "metadata": event.metadata,
            "output": event.output,
            "output_dropped": event.output_dropped,
        }

    def _start(self, event: ev.RunStarted) -> None:
        if not enabled():
            return
        try:
            home = home_dir()
            store = open_store(home)
        except _WRITE_ERRORS as exc:
            _warn(event.run_id, event.pipeline, exc)
            return
        run = _Run(event.run_id, event.pipeline, home, store)
        params = history_params(dict(event.params or {}))
        version = _version()
        env, package_sets, run.git = _environment(store, version, event.source)
        partition = params.get("partition")
        run.row = {
            "id": event.run_id,
            "kind": "pipeline",
            "name": event.pipeline,
            "params": params,
            "partition": None if partition is None else str(partition),
            "started": event.time,
            "state": "running",
            "host": _HOST,
            "pid": os.getpid(),
            "version": version,
            "parent": event.parent or os.environ.get(PARENT_ENV) or None,
            "heartbeat": event.time,
            "env": env,
            "packages": env.pop("packages_digest", None),
        }
        # Written with the run's end, encoded on the writer thread: the graph of a 1,000-task
        # pipeline is ~40 KB of JSON, too dear for the start of every (cached) rerun. A run
        # killed mid-way is reported without its edges.
        run.graph = {"tasks": event.tasks, "edges": event.edges}
        run.quiet = frozenset(event.quiet)
        run.reasons = dict(event.stale)
        run.running = event.running
        try:
            store.write(runs=[run.row], package_sets=package_sets)
            _written_sets.update((store.path, d) for d in package_sets)
        except _WRITE_ERRORS as exc:
            _warn(event.run_id, event.pipeline, exc)
            return
        with self._lock:
            self._runs[event.run_id] = run
            self._ensure_heartbeat()

    def _handle(self, run: _Run, event: ev.Event) -> None:
        match event:
            case ev.TaskRetrying():
                attempts = run.attempts.setdefault(event.task, [])
                attempts.append({"number": event.attempt, "end": event.time, "error": event.error})
                if event.output:
                    # Each attempt's output is kept: the log shows why the retry happened.
                    run.attempts[event.task][-1]["output"] = event.output
            case ev.TaskFailed():
                run.errors[event.task] = event.error
                self._end_attempt(run, event, event.error)
                run.pending.append(
                    self._task_row(
                        run,
                        event.task,
                        "failed",
                        event.time,
                        reason=event.reason,
                        duration=event.duration,
                        error=event.error,
                        traceback=event.traceback,
                        output=event.output,
                        output_dropped=event.output_dropped,
                    )
                )
            case ev.TaskSkipped():
                run.pending.append(
                    self._task_row(run, event.task, event.state, event.time, reason=event.reason)
                )
            case ev.CheckFinished():
                run.checks.setdefault(event.task, {})[event.check] = {
                    "passed": event.passed,
                    "message": event.message,
                    "blocking": event.blocking,
                    "cached": event.cached,
                }

    @staticmethod
    def _end_attempt(run: _Run, event: ev.TaskFailed, error: str) -> None:
        """The last attempt of a task; the earlier ones came with `TaskRetrying`."""
        start = event.time - event.duration
        run.started[event.task] = start
        attempts = run.attempts.setdefault(event.task, [])
        if attempts:
            attempts[0]["start"] = start
        if not attempts:
            # One attempt (nearly every task): the task row's start and end say it all; no
            # JSON to write (`TaskRecord.attempts` rebuilds it).
            return
        last: dict[str, Any] = {"number": event.attempts, "end": event.time}
        if error:
            last["error"] = error
        attempts.append(last)

    @staticmethod
    def _task_row(run: _Run, task: str, state: str, when: float, **fields: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "run_id": run.id,
            "task": task,
            "state": state,
            "cached": 0,
            "reason": fields.pop("reason", None) or run.reasons.get(task, ""),
            "attempts": run.attempts.get(task),
            "started": run.started.get(task),
            "ended": when,
        }
        row.update(fields)
        return row

    # --- writing ---------------------------------------------------------------

    def _rows(self, run: _Run, *, final: bool) -> list[dict[str, Any]]:
        # Popped one by one from the left: the run's thread may append meanwhile (no lock);
        # what it appends after the count was taken is left for the next write.
        pending, rows = run.pending, []
        for _ in range(len(pending)):
            item = pending.popleft()
            rows.append(item if isinstance(item, dict) else self._finished_row(run, item))
        cached = run.cached
        if cached:
            for _ in range(len(cached)):
                task, key, digest, size, metadata, when = cached.popleft()
                rows.append(
                    {
                        "run_id": run.id,
                        "task": task,
                        "state": "cached",
                        "cached": 1,
                        "reason": "",
                        "key": key or None,
                        "digest": digest or None,
                        "size": size or None,
                        "metadata": metadata,
                        "started": when,
                        "ended": when,
                        "duration": 0.0,
                    }
                )
        ended = {r["task"] for r in rows}
        checks = run.checks
        for row in rows:
            if checks and row["task"] in checks:
                row["checks"] = checks[row["task"]]
            output = row.pop("output", "")
            dropped = row.pop("output_dropped", 0)
            retried = row.get("attempts")  # None for nearly every task: nothing to join
            attempt_output = (
                "".join(
                    f"--- attempt {a['number']} failed: {a.get('error', '')}\n{a['output']}"
                    for a in retried
                    if a.get("output")
                )
                if retried
                else ""
            )
            if attempt_output:
                output = attempt_output + (
                    f"--- attempt {len(row['attempts'])}\n{output}" if output else ""
                )
                for a in row["attempts"]:
                    a.pop("output", None)
            if output:
                limit = logs.log_limit()
                path, size, cut = logs.write_log(run.home, run.id, row["task"], output, limit)
                row.update(
                    log_path=str(path), log_size=size, log_dropped=cut + dropped, log_limit=limit
                )
        if not final and run.running is not None:
            # Tasks in flight are written as `running`, with what they printed so far (`nbflow
            # logs --follow` reads it), again only when that changed: a run killed now shows
            # them `interrupted`. Read after the finished rows were taken: a task leaves the
            # view before its TaskFinished exists, so it is never written running after done.
            rows += self._running_rows(run, run.running(), ended, "running")
        return rows

    @staticmethod
    def _running_rows(
        run: _Run, running: dict[str, ev.RunningTask], ended: set[str], state: str
    ) -> list[dict[str, Any]]:
        """Rows of the tasks in `running` (not in `ended`) as `state`; with `running` state
        only those new or whose output grew since the last write."""
        rows = []
        for task, now in running.items():
            if task in ended:
                continue
            seen = (now.started, len(now.output), now.dropped)
            last = run.live.get(task)
            changed = last is None or last[0] != seen
            if state == "running" and not changed:
                continue
            columns = last[1] if last is not None else {}
            if now.output and changed:
                limit = logs.log_limit()
                path, size, cut = logs.write_log(run.home, run.id, task, now.output, limit)
                columns = dict(
                    log_path=str(path),
                    log_size=size,
                    log_dropped=cut + now.dropped,
                    log_limit=limit,
                )
            run.live[task] = (seen, columns)
            row = {
                "run_id": run.id,
                "task": task,
                "state": state,
                "cached": 0,
                "reason": run.reasons.get(task, ""),
                "attempts": run.attempts.get(task),
                "started": now.started,
                **columns,
            }
            if state != "running":
                row["ended"] = time.time()
            rows.append(row)
        return rows

    def _flush(self, run: _Run, *, beat: bool = False) -> None:
        """Write what changed of `run` since the last write; with `beat`, a heartbeat too
        (and the transaction even when nothing changed)."""
        if run.broken:
            return
        try:
            rows = self._rows(run, final=False)
            parts, run.key_parts = run.key_parts, []
            if rows or beat or parts:
                run.store.write(tasks=rows, heartbeat=[run.id], key_parts=parts)
                run.last_flush = time.monotonic()
        except _WRITE_ERRORS as exc:
            run.broken = True
            _warn(run.id, run.name, exc)

    def _finish(self, run: _Run, event: ev.RunFinished) -> None:
        self._runs.pop(run.id, None)
        if run.broken:
            return
        state = "interrupted" if event.aborted else ("ok" if event.ok else "failed")
        row = dict(run.row)
        row.update(
            state=state,
            ended=event.time,
            duration=event.duration,
            heartbeat=event.time,
            error=event.aborted or _first_error(event.states, run) or None,
            graph=run.graph,
        )
        # The tasks in flight when a run was stopped (read now, in the run's thread: the view
        # is the runner's, gone once it returns).
        stopped = run.running() if event.aborted and run.running is not None else {}
        run.running = None  # the view holds the runner (its pipeline, its values): let it go
        self._submit(functools.partial(self._write_final, run, row, event, stopped))

    def _write_final(
        self,
        run: _Run,
        row: dict[str, Any],
        event: ev.RunFinished,
        stopped: dict[str, ev.RunningTask],
    ) -> None:
        if run.git is not None and row.get("env") is not None:
            row["env"] = {**row["env"], "git": run.git.result()}
        if event.cached:  # made here, not in the run's thread: 1,000 cached tasks cost 1 ms
            row["cached_tasks"] = [
                [t, r.get("key"), r.get("digest"), r.get("size"), r.get("metadata")]
                for t, r in event.cached.items()
            ]
        try:
            tasks = self._rows(run, final=True)
            if stopped:
                ended = {t["task"] for t in tasks} | set(event.states)
                tasks += self._running_rows(run, stopped, ended, "interrupted")
            parts, run.key_parts = run.key_parts, []
            snapshots = [] if event.aborted else [self._run_snapshot(run, row, event)]
            run.store.write(runs=[row], tasks=tasks, key_parts=parts, snapshots=snapshots)
        except _WRITE_ERRORS as exc:
            _warn(run.id, run.name, exc)

    @staticmethod
    def _run_snapshot(run: _Run, row: dict[str, Any], event: ev.RunFinished) -> dict[str, Any]:
        """The snapshot a run leaves: its tasks' verdicts after it, from what the run knew
        (no second plan); its tasks and edges are its graph's (`run_id`)."""
        graph = run.graph or {}
        return {
            "pipeline": run.name,
            "taken": event.time,
            "origin": "run",
            "run_id": run.id,
            "host": row.get("host"),
            "pid": row.get("pid"),
            "source": ((row.get("env") or {}).get("source") or {}).get("path"),
            "tasks": None,
            "edges": None,
            "verdicts": after_run(
                graph.get("tasks") or (),
                [e for e in graph.get("edges") or () if tuple(e) not in run.quiet],
                run.reasons,
                event.states,
                run.errors,
            ),
        }

    # --- heartbeat -------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        if self._beat is None or not self._beat.is_alive():
            self._beat = threading.Thread(
                target=self._beat_loop, name="nbflow-history", daemon=True
            )
            self._beat.start()

    def _beat_loop(self) -> None:
        """Once a `FLUSH_INTERVAL`: write the finished tasks of running runs (a task that runs
        long sends no event meanwhile), and a heartbeat every `HEARTBEAT` seconds. The thread
        outlives its runs by `_IDLE` seconds, so a quick series of runs starts it once."""
        idle = 0.0
        while True:
            time.sleep(FLUSH_INTERVAL)
            with self._lock:
                if self._flush_running():
                    idle = 0.0
                    continue
                idle += FLUSH_INTERVAL
                if idle >= _IDLE:
                    self._beat = None
                    return

    def _flush_running(self) -> bool:
        """One round of the heartbeat thread (the lock held): write what changed of each
        running run; False when none runs. A method of its own so that the thread, asleep,
        holds no run (nor what it references) in a local variable."""
        runs = list(self._runs.values())
        now = time.monotonic()
        for run in runs:
            beat = now - run.last_flush >= HEARTBEAT
            if run.pending or run.cached or run.running is not None or beat:
                try:
                    self._flush(run, beat=beat)
                except Exception:
                    # `_warn` raised (warnings as errors): the run is marked broken; this
                    # thread goes on for the others.
                    pass
        return bool(runs)


_IDLE = 30.0
SNAPSHOT_INTERVAL = 1.0
"""Seconds between two status snapshots of one pipeline written by this process."""

_ALWAYS_STALE = ("always reruns: ", "caching is off for this task")


def after_run(
    tasks: Iterable[str],
    edges: Iterable[tuple[str, str] | list[str]],
    reasons: dict[str, str],
    states: dict[str, str],
    errors: dict[str, str],
) -> dict[str, list[str]]:
    """What the planner would say of each task of a run once it ended, from the run alone:
    {task: [state, reason, ""]} for each task not fresh (the others are). A task that ran
    or was loaded from the cache is fresh, one that always reruns stays stale with its
    reason, a failed one is stale because its last attempt failed, and a stale upstream
    makes its downstream stale, worded as the planner words it. A task the run skipped is
    `unknown` (the planner would look at the cache for it)."""
    ups: dict[str, list[str]] = {}
    for up, down in edges:
        ups.setdefault(down, []).append(up)
    roots: dict[str, tuple[str, str]] = {}
    """stale task -> (root task, root cause)"""
    out: dict[str, list[str]] = {}
    for task in tasks:
        stale_up = next((u for u in ups.get(task, ()) if u in roots), None)
        if stale_up is not None:
            root_task, root = roots[stale_up]
            via = f" (via `{stale_up}`)" if root_task != stale_up else ""
            out[task] = ["stale", f"upstream `{root_task}` is stale{via}: {root}", ""]
            roots[task] = (root_task, root)
            continue
        reason = reasons.get(task, "")
        state = states.get(task)
        if reason.startswith(_ALWAYS_STALE):
            out[task] = ["stale", reason, ""]
            roots[task] = (task, reason)
        elif state == "failed":
            cause = f"last attempt failed: {errors.get(task, 'error')[:300]}"
            out[task] = ["stale", cause, ""]
            roots[task] = (task, cause)
        elif state not in ("done", "cached"):
            out[task] = ["unknown", "", ""]
    return out


PARAM_LIMIT = 500
"""Characters of a parameter's value kept in the history (the rest is cut, marked `…`)."""


def _safe_value(value: Any) -> Any:
    """A run parameter as the history keeps it: a secret as its reference (`secret:NAME`);
    itself if it is short plain JSON, else its (cut) repr. Never raises: a value whose repr fails is named by its type."""
    import json

    secret_name = getattr(value, "__nbflow_secret__", None)
    if type(value).__module__ == "nbflow.core.secrets" and secret_name is not None:
        return f"secret:{secret_name}"  # a Secret is a str: without this, its value
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and len(text) <= PARAM_LIMIT:
        return value
    try:
        shown = repr(value)
    except Exception:
        # An int past Python's str limit, a __repr__ that raises.
        shown = f"<{type(value).__qualname__}>"
    return shown if len(shown) <= PARAM_LIMIT else shown[: PARAM_LIMIT - 1] + "…"


def history_params(params: dict[str, Any]) -> dict[str, Any]:
    """Run parameters as the history keeps them (see `_safe_value`)."""
    return {str(k): _safe_value(v) for k, v in params.items()}


def _first_error(states: dict[str, str], run: _Run) -> str:
    failed = [t for t, s in states.items() if s == "failed"]
    return f"task `{failed[0]}` failed" if failed else ""


def _warn(run_id: str, name: str, exc: BaseException) -> None:
    warnings.warn(
        f"the run history could not record run {run_id} of `{name}` "
        f"({type(exc).__name__}: {exc}); the run itself is not affected",
        NbflowWarning,
        stacklevel=3,
    )


RECORDER = Recorder()
atexit.register(RECORDER.drain)  # a script's last run is written before the interpreter ends


def drain() -> None:
    """Wait until the runs that ended in this process are written into the history."""
    RECORDER.drain()


def set_recording(on: bool) -> None:
    """Record runs of this process in the history (the default), or not."""
    if on:
        ev.add_default_listener(RECORDER)
    else:
        ev.remove_default_listener(RECORDER)


def parent_env(run_id: str, source: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The environment a process started by run `run_id` needs so its runs link to it (and,
    given `source`, name that file as where the code of its pipeline runs comes from)."""
    env = {PARENT_ENV: run_id}
    if source is not None:
        env[SOURCE_ENV] = str(Path(source).absolute())
    return env


_written_sets: set[tuple[Path, str]] = set()
"""(history file, package set digest) written by this process: a rerun writes no set."""


def forget_written_sets() -> None:
    """After a prune (which removes the package sets no run names): write them again."""
    _written_sets.clear()


def _environment(
    store: HistoryStore, version: str, source: str | os.PathLike[str] | None
) -> tuple[dict[str, Any], dict[str, dict[str, str]], GitLook | None]:
    """The `env` of a run starting now (its package set's digest under `packages_digest`,
    for the `packages` column), the package set to write when this process has not
    written it into `store` yet, and the git look to take the env's `git` from at the
    run's end, if one is under way. Never raises: an environment that cannot be read is
    recorded as such (`env_error`), and the run is recorded without it."""
    try:
        env, digest, found, git = environment(version, source)
    except Exception as exc:
        return {"nbflow": version, "env_error": f"{type(exc).__name__}: {exc}"}, {}, None
    env["packages_digest"] = digest or None
    new = {digest: found} if digest and (store.path, digest) not in _written_sets else {}
    return env, new, git


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class TrackedRun:
    """A run recorded by `track_run`: its `id`, and what the caller learns while it goes."""

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.output: str | None = None
        """A file the run produced (a notebook run's executed notebook)."""
        self.state: str | None = None
        """Set to override the state recorded at exit (`ok` unless an exception left)."""
        self.error: str = ""
        self.outputs: dict[str, Any] | None = None
        """What a notebook run recorded with `nf.record` (as `history_params` keeps values)."""


@contextlib.contextmanager
def track_run(
    kind: str,
    name: str,
    *,
    params: dict[str, Any] | None = None,
    partition: str | None = None,
    parent: str | None = None,
    run_id: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Iterator[TrackedRun]:
    """Record a run of `kind` (`notebook`, `job`) around the block: `running` at once,
    `ok`/`failed`/`interrupted` at exit (or `tracked.state`). Runs started in this thread
    meanwhile link to it as their parent; give a kernel `parent_env(tracked.id)`.
    `source`: the notebook (or file) that runs, whose digest and git commit are recorded."""
    tracked = TrackedRun(run_id or new_run_id())
    store: HistoryStore | None = None
    git: GitLook | None = None
    start = time.time()
    row: dict[str, Any] = {
        "id": tracked.id,
        "kind": kind,
        "name": name,
        "params": params or {},
        "partition": partition,
        "started": start,
        "state": "running",
        "host": _HOST,
        "pid": os.getpid(),
        "version": _version(),
        "parent": parent or ev.current_run.get() or os.environ.get(PARENT_ENV) or None,
        "heartbeat": start,
    }
    if enabled():
        try:
            store = open_store()
            env, package_sets, git = _environment(store, row["version"], source)
            row["env"] = env
            row["packages"] = env.pop("packages_digest", None)
            store.write(runs=[row], package_sets=package_sets)
            _written_sets.update((store.path, d) for d in package_sets)
        except _WRITE_ERRORS as exc:
            store = None
            _warn(tracked.id, name, exc)
    # Runs started in this thread (a pipeline run, a notebook run of a job run) name this one
    # as their parent; a kernel learns it through `$NBFLOW_PARENT_RUN` (`parent_env`).
    token = ev.current_run.set(tracked.id)
    state, error = "ok", ""
    try:
        yield tracked
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
        state = "interrupted" if interrupted else "failed"
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        ev.current_run.reset(token)
        if store is not None:
            end = time.time()
            if git is not None and row.get("env") is not None:
                row["env"] = {**row["env"], "git": git.result()}
            row.update(
                state=tracked.state or state,
                ended=end,
                duration=end - start,
                heartbeat=end,
                error=(tracked.error or error or None),
                output=tracked.output,
                outputs=tracked.outputs,
            )
            try:
                store.write(runs=[row])
            except _WRITE_ERRORS as exc:
                _warn(tracked.id, name, exc)


if enabled():
    set_recording(True)

__all__ = ["RECORDER", "Recorder", "enabled", "open_store", "set_recording", "track_run"]
