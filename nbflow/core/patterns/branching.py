"""Branching: a task that chooses which of its direct downstream tasks run (Airflow's BranchPythonOperator).

`@nf.branch` (or `@nf.branch(...)` with any task option, or
`pipe.task(fn, branch=True)`) registers a task whose value is the name, or a
list of names, of direct downstream tasks to follow. `None` or an empty list
follows none.

Policy:

- The runner reads the choice when the branch task finishes, or when it is
  loaded from the cache (a branch's value is small; reading it is the point).
- Every direct downstream task that was not chosen ends `skipped`, whatever
  its trigger rule, with the reason "branch `b` chose `x`". From there skips
  spread by the trigger rules of `nbflow.core.patterns.trigger_rules`: a join after both
  paths with `all_success` is skipped, with `none_failed_min_one_success` it runs.
- A name that is not a direct downstream task fails the branch task with
  `BranchError`, naming the valid choices; it is never cached and never retried.

Downstream tasks usually depend on the branch by order only, with
`after=["choose_path"]` (Airflow's `choose_path >> full_refresh`); a task may
also take the branch's value as a parameter.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from nbflow.core.errors import BranchError, did_you_mean


def chosen_branches(task: str, value: Any, downstream: Collection[str]) -> frozenset[str]:
    """The set of downstream names `value` chooses; `BranchError` when it is not valid."""
    valid = ", ".join(f"`{d}`" for d in downstream) or "none (the task has no downstream tasks)"
    if value is None:
        return frozenset()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple | set | frozenset) or not all(
        isinstance(n, str) for n in names
    ):
        raise BranchError(
            task,
            f"branch task `{task}` must return the name (or a list of names) of downstream "
            f"tasks to follow, not a `{type(value).__name__}`; valid choices: {valid}",
            downstream,
        )
    for n in names:
        if n not in downstream:
            raise BranchError(
                task,
                f"branch task `{task}` chose `{n}`, which is not one of its direct downstream "
                f"tasks{did_you_mean(n, downstream)}; valid choices: {valid}",
                downstream,
            )
    return frozenset(names)


def describe_choice(task: str, chosen: frozenset[str]) -> str:
    if not chosen:
        return f"branch `{task}` chose no downstream task"
    return f"branch `{task}` chose {', '.join(f'`{c}`' for c in sorted(chosen))}"
