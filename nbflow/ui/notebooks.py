"""Output notebooks as HTML for the run page, and the policy that keeps them harmless.

An output notebook holds whatever its cells displayed: arbitrary HTML and JavaScript.
So it is never inlined into a dashboard page. It is served on its own URL with

- `Content-Security-Policy: sandbox allow-scripts`: the browser gives the document a
  unique opaque origin even when it is opened directly, not only inside the page's
  `<iframe sandbox="allow-scripts">` (no `allow-same-origin`). Its scripts run (plots
  work) but cannot read the dashboard's DOM, cookies, token or XSRF value, nor call
  its endpoints as the user (an opaque origin sends no cookies of ours);
- `default-src 'none'` plus inline styles, scripts and `data:` images only: nothing
  is fetched from elsewhere, and nothing is sent anywhere by `<img src=...>` tricks;
- `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

Rendering is the report's (`notebook_html`: nbconvert's `lab` template without its CDN
scripts, images inlined), memoized per file and modification time, so a page polled during
a run does not convert again.
"""

from __future__ import annotations

import functools
from pathlib import Path

from nbflow.ui.notebook_html import notebook_html

NOTEBOOK_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; frame-ancestors 'self'"
)
IFRAME_SANDBOX = "allow-scripts"
"""The iframe's sandbox: scripts yes, same origin no (so no access to the app)."""


def render_notebook(path: str | Path) -> str:
    """The notebook at `path` as a standalone HTML document (nbconvert, `lab` template)."""
    p = Path(path)
    stat = p.stat()
    return _render(str(p), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _render(path: str, mtime_ns: int, size: int) -> str:
    return notebook_html(path)
