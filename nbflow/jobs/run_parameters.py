"""A job run's parameters: the one path from a job's `-p` texts to the values a run gets.

Scheduled, triggered, backfilled and sensor runs, the `schedule add` check and
exported jobs all go through `render_run_parameters` (templates rendered
against the run's context, to text: what a run row stores) and
`parse_run_parameters` (that text parsed to the notebook's declared types when
the run starts). `schedule_context` is the template context of one tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from nbflow.jobs.parameters import NOT_A_LITERAL, notebook_parameters, parse_cli_value
from nbflow.jobs.templates import render_parameters, run_context

__all__ = ["parse_run_parameters", "render_run_parameters", "schedule_context"]


class _Schedule(Protocol):
    """What rendering needs of a job's schedule (`jobs.schedules.Schedule`)."""

    @property
    def notebook(self) -> str: ...
    @property
    def tz(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, str]: ...

    def previous_tick(self, before: datetime) -> datetime | None: ...


def schedule_context(schedule: _Schedule, logical_date: datetime) -> dict[str, Any]:
    """The template context of the run of `schedule` at tick `logical_date` (`ds`,
    `logical_date`, the data interval from the previous tick to this one, …)."""
    return run_context(
        logical_date,
        schedule.tz,
        data_interval_start=schedule.previous_tick(logical_date),
        data_interval_end=logical_date,
    )


def render_run_parameters(
    schedule: _Schedule,
    logical_date: datetime,
    overrides: Mapping[str, str] | None = None,
    *,
    literals: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The job's parameters (plus `overrides`, the `-p` texts of a trigger: templates too)
    for tick `logical_date`, templates rendered to text: what is stored in the run row and
    parsed again when the run starts. `literals` are data (a sensed file's path): stored as
    they are, never rendered."""
    context = schedule_context(schedule, logical_date)
    declared = notebook_parameters(schedule.notebook) if Path(schedule.notebook).is_file() else {}
    defaults = {n: p.default for n, p in declared.items() if p.default is not NOT_A_LITERAL}
    rendered = render_parameters(
        {**schedule.parameters, **(overrides or {})}, context, defaults=defaults, literals=literals
    )
    return {name: str(value) for name, value in rendered.items()}


def parse_run_parameters(notebook: str | Path, texts: Mapping[str, Any]) -> dict[str, Any]:
    """Stored text values -> values of the notebook's declared types (as `-p` values)."""
    declared = notebook_parameters(notebook)
    return {
        name: parse_cli_value(value, declared.get(name)) if isinstance(value, str) else value
        for name, value in texts.items()
    }
