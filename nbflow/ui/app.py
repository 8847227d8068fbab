"""The dashboard as a `jupyter_server` extension application: one code base, two servers.

- **Inside Jupyter**: the extension is enabled on install (the data file
  `jupyter-config/jupyter_server_config.d/nbflow.json`), so JupyterLab and Notebook
  serve the app at `<base_url>/nbflow/` behind their own login: no second server.
- **Standalone**: `nbflow ui` calls `serve()`, which starts a Jupyter server that loads
  only this extension, on 127.0.0.1 unless `--ip` says otherwise, with a fresh random
  token (Jupyter's own token check, so a request without it is redirected to the login
  page or refused). Jupyter's other APIs (kernels, contents, terminals) come with any
  Jupyter server; the standalone server's authorizer (`DashboardOnlyAuthorizer`) refuses
  them, so this server can only show the home and start the jobs declared in it.

The home it reads is the active nbflow home of the server process (`$NBFLOW_HOME`, or
`./.nbflow`), or `--DashboardApp.home` / `nbflow ui --home`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import jinja2
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.extension.application import ExtensionApp
from traitlets import Unicode

from nbflow.ui.queries import Sources

TEMPLATES = Path(__file__).parent / "templates"
NAME = "nbflow"


def make_templates() -> jinja2.Environment:
    """The page templates, with autoescape on: everything shown comes from notebooks,
    logs and parameters, which anyone who can run a job can write."""
    from nbflow.ui import queries

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["seconds"] = queries.seconds
    env.filters["size"] = queries.size
    return env


class DashboardApp(ExtensionApp):
    """The nbflow dashboard (see the module docstring)."""

    name = NAME
    description = "nbflow dashboard: jobs, runs, pipelines, logs and cached results"
    extension_url = "/nbflow/"
    load_other_extensions = False  # `nbflow ui` serves the dashboard alone

    home = Unicode("", help="The nbflow home to show (default: the active home).").tag(config=True)

    @classmethod
    def get_extension_package(cls) -> str:
        # The extension is the `nbflow.ui` package, not all of `nbflow` (the default
        # takes the top-level package): `jpserver_extensions = {"nbflow.ui": true}`.
        return "nbflow.ui"

    def initialize_settings(self) -> None:
        from nbflow.core.home import home_dir

        home = Path(self.home).absolute() if self.home else home_dir()
        self.settings["nbflow_sources"] = Sources(home)
        self.settings["nbflow_templates"] = make_templates()
        self.log.info("nbflow dashboard: showing the home %s", home)

    def initialize_handlers(self) -> None:
        from nbflow.ui.handlers import routes

        self.handlers.extend(routes())


class DashboardOnlyAuthorizer(Authorizer):
    """Allows the dashboard's own resource only: the standalone server starts no kernel,
    reads no file through the contents API and opens no terminal, whoever asks."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource == NAME


def standalone_argv(port: int, ip: str, token: str, home: Path | None) -> list[str]:
    """The Jupyter server options `nbflow ui` starts with."""
    argv = [
        f"--ServerApp.ip={ip}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0" if port else "--ServerApp.port_retries=50",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        "--ServerApp.terminals_enabled=False",
        f"--ServerApp.authorizer_class={DashboardOnlyAuthorizer.__module__}.DashboardOnlyAuthorizer",
        # Run as root inside containers: the server starts no kernel (see the authorizer).
        "--ServerApp.allow_root=True",
    ]
    if home is not None:
        argv.append(f"--DashboardApp.home={home}")
    return argv


def serve(
    *, port: int = 8765, ip: str = "127.0.0.1", home: str | os.PathLike[str] | None = None
) -> None:
    """Serve the dashboard until Ctrl-C (what `nbflow ui` runs). A fresh token each time."""
    token = secrets.token_urlsafe(24)
    home_path = Path(home).absolute() if home is not None else None
    if home_path is not None:
        # The jobs started from the page run in this home too (they read $NBFLOW_HOME).
        os.environ["NBFLOW_HOME"] = str(home_path)
    server = DashboardApp.initialize_server(argv=standalone_argv(port, ip, token, home_path))
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{server.port}{server.base_url}nbflow/?token={token}"
    print(f"nbflow dashboard: {url}", flush=True)
    print("(Ctrl-C stops it; the token changes each time)", flush=True)
    server.start()
