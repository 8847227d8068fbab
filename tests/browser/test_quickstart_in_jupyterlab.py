"""End to end in a real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium
(Debian's `chromium`, driven by Playwright), the quickstart notebook run from the
Run menu, and the live DAG widget checked in the page: every task node done; and the
widget inside an `ipywidgets.VBox`, live while a run goes on, shown once per cell, its
selection panel showing a task's last runs and output lines from the run history.

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
from typing import Any

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
    yield from _serve(ROOT / "notebooks" / "quickstart.ipynb", tmp_path)


@pytest.fixture
def dashboard_lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server serving the notebook that puts the widget into a VBox."""
    yield from _serve(
        ROOT / "tests" / "fixtures" / "notebooks" / "widget_in_a_vbox.ipynb", tmp_path
    )


def _serve(notebook: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(notebook, root / notebook.name)
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
    # No "get notified about Jupyter news?" toast over the page (and the screenshots).
    notices = tmp_path / "user-settings" / "@jupyterlab" / "apputils-extension"
    notices.mkdir(parents=True)
    (notices / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
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


def _run_all(page: Any, base: str, token: str, notebook: str) -> None:
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    # Wait for the kernel before running everything.
    page.get_by_text("| Idle").wait_for(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def _all_cells_ran(page: Any) -> None:
    """Wait until every code cell has run (each prompt shows its number)."""
    page.wait_for_function(
        r"""() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\[\d+\]/.test(p.textContent));
        }""",
        timeout=180_000,
    )


def test_the_widget_inside_a_vbox_is_live_and_shown_once(dashboard_lab):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's `chromium` is missing: run scripts/setup.sh (it installs it)"
    base, token = dashboard_lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _run_all(page, base, token, "widget_in_a_vbox.ipynb")
            in_box = ".widget-vbox .nbflow-dag"
            try:
                # While `pipe.run()` runs in the next cell, the widget in the box shows it.
                page.wait_for_selector(
                    f"{in_box} svg g.node[data-task='clean'][data-state='running']",
                    timeout=120_000,
                )
                page.screenshot(path=str(ARTIFACTS / "dag-widget-in-vbox-running.png"))
                _all_cells_ran(page)
                # The second run loaded everything from the cache.
                page.wait_for_function(
                    """sel => document.querySelectorAll(sel).length === 3""",
                    arg=f"{in_box} svg g.node[data-state='cached']",
                    timeout=30_000,
                )
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "dag-widget-in-vbox-failure.png"))
                raise
            cells = page.locator(".jp-CodeCell")
            box_cell = cells.nth(1)
            assert box_cell.locator(".nbflow-dag").count() == 1, "the box shows it; no copy"
            widget = box_cell.locator(".widget-vbox .nbflow-dag")
            assert widget.locator(".nbflow-progress").inner_text().startswith("last run: 3 cached")
            assert "ETL dashboard" in box_cell.locator(".widget-vbox").inner_text()
            # `pipe.show()` in the middle of a cell: shown there, once, above what follows it.
            middle = cells.nth(4).locator(".jp-OutputArea")
            assert middle.locator(".nbflow-dag").count() == 1
            text = middle.inner_text()
            assert "the widget is shown above this line" in text
            assert text.index("pipeline dashboard") < text.index("the widget is shown above")
            # A %%task cell's trailing expression is shown after its status line.
            task_out = cells.nth(6).locator(".jp-OutputArea")
            assert "[nbflow] answer: ran in" in task_out.inner_text()
            result = task_out.locator(".jp-OutputArea-executeResult")
            assert result.locator(".jp-OutputArea-output").inner_text().strip() == "42"
            assert result.locator(".jp-OutputPrompt").inner_text().strip() == "[7]:"
            # Selecting a node shows its last runs and what it printed, from the run history.
            widget.locator("svg g.node[data-task='clean']").click()
            history = widget.locator(".nbflow-history")
            page.wait_for_function(
                "el => el.querySelectorAll('.nbflow-runs li').length === 2",
                arg=history.element_handle(),
                timeout=30_000,
            )
            runs = history.locator(".nbflow-runs li").all_inner_texts()
            assert "loaded from cache" in runs[0] and "ran" in runs[1], runs  # newest first
            assert history.locator(".nbflow-output").inner_text() == "cleaning 5 rows"
            box_cell.scroll_into_view_if_needed()
            box_cell.screenshot(path=str(ARTIFACTS / "dag-widget-in-vbox.png"))
        finally:
            browser.close()


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
            assert "enrich: ran" in title and "duration" in title
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
