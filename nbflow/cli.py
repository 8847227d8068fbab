"""The `nbflow` command: a thin layer over `nbflow.core` and `nbflow.jobs`.

Each sub-command parses its arguments, calls the public API, and prints.
Errors from nbflow are shown as one clear line (exit code 2 for bad input,
1 for a failed run); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from nbflow.core.errors import NbflowError


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

# --- run (jobs: notebook runs) ----------------------------------------------

# --- schedule / scheduler / trigger / backfill / runs (jobs: scheduling) -----

# --- dag (jupyter rendering) --------------------------------------------------


def main() -> None:
    cli(prog_name="nbflow")


if __name__ == "__main__":
    main()
