"""Where the dashboard (nbflow.ui, at `/nbflow/`) is, seen from a kernel: the page of its Jupyter
server. Kernel side, so it lives in the Jupyter layer; it imports nothing of the ui layer."""

from __future__ import annotations

import os
from pathlib import Path


def jupyter_dashboard_url(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The dashboard URL of the running Jupyter server whose root holds `cwd` (default:
    the current folder, where a kernel starts), or None when no server is running.

    No token is added: the browser that shows the notebook is already logged in."""
    from jupyter_server.serverapp import list_running_servers

    here = Path(cwd or os.getcwd()).absolute()
    best: tuple[int, str] | None = None
    for info in list_running_servers():
        root = Path(info.get("root_dir") or info.get("notebook_dir") or "/").absolute()
        if here == root or root in here.parents:
            depth = len(root.parts)
            if best is None or depth > best[0]:
                best = (depth, str(info["url"]))
    if best is None:
        return None
    return best[1].rstrip("/") + "/nbflow/"
