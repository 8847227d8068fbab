"""What a reader of the history gets: `RunRecord`s with their `TaskRecord`s and attempts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a task: when it started and ended, and the error it failed with."""

    number: int
    start: float | None = None
    end: float | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task in one run.

    `state`: done, cached, failed, skipped, upstream_failed (or `interrupted`
    for a task running when its run died). `reason`: why it ran (the planner's
    stale reason) or why it was skipped. `log`: what it printed and logged.
    """

    run_id: str
    name: str
    state: str
    cached: bool = False
    reason: str = ""
    attempts: tuple[Attempt, ...] = ()
    key: str | None = None
    digest: str | None = None
    size: int | None = None
    metadata: dict[str, Any] | None = None
    checks: dict[str, Any] | None = None
    error: str = ""
    traceback: str = ""
    started: float | None = None
    ended: float | None = None
    duration: float | None = None
    log_path: str | None = None
    log_size: int = 0
    log_dropped: int = 0
    """Bytes cut from the front of the log by the cap (`log_limit`)."""
    log_limit: int | None = None

    @property
    def log(self) -> str:
        """The task's captured output ("" when it printed nothing or the file was pruned)."""
        if not self.log_path:
            return ""
        try:
            return Path(self.log_path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskRecord:
        attempts = tuple(
            Attempt(a.get("number", i + 1), a.get("start"), a.get("end"), a.get("error") or "")
            for i, a in enumerate(row.get("attempts") or ())
        )
        if not attempts and not row.get("cached") and row.get("started") is not None:
            # One attempt is not written out: it is the task's own start, end and error.
            attempts = (Attempt(1, row.get("started"), row.get("ended"), row.get("error") or ""),)
        return cls(
            run_id=row["run_id"],
            name=row["task"],
            state=row["state"],
            cached=bool(row.get("cached")),
            reason=row.get("reason") or "",
            attempts=attempts,
            key=row.get("key"),
            digest=row.get("digest"),
            size=row.get("size"),
            metadata=row.get("metadata"),
            checks=row.get("checks"),
            error=row.get("error") or "",
            traceback=row.get("traceback") or "",
            started=row.get("started"),
            ended=row.get("ended"),
            duration=row.get("duration"),
            log_path=row.get("log_path"),
            log_size=row.get("log_size") or 0,
            log_dropped=row.get("log_dropped") or 0,
            log_limit=row.get("log_limit"),
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of any kind: `pipeline`, `notebook` or `job`.

    `state`: running, ok, failed or interrupted. `parent`: the run that
    started this one (a job run for its notebook run, a notebook run for the
    pipeline runs inside it, a run for a sub-pipeline run in one of its tasks).
    """

    id: str
    kind: str
    name: str
    state: str
    started: float
    ended: float | None = None
    duration: float | None = None
    params: dict[str, Any] | None = None
    partition: str | None = None
    host: str | None = None
    pid: int | None = None
    version: str | None = None
    parent: str | None = None
    error: str = ""
    output: str | None = None
    """A notebook run's executed output notebook (its log)."""
    outputs: dict[str, Any] | None = None
    """What a notebook run recorded with `nf.record` (short JSON values as they are, others
    as their cut repr)."""
    env: dict[str, Any] | None = None
    """What it ran on: `python`, `implementation`, `platform`, `executable`, `nbflow`,
    `packages` (how many distributions), `source` (`path`, `digest`) and `git` (`root`,
    `commit`, `branch`, `dirty`, `tracked`, or `error`) when known; None for runs recorded
    before nbflow recorded environments. `nbflow.history.diff.packages_of` reads the set."""
    packages: str | None = None
    """The digest of its installed distribution set (a row of the history's `package_sets`)."""
    tasks: tuple[TaskRecord, ...] = field(default=())
    graph_tasks: tuple[str, ...] = ()
    """A pipeline run's tasks in topological order, as the run planned them (runs recorded
    before nbflow kept the graph: empty)."""
    edges: tuple[tuple[str, str], ...] = ()
    """A pipeline run's dependencies: (upstream, downstream) pairs."""

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def task(self, name: str) -> TaskRecord:
        """The record of task `name` in this run."""
        for t in self.tasks:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tasks) or "none"
        raise KeyError(f"run {self.id} has no task `{name}`; its tasks: {known}")

    @property
    def logs(self) -> dict[str, str]:
        """task -> its captured output, for the tasks that printed something."""
        return {t.name: t.log for t in self.tasks if t.log_path}

    @classmethod
    def from_row(cls, row: dict[str, Any], tasks: list[dict[str, Any]]) -> RunRecord:
        graph = row.get("graph") or {}
        return cls(
            id=row["id"],
            kind=row["kind"],
            name=row["name"],
            state=row["state"],
            started=row["started"],
            ended=row.get("ended"),
            duration=row.get("duration"),
            params=row.get("params"),
            partition=row.get("partition"),
            host=row.get("host"),
            pid=row.get("pid"),
            version=row.get("version"),
            parent=row.get("parent"),
            error=row.get("error") or "",
            output=row.get("output"),
            outputs=row.get("outputs"),
            env=row.get("env"),
            packages=row.get("packages"),
            tasks=tuple(TaskRecord.from_row(t) for t in tasks),
            graph_tasks=tuple(graph.get("tasks") or ()),
            edges=tuple((str(u), str(d)) for u, d in graph.get("edges") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def __repr__(self) -> str:
        when = dt.datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        took = f" in {self.duration:.3f} s" if self.duration is not None else ""
        return f"<RunRecord {self.id} {self.kind} {self.name} {self.state} at {when}{took}, {len(self.tasks)} tasks>"
