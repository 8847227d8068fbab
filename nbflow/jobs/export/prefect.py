"""`nbflow export prefect JOB`: one Prefect 3 file per job — a flow, its task, its deployment.

How each option maps (the generated file repeats this next to each setting,
and docs/export.md has the table):

- `--cron` and `--tz` -> `prefect.schedules.Cron(cron, timezone=tz)`;
  `--every` -> `Interval(seconds, anchor_date=...)` on nbflow's anchor
  (`--start`, else 1970-01-01T00:00Z). The run's logical date is the flow
  run's scheduled start time (Prefect's name for the tick).
- `--start` / `--end`: Prefect's schedules have no bounds, so the flow skips a
  scheduled tick outside them (with the reason in its log).
- `--max-active` -> the deployment's `concurrency_limit`; a paused job ->
  `paused=True`; `--catchup`: Prefect has no catch-up (said in the file).
- `--retries`, `--retry-delay`, the spec's `backoff` -> the task's `retries`
  and `retry_delay_seconds` (a list of delays: exactly nbflow's backoff);
  `--timeout` -> nbflow's notebook timeout, and the task's `timeout_seconds`
  a minute later as a backstop.
- `-p` parameters -> the flow's `parameters` (the deployment's defaults),
  rendered per run by nbflow's templates in `run_job`.
- alerts -> flow hooks (`on_failure`, `on_completion`) and the task's
  `retry_condition_fn` (Prefect has no retry hook).
- `--when-file`: Prefect has no file sensor; the deployment has no schedule and
  takes the file as the flow parameter `path` (run it from an automation).
"""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2

from nbflow.jobs.export import JobExport, export_filename
from nbflow.jobs.export.mapping import (
    comment_block,
    format_seconds,
    parameter_notes,
    python_literal,
)
from nbflow.jobs.schedules import EPOCH, Schedule, format_every

__all__ = ["TEMPLATE_MEANING", "render_prefect_flow"]

TEMPLATE_MEANING = {
    "ds": "the logical date's (scheduled start time's) day in {tz}",
    "ds_nodash": "the same day as 20240331",
    "logical_date": "the flow run's scheduled start time, ISO text in UTC",
    "data_interval_start": "nbflow's previous tick (Prefect has no data intervals)",
    "data_interval_end": "the tick itself",
    "params": "the job's parameter `{name}`, itself rendered first when it is a template",
}

_ENV = jinja2.Environment(
    # Other delimiters than Jinja's: the generated file mentions {{ ds }} in its comments.
    block_start_string="<%",
    block_end_string="%>",
    variable_start_string="<<",
    variable_end_string=">>",
    comment_start_string="<#",
    comment_end_string="#>",
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)

