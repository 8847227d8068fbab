"""Real dashboard servers on 127.0.0.1 for the tests: `nbflow ui` (standalone) and a
Jupyter server with the extension enabled by the data file nbflow installs, and the
JupyterLab extension (the launcher card) where a wheel install puts it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

JOB = "greet"
LABEXTENSION = ROOT / "nbflow" / "ui" / "labextensions" / "nbflow-dashboard"
"""The committed build of `labextension/` (labextension/build.sh writes it)."""
PIPELINE_SCRIPT = """
import nbflow as nf
import pandas as pd

pipe = nf.Pipeline("sales")


@pipe.task
def raw(n: int) -> pd.DataFrame:
    print("reading", n, "rows")
    return pd.DataFrame({"region": ["<b>north</b>"] * n, "amount": range(n)})


@pipe.task
def total(raw: pd.DataFrame) -> int:
    return int(raw.amount.sum())


pipe.run(params={"n": 4})
pipe.run(params={"n": 5})
"""


@dataclass
class Dashboard:
    base: str
    """`http://127.0.0.1:PORT` (the dashboard is at `{base}/nbflow/`)."""
    token: str
    home: Path
    work: Path
    log: Path

    def url(self, path: str = "", token: bool = True) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/nbflow/{path}" + (f"{sep}token={self.token}" if token else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(home: Path, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NBFLOW_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
    }


def install_labextension(data_dir: Path) -> Path:
    """The launcher card's extension in `data_dir/labextensions/`, as a wheel install puts
    it in `share/jupyter/labextensions/` (an editable install places no data files)."""
    target = data_dir / "labextensions" / LABEXTENSION.name
    shutil.copytree(LABEXTENSION, target)
    return target


def populate(home: Path, work: Path) -> None:
    """A job (`greet`, the dashboard test notebook) and two runs of a pipeline (`sales`)."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "notebooks" / "dashboard_job.ipynb", work / "greet.ipynb")
    env = env_for(home, work.parent)
    nbflow = [sys.executable, "-m", "nbflow"]
    subprocess.run(
        [*nbflow, "schedule", "add", JOB, "greet.ipynb", "--cron", "0 2 * * *",
         "--tz", "Europe/Berlin"],
        cwd=work, env=env, check=True, capture_output=True,
    )  # fmt: skip
    (work / "sales.py").write_text(PIPELINE_SCRIPT)
    subprocess.run([sys.executable, "sales.py"], cwd=work, env=env, check=True)


def _wait_up(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "the dashboard server did not start:\n"
                    + log.read_text(errors="replace")[-3000:]
                ) from None
            time.sleep(0.3)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def standalone(tmp: Path) -> Iterator[Dashboard]:
    """`nbflow ui --port P --home H` as a real process; its token read from what it prints."""
    home, work = tmp / "home", tmp / "work"
    populate(home, work)
    log = tmp / "ui.log"
    out = open(log, "wb")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(
        # --port 0: a free port, chosen when the server binds (no race with other tests)
        [sys.executable, "-m", "nbflow", "ui", "--port", "0", "--home", str(home)],
        cwd=work,
        env=env_for(tmp / "elsewhere", tmp),  # --home, not $NBFLOW_HOME, picks the home
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        pattern = re.compile(
            r"^nbflow dashboard: http://127\.0\.0\.1:(\d+)/nbflow/\?token=(\S+)\n", re.M
        )
        while (found := pattern.search(log.read_text(errors="replace"))) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("nbflow ui did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        port, token = int(found.group(1)), found.group(2)
        base = f"http://127.0.0.1:{port}"
        _wait_up(server, f"{base}/nbflow/?token={token}", log)
        yield Dashboard(base, token, home, work, log)
    finally:
        _stop(server)
        out.close()


def jupyter(tmp: Path, base_url: str = "/") -> Iterator[Dashboard]:
    """JupyterLab with the server extension enabled by nbflow's own config file and the
    launcher card's extension in the data dir (both as a wheel installs them). `base_url`
    as under JupyterHub (`/user/NAME/`) puts everything below it."""
    import secrets

    home, work = tmp / "home", tmp / "work"
    populate(home, work)
    config = tmp / "jupyter-config" / "jupyter_server_config.d"
    config.mkdir(parents=True)
    shutil.copy(ROOT / "jupyter-config" / "jupyter_server_config.d" / "nbflow.json", config)
    install_labextension(tmp / "jupyter-data")  # $JUPYTER_DATA_DIR of env_for
    # No "get notified about Jupyter news?" toast over the page (and its screenshots).
    settings = tmp / "jupyter-config" / "lab" / "user-settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = free_port(), secrets.token_hex(16)
    log = tmp / "jupyterlab.log"
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
        f"--ServerApp.base_url={base_url}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    out = open(log, "wb")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(
        cmd, cwd=work, env=env_for(home, tmp), stdout=out, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}{base_url.rstrip('/')}"
    try:
        _wait_up(server, f"{base}/api?token={token}", log)
        yield Dashboard(base, token, home, work, log)
    finally:
        _stop(server)
        out.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    yield from standalone(tmp_path_factory.mktemp("standalone"))


@pytest.fixture(scope="module")
def lab_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    yield from jupyter(tmp_path_factory.mktemp("lab"))


def wait_for_run(d: Dashboard, run_path: str, timeout: float = 120) -> dict[str, object]:
    """Poll the run's JSON until it ends (the run executes for real: a kernel, papermill)."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        state = requests.get(d.url("api/" + run_path), timeout=10).json()
        if not state["active"]:
            return dict(state)
        if time.monotonic() > deadline:
            runner = d.home / "logs" / "dashboard-runner.log"
            raise AssertionError(
                f"run {run_path} still {state['state']}: "
                + (runner.read_text() if runner.exists() else "no runner log")
            )
        time.sleep(0.5)


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


TWO_TASKS = """
import nbflow as nf

pipe = nf.Pipeline("{name}")


@pipe.task
def load():
    return {value}


@pipe.task
def double(load):
    return load * 2
"""
"""A script of a pipeline `{name}` whose `load` returns `{value}`, and `double` of it (for
`str.format`, or `.replace("{name}", ...)` first): what a user edits between two runs."""
