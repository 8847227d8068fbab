"""Errors of a job's definition, raised by every module that checks a part of one (the
schedule and its time rules, parameters, alert targets). In a module of their own so that
those modules need not import each other; drawn in the tree of `nbflow.core.errors`."""

from __future__ import annotations

from nbflow.core.errors import JobsError

__all__ = ["ScheduleError"]


class ScheduleError(JobsError):
    """A schedule definition is invalid (nothing was stored)."""

    def __init__(self, message: str, *, job: str = "", field: str = "") -> None:
        self.job = job
        self.field = field
        super().__init__(message)
