"""What a run returns: states, timings, and values loaded lazily from the cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbflow.core.errors import NbflowError
from nbflow.core.types import Digest


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of one check on a task's value in a run (`nf.check`)."""

    check: str
    task: str
    passed: bool
    message: str = ""
    blocking: bool = True
    cached: bool = False
    """Not run again: the task was cached and the check and value are those of its last run."""

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        message = f": {self.message}" if self.message else ""
        return f"check `{self.check}` of `{self.task}` {verdict}{message}"


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """Freshness of one task before a run: `fresh`, `stale` or `never-run`, and why."""

    name: str
    state: str
    reason: str
    note: str = ""
    """What the task's key leaves out on purpose: "global `log` is updated by this task;
    it is not part of its key" (empty when nothing is)."""

    def __str__(self) -> str:
        text = self.state if self.state == "fresh" else f"{self.state}: {self.reason}"
        return f"{text} ({self.note})" if self.note else text

    def explained(self) -> str:
        """One line, as `pipe.explain()` says it: "fresh: ..." or "stale: <root cause>"."""
        note = f" ({self.note})" if self.note else ""
        if self.state == "fresh":
            return f"fresh: unchanged since it last ran; its result is cached{note}"
        if self.state == "never-run":
            return f"stale: never run{note}"
        return f"stale: {self.reason}{note}"


class StatusReport(Mapping[str, TaskStatus]):
    """`pipe.status()`: a read-only mapping task -> TaskStatus that prints as a table."""

    def __init__(self, pipeline: str, statuses: dict[str, TaskStatus]) -> None:
        self.pipeline = pipeline
        self._statuses = statuses

    def __getitem__(self, name: str) -> TaskStatus:
        return self._statuses[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._statuses)

    def __len__(self) -> int:
        return len(self._statuses)

    def stale(self) -> list[str]:
        """The tasks that are not fresh (stale or never run), in graph order: what a run of
        the whole pipeline would execute."""
        return [n for n, s in self._statuses.items() if s.state != "fresh"]

    def __repr__(self) -> str:
        if not self._statuses:
            return f"pipeline `{self.pipeline}` has no tasks"
        width = max(len(n) for n in self._statuses)
        lines = [f"pipeline `{self.pipeline}`: {len(self.stale())} of {len(self)} tasks would run"]
        for name, s in self._statuses.items():
            why = "; ".join(t for t in (s.reason, s.note) if t)
            reason = f"  {why}" if why else ""
            lines.append(f"  {name:<{width}}  {s.state:<9}{reason}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        # JupyterLab and Notebook 7 right-align table cells by default; a sentence of reasons
        # (and a column of names) reads from the left, so every cell says so itself.
        left = ' style="text-align:left"'
        rows = "".join(
            f"<tr><td{left}><code>{html.escape(n)}</code></td><td{left}>{s.state}</td>"
            f"<td{left}>{html.escape('; '.join(t for t in (s.reason, s.note) if t))}</td></tr>"
            for n, s in self._statuses.items()
        )
        return (
            f"<table><thead><tr><th{left}>task</th><th{left}>state</th><th{left}>why</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )

    def to_frame(self) -> Any:
        """The report as a pandas DataFrame indexed by task, with columns `state` and
        `reason`, to filter or sort (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"task": s.name, "state": s.state, "reason": s.reason}
                for s in self._statuses.values()
            ]
        ).set_index("task")


@dataclass
class RunResult:
    """The outcome of `run()`. `r[name]` gives a task's value, loading it from the cache if needed."""

    pipeline: str
    run_id: str
    states: dict[str, str] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    """Tasks that actually ran, in order of completion."""
    cached: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each executed task was stale; why each skipped task was skipped."""
    errors: dict[str, tuple[BaseException, str]] = field(default_factory=dict)
    """task -> (exception, formatted traceback) of its last attempt."""
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    """task -> the metadata of its `nf.Output` (also when loaded from the cache)."""
    map_states: dict[str, dict[Any, str]] = field(default_factory=dict)
    """mapped task -> {element label (index, or dict key): `done`|`cached`|`failed`}."""
    map_executed: dict[str, list[Any]] = field(default_factory=dict)
    """mapped task -> labels of the elements whose instance actually ran, in order of completion."""
    checks: dict[str, CheckResult] = field(default_factory=dict)
    """check name -> its `CheckResult` in this run."""
    digests: dict[str, Digest | None] = field(default_factory=dict)
    """task -> digest of its value (the one downstream keys use); None when it has none."""
    logs: dict[str, str] = field(default_factory=dict)
    """task -> what it printed and logged while it ran in this run (stdout, stderr and
    `logging` records, the tail of at most about 1 MB); tasks that printed nothing are absent."""
    duration: float = 0.0
    _values: dict[str, Any] = field(default_factory=dict, repr=False)
    _loaders: dict[str, Callable[[], Any]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Nothing failed: no task failed or was stopped, no blocking check failed."""
        if any(s == "failed" or s == "upstream_failed" for s in self.states.values()):
            return False
        return all(c.passed or not c.blocking for c in self.checks.values())

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        loader = self._loaders.get(name)
        if loader is None:
            state = self.states.get(name)
            if state is None:
                raise KeyError(name)
            raise NbflowError(f"task `{name}` has no value: it ended `{state}` in this run")
        value = loader()
        self._values[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._loaders

    def get(self, name: str, default: Any = None) -> Any:
        """`r[name]` (loaded from the cache if needed) if the task has a value in this run,
        else `default`: a failed, skipped or unknown task does not raise."""
        return self[name] if name in self else default  # noqa: SIM401 (this *is* get)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.states.values():
            counts[s] = counts.get(s, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return f"<RunResult {self.pipeline} {'ok' if self.ok else 'FAILED'}: {summary} in {self.duration:.3f} s>"


class RunFailed(NbflowError):
    """A run ended with failed tasks. Carries the `RunResult` and the first failure's traceback."""

    def __init__(self, result: RunResult, task: str, error: BaseException, traceback: str) -> None:
        self.result = result
        self.task = task
        self.error = error
        self.traceback = traceback
        failed = [n for n, s in result.states.items() if s == "failed"]
        others = (
            f" ({len(failed) - 1} more failed: {', '.join(failed[1:4])})" if len(failed) > 1 else ""
        )
        super().__init__(
            f"task `{task}` failed: {type(error).__name__}: {error}{others}. "
            "Fix it and run again; finished tasks are cached."
        )

    def _render_traceback_(self) -> list[str]:
        """IPython shows the failing task's own traceback, not nbflow's frames."""
        lines = [f"RunFailed: task `{self.task}` failed", ""]
        lines.extend(self.traceback.rstrip("\n").splitlines())
        return lines