_TEMPLATE = _ENV.from_string('''\
"""Prefect flow and deployment of the nbflow job `<< name >>`, written by
`nbflow export prefect << name >>` on << written >>.

`python << filename >>` serves the deployment (Prefect's `serve`: this process
runs the scheduled flow runs); `job_flow(logical_date="2024-03-05T01:30:00+00:00")`
runs one date now. The task runs the job's notebook through nbflow (`run_job` ->
`run_notebook`), as `nbflow scheduler` does: the same parameters and templates,
the output notebook under << home >>/runs/<< name >>/, and the same inner
cache, so a date that ran before is served from nbflow's cache inside the
notebook. nbflow must be installed where the flow runs (`pip install nbflow-pipelines`).

Not shared (yet): runs made by Prefect are in Prefect's history, not in `nbflow
runs`; nbflow has no shared cache URL yet, so the flow must run where the job's
home folder below is. Edit this file freely; export again to start over.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
<% if schedule_import %>
from prefect.schedules import << schedule_import >>
<% endif %>

from nbflow.jobs.export.runtime import outside_window, run_job, send_alerts

# The job as nbflow stores it (`nbflow schedule show << name >>`); run_job reads it back
# with nbflow's Schedule, so templates and time rules are nbflow's.
JOB = << job >>

# The job's nbflow home: its cache (<home>/cache, which the notebook's tasks use) and
# its output notebooks (<home>/runs/<< name >>/). The shared cache URL does not exist yet.
NBFLOW_HOME = << home_literal >>

# Parameters (-p): the flow's `parameters`, so a run can override them. Prefect has no
# templates of its own; nbflow renders each per run for the run's logical date:
<< param_comment >>
PARAMETERS = << parameters >>

<< retry_comment >>
RETRIES = << retries >>
RETRY_DELAYS = << delays >>
TIMEOUT = << timeout >>


def _alert(event: str):
    def hook(*args) -> None:  # flow hooks get (flow, flow_run, state); retry_condition_fn
        # (task, task_run, state): the state is last in both.
        state = args[-1]
        send_alerts(
            event,
            JOB,
            logical_date=None if event == "retry" else _tick(None),
            home=NBFLOW_HOME,
            orchestrator="prefect",
            attempt=task_run.run_count or 1,
            error=str(state.message or "") or None,
        )
        return True  # as retry_condition_fn: always retry while retries remain

    return hook


def _tick(logical_date: str | None) -> str:
    """The run's logical date: given, else the flow run's scheduled start time (its tick)."""
    if logical_date:
        return logical_date
    scheduled = flow_run.scheduled_start_time
    return scheduled.isoformat() if scheduled else dt.datetime.now(dt.timezone.utc).isoformat()


<< alert_comment >>
@task(
    name="run notebook",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS,
    timeout_seconds=TIMEOUT,
    retry_condition_fn=<% if alert_retry %>_alert("retry")<% else %>None<% endif %>,
    cache_policy=NO_CACHE,  # nbflow caches inside the notebook; Prefect must not skip runs
    log_prints=True,  # nbflow prints the output path and a failed cell's traceback
)
def run_notebook(logical_date: str, parameters: dict[str, str]) -> dict:
    return run_job(
        JOB,
        logical_date=logical_date,
        home=NBFLOW_HOME,
        orchestrator="prefect",
        attempt=task_run.run_count,
        overrides=parameters,
    )


@flow(
    name=<< name_literal >>,
    log_prints=True,
    on_failure=<% if alert_failure %>[_alert("failure")]<% else %>[]<% endif %>,
    on_completion=<% if alert_success %>[_alert("success")]<% else %>[]<% endif %>,
)
def job_flow(
    parameters: dict[str, str] | None = None,
    logical_date: str | None = None,
<% if sensor %>
    path: str = "",
<% endif %>
) -> dict | None:
    """One run of the job; `logical_date` (ISO with offset) defaults to the scheduled tick."""
    tick = _tick(logical_date)
    if logical_date is None:
        # --start/--end: Prefect's schedules have no bounds, so a tick outside is skipped here.
        reason = outside_window(JOB, tick)
        if reason:
            print(f"nbflow: skipped: {reason}")
            return None
    values = {**PARAMETERS, **(parameters or {})}
<% if sensor %>
    values["path"] = path  # --when-file: the file to process, as nbflow's sensor passes it
<% endif %>
    return run_notebook(tick, values)


<< when_comment >>
def deployment():
    """The deployment: schedule, parameters, concurrency (`serve(deployment())` runs it)."""
    return job_flow.to_deployment(
        name=<< name_literal >>,
        schedules=<< schedules >>,
        parameters={"parameters": PARAMETERS},
        << concurrency_line >>
        << paused_line >>
        tags=["nbflow"],
        description=__doc__,
    )


if __name__ == "__main__":
    from prefect import serve

    serve(deployment())
''')


def _when(schedule: Schedule) -> tuple[list[str], str, str]:
    """(comment lines, the `schedules=` value, the schedule classes to import)."""
    lines: list[str]
    if schedule.cron is not None:
        lines = [
            f"When: --cron {schedule.cron!r} --tz {schedule.tz} ({schedule.kind}) -> Prefect's Cron",
            "schedule in that zone. Where Prefect's ticks differ from nbflow's time rules",
            "(`nbflow schedule show` prints them; docs/export.md shows the days):",
        ]
        if schedule.frequent:
            lines += [
                "- a frequent job: on a fall-back day nbflow runs the repeated hour twice (once",
                "  per real UTC hour); Prefect runs it once, so one real hour has no run (27",
                "  October 2024 in Europe/Berlin: none at 02:00 CET, 01:00 UTC).",
            ]
        else:
            lines += [
                "- a local time inside the spring-forward gap (02:30 in Europe/Berlin on 31 March",
                "  2024): nbflow runs once at the end of the gap (03:00); Prefect runs at 03:30,",
                "  the missing time shifted by the hour lost.",
                "- a local time that happens twice on a fall-back day: both run once, at the",
                "  first (summer-time) occurrence.",
            ]
        value = f"[Cron({schedule.cron!r}, timezone={schedule.tz!r})]"
        return lines, value, "Cron"
    if schedule.every is not None:
        anchor = schedule.start or EPOCH
        lines = [
            f"When: --every {format_every(schedule.every)} -> Prefect's Interval: a fixed duration,",
            f"anchored where nbflow anchors it ({anchor.isoformat()}).",
        ]
        m = anchor.astimezone(UTC)
        value = (
            f"[Interval(dt.timedelta(seconds={schedule.every:g}), anchor_date=dt.datetime("
            f"{m.year}, {m.month}, {m.day}, {m.hour}, {m.minute}, {m.second}, "
            'tzinfo=dt.timezone.utc), timezone="UTC")]'
        )
        return lines, value, "Interval"
    lines = [
        f"When: --when-file {schedule.when_file!r}: Prefect has no file sensor, so the",
        "deployment has no schedule; run it per file with the parameter `path` (from a",
        "Prefect automation, or `prefect deployment run ... --param path=FILE`).",
    ]
    return lines, "[]", ""


