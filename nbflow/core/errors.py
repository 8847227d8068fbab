"""Every error nbflow raises, in one tree rooted at `NbflowError`.

    NbflowError
    ├── PipelineError                 the graph itself is wrong
    │   ├── CycleError                  .cycle: the path, first node repeated
    │   ├── UnknownDependencyError      .task, .dependency, .matches
    │   ├── UnknownTaskError            .task, .matches (a target or a name given is not a task)
    │   └── DuplicateOutputError        .name, .cells (two %%task cells define one name)
    ├── ParameterError                a run or notebook parameter is missing or wrong
    │   ├── MissingParameterError       .task, .param
    │   ├── UnknownPartitionError       .task, .key (the message lists or describes the valid keys)
    │   ├── UnknownParameterError       a notebook has no such parameter (jobs.parameters)
    │   └── ParameterTypeError          a value does not match the parameter's type (jobs.parameters)
    ├── TaskError                     raised inside a run, about one task
    │   ├── TaskTimeout                 .task, .timeout
    │   ├── WorkerDied                  .task (the process running it vanished)
    │   ├── UnpicklableResult           .task, .type_name
    │   ├── UnpicklableTask             .task, .detail (its function or inputs can't reach a worker)
    │   ├── BranchError                 .task, .choices (a branch chose a task not directly downstream)
    │   ├── SensorTimeout               .task, .timeout, .checks, .soft_fail
    │   ├── ResourceError               .task, .resource (its factory raised; chained)
    │   └── MapInputError               .task (a mapped input is not a list, tuple, range or dict)
    ├── CacheError                    the store could not do what was asked
    │   └── IntegrityError              .key (signature or digest mismatch; never unpickled)
    ├── HomeError                     .path: a home, cache or run folder or secret others could control
    ├── SecretError                   .name: a secret unknown or misnamed, or its store unusable (nbflow.core.secrets)
    ├── RunFailed                     a run finished with failed tasks: .result, .task, .error, .traceback
    │                                   (defined in nbflow.core.result, beside the RunResult it carries)
    ├── GraphvizMissing               `dot` is not installed (nbflow.viz.render)
    ├── CellError                     a %%task cell cannot be analysed (nbflow.jupyter.cells)
    └── JobsError                     papermill runs, schedules, the scheduler (nbflow.jobs)
        ├── NotebookFailed              a cell raised, a kernel died or timed out (jobs.notebook)
        ├── NotebookReadError           the notebook is not a readable .ipynb (jobs.notebook_file)
        ├── KernelNotFound              the kernelspec it names is not installed (jobs.notebook)
        ├── KernelStartError            the kernel would not start (jobs.notebook)
        ├── ScheduleError               a cron expression, time zone or job option is wrong (jobs.errors)
        ├── TemplateError               a parameter template does not render (jobs.templates)
        ├── UnknownJobError             no job of that name (jobs.runstore)
        ├── JobExistsError              a job of that name exists already (jobs.runstore)
        ├── SchedulerLocked             another scheduler holds the home (jobs.scheduler)
        └── ExportError                 a job cannot be exported (jobs.export)

Errors of the upper layers are defined where they belong and drawn here, so the
whole tree is read in one place (tests/core/test_errors_tree.py keeps it true).

Foreign exceptions are translated at the boundary with ``raise ... from``, so the
original traceback stays chained. Messages name the thing, the fix, and the near miss.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class NbflowError(Exception):
    """Root of every error nbflow raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take their data, not the message, as arguments: rebuild
        # without calling __init__, so errors survive the trip back from a
        # worker process (pickle would call cls(message) and fail).
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(
    cls: type[NbflowError], args: tuple[Any, ...], state: dict[str, Any]
) -> NbflowError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class NbflowWarning(UserWarning):
    """Something was skipped or recovered from, and the user should know (e.g. a tampered cache entry)."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names among `candidates` that look like a typo of `word`."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def short_trace(error: BaseException) -> str:
    """The "traceback" of an error nbflow raised itself about a task: one line, no frames
    (there is no user code to point at)."""
    return f"{type(error).__name__}: {error}\n"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """The near misses of `word` as ' (did you mean `x` or `y`?)', else "": put it right
    after the unknown name in a message."""
    matches = close_matches(word, candidates)
    if not matches:
        return ""
    return f" (did you mean {_either(matches)}?)"


def _either(names: Sequence[str]) -> str:
    return " or ".join(f"`{n}`" for n in names)


class PipelineError(NbflowError):
    """The pipeline's graph is invalid."""


