"""The nbflow home: where the cache, run history, schedules and the signing secret live.

Which home (found as git finds its repository, `locate_home`):

1. `$NBFLOW_HOME` when it is set;
2. else the nearest `.nbflow` folder in the working directory or above it;
3. else a new `.nbflow` at the project root: the nearest folder, from the
   working directory up, that holds `pyproject.toml` or `.git`;
4. else a new `.nbflow` in the working directory.

So a kernel started in `notebooks/` and the CLI at the repository root use
one home. `nbflow home` prints which one is in use and by which rule.

Who may own it (checked before any use, as ssh checks `~/.ssh`):

- The home, every folder nbflow uses in it (and a pipeline's own
  `cache_dir`) must belong to the current user and be writable by nobody
  else, because cache entries are unpickled and the run history holds
  commands that alerts run. A folder of ours that others may only read
  (0755) is tightened to 0700; one others may write to, or one of another
  user, is refused with a `HomeError` that says what to fix: another user
  could have planted files in it.
- The home (and a `cache_dir`) may be a symbolic link of ours to a folder
  that passes these checks; a link of another user is refused. Folders
  nbflow makes inside the home for run output (`runs/JOB`) are never
  followed when they are links (`private_subdir`), so a planted link cannot
  redirect output notebooks elsewhere.
- `secret.key` must be a regular file of ours that nobody else can read or
  write (0600); it is created with `O_EXCL`, read with `O_NOFOLLOW`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nbflow.core.errors import HomeError

__all__ = [
    "HomeError",
    "HomeLocation",
    "create_private_file",
    "ensure_private_dir",
    "home_dir",
    "locate_home",
    "private_subdir",
    "secret_key",
]

SECRET_BYTES = 32
HOME_ENV = "NBFLOW_HOME"
HOME_FOLDER = ".nbflow"
PROJECT_MARKERS = ("pyproject.toml", ".git")

_OTHERS = 0o077  # group and other permission bits
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True)
class HomeLocation:
    """The home in use and why: `rule` is "env", "found", "project" or "cwd"."""

    path: Path
    rule: Literal["env", "found", "project", "cwd"]
    reason: str


def locate_home(cwd: str | os.PathLike[str] | None = None) -> HomeLocation:
    """Find the home by the rules in the module docstring, without creating or checking it."""
    raw = os.environ.get(HOME_ENV)
    if raw:
        path = Path(raw).expanduser().absolute()
        return HomeLocation(path, "env", f"$NBFLOW_HOME is set to {raw}")
    start = Path(cwd if cwd is not None else os.getcwd()).absolute()
    for folder in (start, *start.parents):
        candidate = folder / HOME_FOLDER
        if candidate.is_dir():
            where = (
                "the working directory"
                if folder == start
                else f"{folder}, above the working directory"
            )
            return HomeLocation(
                candidate, "found", f"the nearest {HOME_FOLDER} folder is in {where}"
            )
    for folder in (start, *start.parents):
        marker = next((m for m in PROJECT_MARKERS if (folder / m).exists()), None)
        if marker is not None:
            return HomeLocation(
                folder / HOME_FOLDER,
                "project",
                f"no {HOME_FOLDER} folder at or above the working directory; "
                f"{folder} is the project root (it holds {marker})",
            )
    return HomeLocation(
        start / HOME_FOLDER,
        "cwd",
        f"no {HOME_FOLDER} folder and no project root (pyproject.toml or .git) at or above "
        "the working directory",
    )


def home_dir(create: bool = True) -> Path:
    """The active home folder, made absolute; created private when `create`.

    A home that exists is checked (and a readable one tightened) either way.
    """
    location = locate_home()
    what = f"the nbflow home ({location.reason})"
    if create:
        ensure_private_dir(location.path, what=what)
    elif os.path.lexists(location.path):
        _check_dir(location.path, what, follow_link=True)
    return location.path


def ensure_private_dir(path: Path, *, what: str | None = None) -> Path:
    """Create `path` (and parents) with mode 0700 if needed, then check that it is ours.

    The folder itself must belong to us and be writable by nobody else (a
    readable one is tightened to 0700); it may be a link of ours to such a
    folder. Parents that already exist are not checked (a home under `/tmp`
    is fine); the ones made here are 0700.
    """
    path = Path(path)
    if not os.path.lexists(path):
        # Every missing folder is made here, parents first (mkdir(parents=True) would
        # give the parents the umask's mode, e.g. 0755); folders that exist keep theirs.
        missing = [path, *(p for p in path.parents if not os.path.lexists(p))][::-1]
        for folder in missing:
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:  # made meanwhile by another process: checked below
                continue
            _make_private(folder)
    _check_dir(path, what or f"folder `{path}`", follow_link=True)
    return path


def private_subdir(base: Path, *parts: str) -> Path:
    """`base/part/...`, each folder made 0700 or checked, never following a link.

    For folders nbflow makes inside the home (run output): a link found there
    was planted, since nbflow makes none, and is refused.
    """
    folder = Path(base)
    for part in parts:
        if not part or part in (".", "..") or os.sep in part:
            raise HomeError(folder / part, f"`{part}` is not a folder name nbflow can make")
        folder = folder / part
        try:
            # mkdir never follows a link in its last component: it fails on one.
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            _make_private(folder)
        _check_dir(folder, f"run folder `{folder}`", follow_link=False)
    return folder


def create_private_file(path: Path) -> bool:
    """Create `path` empty with mode 0600 unless a regular file is already there (then False).

    Used for output notebooks before they are written, so the writer (which
    truncates and keeps the mode) leaves them private. A link at `path` is
    refused: `O_NOFOLLOW` never writes through it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise HomeError(
                path,
                f"`{path}` is a symbolic link (to `{os.readlink(path)}`); nbflow does not write "
                "output through a link: remove it, or choose another output path",
            ) from None
        return False
    os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask
    os.close(fd)
    return True


