"""The dashboard in a real browser (Playwright driving Debian's Chromium), for both ways
to reach it: `nbflow ui` and the Jupyter server extension inside JupyterLab.

Per server: trigger the job from its form with a parameter and watch the run turn
green without a reload; open its output notebook and a task's log; check from the
browser that the notebook's hostile script could not read the page around it; see the
job's grid on the overview; a page without the token goes to the login page.
In JupyterLab, the launcher card and the palette entry open the dashboard in a new tab.
Screenshots go to the test's tmp dir, `test-artifacts/`, and (standalone, and the
launcher) `docs/img/`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.ui.conftest import JOB, Dashboard, jupyter, standalone

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMG = ROOT / "docs" / "img"


@pytest.fixture(params=["standalone", "jupyter"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Dashboard]]:
    make = standalone if request.param == "standalone" else jupyter
    for d in make(tmp_path):
        yield request.param, d


@pytest.fixture
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's `chromium` is missing: run scripts/setup.sh (it installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 860})
        finally:
            browser.close()


def shoot(page: Any, name: str, kind: str, tmp_path: Path, *, docs: bool) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for folder in (tmp_path, ARTIFACTS):
        page.screenshot(path=str(folder / f"dashboard-{kind}-{name}.png"), full_page=True)
    if docs:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / f"dashboard-{name}.png"), full_page=True)


def more_runs(page: Any, d: Dashboard, tmp_path: Path, kind: str) -> None:
    """A backfill from the browser (count shown, then confirmed) and a failing run, so the
    overview's grid shows several states."""
    page.goto(d.url(f"jobs/{JOB}"))
    page.fill('#backfill-form input[name="start"]', "2024-01-01")
    page.fill('#backfill-form input[name="end"]', "2024-01-05")
    page.click('#backfill-form button[type="submit"]')
    assert "this makes 5 new run(s)" in page.inner_text("#backfill-count")
    shoot(page, "backfill", kind, tmp_path, docs=True)
    page.click("#confirm-backfill")
    page.wait_for_url(f"**/jobs/{JOB}?notice=*")
    page.goto(d.url(f"jobs/{JOB}"))
    page.fill("#p-fail_if", str(d.work / "greet.ipynb"))  # a file that exists: it fails
    page.click("#trigger")
    page.wait_for_selector('#run-state[data-state="failed"]', timeout=180_000)
    page.goto(d.url())
    deadline = time.monotonic() + 180
    while page.locator(f'tr[data-job="{JOB}"] a.cell.ok').count() < 6:
        assert time.monotonic() < deadline, "the backfill's runs did not all succeed"
        time.sleep(1)
        page.reload()  # the overview is not live; this waits for the runner
    assert page.locator(f'tr[data-job="{JOB}"] a.cell.failed').count() == 1