class CycleError(PipelineError):
    """The tasks depend on each other in a circle; raised when the pipeline is planned."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        path = " -> ".join(f"`{n}`" for n in self.cycle)
        super().__init__(
            f"the tasks form a cycle: {path}; remove one of these dependencies "
            "(check parameter names and `inputs=`)"
        )


class UnknownDependencyError(PipelineError):
    """`inputs=` binds a parameter to a task that does not exist."""

    def __init__(self, task: str, dependency: str, known: Iterable[str]) -> None:
        self.task = task
        self.dependency = dependency
        self.matches = close_matches(dependency, known)
        hint = did_you_mean(dependency, known) or "; define that task first or fix the name"
        super().__init__(f"unknown dependency `{dependency}` of task `{task}`{hint}")


class UnknownTaskError(PipelineError):
    """A run target, or a task name given to `explain`, `invalidate`, `remove`, ..., is not a task."""

    def __init__(self, task: str, known: Iterable[str], pipeline: str = "") -> None:
        self.task = task
        self.matches = close_matches(task, known)
        where = f" in pipeline `{pipeline}`" if pipeline else ""
        hint = did_you_mean(task, known) or ""
        super().__init__(f"no task named `{task}`{where}{hint}")


class DuplicateOutputError(PipelineError):
    """Two `%%task` cells define the same name; the new cell is not registered."""

    def __init__(self, name: str, cells: Sequence[str]) -> None:
        self.name = name
        self.cells = list(cells)
        first, second = self.cells[0], self.cells[-1]
        super().__init__(
            f"`{name}` is defined by two task cells, `{first}` and `{second}`; "
            "each name may be produced by one task cell only: rename it in one of them "
            f"(or `%nbflow remove {first}` if that cell is gone)"
        )


class ParameterError(NbflowError):
    """A parameter is missing, unknown, or of the wrong type."""


class MissingParameterError(ParameterError):
    """A task takes a run parameter that was not given and has no default; raised before anything runs."""

    def __init__(self, task: str, param: str, tasks: Iterable[str] = ()) -> None:
        self.task = task
        self.param = param
        near = close_matches(param, tasks)
        hint = (
            f" (no task is named `{param}` either; did you mean {_either(near)}?)"
            if near
            else f"; pass it with params={{'{param}': ...}} or give it a default"
        )
        super().__init__(f"task `{task}` needs run parameter `{param}`, which was not given{hint}")


class UnknownPartitionError(ParameterError):
    """A partition key (`partition=`, `partitions=`) is not one of the task's partitions."""

    def __init__(self, key: Any, task: str, description: str, matches: str = "") -> None:
        self.key = key
        self.task = task
        super().__init__(f"unknown partition {key!r} of task `{task}`{matches}; {description}")


class TaskError(NbflowError):
    """Something went wrong with one task while running it."""

    def __init__(self, message: str, *, task: str) -> None:
        self.task = task
        super().__init__(message)


class TaskTimeout(TaskError):
    """A task attempt took longer than its `timeout=`."""

    def __init__(self, task: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            f"task `{task}` did not finish within its timeout of {timeout:g} s; "
            "raise `timeout=` or make the task faster",
            task=task,
        )


class WorkerDied(TaskError):
    """The process running a task vanished (killed, crashed, out of memory); only that task fails."""

    def __init__(self, task: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"the worker running task `{task}` died{extra}; it may have been killed, "
            "crashed or run out of memory",
            task=task,
        )


class UnpicklableResult(TaskError):
    """A cached task returned a value that cannot be pickled, so it cannot be stored or sent back."""

    def __init__(self, task: str, type_name: str, detail: str = "") -> None:
        self.type_name = type_name
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"task `{task}` returned a `{type_name}`, which cannot be pickled{extra}; "
            "return plain data (or pass cache=False and keep it out of the cache)",
            task=task,
        )


class UnpicklableTask(TaskError):
    """A job could not be sent to a worker process: its function or an input does not pickle."""

    def __init__(self, task: str, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"task `{task}` cannot be sent to a worker process: its function or one of its "
            f"inputs cannot be pickled ({detail}); create such objects (connections, locks, "
            'clients) inside the task, or run it with executor="threads"',
            task=task,
        )


class BranchError(TaskError):
    """A branch task returned something other than names of its direct downstream tasks."""

    def __init__(self, task: str, message: str, choices: Iterable[str]) -> None:
        self.choices = sorted(choices)
        super().__init__(message, task=task)


class SensorTimeout(TaskError):
    """A sensor's condition did not hold within its timeout."""

    def __init__(self, task: str, timeout: float, checks: int, soft_fail: bool) -> None:
        self.timeout = timeout
        self.checks = checks
        self.soft_fail = soft_fail
        super().__init__(
            f"sensor `{task}` timed out: its condition did not hold within {timeout:g} s "
            f"({checks} checks)",
            task=task,
        )


class ResourceError(TaskError):
    """A resource's factory raised while a task needed it."""

    def __init__(self, task: str, resource: str, error: BaseException) -> None:
        self.resource = resource
        super().__init__(
            f"resource `{resource}` needed by task `{task}` could not be created: "
            f"{type(error).__name__}: {error}",
            task=task,
        )


class MapInputError(TaskError):
    """The mapped parameter's value is not a list, tuple, range or dict."""


class CacheError(NbflowError):
    """The cache store could not satisfy a request."""


class HomeError(NbflowError):
    """A home, cache folder, run folder or secret that another user could control.

    `.path` is the file or folder refused; the message says what to fix.
    """

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(message)


class IntegrityError(CacheError):
    """A cache entry failed its signature or digest check; the store treats it as a miss."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(
            f"cache entry {key[:12]} failed its integrity check ({detail}); it is treated as a miss"
        )


class JobsError(NbflowError):
    """Root of errors raised by `nbflow.jobs` (papermill runs, schedules, the scheduler)."""


def format_value_short(value: Any, limit: int = 40) -> str:
    """A one-line repr of `value` for messages, cut to `limit` characters."""
    if type(value).__module__ == "nbflow.core.secrets":  # a Secret or SecretRef: its name only
        return f"secret `{value.__nbflow_secret__}`"
    if type(value) is int and value.bit_length() > 10_000:
        # repr() refuses ints past Python's 4,300-digit limit; say what it is instead.
        return f"<int of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break an error message
        text = f"<{type(value).__name__} (repr failed: {type(exc).__name__})>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
