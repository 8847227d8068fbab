"""Checks: functions that judge a task's value after it runs (Dagster's asset checks).

    @nf.check("customers_clean")
    def unique_ids(customers_clean):
        ids = [row["id"] for row in customers_clean]
        return len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate ids"

A check receives its task's value and returns a bool, or `(bool, message)`.
`@nf.check(task_obj, blocking=False)` takes the task object instead of its
name; `pipe.check(...)` registers in an explicit pipeline.

Policy:

- A check runs in the driver right after its task ends `done`, in every
  run that executes the task. A check that raises has failed, with the
  exception as its message.
- When the task is `cached`, the check's last result is reused if the
  check's code (fingerprinted like a task's) and the task's value (by digest)
  are those it last judged: a fully cached rerun loads no value for its
  checks. Otherwise the cached value is loaded and the check runs. A check
  whose code cannot be fingerprinted (it reads an unhashable global) always
  runs. The reused result says so (`CheckResult.cached`).
- Results are in `RunResult.checks[check_name]` (`CheckResult`) and in
  `CheckFinished` events.
- A failed **blocking** check (the default) stops the downstream: for their
  trigger rules the task counts as failed, so with the default rule they end
  `upstream_failed`, with "check `unique_ids` of `customers_clean` failed: ..."
  as the reason, and `RunResult.ok` is False. The task's own state and
  cached value are unchanged: the data is what it is; fix the data or the
  check. A non-blocking check is only reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbflow.core.errors import NbflowError, format_value_short
from nbflow.core.result import CheckResult


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    task: str
    fn: Callable[[Any], Any]
    blocking: bool = True


def run_check(check: Check, value: Any) -> CheckResult:
    """Call a check on a value and normalize what it returns (or raises)."""
    try:
        outcome = check.fn(value)
    except Exception as exc:
        return CheckResult(
            check.name, check.task, False, f"raised {type(exc).__name__}: {exc}", check.blocking
        )
    message = ""
    if isinstance(outcome, tuple) and len(outcome) == 2:
        outcome, message = outcome
    if not isinstance(outcome, bool):
        try:
            outcome = bool(outcome)
        except Exception as exc:  # e.g. a pandas Series: ambiguous truth value
            return CheckResult(
                check.name,
                check.task,
                False,
                f"returned {format_value_short(outcome)}, which is neither True nor False ({exc})",
                check.blocking,
            )
    return CheckResult(check.name, check.task, outcome, str(message or ""), check.blocking)


def make_check(
    target: Any, name: str | None, blocking: bool, register: Callable[[Check], None]
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """The decorator `pipe.check(target)` returns."""
    task = getattr(target, "name", target)
    if not isinstance(task, str):
        raise NbflowError(f"@check takes a task or the name of a task, not {type(target).__name__}")

    def decorate(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if not callable(fn):
            raise NbflowError("@check decorates a function that receives the task's value")
        check_name = name or getattr(fn, "__name__", None)
        if not check_name or check_name == "<lambda>":
            raise NbflowError("a lambda check needs a name: pipe.check(task, name='...')(fn)")
        register(Check(check_name, task, fn, blocking))
        return fn

    return decorate