def render_prefect_flow(job: JobExport) -> str:
    """The text of the Prefect file of `job` (see the module docstring)."""
    schedule = Schedule.from_dict(job.spec)
    when_lines, schedules, schedule_import = _when(schedule)
    if schedule.catchup:
        when_lines += [
            "--catchup: Prefect has no catch-up option. Prefect schedules runs ahead; what",
            "becomes of runs due while no `serve` process ran is Prefect's behaviour (Late",
            "runs), not nbflow's one-run-per-missed-tick.",
        ]
    else:
        when_lines += [
            "Catch-up off: nbflow runs only the latest missed tick within one period after",
            "downtime. Prefect has no catch-up option: what becomes of runs due while no",
            "`serve` process ran is Prefect's behaviour (Late runs).",
        ]
    if schedule.start or schedule.end:
        when_lines.append(
            "--start/--end: the flow skips scheduled ticks outside them (Prefect's schedules "
            "have no bounds)."
        )

    backoff = float(job.spec.get("backoff") or 0)
    if backoff and backoff != 1 and schedule.retries:
        delays = [schedule.retry_delay * backoff**i for i in range(schedule.retries)]
        delays_text = "[" + ", ".join(f"{d:g}" for d in delays) + "]"
        delay_note = f"retry_delay * {backoff:g} ** (attempt - 1), one delay per retry, exactly"
    else:
        delays_text = f"{schedule.retry_delay:g}"
        delay_note = "a constant delay"
    retry_lines = [
        f"Retries: --retries {schedule.retries}, --retry-delay "
        f"{format_seconds(schedule.retry_delay)}"
        + (f", backoff x{backoff:g}" if backoff else "")
        + f" ({delay_note}): the whole notebook runs again, as in nbflow.",
    ]
    if schedule.timeout is not None:
        retry_lines.append(
            f"--timeout {format_seconds(schedule.timeout)}: nbflow stops the notebook (and "
            "names the cell); Prefect's"
        )
        retry_lines.append("timeout_seconds, a minute later, only backs that up.")

    notes = parameter_notes(schedule.parameters, schedule.tz, TEMPLATE_MEANING)
    if schedule.when_file is not None:
        notes.append("path: the flow parameter `path` (a --when-file job's file)")

    alerts = [
        f"--on-{event} {', '.join(targets)}"
        for event, targets in (
            ("failure", schedule.on_failure),
            ("retry", schedule.on_retry),
            ("success", schedule.on_success),
        )
        if targets
    ]
    alert_comment = comment_block(
        [
            "Alerts through nbflow's senders: --on-failure -> the flow's on_failure hook,",
            "--on-success -> on_completion, --on-retry -> the task's retry_condition_fn",
            "(Prefect has no retry hook; it is asked before each retry and always says yes).",
            "This job: " + ("; ".join(alerts) if alerts else "no alerts") + ".",
        ]
    )
    return _TEMPLATE.render(
        name=job.name,
        name_literal=repr(job.name),
        filename=export_filename(job.name, "prefect"),
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        home=str(job.home),
        home_literal=repr(str(job.home)),
        job=python_literal(job.spec),
        param_comment=comment_block(notes or ["(the job has no parameters)"]),
        parameters=python_literal(dict(schedule.parameters)),
        retry_comment=comment_block(retry_lines),
        retries=schedule.retries,
        delays=delays_text,
        timeout=f"{schedule.timeout + 60:g}" if schedule.timeout is not None else "None",
        alert_comment=alert_comment,
        alert_retry=bool(schedule.on_retry),
        alert_failure=bool(schedule.on_failure),
        alert_success=bool(schedule.on_success),
        sensor=schedule.when_file is not None,
        schedule_import=schedule_import,
        when_comment=comment_block(when_lines),
        schedules=schedules,
        concurrency_line=f"concurrency_limit={schedule.max_active},  # --max-active",
        paused_line=(
            "paused=True,  # the job is paused in nbflow"
            if schedule.paused
            else "paused=False,  # the job is active in nbflow"
        ),
    )
