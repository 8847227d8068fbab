"""The `nbflow history` group and `nbflow logs`: the history read from a terminal.

Registered by `nbflow/cli.py`; errors are `NbflowError`s, which the root group
prints in nbflow's form.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import click

from nbflow.core.errors import NbflowError
from nbflow.history.api import KINDS, STATES, children, get_run, history
from nbflow.history.records import RunRecord

FOLLOW_INTERVAL = 0.25


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _counts(run: RunRecord) -> str:
    counts: dict[str, int] = {}
    for t in run.tasks:
        counts[t.state] = counts.get(t.state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "-"


def _table(headers: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, caption=caption, caption_justify="left")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    # Not squeezed to 80 columns in a pipe: a log line reads whole.
    Console(width=None if sys.stdout.isatty() else 200, highlight=False).print(table)


class _HistoryGroup(click.Group):
    """`nbflow history [NAME] [options]` lists runs; `show` and `prune` are subcommands.

    A group cannot take an optional argument before its subcommands, so anything that
    is not a subcommand's name goes to the hidden `list` command.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("history", cls=_HistoryGroup)
def history_group() -> None:
    """Every run remembered, newest first: pipeline, notebook and job runs.

    \b
    nbflow history [NAME] [--kind K] [--state S] [--limit N] [--json]
    nbflow history show RUN_ID [--env] [--json]
    nbflow history diff RUN_A RUN_B [--force] [--json]
    nbflow history prune [--older-than 30d] [--keep N] [--dry-run]
    """


