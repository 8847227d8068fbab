"""A report opened in a real browser (headless Debian Chromium through Playwright): the
notebook's scripts run inside their sandboxed frame and cannot read the report around them,
the alert one of them calls never opens, and nothing it asks for reaches a server (a real
one on 127.0.0.1 that answers everything and counts the requests). A screenshot goes to
`test-artifacts/`."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.ui.report import write_report
from tests.conftest import ROOT
from tests.jobs.notebooks import write_notebook
from tests.ui.test_report import HOSTILE, IN_KERNEL

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"

# The pipeline in the kernel gets a task that fails (the notebook goes on: the run does not
# raise), so the screenshot shows a failed task with its log.
FAILING = IN_KERNEL.replace(
    "p.run(",
    "\n@p.task\ndef publish(total: int) -> None:\n"
    "    print('publishing', total)\n    raise RuntimeError('the warehouse is read-only')\n\np.run(",
).replace("})", "}, raise_on_failure=False)")

# Outputs that try to send what they see out: an image and a fetch, to the test's server.
# Each writes what happened into an element of its own.
PHONE_HOME = '''
from IPython.display import HTML, display
display(HTML("""<div id="img">image not tried</div>
<img src="http://127.0.0.1:PORT/img"
 onerror="document.getElementById('img').textContent = 'image refused'"
 onload="document.getElementById('img').textContent = 'image loaded'">
<div id="fetch">fetch not tried</div><script>
fetch("http://127.0.0.1:PORT/fetch").then(
  () => { document.getElementById("fetch").textContent = "fetched"; },
  (e) => { document.getElementById("fetch").textContent = "fetch refused: " + e.name; });
</script>"""))
'''

UNTOUCHED = {"#probe": "probe did not run", "#img": "image not tried", "#fetch": "fetch not tried"}


class _Counting(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[ThreadingHTTPServer]:
    """A server on 127.0.0.1 that answers every GET and keeps the paths asked for."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_notebook_script_in_the_report_cannot_read_the_report(
    tmp_path: Path, listener: ThreadingHTTPServer
) -> None:
    from playwright.sync_api import sync_playwright

    port = str(listener.server_address[1])
    nb = write_notebook(
        tmp_path / "hostile.ipynb",
        'date = "2024-01-01"',
        [FAILING, HOSTILE, PHONE_HOME.replace("PORT", port)],
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
            frame = page.wait_for_selector("iframe.notebook").content_frame()
            assert frame is not None
            # Wait until each hostile output has tried (its element's text changed).
            for selector, before in UNTOUCHED.items():
                frame.wait_for_function(
                    "([s, t]) => { const e = document.querySelector(s);"
                    " return e !== null && e.textContent !== t; }",
                    arg=[selector, before],
                    timeout=15_000,
                )
            seen = {s: frame.locator(s).text_content() for s in UNTOUCHED}
            assert seen == {
                # The script ran, and was refused the report's document.
                "#probe": "blocked: SecurityError",
                # The content policy the frame inherits refused both requests...
                "#img": "image refused",
                "#fetch": "fetch refused: TypeError",
            }, seen
            # ... and the server, which would have answered them, was never asked.
            assert listener.paths == []  # type: ignore[attr-defined]
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
