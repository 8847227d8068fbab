"""A report opened in a real browser (headless Debian Chromium through Playwright): the
notebook's scripts run inside their sandboxed frame and cannot read the report around them,
and the alert one of them calls never opens. A screenshot goes to `test-artifacts/`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.ui.report import write_report
from tests.conftest import ROOT
from tests.jobs.notebooks import write_notebook
from tests.ui.test_report import HOSTILE, IN_KERNEL

# The pipeline in the kernel gets a task that fails (the notebook goes on: the run does not
# raise), so the screenshot shows a failed task with its log.
FAILING = IN_KERNEL.replace(
    "p.run(",
    "\n@p.task\ndef publish(total: int) -> None:\n"
    "    print('publishing', total)\n    raise RuntimeError('the warehouse is read-only')\n\np.run(",
).replace("})", "}, raise_on_failure=False)")

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"


def test_a_notebook_script_in_the_report_cannot_read_the_report(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    nb = write_notebook(
        tmp_path / "hostile.ipynb",
        'date = "2024-01-01"',
        [FAILING, HOSTILE],
        markdown="# Nightly load\nA notebook whose outputs try to reach the page around them.",
    )
    nr = nf.run_notebook(nb, parameters={"date": "2024-02-03"})
    assert nr.ok and nr.run_id
    target = write_report(nr.run_id, tmp_path / "report.html")

    chromium = shutil.which("chromium")
    assert chromium, "Debian's `chromium` is missing: run scripts/setup.sh (it installs it)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(target.as_uri())
            page.wait_for_selector("iframe.notebook")
            frame = page.frame_locator("iframe.notebook")
            probe = frame.locator("#probe")
            # The script ran (the text changed) and was refused the parent's document.
            probe.wait_for(state="attached")
            page.wait_for_function(
                "() => document.querySelector('iframe.notebook').contentWindow !== null"
            )
            text = probe.text_content(timeout=10_000)
            assert text == "blocked: SecurityError", text
            assert dialogs == []  # sandbox without allow-modals: alert(1) never opened
            # Nothing of the frame's reached the report's own page.
            assert page.evaluate("() => document.title").startswith("nbflow report: notebook")
            assert page.locator("#probe").count() == 0
            # The pipeline run inside the kernel is drawn: its DAG nodes are in the page.
            assert page.locator("svg g.node").count() == 3
            assert page.locator('tr[data-task="publish"][data-state="failed"]').count() == 1
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
