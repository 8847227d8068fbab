"""What the layers above the jobs layer give it: small callbacks, set when `nbflow` is imported.

The jobs layer never imports those layers (tests/core/test_layers.py); `nbflow/__init__.py`
sets these so that a scheduled run's alert can name a report made by `nbflow.ui`.
This module imports nothing, so setting a hook loads nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ReportWriter = Callable[[str, Path], Path]
"""(history run id, home) -> the path of the report written for that run."""

report_writer: ReportWriter | None = None


def set_report_writer(writer: ReportWriter | None) -> None:
    """Who writes a run's report for an alert (`alerts.report` setting); None: nobody."""
    global report_writer
    report_writer = writer
