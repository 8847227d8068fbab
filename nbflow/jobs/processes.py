"""Child processes of the jobs layer (notebook runners, alert commands) run in their own
process group, so that stopping one stops what it started (its kernel, a shell's children)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

__all__ = ["kill_group"]


def kill_group(process: subprocess.Popen[Any], wait: float = 10.0) -> None:
    """SIGKILL `process`'s process group (it was started with `start_new_session=True`), then
    reap it for at most `wait` seconds. A group already gone is not an error."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        process.kill()
    try:
        # communicate() also drains the pipes, so a child blocked on a full pipe can exit.
        process.communicate(timeout=wait)
    except (subprocess.TimeoutExpired, ValueError):  # ValueError: its pipes are closed
        pass
