"""What differs between two runs: `nf.diff_runs(a, b)` and `nbflow history diff A B`.

Compared, for two runs of the same pipeline, notebook or job:

- **parameters**: each run parameter whose value differs, or that one run lacks;
- **tasks**: for each task whose cache key differs, why — the planner's own
  reasons (`planner.differences`) over the key parts the history keeps per key
  (`key_parts`), sorted into code (which function, helper, global or library),
  parameters and upstream data (which upstream value, digest → digest); a task
  whose key is the same but whose value is not says so (it is not
  deterministic, or it was forced); tasks only one run has are listed as such.
  A notebook or job run is compared through the pipeline runs inside it
  (merged per pipeline, the last run of a task counting);
- **environment**: the host, Python version, implementation, platform and
  interpreter, nbflow version, the source file's digest, its git commit and
  dirty flag;
- **packages**: distributions added, removed, or at another version.

Two runs of different pipelines (or kinds) are refused, naming both, unless
`force=True`: their tasks are not the same tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nbflow.core.cache.planner import differences
from nbflow.core.errors import NbflowError
from nbflow.history.api import children, get_run
from nbflow.history.recorder import open_store
from nbflow.history.records import RunRecord, TaskRecord
from nbflow.history.store import HistoryStore

ABSENT = "(absent)"
"""How a value one run lacks is shown."""
ENV_FIELDS = ("python", "implementation", "platform", "executable", "nbflow")
_DEPTH = 4
"""How deep the runs inside a run are followed: job → notebook → pipeline → sub-pipeline."""


@dataclass(frozen=True, slots=True)
class TaskDiff:
    """How one task differs between the two runs.

    `change`: `changed` (its key or value differs), `only_a` or `only_b` (one run lacks
    it). `code`, `params`, `inputs`, `other`: the reasons, by what they are about.
    """

    pipeline: str
    task: str
    change: str
    code: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    other: tuple[str, ...] = ()
    key_a: str | None = None
    key_b: str | None = None
    digest_a: str | None = None
    digest_b: str | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.code + self.params + self.inputs + self.other


@dataclass(frozen=True, slots=True)
class PackageDiff:
    """Distributions added in b, removed from a, and changed (name -> (version a, version b)).
    `known` is False when one run's set is not in the history (recorded by an older nbflow)."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    known: bool = True

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True, slots=True)
class RunDiff:
    """What differs between run `a` and run `b` (see the module docstring); empty parts
    mean "the same". `notes`: what could not be compared, and why."""

    a: RunRecord
    b: RunRecord
    params: dict[str, tuple[Any, Any]]
    tasks: tuple[TaskDiff, ...]
    env: dict[str, tuple[Any, Any]]
    packages: PackageDiff
    notes: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        """True when nothing compared differs."""
        return not (self.params or self.tasks or self.env or self.packages)

    def task(self, name: str) -> TaskDiff:
        """The difference of task `name` (KeyError when it does not differ)."""
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(f"task `{name}` does not differ between runs {self.a.id} and {self.b.id}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for `--json`): the runs by id, kind and name."""
        return {
            "a": {"id": self.a.id, "kind": self.a.kind, "name": self.a.name},
            "b": {"id": self.b.id, "kind": self.b.kind, "name": self.b.name},
            "same": self.same,
            "params": {k: list(v) for k, v in self.params.items()},
            "tasks": [asdict(t) for t in self.tasks],
            "env": {k: list(v) for k, v in self.env.items()},
            "packages": {
                "added": self.packages.added,
                "removed": self.packages.removed,
                "changed": {k: list(v) for k, v in self.packages.changed.items()},
                "known": self.packages.known,
            },
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        return "\n".join(describe(self))


# --- comparing -----------------------------------------------------------------


def diff_runs(a: str | RunRecord, b: str | RunRecord, *, force: bool = False) -> RunDiff:
    """What differs between runs `a` and `b` (ids, unique id prefixes, or `RunRecord`s):
    parameters, each task's code and upstream data, environment and packages.

    Runs of different pipelines or jobs are refused (`NbflowError`, naming both) unless
    `force=True`.
    """
    run_a = a if isinstance(a, RunRecord) else get_run(a)
    run_b = b if isinstance(b, RunRecord) else get_run(b)
    if (run_a.kind, run_a.name) != (run_b.kind, run_b.name) and not force:
        raise NbflowError(
            f"run {run_a.id} is a {run_a.kind} run of `{run_a.name}` and run {run_b.id} a "
            f"{run_b.kind} run of `{run_b.name}`: a diff compares two runs of the same "
            "pipeline, notebook or job; pass force=True (`--force`) to compare them anyway"
        )
    notes: list[str] = []
    tasks_a, tasks_b = _tasks_of(run_a), _tasks_of(run_b)
    store = open_store()
    keys = [t.key for t in (*tasks_a.values(), *tasks_b.values()) if t.key]
    parts = store.parts_of(keys)
    task_diffs = _task_diffs(tasks_a, tasks_b, parts, notes)
    env = _env_diff(run_a, run_b, notes)
    packages = _package_diff(store, run_a, run_b, notes)
    return RunDiff(
        a=run_a,
        b=run_b,
        params=_param_diff(run_a.params or {}, run_b.params or {}),
        tasks=tuple(task_diffs),
        env=env,
        packages=packages,
        notes=tuple(notes),
    )


def _param_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {
        name: (a.get(name, ABSENT), b.get(name, ABSENT))
        for name in sorted(set(a) | set(b))
        if name not in a or name not in b or a[name] != b[name]
    }


def _tasks_of(run: RunRecord) -> dict[tuple[str, str], TaskRecord]:
    """(pipeline, task) -> the task's record: a pipeline run's own tasks, then those of the
    runs inside it (a notebook's pipeline runs, sub-pipelines), the last run counting."""
    found: dict[tuple[str, str], TaskRecord] = {}
    level = [run]
    for _ in range(_DEPTH):
        inner: list[RunRecord] = []
        for r in level:
            if r.kind == "pipeline":
                for t in r.tasks:
                    found[(r.name, t.name)] = t
            inner.extend(children(r.id))
        if not inner:
            break
        level = inner
    return found


def _short(digest: str | None) -> str:
    return digest[:10] if digest else ABSENT


def _task_diffs(
    tasks_a: dict[tuple[str, str], TaskRecord],
    tasks_b: dict[tuple[str, str], TaskRecord],
    parts: dict[str, tuple[dict[str, Any], dict[str, str]]],
    notes: list[str],
) -> list[TaskDiff]:
    out: list[TaskDiff] = []
    unexplained = 0
    for pipeline, name in [*tasks_a, *(k for k in tasks_b if k not in tasks_a)]:
        ta, tb = tasks_a.get((pipeline, name)), tasks_b.get((pipeline, name))
        if ta is None or tb is None:
            out.append(
                TaskDiff(
                    pipeline,
                    name,
                    "only_a" if tb is None else "only_b",
                    key_a=ta.key if ta else None,
                    key_b=tb.key if tb else None,
                    digest_a=ta.digest if ta else None,
                    digest_b=tb.digest if tb else None,
                )
            )
            continue
        ids: dict[str, Any] = {
            "key_a": ta.key,
            "key_b": tb.key,
            "digest_a": ta.digest,
            "digest_b": tb.digest,
        }
        if ta.key == tb.key:
            if ta.digest != tb.digest and ta.digest and tb.digest:
                why = (
                    f"same code and inputs, another value ({_short(ta.digest)} → "
                    f"{_short(tb.digest)}): the task is not deterministic, or was forced"
                )
                out.append(TaskDiff(pipeline, name, "changed", other=(why,), **ids))
            continue
        pa, pb = parts.get(ta.key or ""), parts.get(tb.key or "")
        if pa is None or pb is None:
            unexplained += 1
            why = "its cache key differs (the key's parts are not in the history)"
            if ta.key is None or tb.key is None:
                why = f"it has no cache key in run {'a' if ta.key is None else 'b'}"
            out.append(TaskDiff(pipeline, name, "changed", other=(why,), **ids))
            continue
        out.append(TaskDiff(pipeline, name, "changed", *_explain(name, pa, pb), **ids))
    if unexplained:
        notes.append(
            f"{unexplained} task(s) differ without a reason: their key's parts were recorded "
            "by no run in this history (computed with recording off, or by an older nbflow)"
        )
    return out


def _explain(
    name: str, a: tuple[dict[str, Any], dict[str, str]], b: tuple[dict[str, Any], dict[str, str]]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(code, params, inputs, other) reasons: the planner's, one section of the parts at a
    time, so each reason is sorted by what it is about."""
    (old, old_shorts), (new, new_shorts) = a, b

    def section(*names: str) -> tuple[str, ...]:
        pick = {n: old.get(n, {} if n != "version" else None) for n in names}
        pick_new = {n: new.get(n, {} if n != "version" else None) for n in names}
        return tuple(differences(name, pick, old_shorts, pick_new, new_shorts))

    code = section("code", "version")
    params = section("params")
    inputs = []
    old_in, new_in = old.get("inputs", {}), new.get("inputs", {})
    for param in sorted(set(old_in) | set(new_in)):
        o, n = old_in.get(param), new_in.get(param)
        if o != n:
            upstream = (n or o)[0]
            inputs.append(
                f"upstream `{upstream}` value {_short(o[1] if o else None)} → "
                f"{_short(n[1] if n else None)}"
            )
    other = section("resources", "files", "identity")
    return code, params, tuple(inputs), other


def _env_diff(a: RunRecord, b: RunRecord, notes: list[str]) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    if a.host != b.host:
        out["host"] = (a.host, b.host)
    if a.env is None or b.env is None:
        missing = ", ".join(r.id for r in (a, b) if r.env is None)
        notes.append(f"no environment recorded for run {missing} (an older nbflow ran it)")
        if a.version != b.version:
            out["nbflow"] = (a.version, b.version)
        return out
    for key in ENV_FIELDS:
        if a.env.get(key) != b.env.get(key):
            out[key] = (a.env.get(key, ABSENT), b.env.get(key, ABSENT))
    sa, sb = a.env.get("source") or {}, b.env.get("source") or {}
    for key in ("path", "digest"):
        if sa.get(key) != sb.get(key):
            out[f"source {key}"] = (sa.get(key, ABSENT), sb.get(key, ABSENT))
    ga, gb = a.env.get("git") or {}, b.env.get("git") or {}
    for key in ("commit", "dirty"):
        if ga.get(key) != gb.get(key):
            out[f"git {key}"] = (ga.get(key, ABSENT), gb.get(key, ABSENT))
    return out


def packages_of(run: RunRecord) -> dict[str, str] | None:
    """The distributions (name -> version) run `run` had installed, or None if unknown."""
    if not run.packages:
        return None
    return open_store().package_set(run.packages)


def _package_diff(store: HistoryStore, a: RunRecord, b: RunRecord, notes: list[str]) -> PackageDiff:
    if a.packages and a.packages == b.packages:
        return PackageDiff()
    pa = store.package_set(a.packages) if a.packages else None
    pb = store.package_set(b.packages) if b.packages else None
    if pa is None or pb is None:
        missing = ", ".join(r.id for r, s in ((a, pa), (b, pb)) if s is None)
        notes.append(f"no package set recorded for run {missing}")
        return PackageDiff(known=False)
    return PackageDiff(
        added={n: pb[n] for n in sorted(set(pb) - set(pa))},
        removed={n: pa[n] for n in sorted(set(pa) - set(pb))},
        changed={n: (pa[n], pb[n]) for n in sorted(set(pa) & set(pb)) if pa[n] != pb[n]},
    )


# --- saying it -----------------------------------------------------------------


def _show(value: Any) -> str:
    return value if value == ABSENT else repr(value)


def describe(d: RunDiff) -> Iterable[str]:
    """The difference as lines a person reads (what `str(diff)` gives)."""
    yield f"a: run {d.a.id} {d.a.kind} `{d.a.name}` {d.a.state}"
    yield f"b: run {d.b.id} {d.b.kind} `{d.b.name}` {d.b.state}"
    if d.same:
        yield "no difference in parameters, tasks, environment or packages"
    for name, (va, vb) in d.params.items():
        yield f"parameter `{name}`: {_show(va)} → {_show(vb)}"
    for t in d.tasks:
        where = f"`{t.task}`" if t.pipeline in (d.a.name, d.b.name) else f"`{t.pipeline}.{t.task}`"
        if t.change == "only_a":
            yield f"task {where}: only in run a"
        elif t.change == "only_b":
            yield f"task {where}: only in run b"
        else:
            yield f"task {where}: " + "; ".join(t.reasons)
    for key, (va, vb) in d.env.items():
        yield f"{key}: {va} → {vb}"
    p = d.packages
    for n, v in p.added.items():
        yield f"package {n}: added {v}"
    for n, v in p.removed.items():
        yield f"package {n}: removed (was {v})"
    for n, (va, vb) in p.changed.items():
        yield f"package {n}: {va} → {vb}"
    for note in d.notes:
        yield f"note: {note}"


__all__ = ["PackageDiff", "RunDiff", "TaskDiff", "describe", "diff_runs", "packages_of"]
