"""Trigger rules, with Airflow's exact meanings.

A task's upstream states are counted once all of them are final: success
(`done` or `cached`), failed (`failed` or `upstream_failed`) and `skipped`.
Each rule says whether the task runs, or else which state it takes:

| rule                        | runs when                         | otherwise                                   |
|-----------------------------|-----------------------------------|---------------------------------------------|
| all_success (default)       | every upstream succeeded          | upstream_failed if any failed, else skipped |
| all_failed                  | every upstream failed             | skipped                                     |
| all_done                    | always (all upstream are final)   | —                                           |
| one_success                 | at least one succeeded            | skipped if all skipped, else upstream_failed|
| one_failed                  | at least one failed               | skipped                                     |
| none_failed                 | none failed (skips are fine)      | upstream_failed                             |
| none_failed_min_one_success | none failed and one succeeded     | upstream_failed if any failed, else skipped |
| none_skipped                | none skipped                      | skipped                                     |
| always                      | always                            | —                                           |
"""

from __future__ import annotations

from collections.abc import Iterable

RUN = "run"


def evaluate(rule: str, upstream_states: Iterable[str]) -> str:
    """`"run"`, `"skipped"` or `"upstream_failed"` for a task with these final upstream states."""
    states = list(upstream_states)
    if not states or rule in ("all_done", "always"):
        return RUN
    if rule == "all_success" and all(s == "cached" or s == "done" for s in states):
        return RUN  # the common case, decided without counting
    success = sum(s in ("done", "cached") for s in states)
    failed = sum(s in ("failed", "upstream_failed") for s in states)
    skipped = sum(s == "skipped" for s in states)
    total = len(states)
    if rule == "all_success":
        if failed:
            return "upstream_failed"
        return "skipped" if skipped else RUN
    if rule == "all_failed":
        return RUN if failed == total else "skipped"
    if rule == "one_success":
        if success:
            return RUN
        return "skipped" if skipped == total else "upstream_failed"
    if rule == "one_failed":
        return RUN if failed else "skipped"
    if rule == "none_failed":
        return "upstream_failed" if failed else RUN
    if rule == "none_failed_min_one_success":
        if failed:
            return "upstream_failed"
        return RUN if success else "skipped"
    if rule == "none_skipped":
        return "skipped" if skipped else RUN
    raise ValueError(f"unknown trigger rule {rule!r}")