def secret_key(home: Path | None = None) -> bytes:
    """The per-home signing secret, created on first use (0600) and checked on every read."""
    home = home or home_dir()
    path = home / "secret.key"
    data = _read_secret(path)
    if data is not None and len(data) == SECRET_BYTES:
        return data
    ensure_private_dir(home, what=f"the nbflow home `{home}`")
    data = secrets.token_bytes(SECRET_BYTES)
    tmp = home / f".secret.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    try:
        # Two processes may race to create it: the first link wins and both use its bytes.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    final = _read_secret(path)
    assert final is not None
    return final


def _read_secret(path: Path) -> bytes | None:
    """The secret's bytes, or None when there is none; refused unless ours and 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link
        if os.path.islink(path):
            raise HomeError(
                path,
                f"the signing secret `{path}` is a symbolic link (to `{os.readlink(path)}`); "
                "nbflow only signs with a file of its own: remove the link (nbflow makes a new "
                "secret; results cached under the old one are then recomputed)",
            ) from exc
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise HomeError(path, f"the signing secret `{path}` is not a regular file: remove it")
        if info.st_uid != os.geteuid():
            raise HomeError(
                path,
                f"the signing secret `{path}` belongs to {_user(info.st_uid)}, not to you "
                f"({_name(os.geteuid())}): whoever owns it can sign cache entries that nbflow "
                "unpickles. Use a home of your own (set NBFLOW_HOME), or remove the file",
            )
        if info.st_mode & _OTHERS:
            raise HomeError(
                path,
                f"the signing secret `{path}` has mode {_mode(info.st_mode)}: others can read or "
                "write it, and so sign cache entries that nbflow unpickles. If nobody else could "
                f"have used it, run `chmod 600 {path}`; else remove it and the home's cache",
            )
        return fh.read()


def _make_private(folder: Path) -> None:
    """Mode 0700 on a folder just made (mkdir's mode is filtered by the umask), through a
    descriptor opened without following links, so a link swapped in is never changed."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _check_dir(path: Path, what: str, *, follow_link: bool) -> None:
    """Refuse `path` unless it is a folder of ours that nobody else can write to.

    A readable one (0755) is tightened to 0700. `follow_link`: a symbolic link
    of ours to such a folder is accepted (the folder is then what is checked).
    """
    me = os.geteuid()
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise HomeError(path, f"{what}: `{path}` does not exist") from None
    target = path
    if stat.S_ISLNK(info.st_mode):
        link = os.readlink(path)
        if not follow_link:
            raise HomeError(
                path,
                f"{what} is a symbolic link (to `{link}`); nbflow makes these folders itself and "
                f"never follows a link there, so output cannot be redirected: remove `{path}`",
            )
        if info.st_uid != me:
            raise HomeError(
                path,
                f"{what}: `{path}` is a symbolic link (to `{link}`) made by {_user(info.st_uid)}, "
                f"not by you ({_name(me)}): remove it, or set NBFLOW_HOME to a folder of yours",
            )
        target = path.resolve()
        try:
            info = os.stat(target)
        except FileNotFoundError:
            raise HomeError(
                path, f"{what}: `{path}` links to `{link}`, which does not exist"
            ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise HomeError(path, f"{what}: `{target}` is not a folder; remove it or move it away")
    if info.st_uid != me:
        raise HomeError(
            path,
            f"{what}: `{target}` belongs to {_user(info.st_uid)}, not to you ({_name(me)}). "
            "nbflow only uses folders of its user, because it unpickles what it finds there: "
            "set NBFLOW_HOME (or cache_dir) to a folder of yours",
        )
    if info.st_mode & _OTHERS_WRITE:
        raise HomeError(
            path,
            f"{what}: `{target}` has mode {_mode(info.st_mode)}, so others can write to it and "
            "could have planted files that nbflow would trust. Check what is in it, then run "
            f"`chmod 700 {target}` (or use another folder)",
        )
    if info.st_mode & _OTHERS:
        # Readable by others but not writable: nothing can have been planted, so
        # tightening keeps the promise (folders of the home are 0700) without refusing.
        os.chmod(target, 0o700)


def _user(uid: int) -> str:
    try:
        return f"user `{pwd.getpwuid(uid).pw_name}` (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _name(uid: int) -> str:
    try:
        return f"`{pwd.getpwuid(uid).pw_name}`"
    except KeyError:
        return f"uid {uid}"


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"
