"""Retention: `nbflow history prune` removes old runs, their logs and their output notebooks.

Policy: a run goes when it is older than `older_than` seconds, or when it is not
among the `keep` newest runs of its name; a run still `running` never goes.
With a run go its task rows, its log folder, the report an alert wrote of it
(`<home>/reports/`) and, for a notebook run, the executed notebook it wrote
inside the home (a file elsewhere is the user's). Of the status snapshots, the newest of
each pipeline stays, the others go.
The cache is never touched: a cached value stays for the runs that need it,
and `nbflow cache gc` decides about values.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbflow.core.errors import NbflowError
from nbflow.core.home import home_dir
from nbflow.history.logs import run_dir
from nbflow.history.recorder import drain, forget_written_sets, open_store

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 86400.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w` or a bare number of days -> seconds."""
    match = _AGE.match(text)
    if match is None:
        raise NbflowError(f"an age is a number with s, m, h, d or w (e.g. 30d, 12h), not {text!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


@dataclass
class PruneReport:
    """What a prune removed (or, dry, would remove)."""

    runs: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    dry_run: bool = False


def prune(
    older_than: float | None = None, keep: int | None = None, *, dry_run: bool = False
) -> PruneReport:
    """Remove runs older than `older_than` seconds or beyond the `keep` newest of their name."""
    if older_than is None and keep is None:
        raise NbflowError("say what to prune: --older-than AGE, --keep N, or both")
    if keep is not None and keep < 0:
        raise NbflowError(f"--keep must be 0 or more, not {keep}")
    drain()
    home = home_dir()
    store = open_store(home)
    store.settle_interrupted()
    rows = store.runs(limit=None)
    cutoff = time.time() - older_than if older_than is not None else None
    seen: dict[str, int] = {}
    report = PruneReport(dry_run=dry_run)
    for row in rows:  # newest first
        seen[row["name"]] = seen.get(row["name"], 0) + 1
        if row["state"] == "running":
            continue
        old = cutoff is not None and row["started"] < cutoff
        surplus = keep is not None and seen[row["name"]] > keep
        if not (old or surplus):
            continue
        report.runs.append(row["id"])
        logs = run_dir(home, row["id"])
        if logs.is_dir():
            report.files.append(logs)
        output = row.get("output")
        if output and Path(output).is_relative_to(home) and Path(output).is_file():
            report.files.append(Path(output))
        written = home / "reports" / f"{row['id']}.html"  # the report an alert named
        if written.is_file():
            report.files.append(written)
    if dry_run:
        return report
    # Rows first: a file left behind by a crash here is unreferenced garbage, never a record
    # that points to nothing.
    # Status snapshots: the newest of each pipeline stays (the dashboard reads it), with the
    # graph of its run copied in when that run goes.
    store.keep_graph_of(report.runs)
    store.delete_runs(report.runs)
    store.prune_snapshots()
    # The package sets of the runs removed may be gone with them: the next run writes its own.
    forget_written_sets()
    for path in report.files:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return report
