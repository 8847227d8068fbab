"""The `nbflow` command: a thin layer over `nbflow.core` and `nbflow.jobs`.

Each sub-command parses its arguments, calls the public API, and prints.
Errors from nbflow are shown as one clear line (exit code 2 for bad input,
1 for a failed run); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from nbflow import __version__
from nbflow.core.cache.fsstore import (
    MIN_SECRET_CHARS,
    FsStore,
    configured_url,
    is_url,
    read_cache_settings,
    write_cache_settings,
)
from nbflow.core.cache.store import DiskStore
from nbflow.core.errors import NbflowError, did_you_mean
from nbflow.jobs.runstore import RUN_STATES, RunStore

RUNS_LIMIT = 1_000_000
"""`runs --limit` at most: SQLite's LIMIT is a 64-bit integer, and no table is read that long."""


class _Group(click.Group):
    """The root group: every error, nbflow's or click's own, is printed in one form,
    `nbflow: error: MESSAGE` (click's usage line and help hint above its own errors)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NbflowError as exc:
            click.echo(f"nbflow: error: {exc}", err=True)
            sys.exit(2)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        # Click's standalone mode prints its errors as `Error: ...`: run it non-standalone and
        # print them ourselves, in nbflow's form.
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _show_click_error(exc)
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C: nothing was started
                click.echo("\nnbflow: interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("nbflow: aborted", err=True)  # "no" at a confirmation
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _show_click_error(exc: click.ClickException) -> None:
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        click.echo(exc.ctx.get_usage(), err=True)
        if exc.ctx.command.get_help_option(exc.ctx) is not None:
            click.echo(f"Try '{exc.ctx.command_path} --help' for help.\n", err=True)
    click.echo(f"nbflow: error: {exc.format_message()}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
# The version of the code that runs, not of installed metadata: the distribution is named
# `nbflow-pipelines` (`nbflow` on PyPI is another project), the import name stays `nbflow`.
@click.version_option(version=__version__, prog_name="nbflow")
def cli() -> None:
    """Turn Jupyter notebooks into cached, scheduled, parameterized pipelines."""


# --- cache (core) -----------------------------------------------------------


def parameter_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`-p/--parameter NAME VALUE`, repeatable: every command that takes notebook parameters.

    Checked here, at the boundary: a name given twice (which value was meant?) and text
    that is not valid Unicode (a lone surrogate: bytes in argv that are not UTF-8) are
    refused before anything runs or is stored."""
    return click.option(
        "-p",
        "--parameter",
        "parameters",
        nargs=2,
        multiple=True,
        metavar="NAME VALUE",
        help=help,
        callback=_check_parameters,
    )