@history_group.command("list", hidden=True)
@click.argument("name", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="Only runs of this kind.")
@click.option("--state", type=click.Choice(STATES), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1, max=1_000_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_list(
    name: str | None, kind: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """The runs, newest first (all, or those named NAME): one line a run."""
    runs = history(name, kind=kind, state=state, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2, default=repr))
        return
    if not runs:
        what = " ".join(x for x in (state, kind) if x)
        click.echo(f"no {what + ' ' if what else ''}runs" + (f" of `{name}`" if name else ""))
        return
    rows = [
        [
            r.id,
            r.kind,
            r.name,
            r.state,
            _when(r.started),
            _took(r.duration),
            _counts(r),
            r.parent or "-",
        ]
        for r in runs
    ]
    _table(
        ["id", "kind", "name", "state", "started", "duration", "tasks", "parent"],
        rows,
        caption="times in UTC; `nbflow history show ID` for a run's tasks",
    )


@history_group.command("show")
@click.argument("run_id")
@click.option("--env", "env", is_flag=True, help="Print the environment it ran in instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_show(run_id: str, env: bool, as_json: bool) -> None:
    """One run: its tasks with their state, attempts, reasons and output sizes
    (with --env: the Python, platform, nbflow, source file, git commit and packages)."""
    run = get_run(run_id)
    if env:
        _show_env(run, as_json)
        return
    inner = children(run.id)
    if as_json:
        data = run.to_dict()
        data["children"] = [c.id for c in inner]
        click.echo(json.dumps(data, indent=2, default=repr))
        return
    click.echo(f"run {run.id}: {run.kind} `{run.name}` {run.state}")
    click.echo(f"  started  {_when(run.started)} UTC, took {_took(run.duration)}")
    click.echo(f"  host     {run.host} pid {run.pid}, nbflow {run.version}")
    if run.params:
        click.echo("  params   " + ", ".join(f"{k}={v!r}" for k, v in run.params.items()))
    if run.env:
        git = run.env.get("git") or {}
        commit = git.get("commit")
        where = f", git {commit[:10]}{' (dirty)' if git.get('dirty') else ''}" if commit else ""
        click.echo(f"  env      Python {run.env.get('python')}{where}; `--env` shows all")
    if run.parent:
        click.echo(f"  parent   {run.parent}")
    for c in inner:
        click.echo(f"  child    {c.id} {c.kind} `{c.name}` {c.state}")
    if run.output:
        click.echo(f"  output   {run.output}")
    if run.error:
        click.echo(f"  error    {run.error}")
    if not run.tasks:
        return
    rows = []
    for t in run.tasks:
        tries = "; ".join(
            f"#{a.number} {_took((a.end - a.start) if a.end and a.start else None)}"
            + (f" {a.error}" if a.error else "")
            for a in t.attempts
        )
        why = "cached" if t.cached else (t.error or t.reason or "-")
        log = (
            f"{t.log_size} B" + (f" (+{t.log_dropped} cut)" if t.log_dropped else "")
            if t.log_path
            else "-"
        )
        rows.append([t.name, t.state, _took(t.duration), tries or "-", why, log])
    _table(["task", "state", "duration", "attempts", "why", "log"], rows)


def _show_env(run: RunRecord, as_json: bool) -> None:
    from nbflow.history.diff import packages_of

    packages = packages_of(run)
    if as_json:
        data = {"id": run.id, "env": run.env, "packages_digest": run.packages}
        data["packages"] = packages
        click.echo(json.dumps(data, indent=2, default=repr))
        return
    click.echo(f"run {run.id}: {run.kind} `{run.name}` {run.state}")
    env = run.env
    if env is None:
        click.echo(f"  no environment recorded (nbflow {run.version} recorded this run)")
        return
    click.echo(
        f"  python   {env.get('python')} ({env.get('implementation')}) {env.get('executable')}"
    )
    click.echo(f"  platform {env.get('platform')}")
    click.echo(f"  nbflow   {env.get('nbflow')}")
    source = env.get("source")
    if source:
        click.echo(f"  source   {source.get('path')} (digest {source.get('digest')})")
    else:
        click.echo("  source   - (the code ran from no file: cells, or exec)")
    git = env.get("git")
    if git:
        if git.get("error"):
            click.echo(f"  git      {git.get('root')}: unknown ({git['error']})")
        else:
            state = "dirty" if git.get("dirty") else "clean"
            if not git.get("tracked", True):
                state += ", the source file is not tracked"
            branch = f" on {git['branch']}" if git.get("branch") else ""
            click.echo(
                f"  git      {git.get('commit') or '(no commit yet)'}{branch} ({state}) in {git.get('root')}"
            )
    if packages is None:
        click.echo("  packages not recorded")
        return
    click.echo(f"  packages {len(packages)} distributions (set {run.packages}):")
    _table(["package", "version"], [[name, version] for name, version in packages.items()])


@history_group.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--force", is_flag=True, help="Compare runs of different pipelines or jobs too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_diff(run_a: str, run_b: str, force: bool, as_json: bool) -> None:
    """What differs between two runs of the same pipeline, notebook or job: parameters,
    tasks (code, parameters, upstream data), environment and packages."""
    from nbflow.history.diff import diff_runs

    d = diff_runs(run_a, run_b, force=force)
    if as_json:
        click.echo(json.dumps(d.to_dict(), indent=2, default=repr, ensure_ascii=False))
        return
    click.echo(
        f"a  run {d.a.id} {d.a.kind} `{d.a.name}` {d.a.state}, started {_when(d.a.started)} UTC"
    )
    click.echo(
        f"b  run {d.b.id} {d.b.kind} `{d.b.name}` {d.b.state}, started {_when(d.b.started)} UTC"
    )
    if d.same:
        click.echo("no difference in parameters, tasks, environment or packages")
    rows: list[list[str]] = []
    for name, (va, vb) in d.params.items():
        rows.append(["parameter", name, _shown(va), _shown(vb)])
    for key, (va, vb) in d.env.items():
        rows.append(["environment", key, str(va), str(vb)])
    p = d.packages
    for name, version in p.added.items():
        rows.append(["package", name, "-", version])
    for name, version in p.removed.items():
        rows.append(["package", name, version, "-"])
    for name, (va, vb) in p.changed.items():
        rows.append(["package", name, va, vb])
    if rows:
        _table(["what", "name", "a", "b"], rows)
    task_rows = []
    for t in d.tasks:
        name = t.task if t.pipeline in (d.a.name, d.b.name) else f"{t.pipeline}.{t.task}"
        if t.change in ("only_a", "only_b"):
            task_rows.append([name, f"only in run {t.change[-1]}"])
        else:
            task_rows.append([name, "\n".join(t.reasons)])
    if task_rows:
        _table(["task", "why it differs"], task_rows)
    for note in d.notes:
        click.echo(f"note: {note}")


def _shown(value: object) -> str:
    from nbflow.history.diff import ABSENT

    return "-" if value == ABSENT else repr(value)


@history_group.command("prune")
@click.option("--older-than", metavar="AGE", help="Remove runs older than this: 30d, 12h, 2w.")
@click.option("--keep", type=click.IntRange(min=0), help="Keep the N newest runs of each name.")
@click.option("--dry-run", is_flag=True, help="List what would go; remove nothing.")
def history_prune(older_than: str | None, keep: int | None, dry_run: bool) -> None:
    """Remove old runs with their logs and output notebooks (never a cache value)."""
    from nbflow.history.prune import parse_age, prune

    report = prune(parse_age(older_than) if older_than else None, keep, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for run_id in report.runs:
        click.echo(f"{verb} run {run_id}")
    for path in report.files:
        click.echo(f"{verb} {path}")
    click.echo(f"{verb} {len(report.runs)} run(s), {len(report.files)} file(s)")


@click.command("logs")
@click.argument("run_id")
@click.argument("task", required=False)
@click.option(
    "--follow", "-f", is_flag=True, help="Print new output as it comes until the run ends."
)
def logs_command(run_id: str, task: str | None, follow: bool) -> None:
    """What the tasks of run RUN_ID printed and logged (or only TASK's).

    With --follow, a running task's output is printed as the run's process writes it into
    the history (once a second; a task run in another process, by the processes or
    Dask executor, shows its output when it ends), and the command ends with the run.
    """
    # task -> (bytes cut from the log's front, characters of the log shown): a log keeps its
    # tail, so when the cap cuts more from the front, what was shown moved left by that much
    # (counted in bytes: exact for ASCII output, close enough for a follower otherwise).
    shown: dict[str, tuple[int, int]] = {}
    while True:
        run = get_run(run_id)
        running = run.state == "running"
        if task is None:
            tasks = list(run.tasks)
        elif any(t.name == task for t in run.tasks):
            tasks = [run.task(task)]
        elif follow and running:
            tasks = []  # not started yet: wait for it
        else:
            known = ", ".join(t.name for t in run.tasks) or "none"
            raise NbflowError(f"run {run.id} has no task `{task}`; its tasks: {known}")
        if task is None and not follow and not any(t.log_path for t in tasks) and not run.output:
            click.echo(f"run {run.id} has no captured output", err=True)
        for t in tasks:
            text = t.log
            cut, length = shown.get(t.name, (0, 0))
            start = max(0, length - max(0, t.log_dropped - cut))
            if len(text) <= start:
                continue
            if task is None and t.name not in shown:
                click.echo(
                    f"--- {t.name}"
                    + (f" ({t.log_dropped} bytes cut, the tail kept)" if t.log_dropped else "")
                )
            click.echo(text[start:], nl=False)  # click.echo flushes: a pipe sees it now
            shown[t.name] = (t.log_dropped, len(text))
        if run.output and not follow and task is None:
            click.echo(f"--- the executed notebook is {run.output}")
        if not follow or not running:
            return
        time.sleep(FOLLOW_INTERVAL)


def register(cli: click.Group) -> None:
    """Add `history` and `logs` to the root command group."""
    cli.add_command(history_group)
    cli.add_command(logs_command)


__all__ = ["history_group", "logs_command", "register"]
