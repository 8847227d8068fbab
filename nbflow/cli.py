"""The `nbflow` command: a thin layer over `nbflow.core` and `nbflow.jobs`.

Each sub-command parses its arguments, calls the public API, and prints.
Errors from nbflow are shown as one clear line (exit code 2 for bad input,
1 for a failed run); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys

import click

from nbflow.core.errors import NbflowError
from nbflow.core.store import DiskStore


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
def cache_gc(cache_dir: str | None, older_than: float | None, max_size: str | None) -> None:
    """Remove orphan value files and temp files left by crashes (and old results if asked)."""
    removed = _store(cache_dir).gc(
        older_than=older_than * 86400 if older_than is not None else None,
        size_limit=_parse_size(max_size) if max_size else None,
    )
    click.echo(f"removed {removed['records']} results, {removed['files']} orphan value files, "
               f"{removed['tmp']} temp files")


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
        return int(float(number) * units[raw[len(number):]])
    except (KeyError, ValueError):
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 500MB or 10GB") from None


# --- run (jobs: notebook runs) ----------------------------------------------


@cli.command("run")
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A parameter; VALUE is read as a Python literal (3, 2.5, [1, 2], {'a': 1}), else as text.",
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
    from nbflow.jobs.parameters import notebook_parameters, parse_cli_value

    declared = notebook_parameters(notebook)
    values = {name: parse_cli_value(text, declared.get(name)) for name, text in parameters}
    live = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        # On a terminal one line is rewritten in place; in a log, one line per cell.
        start = "\r" if live else ""
        click.echo(f"{start}cells {done}/{total}", err=True, nl=not live or done == total)

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
    click.echo(f"ok: {notebook} ran in {nr.duration:.1f} s; output: {nr.output_path}")


# --- schedule / scheduler / trigger / backfill / runs (jobs: scheduling) -----

# --- dag (jupyter rendering) --------------------------------------------------


def main() -> None:
    cli(prog_name="nbflow")


if __name__ == "__main__":
    main()