def _check_parameters(
    ctx: click.Context, param: click.Parameter, value: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    from nbflow.jobs.schedules import ScheduleError, check_text

    seen: dict[str, str] = {}
    for name, text in value:
        try:
            check_text("-p name", name)
            check_text(f"-p {name}", text)
        except ScheduleError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
        if name in seen:
            raise click.BadParameter(
                f"parameter `{name}` is given twice ({seen[name]!r} and {text!r}); give it once",
                ctx,
                param,
            )
        seen[name] = text
    return value


class _Seconds(click.ParamType):
    """A number of seconds: finite, positive (or, `zero_ok`, at least 0), at most 100 years."""

    name = "SECONDS"

    def __init__(self, *, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from nbflow.jobs.schedules import ScheduleError, check_seconds

        if isinstance(value, float):
            return value
        try:
            seconds = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        label = f"--{param.name.replace('_', '-')}" if param and param.name else "seconds"
        try:
            check_seconds(label, seconds, low_open=not self.zero_ok)
        except ScheduleError as exc:
            self.fail(str(exc), param, ctx)
        return seconds


def notebook_values(notebook: str | Path, parameters: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`-p` texts parsed against the notebook's declared parameters (literals, else text)."""
    from nbflow.jobs.parameters import notebook_parameters, parse_cli_value

    declared = notebook_parameters(notebook)
    return {name: parse_cli_value(text, declared.get(name)) for name, text in parameters}


def _store(cache_dir: str | None) -> DiskStore | FsStore:
    from nbflow.core.home import home_dir

    url = cache_dir if is_url(cache_dir) else None if cache_dir else configured_url()
    if url:
        return FsStore(url)
    return DiskStore(cache_dir or home_dir() / "cache")


@cli.group()
def cache() -> None:
    """Inspect and clean the result cache."""


@cache.command("info")
@click.option(
    "--cache-dir",
    help="A pipeline's own cache_dir, or a shared cache's URL (default: the home's cache, or "
    "the shared cache set by cache.url / NBFLOW_CACHE_URL).",
)
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
@click.option(
    "--cache-dir",
    help="A pipeline's own cache_dir, or a shared cache's URL (default: the home's cache, or "
    "the shared cache set by cache.url / NBFLOW_CACHE_URL).",
)
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
    url = cache_dir if is_url(cache_dir) else None if cache_dir else configured_url()
    if url:
        _shared_gc(url, older_than, size_limit, drop_unverified)
        return
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


def _shared_gc(
    url: str, older_than: float | None, size_limit: int | None, drop_unverified: bool
) -> None:
    """gc of a shared cache: only unreferenced values older than an hour, and only under a
    prefix that carries this team's signed marker."""
    store = FsStore(url)
    if not store.is_cache():
        click.echo(
            f"no nbflow cache signed with this cache secret at {url}; nothing to collect "
            "(a wrong URL or another team's secret: nothing was deleted)"
        )
        return
    removed = store.gc(
        older_than=older_than * 86400 if older_than is not None else None,
        size_limit=size_limit,
        refuse_unverified=True,
        drop_unverified=drop_unverified,
    )
    click.echo(
        f"removed {removed['records']} results, {removed['files']} unreferenced values "
        "(older than an hour)"
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
@click.option("--timeout", type=_Seconds(), help="Seconds the whole run may take.")
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
    progress = _CellProgress()
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
        stop = (
            f", stopped by sys.exit() in {progress.names.get(nr.exited_at, f'cell {nr.exited_at}')}"
        )
    click.echo(f"ok: {notebook} ran in {nr.duration:.1f} s{stop}; output: {nr.output_path}")
    for name, value in nr.outputs.items():
        click.echo(f"  {name}: {_short_repr(value)}")


class _CellProgress:
    """Progress of a notebook run on stderr: one line rewritten in place on a terminal,
    plain lines otherwise (a log or a pipe gets no carriage returns or escape codes).
    Whether stderr is a terminal is rich's decision (it honours FORCE_COLOR and
    TTY_INTERACTIVE, and knows Jupyter), so every display of the CLI agrees. The cell
    is named by its number in the notebook, as errors and timeouts name it; `names`
    keeps each cell's label for the closing line."""

    def __init__(self) -> None:
        from rich.console import Console

        self.live = Console(stderr=True).is_interactive
        self.names: dict[int | None, str] = {}

    def __call__(self, done: int, total: int, *, cell: int | None, first_line: str) -> None:
        name = f"cell {cell} `{first_line}`" if cell is not None else "injected parameters"
        self.names[cell] = name
        line = f"{done}/{total} code cells: {name}"
        if self.live:
            # \r and erase-to-end: the line is redrawn in place, the last one stays.
            click.echo(f"\r\x1b[K{line}", err=True, nl=done == total)
        else:
            click.echo(line, err=True)


def _short_repr(value: object, limit: int = 100) -> str:
    """One line for a recorded output: tables by shape, everything else by repr."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "columns"):
        return f"{type(value).__name__} {' x '.join(map(str, shape))}"
    return _one_line(repr(value), limit)


# --- schedule / scheduler / trigger / backfill / runs (jobs: scheduling) -----


def _runstore() -> RunStore:
    return RunStore()


def _home() -> Path:
    from nbflow.core.home import home_dir

    return home_dir()


@cli.group()
def schedule() -> None:
    """Define notebook jobs that run on a cron schedule, an interval, or new files."""


@schedule.command("add")
@click.argument("name")
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--cron", help='A five-field cron expression in the job\'s zone, e.g. "30 2 * * *".')
@click.option("--every", help="An interval instead of cron: 30s, 15m, 2h, 1d (1 s to 100 years).")
@click.option("--tz", default="UTC", show_default=True, help="IANA zone the cron is read in.")
@parameter_option('A notebook parameter; VALUE may be a template such as "{{ ds }}".')
@click.option("--start", help="No run before this date/time (in the job's zone).")
@click.option("--end", help="No run after this date/time (a bare date: through that day).")
@click.option("--catchup", is_flag=True, help="After downtime, run every missed tick.")
@click.option("--max-active", type=int, default=1, show_default=True, help="Runs at once.")
@click.option("--retries", type=int, default=0, show_default=True, help="Retries of a failed run.")
@click.option(
    "--retry-delay", type=_Seconds(zero_ok=True), default=60.0, show_default=True, help="Seconds."
)
@click.option("--timeout", type=_Seconds(), help="Seconds one run may take.")
@click.option(
    "--on-failure",
    multiple=True,
    metavar="URL|COMMAND",
    help="Alert when a run fails: a webhook, mailto:, python:, apprise URL (slack://...) or command.",
)
@click.option("--on-success", multiple=True, metavar="URL|COMMAND", help="Alert on success.")
@click.option("--on-retry", multiple=True, metavar="URL|COMMAND", help="Alert on a retry.")
@click.option("--when-file", metavar="GLOB", help="Run once per new or changed matching file.")
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    help="Where runs execute (default: as the scheduler's --executor says).",
)
@click.option("--address", metavar="tcp://HOST:PORT", help="With --executor dask: its scheduler.")
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
    executor: str | None,
    address: str | None,
) -> None:
    """Add job NAME running NOTEBOOK; everything is checked before anything is stored."""
    from pathlib import Path

    from nbflow.jobs.runstore import utc_now
    from nbflow.jobs.schedules import Schedule, parse_every, parse_when

    now = utc_now()
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
        executor=executor,
        address=address,
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
@click.option(
    "--rules", "all_rules", is_flag=True, help="Print every time rule, not only this job's."
)
def schedule_show(name: str, all_rules: bool) -> None:
    """The job's definition, its next five run times (its zone and UTC) and its time rules."""
    from nbflow.jobs.alert_apprise import mask_url
    from nbflow.jobs.runstore import utc_now
    from nbflow.jobs.schedules import TIME_RULES, format_every, rules_summary

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
    if job.executor is not None:
        where = f" at {job.address}" if job.address else ""
        click.echo(f"executor:   {job.executor}{where}")
    for label, specs in (
        ("on failure", job.on_failure),
        ("on success", job.on_success),
        ("on retry", job.on_retry),
    ):
        for spec in specs:
            click.echo(f"{label + ':':<11} {mask_url(spec)}")  # a URL's token is a secret
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
    if all_rules:
        click.echo(TIME_RULES)
        return
    first, second = rules_summary(job)
    click.echo(f"time rules: {first}")
    click.echo(f"            {second} (all: --rules)")


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
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Where runs of jobs without an executor of their own execute.",
)
@click.option(
    "--address", metavar="tcp://HOST:PORT", help="With --executor dask: the Dask scheduler."
)
def scheduler_command(
    once: bool,
    max_running: int | None,
    heartbeat_timeout: float | None,
    grace: float,
    poll: float,
    executor: str,
    address: str | None,
) -> None:
    """The scheduler daemon, in the foreground (one per home; stop it with SIGTERM)."""
    from nbflow.jobs.scheduler import Scheduler, SchedulerLocked

    if executor == "dask" or address is not None:
        from nbflow.jobs.dask_runs import check_executor, connect

        check_executor(executor, address)
        assert address is not None
        connect(address).close()  # unreachable: say so now, not at the first run
    sched = Scheduler(
        executor=executor,
        address=address,
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


BACKFILL_ASK_ABOVE = 25
"""`backfill` asks before creating more runs than this (a day of an hourly job does not ask;
a day of a 15-minute job, 96 runs, does)."""

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report an interrupted command."""


@contextmanager
def _ctrl_c_cancels(what: str) -> Iterator[threading.Event]:
    """While inside, Ctrl-C (SIGINT) sets the event instead of raising KeyboardInterrupt, so
    the command can end what it started (see `_run_and_report`). A command started with
    SIGINT ignored (`cmd &` in a script, nohup) keeps ignoring it."""
    cancel = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        if not cancel.is_set():  # a second Ctrl-C while stopping changes nothing
            cancel.set()
            click.echo(f"\n{what}: interrupted; stopping its runs", err=True)

    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else interrupted)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_and_report(
    store: RunStore,
    run_ids: list[int],
    job: str,
    what: str,
    cancel: threading.Event,
    own: list[int] | None = None,
) -> None:
    """Execute `run_ids` in the foreground, print a summary, exit 1 if one did not succeed.

    Ctrl-C (`cancel` set) ends what this command started instead of leaving it behind:
    the notebooks running are stopped and their runs, and the queued ones among `own`
    (the runs the command created; default all), end `cancelled`; it says so and exits
    130."""
    from nbflow.jobs.attempt import run_in_foreground, sweep

    record = store.get_job(job)
    sweep(store)  # a run left `running` by a dead process must not block us forever
    runs = run_in_foreground(
        store,
        run_ids,
        max_active=int(record.spec.get("max_active", 1) or 1),
        echo=click.echo,
        cancel=cancel,
        cancellable=own,
    )
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    click.echo(f"{what}: {len(runs)} run(s): {summary or 'none'}")
    if cancel.is_set():
        _report_interrupted(runs)
    if any(run.state != "success" for run in runs):
        sys.exit(1)


def _report_interrupted(runs: list[Any]) -> NoReturn:
    """What Ctrl-C ended (to stderr), then exit 130."""
    # A run whose attempt was ended has a duration; one cancelled while queued has none.
    stopped = [r.id for r in runs if r.state == "cancelled" and r.duration is not None]
    dropped = [r.id for r in runs if r.state == "cancelled" and r.duration is None]
    left = [r.id for r in runs if r.state in ("queued", "running")]
    parts = []
    if stopped:
        parts.append(f"stopped the notebook of run(s) {_ids(stopped)}")
    if dropped:
        parts.append(f"cancelled {len(dropped)} queued run(s) ({_ids(dropped)})")
    if left:
        parts.append(f"left run(s) {_ids(left)} to the process or scheduler that has them")
    click.echo(
        f"interrupted: {'; '.join(parts) or 'nothing was running'}"
        + ("; they are `cancelled` in `nbflow runs`" if stopped or dropped else ""),
        err=True,
    )
    sys.exit(EXIT_INTERRUPTED)


def _ids(ids: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, ids[:shown]))
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


@cli.command("trigger")
@click.argument("name")
@parameter_option("Override a job parameter for this run (templates allowed).")
@click.option("--detach", is_flag=True, help="Only queue the run; a running scheduler runs it.")
def trigger_command(name: str, parameters: tuple[tuple[str, str], ...], detach: bool) -> None:
    """Run job NAME now, in the foreground (a `manual` run; it takes no scheduled slot)."""
    from nbflow.jobs.launch import trigger_run

    store = _runstore()
    run = trigger_run(store, name, dict(parameters))
    if detach:
        click.echo(f"queued run {run.id} of `{name}`; a running `nbflow scheduler` will start it")
        return
    with _ctrl_c_cancels(f"trigger {name}") as cancel:
        _run_and_report(store, [run.id], name, f"trigger {name}", cancel)


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
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help=f"Do not ask before creating more than {BACKFILL_ASK_ABOVE} runs (needed without a "
    "terminal).",
)
def backfill_command(
    name: str, start: str, end: str, reprocess: str, detach: bool, yes: bool
) -> None:
    """One run of job NAME per tick from --start to --end (both inclusive), in the foreground."""
    from nbflow.jobs.launch import plan_backfill
    from nbflow.jobs.schedules import ScheduleError, parse_when

    store = _runstore()
    record = store.get_job(name)
    tz = record.schedule.tz
    first, last = parse_when(start, tz), parse_when(end, tz, end_of_day=True)
    if last < first:
        raise ScheduleError(f"--end {end} is before --start {start}")
    preview = plan_backfill(store, name, first, last, reprocess=reprocess, dry_run=True)
    if preview.new > BACKFILL_ASK_ABOVE and not yes:
        what = (
            f"backfill {name}: {preview.ticks} tick(s) from {start} to {end} make "
            f"{preview.new} new run(s), each a run of {Path(record.schedule.notebook).name}"
        )
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            # Nobody to ask: a script that meant it says so with --yes; one that did not
            # must not start thousands of notebook runs.
            raise ScheduleError(
                f"{what}: more than {BACKFILL_ASK_ABOVE}, and there is no terminal to ask; "
                "add --yes to go ahead, or backfill a shorter range"
            )
        click.confirm(f"{what}. Go ahead?", abort=True, err=True)
    with _ctrl_c_cancels(f"backfill {name}") as cancel:
        plan = plan_backfill(store, name, first, last, reprocess=reprocess, stop=cancel)
        if plan.interrupted:  # Ctrl-C while the runs were being stored: none of them runs
            from nbflow.jobs.attempt import CANCELLED_REASON

            store.cancel_queued(plan.made, CANCELLED_REASON)
            _report_interrupted([store.get_run(i) for i in plan.made])
        _report_plan(plan, name, start, end, reprocess)
        if not plan.run_ids:
            return
        if detach:
            click.echo(
                f"queued {len(plan.run_ids)} run(s); a running `nbflow scheduler` starts them"
            )
            return
        what = f"backfill {name}"
        _run_and_report(store, plan.run_ids, name, what, cancel, own=plan.made)


def _report_plan(plan: Any, name: str, start: str, end: str, reprocess: str) -> None:
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


@cli.command("runs")
@click.argument("name", required=False)
@click.option("--status", type=click.Choice(RUN_STATES), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1, max=RUNS_LIMIT), default=20, show_default=True)
@click.option(
    "--wide", is_flag=True, help="Do not fit the table to the terminal: one line per run."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_command(
    name: str | None, status: str | None, limit: int, wide: bool, as_json: bool
) -> None:
    """Run history, newest logical date first (all jobs, or job NAME)."""
    from nbflow.history.api import job_run_links
    from nbflow.jobs.runstore import UnknownJobError

    store = _runstore()
    runs = store.list_runs(name, states=status, limit=limit)
    if name is not None and not runs and store.find_job(name) is None:
        raise UnknownJobError(name, store.job_names())
    # Each job run's records in the run history: an attempt each, with the notebook run it
    # started and the pipeline runs inside that.
    links = {run.id: job_run_links(run.job, run.id) for run in runs}
    if as_json:
        click.echo(json.dumps([{**r.to_dict(), "history": links[r.id]} for r in runs], indent=2))
        return
    if not runs:
        click.echo("no runs" + (f" of `{name}`" if name else "") + (f" {status}" if status else ""))
        return
    from nbflow.core.home import home_dir

    home = home_dir()
    rows: list[tuple[str, ...]] = []
    for run in runs:
        output = run.output_path or "-"
        if run.output_path and Path(run.output_path).is_relative_to(home):
            output = str(Path(run.output_path).relative_to(home))
        rows.append(
            (
                str(run.id),
                run.job,
                run.run_type,
                f"{run.logical_date:%Y-%m-%d %H:%M}",
                run.state,
                str(run.attempts),
                f"{run.started_at:%m-%d %H:%M:%S}" if run.started_at else "-",
                f"{run.duration:.1f} s" if run.duration is not None else "-",
                output,
                _inner_runs(links[run.id]),
                _one_line(run.error or run.reason or ""),
            )
        )
    columns: tuple[tuple[str, str], ...] = _RUN_COLUMNS
    if name is not None:  # one job: its name in the caption, not in every row
        columns = tuple(c for c in columns if c[0] != "job")
        rows = [row[:1] + row[2:] for row in rows]
    caption = (f"runs of `{name}`; " if name else "") + "times in UTC; output paths in the home"
    _print_table(columns, rows, wide=wide, caption=caption)
    if any(links.values()):
        click.echo(
            "`nbflow history show ID` shows a run of the `history` column with its tasks "
            "and inner runs; `nbflow logs ID` what they printed"
        )


def _inner_runs(attempts: list[dict[str, Any]]) -> str:
    """The `history` cell of a job run: its last attempt's history id, the notebook run it
    started and how many pipeline runs that held."""
    if not attempts:
        return "-"
    last = attempts[-1]
    parts = [last["id"]]
    for notebook in last["inner"]:
        pipelines = sum(1 for r in notebook["inner"] if r["kind"] == "pipeline")
        parts.append(
            f"{notebook['kind']} {notebook['id']}"
            + (f" ({pipelines} pipeline run{'s' if pipelines != 1 else ''})" if pipelines else "")
        )
    return " > ".join(parts)


# The runs table's columns: (header, fits the terminal by). Identifiers and the logical date
# are never cut (`keep`); the start time may wrap at its space (`wrap`); the output path and
# the error wrap anywhere (`fold`) instead of losing their ends.
_RUN_COLUMNS = (
    ("id", "keep"),
    ("job", "keep"),
    ("type", "keep"),
    ("logical date", "keep"),
    ("state", "keep"),
    ("tries", "keep"),
    ("started", "wrap"),
    ("duration", "keep"),
    ("output", "fold"),
    ("history", "fold"),
    ("error", "fold"),
)


def _print_table(
    columns: Iterable[tuple[str, str]],
    rows: list[tuple[str, ...]],
    *,
    wide: bool = False,
    caption: str | None = None,
) -> None:
    """A rich table fitted to the terminal, without the columns every row leaves empty.

    On a terminal the table fits its width: the `keep` columns stay whole and the
    `fold` ones wrap. Output to a pipe or file has no width to fit (unless
    `COLUMNS` says one), so it is not squeezed into 80; `--wide` never fits.
    Colours and box-drawing styles follow rich's own terminal detection: a file
    gets no escape codes.
    """
    import os

    from rich import box
    from rich.console import Console
    from rich.table import Table

    columns = list(columns)
    used = [i for i in range(len(columns)) if any(row[i] not in ("", "-") for row in rows)]
    # Rules under the header only: no vertical borders, so the width goes to the cells.
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption=caption,
        caption_justify="left",
    )
    for i in used:
        header, fit = columns[i]
        if fit == "keep":
            table.add_column(header, no_wrap=True)
        elif fit == "wrap":
            table.add_column(header)
        else:
            # A folded column keeps a readable minimum (its longest text, up to 24).
            longest = max(len(row[i]) for row in rows)
            table.add_column(header, overflow="fold", min_width=min(longest, 24))
    for row in rows:
        table.add_row(*(row[i] for i in used))
    console = Console()
    if wide or (not console.is_terminal and "COLUMNS" not in os.environ):
        console = Console(width=100_000)
    console.print(table)


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
    "history.keep_days": int,
    "alerts.report": bool,
    "cache.url": str,
    "cache.secret": str,
}
"""`cache.*` live in the home's cache.json (nbflow.core reads them), the others in the run store."""
_MASKED = ("password", "secret")


@cli.group()
def settings() -> None:
    """Settings of this home (the SMTP server e-mail alerts go through; how many days of run
    history the scheduler keeps; the shared cache and its team secret)."""


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
    if key == "history.keep_days" and isinstance(parsed, int) and parsed < 1:
        raise click.UsageError(f"`{key}` is a number of days, 1 or more, not {value!r}")
    if key == "cache.url" and not is_url(value):
        raise click.UsageError(
            f"`{key}` is a URL with a scheme (s3://bucket/prefix, file:///shared/folder), "
            f"not {value!r}"
        )
    if key == "cache.secret" and len(value) < MIN_SECRET_CHARS:
        raise click.UsageError(
            f"`{key}` needs at least {MIN_SECRET_CHARS} characters (it signs what nbflow "
            f"unpickles), not {len(value)}; make one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )
    if group == "cache":
        write_cache_settings(_home(), **{field: value})
        click.echo(f"{key} = {'***' if field in _MASKED else repr(parsed)}")
        return
    store = _runstore()
    if key == "smtp.password":
        from nbflow.core.secrets import set_secret
        from nbflow.jobs.alerts import SMTP_PASSWORD, smtp_settings

        smtp_settings(store)  # an old clear-text password moves out of the settings first
        backend = set_secret(SMTP_PASSWORD, str(parsed))
        click.echo(
            f"{key} = *** (kept as secret `{SMTP_PASSWORD}` in {_backend_text(backend)}; "
            f"`nbflow secret set {SMTP_PASSWORD}` prompts for it instead of taking it from "
            "the command line)"
        )
        return
    current = dict(store.get_setting(group, {}) or {})
    current[field] = parsed
    store.set_setting(group, current)
    click.echo(f"{key} = {parsed!r}")


@settings.command("unset")
@click.argument("key")
def settings_unset(key: str) -> None:
    """Remove KEY."""
    group, field = _setting_key(key)
    if group == "cache":
        write_cache_settings(_home(), **{field: None})
        click.echo(f"{key} removed")
        return
    store = _runstore()
    if key == "smtp.password":
        from nbflow.core.secrets import remove_secret
        from nbflow.jobs.alerts import SMTP_PASSWORD, smtp_settings

        smtp_settings(store)
        remove_secret(SMTP_PASSWORD)
        click.echo(f"{key} removed")
        return
    current = dict(store.get_setting(group, {}) or {})
    current.pop(field, None)
    store.set_setting(group, current)
    click.echo(f"{key} removed")


@settings.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (passwords masked).")
def settings_show(as_json: bool) -> None:
    """Every setting (passwords masked)."""
    from nbflow.core.secrets import secret_names
    from nbflow.jobs.alerts import SMTP_PASSWORD, smtp_settings

    store = _runstore()
    smtp_settings(store)  # an old clear-text password moves to the secret store
    values = {}
    cache_settings = read_cache_settings(_home())
    for key in _SETTINGS:
        group, field = key.partition(".")[::2]
        current = cache_settings if group == "cache" else store.get_setting(group, {}) or {}
        if field in current:
            values[key] = "***" if field in _MASKED else current[field]
        elif key == "smtp.password" and SMTP_PASSWORD in secret_names():
            values[key] = "***"
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
@parameter_option("A notebook parameter (the notebook's tasks are defined with it, not run).")
def dag_command(
    source: str, output: str | None, pipeline: str | None, parameters: tuple[tuple[str, str], ...]
) -> None:
    """Draw the pipeline of a Python module or a notebook, coloured by status.

    A module is imported. A notebook's cells are executed on a copy with every
    run held back: its tasks are defined and planned, and none of them runs.
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
    summary = ", ".join(f"{n} {s.replace('-', ' ')}" for s, n in states.items())
    click.echo(f"pipeline `{name}`: {len(graph['nodes'])} tasks ({summary}) -> {target}")


# --- home (core) ------------------------------------------------------------


@cli.command("home")
@click.option("--path", "path_only", is_flag=True, help="Print only the home's path.")
def home_command(path_only: bool) -> None:
    """Which nbflow home is in use, and why (it is not created here)."""
    from nbflow.core.home import home_dir, locate_home

    location = locate_home()
    home_dir(create=False)  # an existing home is checked: one that is not safe is refused
    if path_only:
        click.echo(location.path)
        return
    click.echo(f"home:  {location.path}")
    click.echo(f"why:   {location.reason}")
    if location.path.exists():
        click.echo("state: in use")
    else:
        click.echo("state: not created yet; the first command that needs it creates it (0700)")


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


# --- secrets (core) ----------------------------------------------------------


@cli.group()
def secret() -> None:
    """Secrets that runs use by name (`secret:NAME`, `nf.secret("NAME")`); values are never shown."""


@secret.command("set")
@click.argument("name")
@click.option(
    "--from-env",
    "from_env",
    metavar="VAR",
    help="Take the value from environment variable VAR instead of prompting.",
)
def secret_set(name: str, from_env: str | None) -> None:
    """Store secret NAME: prompted for (never echoed), or read from --from-env VAR."""
    import getpass

    from nbflow.core.secrets import check_name, set_secret

    check_name(name)
    if from_env is not None:
        value = os.environ.get(from_env)
        if not value:
            raise click.UsageError(
                f"environment variable `{from_env}` is not set or empty; export it first"
            )
    elif sys.stdin.isatty():
        value = getpass.getpass(f"value of secret {name}: ")
    else:
        # Piped in (`... | nbflow secret set NAME`): one line, its newline dropped.
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise click.UsageError(f"no value given for secret `{name}`; nothing was stored")
    backend = set_secret(name, value)
    click.echo(f"secret `{name}` stored in {_backend_text(backend)}")


@secret.command("list")
def secret_list() -> None:
    """The names of the stored secrets and where each is kept (never the values)."""
    from nbflow.core.secrets import secret_names

    names = secret_names()
    if not names:
        click.echo("no secrets (add one with `nbflow secret set NAME`)")
    for name, backend in names.items():
        click.echo(f"{name}\t{backend}")


@secret.command("remove")
@click.argument("name")
def secret_remove(name: str) -> None:
    """Forget secret NAME."""
    from nbflow.core.secrets import remove_secret, secret_names

    if not remove_secret(name):
        known = ", ".join(f"`{n}`" for n in secret_names()) or "none"
        raise click.UsageError(
            f"no secret `{name}`{did_you_mean(name, secret_names())}; stored: {known}"
        )
    click.echo(f"secret `{name}` removed")


def _backend_text(backend: str) -> str:
    from nbflow.core.home import home_dir
    from nbflow.core.secrets import STORE_FILE

    if backend == "keyring":
        return "the system keyring"
    return f"{home_dir() / STORE_FILE} (mode 0600; no usable keyring backend)"


from nbflow.history.cli import register as _register_history  # noqa: E402

_register_history(cli)  # `nbflow history`, `nbflow history show|prune`, `nbflow logs`


@cli.command("report")
@click.argument("run_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="File to write [default: report-RUN_ID.html].",
)
def report_command(run_id: str, output: str | None) -> None:
    """Write one self-contained HTML report of run RUN_ID (an id from `nbflow history`)."""
    from nbflow.ui.report import write_report

    target = write_report(run_id, output or f"report-{run_id}.html")
    click.echo(f"report of run {run_id} -> {target}")


@cli.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--home", type=click.Path(file_okay=False), help="The nbflow home to show.")
@click.option(
    "--ip", default="127.0.0.1", show_default=True, help="Listen here (the token stays required)."
)
def ui_command(port: int, home: str | None, ip: str) -> None:
    """The dashboard in the browser, on 127.0.0.1 with a fresh token in the printed URL."""
    from nbflow.ui.app import serve

    serve(port=port, ip=ip, home=home)


def main() -> None:
    from nbflow.jobs.startup import skip_unused_imports

    skip_unused_imports()
    cli(prog_name="nbflow")


if __name__ == "__main__":
    main()
