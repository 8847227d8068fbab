"""The dashboard and run reports: jobs, runs, pipelines, logs and cached results as HTML.

One web app (`nbflow.ui.app.DashboardApp`, a `jupyter_server` extension application)
reached two ways:

- inside Jupyter, at `/nbflow/` behind Jupyter's own login (the extension is enabled
  when nbflow is installed: `jupyter-config/jupyter_server_config.d/nbflow.json`), and
  from JupyterLab's launcher and command palette: the prebuilt front-end extension in
  `labextensions/nbflow-dashboard/` (sources and build script in `labextension/`),
  which a wheel installs in `share/jupyter/labextensions/`;
- standalone, `nbflow ui [--port P] [--home H] [--ip IP]`: the same app on 127.0.0.1
  with a fresh random token in the printed URL.

The layer reads the run history (`nbflow.history`), the job store (`nbflow.jobs`)
and the cache (`nbflow.core.cache.store`); it never runs a task itself. Its actions
(trigger, pause/resume, backfill, rerun) call the functions the CLI calls.
`nbflow report` / `nf.report` write one run as a self-contained file (`report.py`,
with the output notebook rendered by `notebook_html.py`).
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Where Jupyter finds the extension application (read when the server starts)."""
    from nbflow.ui.app import DashboardApp

    return [{"module": "nbflow.ui.app", "app": DashboardApp}]
