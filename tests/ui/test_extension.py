"""The dashboard as a Jupyter server extension: JupyterLab started with nbflow's own
config file serves it at `/nbflow/` behind Jupyter's login; `%nbflow ui` finds it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from IPython.core.interactiveshell import InteractiveShell

import nbflow.jupyter.extension as extension
from tests.conftest import ROOT
from tests.ui.conftest import JOB, Dashboard


def test_the_config_file_enables_the_extension_package_that_declares_its_app():
    config = json.loads(
        (ROOT / "jupyter-config" / "jupyter_server_config.d" / "nbflow.json").read_text()
    )
    assert config == {"ServerApp": {"jpserver_extensions": {"nbflow.ui": True}}}
    import nbflow.ui
    from nbflow.ui.app import DashboardApp

    assert nbflow.ui._jupyter_server_extension_points() == [
        {"module": "nbflow.ui.app", "app": DashboardApp}
    ]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert (
        '"etc/jupyter/jupyter_server_config.d" = ["jupyter-config/jupyter_server_config.d/nbflow.json"]'
        in pyproject
    )
    assert '"ui/templates/*"' in pyproject


def test_jupyter_serves_the_dashboard_behind_its_own_login(lab_dashboard: Dashboard):
    d = lab_dashboard
    r = requests.get(d.url(token=False), allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    page = requests.get(d.url(), timeout=10)
    assert page.status_code == 200 and f'data-job="{JOB}"' in page.text
    assert 'data-pipeline="sales"' in page.text
    s = requests.Session()
    job = s.get(d.url(f"jobs/{JOB}"), timeout=10)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', job.text).group(1)
    assert s.post(d.url(f"jobs/{JOB}/pause", token=False), timeout=10).status_code == 403
    r = s.post(
        d.url(f"jobs/{JOB}/pause", token=False),
        data={"_xsrf": xsrf},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 303
    s.post(d.url(f"jobs/{JOB}/resume", token=False), data={"_xsrf": xsrf}, timeout=10)


def test_the_nbflow_ui_magic_links_to_the_dashboard_of_its_server(
    lab_dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    d = lab_dashboard
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(d.work.parent / "jupyter-runtime"))
    monkeypatch.chdir(d.work)  # where the server's kernels start
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    extension._MAGICS = None
    sh.run_cell("%load_ext nbflow").raise_error()
    try:
        capsys.readouterr()
        result = sh.run_cell("%nbflow ui")
        result.raise_error()
        out = capsys.readouterr().out
        assert f"[nbflow] dashboard: {d.base}/nbflow/" in out
        assert result.result.data.startswith(f'<a href="{d.base}/nbflow/"')
        monkeypatch.chdir(Path("/"))  # no server's root holds it
        capsys.readouterr()
        sh.run_cell("%nbflow ui").raise_error()
        assert "run `nbflow ui` in a terminal" in capsys.readouterr().out
    finally:
        sh.run_cell("%unload_ext nbflow")
