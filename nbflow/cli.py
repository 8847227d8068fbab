"""The `nbflow` command: a thin layer over `nbflow.core` and `nbflow.jobs`.

Each sub-command parses its arguments, calls the public API, and prints.
Errors from nbflow are shown as one clear line (exit code 2 for bad input,
1 for a failed run); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from nbflow.core.errors import NbflowError
from nbflow.core.store import DiskStore
from nbflow.jobs.runstore import RUN_STATES, RunStore


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NbflowError as exc:
            click.echo(f"nbflow: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbflow")
def cli() -> None:
    """Turn Jupyter notebooks into cached, scheduled, parameterized pipelines."""


# --- cache (core) -----------------------------------------------------------


def parameter_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`-p/--parameter NAME VALUE`, repeatable: every command that takes notebook parameters."""
    return click.option(
        "-p", "--parameter", "parameters", nargs=2, multiple=True, metavar="NAME VALUE", help=help
    )


def notebook_values(notebook: str | Path, parameters: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`-p` texts parsed against the notebook's declared parameters (literals, else text)."""
    from nbflow.jobs.parameters import notebook_parameters, parse_cli_value

    declared = notebook_parameters(notebook)
    return {name: parse_cli_value(text, declared.get(name)) for name, text in parameters}


def _store(cache_dir: str | None) -> DiskStore:
    from nbflow.core.home import home_dir

    return DiskStore(cache_dir or home_dir() / "cache")


@cli.group()
def cache() -> None:
    """Inspect and clean the result cache."""


@cache.command("info")
@click.option("--cache-dir", help="A pipeline's own cache_dir (default: the home's cache).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_info(cache_dir: str | None, as_json: bool) -> None:
    """Where the cache is, how many results it holds, and how big it is."""
    info = _store(cache_dir).info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"cache:        {info['directory']}")
    click.echo(f"results:      {info['records']}")
    if info["unverified_records"]:
        click.echo(
            f"unverified:   {info['unverified_records']} (not signed with this home's secret;"
            " see `nbflow cache gc`)"
        )
    for name, count in sorted(info["pipelines"].items()):
        click.echo(f"  {name}: {count}")
    click.echo(f"value files:  {info['value_files']} ({_size(info['value_bytes'])})")
    click.echo(f"inline bytes: {_size(info['inline_bytes'])}")
    limit = info["size_limit"]
    click.echo(f"size limit:   {_size(limit) if limit else 'none (eviction off)'}")


@cache.command("gc")
@click.option("--cache-dir", help="A pipeline's own cache_dir (default: the home's cache).")
@click.option("--older-than", type=float, help="Also drop results older than this many days.")
@click.option("--max-size", help="Also drop the oldest results until the cache fits, e.g. 10GB.")
@click.option(
    "--drop-unverified",
    is_flag=True,
    help="Delete results whose signature fails (tampered) instead of refusing to collect.",
)
def cache_gc(
    cache_dir: str | None, older_than: float | None, max_size: str | None, drop_unverified: bool
) -> None:
    """Remove orphan, truncated and corrupt value files and temp files left by crashes
    (and old results if asked). Refuses, deleting nothing, while some result fails its
    signature check: that cache belongs to another home's secret."""
    from nbflow.core.home import home_dir

    if older_than is not None and not 0 <= older_than < float("inf"):
        raise click.BadParameter(
            f"{older_than} is not a number of days; give 0 or more", param_hint="--older-than"
        )
    size_limit = _parse_size(max_size) if max_size is not None else None
    # Opened without creating anything: a gc refused for want of the right secret must not
    # leave a new home (with a fresh secret) behind.
    home = home_dir(create=False)
    directory = Path(cache_dir).absolute() if cache_dir else home / "cache"
    if not (directory / "meta").is_dir():
        click.echo(f"no nbflow cache at {directory}; nothing to collect")
        return
    store = DiskStore(directory, home=home, create_secret=False)
    removed = store.gc(
        older_than=older_than * 86400 if older_than is not None else None,
        size_limit=size_limit,
        refuse_unverified=True,
        drop_unverified=drop_unverified,
        verify=True,
    )
    click.echo(
        f"removed {removed['records']} results, {removed['files']} orphan value files, "
        f"{removed['corrupt']} corrupt value files, {removed['tmp']} temp files"
        + (
            f", {removed['dropped_unverified']} unverified results"
            if removed["dropped_unverified"]
            else ""
        )
    )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
    raw = text.strip().upper().replace(" ", "")
    number = raw.rstrip("KMGTB")
    try:
        size = float(number) * units[raw[len(number) :]]
    except (KeyError, ValueError):
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 500MB or 10GB") from None
    if not 0 <= size < 2**63:
        raise click.BadParameter(
            f"{text!r} is not a size; give 0 or more, e.g. 500MB or 10GB", param_hint="--max-size"
        )
    return int(size)


# --- run (jobs: notebook runs) ----------------------------------------------


@cli.command("run")
@click.argument("notebook", type=click.Path(dir_okay=False))
@parameter_option(
    "A parameter; VALUE is read as a Python literal (3, 2.5, [1, 2], {'a': 1}), else as text."
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="The executed notebook's path."
)
@click.option("--timeout", type=float, help="Seconds the whole run may take.")
@click.option("--kernel", help="Kernel name (default: the notebook's own).")
@click.option("--cwd", type=click.Path(file_okay=False), help="Working directory of the kernel.")
def run_command(
    notebook: str,
    parameters: tuple[tuple[str, str], ...],
    output: str | None,
    timeout: float | None,
    kernel: str | None,
    cwd: str | None,
) -> None:
    """Execute NOTEBOOK with parameters into a new output notebook (never in place)."""
    from nbflow.jobs.notebook import run_notebook

    values = notebook_values(notebook, parameters)
    live = sys.stderr.isatty()

    width = 0
    names: dict[int | None, str] = {}

    def progress(done: int, total: int, *, cell: int | None, first_line: str) -> None:
        # On a terminal one line is rewritten in place; in a log, one line per cell.
        # The cell is named by its number in the notebook, as errors and timeouts name it.
        nonlocal width
        name = f"cell {cell} `{first_line}`" if cell is not None else "injected parameters"
        names[cell] = name
        line = f"{done}/{total} code cells: {name}"
        start = "\r" if live else ""
        pad = " " * max(width - len(line), 0) if live else ""
        width = len(line)
        click.echo(f"{start}{line}{pad}", err=True, nl=not live or done == total)

    nr = run_notebook(
        notebook, values, output=output, timeout=timeout, kernel=kernel, cwd=cwd, progress=progress
    )
    if nr.error is not None:
        if nr.error.traceback and nr.error.reason == "exception":
            click.echo(nr.error.traceback, err=True)
        click.echo(
            f"failed: {notebook}: {nr.error} ({nr.duration:.1f} s); output: {nr.output_path}"
        )
        sys.exit(1)
    # A clean sys.exit() is a success, but the cells after it did not run: say so.
    stop = ""
    if nr.exited_at is not None:
        stop = f", stopped by sys.exit() in {names.get(nr.exited_at, f'cell {nr.exited_at}')}"
    click.echo(f"ok: {notebook} ran in {nr.duration:.1f} s{stop}; output: {nr.output_path}")
    for name, value in nr.outputs.items():
        click.echo(f"  {name}: {_short_repr(value)}")


def _short_repr(value: object, limit: int = 100) -> str:
    """One line for a recorded output: tables by shape, everything else by repr."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "columns"):
        return f"{type(value).__name__} {' x '.join(map(str, shape))}"
    return _one_line(repr(value), limit)


# --- schedule / scheduler / trigger / backfill / runs (jobs: scheduling) -----


def _runstore() -> RunStore:
    return RunStore()


@cli.group()
def schedule() -> None:
    """Define notebook jobs that run on a cron schedule, an interval, or new files."""


@schedule.command("add")
@click.argument("name")
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--cron", help='A five-field cron expression in the job\'s zone, e.g. "30 2 * * *".')
@click.option("--every", help="An interval instead of cron: 30s, 15m, 2h, 1d.")
@click.option("--tz", default="UTC", show_default=True, help="IANA zone the cron is read in.")
@parameter_option('A notebook parameter; VALUE may be a template such as "{{ ds }}".')
@click.option("--start", help="No run before this date/time (in the job's zone).")
@click.option("--end", help="No run after this date/time (a bare date: through that day).")
@click.option("--catchup", is_flag=True, help="After downtime, run every missed tick.")
@click.option("--max-active", type=int, default=1, show_default=True, help="Runs at once.")
@click.option("--retries", type=int, default=0, show_default=True, help="Retries of a failed run.")
@click.option("--retry-delay", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--timeout", type=float, help="Seconds one run may take.")
@click.option("--on-failure", multiple=True, metavar="URL|COMMAND", help="Alert when a run fails.")
@click.option("--on-success", multiple=True, metavar="URL|COMMAND", help="Alert on success.")
@click.option("--on-retry", multiple=True, metavar="URL|COMMAND", help="Alert on a retry.")
@click.option("--when-file", metavar="GLOB", help="Run once per new or changed matching file.")
def schedule_add(
    name: str,
    notebook: str,
    cron: str | None,
    every: str | None,
    tz: str,
    parameters: tuple[tuple[str, str], ...],
    start: str | None,
    end: str | None,
    catchup: bool,
    max_active: int,
    retries: int,
    retry_delay: float,
    timeout: float | None,
    on_failure: tuple[str, ...],
    on_success: tuple[str, ...],
    on_retry: tuple[str, ...],
    when_file: str | None,
) -> None:
    """Add job NAME running NOTEBOOK; everything is checked before anything is stored."""
    from pathlib import Path

    from nbflow.jobs.runstore import utc_now
    from nbflow.jobs.schedules import Schedule, ScheduleError, parse_every, parse_when

    now = utc_now()
    names = [n for n, _ in parameters]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ScheduleError(f"parameter `{repeated[0]}` is given twice; give it once")
    job = Schedule(
        name=name,
        notebook=str(Path(notebook).absolute()),
        cron=cron,
        every=parse_every(every) if every is not None else None,
        tz=tz,
        parameters=dict(parameters),
        start=parse_when(start, tz) if start else None,
        end=parse_when(end, tz, end_of_day=True) if end else None,
        catchup=catchup,
        max_active=max_active,
        retries=retries,
        retry_delay=retry_delay,
        timeout=timeout,
        on_failure=on_failure,
        on_success=on_success,
        on_retry=on_retry,
        # Relative paths are relative to where `add` ran, not to the daemon's cwd.
        when_file=str(Path(when_file).absolute()) if when_file else None,
    )
    job.check_notebook(now=now)
    _runstore().add_job(name, job.to_dict(), now=now)
    nxt = job.next_ticks(max(now, job.start or now), 1)
    when = f"; next run {_local_and_utc(nxt[0], tz)}" if nxt else ""
    click.echo(f"added job `{name}`: {job.describe_when()}{when}")


def _local_and_utc(moment: datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo(tz))
    utc = f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if tz == "UTC":
        return utc
    return f"{local:%Y-%m-%d %H:%M %Z} ({utc})"


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedule_list(as_json: bool) -> None:
    """Every job, with when it runs and its next run."""
    from nbflow.jobs.runstore import utc_now

    now = utc_now()
    rows = []
    for record in _runstore().list_jobs():
        job = record.schedule
        nxt = job.next_ticks(max(now, record.active_since), 1) if not record.paused else []
        rows.append({**job.summary(), "next_run": nxt[0].isoformat() if nxt else None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no jobs; add one with `nbflow schedule add NAME NOTEBOOK --cron EXPR`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("job", "when", "next run", "state", "notebook")
    for row in rows:
        nxt = row["next_run"]
        table.add_row(
            row["name"],
            row["when"],
            _local_and_utc(datetime.fromisoformat(nxt), row["tz"]) if nxt else "-",
            "paused" if row["paused"] else "active",
            row["notebook"],
        )
    Console().print(table)


@schedule.command("show")
@click.argument("name")
def schedule_show(name: str) -> None:
    """The job's definition, its next five run times (its zone and UTC) and the time rules."""
    from nbflow.jobs.runstore import utc_now
    from nbflow.jobs.schedules import TIME_RULES, format_every

    record = _runstore().get_job(name)
    job = record.schedule
    click.echo(f"job:        {job.name}{'  (paused)' if record.paused else ''}")
    click.echo(f"notebook:   {job.notebook}")
    click.echo(f"when:       {job.describe_when()}  [{job.kind}]")
    if job.every is not None:
        click.echo(f"interval:   {format_every(job.every)}")
    for label, value in (("start", job.start), ("end", job.end)):
        if value is not None:
            click.echo(f"{label + ':':<11} {_local_and_utc(value, job.tz)}")
    for key, value in job.parameters.items():
        click.echo(f"parameter:  {key} = {value}")
    click.echo(
        f"runs:       max active {job.max_active}, retries {job.retries} "
        f"(delay {job.retry_delay:g} s), timeout {f'{job.timeout:g} s' if job.timeout else 'none'}, "
        f"catch-up {'on' if job.catchup else 'off'}"
    )
    for label, specs in (
        ("on failure", job.on_failure),
        ("on success", job.on_success),
        ("on retry", job.on_retry),
    ):
        for spec in specs:
            click.echo(f"{label + ':':<11} {spec}")
    click.echo(f"added:      {_local_and_utc(record.created_at, job.tz)}")
    if record.resumed_at:
        click.echo(f"resumed:    {_local_and_utc(record.resumed_at, job.tz)}")
    now = utc_now()
    ticks = job.next_ticks(max(now, record.active_since), 5)
    click.echo("")
    click.echo(f"next {len(ticks)} run times{' (when resumed)' if record.paused else ''}:")
    for tick in ticks:
        click.echo(f"  {_local_and_utc(tick, job.tz)}")
    if not ticks:
        click.echo("  none" + (" (file sensor)" if job.kind == "file sensor" else " (ended)"))
    click.echo("")
    click.echo(TIME_RULES)


@schedule.command("pause")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Stop making runs for NAME (runs under way finish)."""
    _runstore().pause_job(name)
    click.echo(f"paused job `{name}`")


@schedule.command("resume")
@click.argument("name")
def schedule_resume(name: str) -> None:
    """Make runs for NAME again, from now on (ticks while paused are not run)."""
    _runstore().resume_job(name)
    click.echo(f"resumed job `{name}`")


@schedule.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Delete job NAME; its run history stays, its queued runs are skipped."""
    skipped = _runstore().remove_job(name)
    extra = f"; {skipped} queued runs skipped" if skipped else ""
    click.echo(f"removed job `{name}`{extra}")


@cli.command("scheduler")
@click.option("--once", is_flag=True, help="One tick, run what it can start, then exit.")
@click.option(
    "--max-running",
    type=click.IntRange(min=1),
    help="Runs at once across all jobs (default: the number of CPUs, at least 2).",
)
@click.option(
    "--heartbeat-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds without a heartbeat before a running run is `crashed` (default 30).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="On SIGTERM, seconds to let running runs finish before handing them back.",
)
@click.option("--poll", type=click.FloatRange(min=0.05), default=2.0, show_default=True)
def scheduler_command(
    once: bool,
    max_running: int | None,
    heartbeat_timeout: float | None,
    grace: float,
    poll: float,
) -> None:
    """The scheduler daemon, in the foreground (one per home; stop it with SIGTERM)."""
    from nbflow.jobs.scheduler import Scheduler, SchedulerLocked

    sched = Scheduler(
        max_running=max_running,
        heartbeat_timeout=heartbeat_timeout,
        grace=grace,
        poll=poll,
        echo=lambda line: click.echo(line, err=True),
    )
    try:
        code = sched.serve(once=once)
    except SchedulerLocked as exc:
        click.echo(f"nbflow: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


def _run_and_report(store: RunStore, run_ids: list[int], job: str, what: str) -> None:
    """Execute `run_ids` in the foreground, print a summary, exit 1 if one did not succeed."""
    from nbflow.jobs.execute import run_in_foreground, sweep

    record = store.get_job(job)
    sweep(store)  # a run left `running` by a dead process must not block us forever
    runs = run_in_foreground(
        store, run_ids, max_active=int(record.spec.get("max_active", 1) or 1), echo=click.echo
    )
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    click.echo(f"{what}: {len(runs)} run(s): {summary or 'none'}")
    if any(run.state != "success" for run in runs):
        sys.exit(1)


@cli.command("trigger")
@click.argument("name")
@parameter_option("Override a job parameter for this run (templates allowed).")
@click.option("--detach", is_flag=True, help="Only queue the run; a running scheduler runs it.")
def trigger_command(name: str, parameters: tuple[tuple[str, str], ...], detach: bool) -> None:
    """Run job NAME now, in the foreground (a `manual` run; it takes no scheduled slot)."""
    from nbflow.jobs.scheduler import trigger_run

    store = _runstore()
    run = trigger_run(store, name, dict(parameters))
    if detach:
        click.echo(f"queued run {run.id} of `{name}`; a running `nbflow scheduler` will start it")
        return
    _run_and_report(store, [run.id], name, f"trigger {name}")


@cli.command("backfill")
@click.argument("name")
@click.option("--start", required=True, help="First date/time (in the job's zone).")
@click.option("--end", required=True, help="Last date/time; a bare date means through that day.")
@click.option(
    "--reprocess",
    type=click.Choice(["none", "failed", "all"]),
    default="none",
    show_default=True,
    help="Re-run ticks that already ran: none, failed ones, or all.",
)
@click.option("--detach", is_flag=True, help="Only queue the runs; a running scheduler runs them.")
def backfill_command(name: str, start: str, end: str, reprocess: str, detach: bool) -> None:
    """One run of job NAME per tick from --start to --end (both inclusive), in the foreground."""
    from nbflow.jobs.scheduler import plan_backfill
    from nbflow.jobs.schedules import ScheduleError, parse_when

    store = _runstore()
    record = store.get_job(name)
    tz = record.schedule.tz
    first, last = parse_when(start, tz), parse_when(end, tz, end_of_day=True)
    if last < first:
        raise ScheduleError(f"--end {end} is before --start {start}")
    plan = plan_backfill(store, name, first, last, reprocess=reprocess)
    skipped = sum(plan.skipped.values())
    click.echo(
        f"backfill {name}: {plan.ticks} tick(s) from {start} to {end}; "
        f"{len(plan.run_ids)} to run" + (f", {skipped} skipped" if skipped else "")
    )
    for why, n in sorted(plan.skipped.items()):
        click.echo(f"  skipped {n} tick(s): {why}")
    if plan.skipped.get("already succeeded") and reprocess != "all":
        click.echo("  (use --reprocess all to run them again)")
    if plan.skipped.get("already ran and failed"):
        click.echo("  (use --reprocess failed to run failed ticks again)")
    if not plan.run_ids:
        return
    if detach:
        click.echo(f"queued {len(plan.run_ids)} run(s); a running `nbflow scheduler` starts them")
        return
    _run_and_report(store, plan.run_ids, name, f"backfill {name}")


@cli.command("runs")
@click.argument("name", required=False)
@click.option("--status", type=click.Choice(RUN_STATES), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_command(name: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Run history, newest logical date first (all jobs, or job NAME)."""
    from nbflow.jobs.runstore import UnknownJobError

    store = _runstore()
    runs = store.list_runs(name, states=status, limit=limit)
    if name is not None and not runs and store.find_job(name) is None:
        raise UnknownJobError(name, store.job_names())
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        click.echo("no runs" + (f" of `{name}`" if name else "") + (f" {status}" if status else ""))
        return
    from rich.console import Console
    from rich.table import Table

    from nbflow.core.home import home_dir

    home = home_dir()
    columns = ("id", "job", "type", "logical date (UTC)", "state", "tries", "started (UTC)")
    table = Table(*columns, "duration", "output (in the home)", "error")
    for run in runs:
        output = run.output_path or "-"
        if run.output_path and Path(run.output_path).is_relative_to(home):
            output = str(Path(run.output_path).relative_to(home))
        table.add_row(
            str(run.id),
            run.job,
            run.run_type,
            f"{run.logical_date:%Y-%m-%d %H:%M}",
            run.state,
            str(run.attempts),
            f"{run.started_at:%m-%d %H:%M:%S}" if run.started_at else "-",
            f"{run.duration:.1f} s" if run.duration is not None else "-",
            output,
            _one_line(run.error or run.reason or ""),
        )
    # Piped or captured output has no terminal width: do not squeeze the table into 80.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- settings -------------------------------------------------------------------

_SETTINGS = {
    "smtp.host": str,
    "smtp.port": int,
    "smtp.user": str,
    "smtp.password": str,
    "smtp.starttls": bool,
    "smtp.from": str,
}


@cli.group()
def settings() -> None:
    """Settings of this home (the SMTP server e-mail alerts go through)."""


def _setting_key(key: str) -> tuple[str, str]:
    if key not in _SETTINGS:
        from nbflow.core.errors import did_you_mean

        raise click.UsageError(
            f"unknown setting `{key}`{did_you_mean(key, _SETTINGS)}; "
            f"known settings: {', '.join(_SETTINGS)}"
        )
    group, _, field = key.partition(".")
    return group, field


@settings.command("set")
@click.argument("key")
@click.argument("value")
def settings_set(key: str, value: str) -> None:
    """Set KEY (e.g. smtp.host) to VALUE."""
    group, field = _setting_key(key)
    kind = _SETTINGS[key]
    parsed: object
    if kind is bool:
        if value.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise click.UsageError(f"`{key}` is true or false, not {value!r}")
        parsed = value.lower() in ("true", "yes", "1", "on")
    elif kind is int:
        try:
            parsed = int(value)
        except ValueError:
            raise click.UsageError(f"`{key}` is a whole number, not {value!r}") from None
    else:
        parsed = value
    store = _runstore()
    current = dict(store.get_setting(group, {}) or {})
    current[field] = parsed
    store.set_setting(group, current)
    shown = "***" if field == "password" else repr(parsed)
    click.echo(f"{key} = {shown}")


@settings.command("unset")
@click.argument("key")
def settings_unset(key: str) -> None:
    """Remove KEY."""
    group, field = _setting_key(key)
    store = _runstore()
    current = dict(store.get_setting(group, {}) or {})
    current.pop(field, None)
    store.set_setting(group, current)
    click.echo(f"{key} removed")


@settings.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (passwords masked).")
def settings_show(as_json: bool) -> None:
    """Every setting (passwords masked)."""
    store = _runstore()
    values = {}
    for key in _SETTINGS:
        group, field = key.partition(".")[::2]
        current = store.get_setting(group, {}) or {}
        if field in current:
            values[key] = "***" if field == "password" else current[field]
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    if not values:
        click.echo("no settings (e-mail alerts use an SMTP server on localhost:25)")
    for key, value in values.items():
        click.echo(f"{key} = {value!r}")


# --- dag (jupyter rendering) --------------------------------------------------


@cli.command("dag")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="File to write (.svg, .png, .pdf, .dot).",
)
@click.option("--pipeline", help="Which pipeline, when SOURCE defines several.")
@parameter_option("A notebook parameter (notebooks are executed to find their pipelines).")
def dag_command(
    source: str, output: str | None, pipeline: str | None, parameters: tuple[tuple[str, str], ...]
) -> None:
    """Draw the pipeline of a Python module or a notebook, coloured by status.

    A module is imported; a notebook is executed (never in place; cached work is
    not recomputed) with a final cell that reports its pipelines.
    """
    from nbflow.jobs.dag import graphs_of_module, graphs_of_notebook, pick, render_graph

    path = Path(source).absolute()
    if path.suffix == ".ipynb":
        graphs = graphs_of_notebook(path, notebook_values(path, parameters))
    elif path.suffix == ".py":
        if parameters:
            raise click.UsageError("-p is for notebooks; a module is imported, not run")
        graphs = graphs_of_module(path)
    else:
        raise click.UsageError(f"{source}: give a notebook (.ipynb) or a Python module (.py)")
    name, graph = pick(graphs, pipeline, path)
    target = Path(output) if output else Path(f"{path.stem}-dag.svg")
    render_graph(graph, target)
    states: dict[str, int] = {}
    for state in graph["states"].values():
        states[state] = states.get(state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in states.items())
    click.echo(f"pipeline `{name}`: {len(graph['nodes'])} tasks ({summary}) -> {target}")


# --- export (jobs) ------------------------------------------------------------


@cli.group()
def export() -> None:
    """Hand a job to Airflow or Prefect, running the same notebook through nbflow."""


def _export(orchestrator: str, name: str, output: str) -> None:
    from nbflow.jobs.export import export_job

    target = export_job(orchestrator, name, output, store=_runstore())
    click.echo(f"exported job `{name}` to {orchestrator}: {target}")


@export.command("airflow")
@click.argument("name")
@click.option("-o", "--output", default=".", show_default=True, help="Folder to write into.")
def export_airflow(name: str, output: str) -> None:
    """Write an Airflow 3 DAG file for job NAME (put it in Airflow's dags folder)."""
    _export("airflow", name, output)


@export.command("prefect")
@click.argument("name")
@click.option("-o", "--output", default=".", show_default=True, help="Folder to write into.")
def export_prefect(name: str, output: str) -> None:
    """Write a Prefect 3 flow and its deployment for job NAME (`python FILE` serves it)."""
    _export("prefect", name, output)


def main() -> None:
    from nbflow.jobs.startup import skip_unused_imports

    skip_unused_imports()
    cli(prog_name="nbflow")


if __name__ == "__main__":
    main()
