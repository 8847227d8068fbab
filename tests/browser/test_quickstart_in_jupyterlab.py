"""End to end in a real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium
(Debian's `chromium`, driven by Playwright), the quickstart notebook run from the
Run menu, and the live DAG widget checked in the page: every task node done.

A screenshot of the page is saved in `test-artifacts/` for a person to look at.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
TASKS = ["extract", "clean", "enrich", "load"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on loopback, serving a copy of the quickstart notebook."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", root / "quickstart.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "NBFLOW_HOME": str(tmp_path / "nbflow-home"),  # a fresh cache: every step runs
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    # Keep every cell in the DOM (JupyterLab 4 detaches cells scrolled out of view).
    settings = tmp_path / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    cmd.append(f"--LabApp.user_settings_dir={tmp_path / 'user-settings'}")
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "wb")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api?token={token}", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "JupyterLab did not start:\n"
                        + (tmp_path / "jupyterlab.log").read_text(errors="replace")[-3000:]
                    ) from None
                time.sleep(0.3)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_quickstart_runs_in_jupyterlab_and_the_widget_shows_every_task_done(lab):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's `chromium` is missing: run scripts/setup.sh (it installs it)"
    base, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/quickstart.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            # Wait for the kernel before running everything.
            page.get_by_text("| Idle").wait_for(timeout=60_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            # Wait until every code cell has run (each prompt shows its number)...
            try:
                page.wait_for_function(
                    r"""() => {
                        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                        return prompts.length > 0 && prompts.every(p => /\[\d+\]/.test(p.textContent));
                    }""",
                    timeout=180_000,
                )
                # ...then the last run of the notebook has left all four steps done.
                page.wait_for_function(
                    """n => document.querySelectorAll(
                            '.nbflow-dag svg g.node[data-state="done"]').length === n""",
                    arg=len(TASKS),
                    timeout=30_000,
                )
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "quickstart-jupyterlab-failure.png"))
                raise
            widget = page.locator(".nbflow-dag").first
            names = widget.locator("svg g.node").evaluate_all(
                "gs => gs.map(g => [g.dataset.task, g.dataset.state])"
            )
            assert sorted(names) == sorted([t, "done"] for t in TASKS)
            assert "4/4 done" in widget.locator(".nbflow-progress").inner_text()
            # The legend and a node's tooltip tell the states apart.
            assert "loaded from cache" in widget.locator(".nbflow-legend").inner_text()
            title = widget.locator("svg g.node[data-task='enrich'] title").first.text_content()
            assert "enrich: done" in title and "duration" in title
            # Select a node and ask why it is what it is (a message to the kernel and back).
            widget.locator("svg g.node[data-task='clean']").click()
            widget.get_by_role("button", name="Explain").click()
            page.wait_for_function(
                "el => el.textContent.includes('clean: fresh')",
                arg=widget.locator(".nbflow-message").element_handle(),
                timeout=30_000,
            )
            widget.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "quickstart-jupyterlab.png"), full_page=False)
            widget.screenshot(path=str(ARTIFACTS / "dag-widget.png"))
        finally:
            browser.close()