def test_trigger_watch_it_turn_green_read_its_notebook_and_log(served, browser_page, tmp_path):
    kind, d = served
    page = browser_page
    docs = kind == "standalone"

    # Without the token: Jupyter's login page, nothing of the dashboard.
    page.goto(d.url(f"jobs/{JOB}", token=False))
    assert "/login" in page.url
    assert page.locator("#trigger-form").count() == 0

    page.goto(d.url(f"jobs/{JOB}"))  # the token logs the browser in (a cookie from now on)
    page.fill("#p-count", "7")
    page.click("#trigger")
    page.wait_for_url("**/jobs/greet/runs/*")
    # A marker on the window: it survives only if the page is never reloaded.
    page.evaluate("window.__nbflowMarker = 'same page'")
    page.wait_for_selector('#run-state[data-state="success"]', timeout=180_000)
    assert page.evaluate("window.__nbflowMarker") == "same page"
    assert "badge ok" in (page.get_attribute("#run-state", "class") or "")
    page.wait_for_selector('tr[data-task="rows"] [data-field="task-state"]:text("done")')
    page.wait_for_selector("iframe#notebook")
    assert page.get_attribute("iframe#notebook", "sandbox") == "allow-scripts"

    # The output notebook, rendered, and its script kept away from this page.
    frame = page.frame_locator("iframe#notebook")
    probe = frame.locator("#probe")
    probe.wait_for(timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('iframe#notebook').contentWindow !== null", timeout=10_000
    )
    text = probe.inner_text(timeout=30_000)
    assert text.startswith("BLOCKED:SecurityError"), text
    assert "READ:" not in text and "NOCOOKIE:SecurityError" in text, text
    assert page.evaluate("document.body.getAttribute('data-pwned')") is None
    page.locator("#notebook").scroll_into_view_if_needed()
    shoot(page, "run", kind, tmp_path, docs=docs)

    # A task's log, in its own tab.
    with page.context.expect_page() as opened:
        page.click('tr[data-task="rows"] a.log-link')
    log = opened.value
    log.wait_for_load_state()
    assert log.locator("body").inner_text().strip() == "making 7 rows"
    log.close()

    # The overview: the job's grid has the run, green; the pipelines are there too.
    page.goto(d.url())
    cell = page.locator(f'tr[data-job="{JOB}"] .grid a.cell')
    assert cell.count() == 1
    assert "ok" in (cell.first.get_attribute("class") or "")
    if docs:
        more_runs(page, d, tmp_path, kind)
        page.goto(d.url())
    assert page.locator('tr[data-pipeline="sales"] .grid a.cell.ok').count() == 2
    assert page.locator('tr[data-pipeline="dashboard_inner"]').count() == 1
    shoot(page, "overview", kind, tmp_path, docs=docs)

    page.goto(d.url(f"jobs/{JOB}"))  # the job's page, now with its run
    assert page.locator("tr[data-run] .badge.ok").count() == (6 if docs else 1)
    shoot(page, "job", kind, tmp_path, docs=docs)

    if docs:  # the other pages, for the docs
        page.goto(d.url("pipelines/sales"))
        shoot(page, "pipeline", kind, tmp_path, docs=docs)
        page.goto(d.url("pipelines/sales/cache?preview=raw"))
        assert page.locator("#preview").inner_text().startswith("raw: 5 x 2")
        shoot(page, "cache", kind, tmp_path, docs=docs)


@pytest.mark.parametrize("base_url", ["/", "/user/ada/"])  # the second as under JupyterHub
def test_the_launcher_card_and_the_palette_open_the_dashboard_in_a_new_tab(
    base_url: str, browser_page, tmp_path
):
    lab = jupyter(tmp_path, base_url)
    d = next(lab)
    try:
        launcher_opens_the_dashboard(d, browser_page, tmp_path, docs=base_url == "/")
    finally:
        lab.close()  # stops the server (the generator's finally)


def launcher_opens_the_dashboard(d: Dashboard, page: Any, tmp_path: Path, *, docs: bool) -> None:
    page.goto(f"{d.base}/lab?token={d.token}")  # logs the browser in (Jupyter's cookie)
    card = page.locator('.jp-Launcher .jp-LauncherCard[data-category="Other"]').filter(
        has_text="nbflow dashboard"
    )
    card.wait_for(timeout=60_000)
    assert card.count() == 1
    assert "new browser tab" in (card.get_attribute("title") or "")
    assert card.locator("svg").count() == 1  # its icon: the overview's grid of run cells
    card.scroll_into_view_if_needed()
    shoot(page, "launcher", "jupyter", tmp_path, docs=docs)

    def opens_the_overview(click: Any) -> None:
        with page.context.expect_page() as opened:
            click()
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url == f"{d.base}/nbflow/"  # no token: the session's cookie logs it in
        tab.locator(f'tr[data-job="{JOB}"]').wait_for(timeout=30_000)
        assert tab.locator('tr[data-pipeline="sales"]').count() == 1
        tab.close()

    opens_the_overview(card.click)

    # The command palette: the same command, under "nbflow".
    page.keyboard.press("Control+Shift+C")
    search = page.locator(".lm-CommandPalette-input")
    search.wait_for()
    search.fill("nbflow dashboard")
    item = page.locator(".lm-CommandPalette-item").filter(has_text="nbflow dashboard")
    item.first.wait_for()
    assert item.count() == 1
    header = page.locator(".lm-CommandPalette-header").filter(has_text="nbflow")
    assert header.count() == 1
    opens_the_overview(item.click)
