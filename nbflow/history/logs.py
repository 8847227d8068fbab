"""Captured task output on disk: `<home>/logs/<run id>/<task>.log`, private, capped.

Policy: the folder and each run's folder are 0700, files 0600 (output may
hold what a task printed about its data). A log keeps at most `log_limit()`
bytes, the tail (the end of a log says why a task failed); how many bytes were
dropped, and the cap, are recorded in the history with the file's path.
The cap is `$NBFLOW_LOG_LIMIT` (bytes) or `DEFAULT_LIMIT`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nbflow.core.errors import NbflowError
from nbflow.core.home import private_subdir

DEFAULT_LIMIT = 1_000_000
LIMIT_ENV = "NBFLOW_LOG_LIMIT"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]]")


def log_limit() -> int:
    """The cap in bytes per task log: `$NBFLOW_LOG_LIMIT` if set, else 1 MB."""
    raw = os.environ.get(LIMIT_ENV)
    if not raw:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise NbflowError(
            f"${LIMIT_ENV} must be a number of bytes, not {raw!r}; unset it for the 1 MB default"
        ) from None
    if value < 1:
        raise NbflowError(f"${LIMIT_ENV} must be at least 1 byte, not {value}")
    return value


def file_name(task: str) -> str:
    """A file name for task `task`: safe characters kept, others as `%XX`."""
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), task)
    return (safe if not safe.startswith(".") else "%2E" + safe[1:]) + ".log"


def run_dir(home: Path, run_id: str) -> Path:
    return home / "logs" / run_id


def write_log(home: Path, run_id: str, task: str, text: str, limit: int) -> tuple[Path, int, int]:
    """Write a task's output, its tail of at most `limit` bytes; returns (path, bytes kept,
    bytes dropped)."""
    data = text.encode("utf-8", "replace")
    dropped = max(0, len(data) - limit)
    if dropped:
        data = data[dropped:]
        # Do not start inside a UTF-8 sequence: skip continuation bytes.
        skip = 0
        while skip < len(data) and skip < 4 and data[skip] & 0xC0 == 0x80:
            skip += 1
        data, dropped = data[skip:], dropped + skip
    folder = private_subdir(home, "logs", run_id)
    path = folder / file_name(task)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path, len(data), dropped
