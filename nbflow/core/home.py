"""The nbflow home: where the cache, run history, schedules and the signing secret live.

It is `$NBFLOW_HOME` when set, else `./.nbflow` in the current directory
(per project, like `.git`). Every folder nbflow creates there is private to
the user (0700) and the secret file is 0600, because cache entries are
unpickled and must not be writable or readable by anyone else.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_BYTES = 32


def home_dir(create: bool = True) -> Path:
    """The active home folder, made absolute (and created private when `create`)."""
    raw = os.environ.get("NBFLOW_HOME") or ".nbflow"
    path = Path(raw).expanduser().absolute()
    if create:
        ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed, with mode 0700 on the folders nbflow creates."""
    if not path.is_dir():
        # Every missing folder is made here, parents first (mkdir(parents=True) would
        # give the parents the umask's mode, e.g. 0755); folders that exist keep theirs.
        missing = [path, *(p for p in path.parents if not p.is_dir())][::-1]
        for folder in missing:
            folder.mkdir(exist_ok=True, mode=0o700)
            # mkdir's mode is filtered by the umask; set it explicitly.
            os.chmod(folder, 0o700)
    return path


def secret_key(home: Path | None = None) -> bytes:
    """The per-home signing secret, created on first use (0600)."""
    home = home or home_dir()
    path = home / "secret.key"
    try:
        data = path.read_bytes()
        if len(data) == SECRET_BYTES:
            return data
    except FileNotFoundError:
        pass
    ensure_private_dir(home)
    data = secrets.token_bytes(SECRET_BYTES)
    tmp = home / f".secret.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    try:
        # Two processes may race to create it: the first link wins and both use its bytes.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()
