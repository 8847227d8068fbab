"""The environment of a run: what it ran on, recorded with it so two runs can be compared.

Per run: the Python version, implementation and platform, the nbflow version,
the installed distributions (name -> version, stored once per distinct set
under its digest), the digest of the notebook or module file that defines
what ran, and the git commit of the repository holding that file, with a
dirty flag.

Policy: **cheap on every run, never in the way.**

- The distribution set costs a stat per `sys.path` entry per run. A folder
  is listed again only when its mtime moved (an install, an upgrade or an
  uninstall adds or removes a `NAME-VERSION.dist-info` folder in it), and a
  wheel's name and version are read from that folder's name: about 1 ms for
  two hundred distributions where `importlib.metadata`, parsing every
  METADATA file, takes 75 ms or more.
- The source file's digest is `planner.file_digest`, read again only when the
  file's stat changes.
- git runs as a subprocess (`git status`, with a short timeout) only when the
  repository's `HEAD`, its reflog or its index, or the source file, changed
  since the last look in this process; otherwise the last answer is used. It
  runs in a thread of its own: the run does not wait for it, and its answer
  is written with the run's end. So
  a change to another file of the repository, with no commit and no `git add`,
  is noticed by the next process (or the next change of the source file), not
  by the next run in this one. Which folder holds the repository is looked up
  once per folder and process (a `git init` later is seen by the next process).
- Nothing here raises: a missing `git`, a timeout, an unreadable file leave
  that part out (`git` then holds an `error`), and the run goes on.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from blake3 import blake3

from nbflow.core.cache.planner import file_digest

GIT_TIMEOUT = 3.0
"""Seconds a `git` command may take before the commit is recorded as unknown."""
SOURCE_ENV = "NBFLOW_SOURCE"
"""Set by a notebook run for its kernel: the notebook the pipeline runs in it come from."""

_LOCK = threading.Lock()
_PACKAGES: tuple[tuple[tuple[str, int | None], ...], str, dict[str, str]] | None = None
_GIT: dict[Path, tuple[tuple[Any, ...], dict[str, Any]]] = {}
"""Repository root -> (what the last look depended on, its answer)."""
_ROOTS: dict[str, Path | None] = {}
_FIXED: dict[str, str] | None = None


def _name(name: str) -> str:
    """A distribution name as PEP 503 normalizes it (`Foo_Bar` -> `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(dist: importlib.metadata.Distribution, found: dict[str, str]) -> None:
    try:
        raw, version = dist.metadata["Name"], dist.version
    except Exception:  # a broken METADATA file: that distribution is left out
        return
    if raw and version is not None:
        found.setdefault(_name(raw), str(version))


def _entry_packages(entry: str) -> dict[str, str]:
    """The distributions one `sys.path` entry holds. A wheel's `NAME-VERSION.dist-info`
    folder says both in its name (PEP 427), so no METADATA file is parsed for it: that
    parsing is what makes `importlib.metadata` take a hundred ms for a few hundred
    distributions. Other forms (`.egg-info`, zip files) are read through importlib."""
    found: dict[str, str] = {}
    try:
        names = sorted(e.name for e in os.scandir(entry or "."))
    except NotADirectoryError:  # a zip file or an egg on the path
        for dist in importlib.metadata.distributions(path=[entry]):
            _metadata(dist, found)
        return found
    except OSError:
        return found
    for name in names:
        if name.endswith(".dist-info") and "-" in name[:-10]:
            dist_name, version = name[:-10].split("-", 1)
            found.setdefault(_name(dist_name), version)
        elif name.endswith((".dist-info", ".egg-info")):
            _metadata(importlib.metadata.PathDistribution(Path(entry or ".", name)), found)
    return found


_ENTRIES: dict[str, tuple[int | None, dict[str, str]]] = {}
"""sys.path entry -> (its mtime when listed, the distributions it held)."""


def _entry_mtime(entry: str) -> int | None:
    try:
        return os.stat(entry or ".").st_mtime_ns
    except OSError:
        return None


def scan_packages() -> dict[str, str]:
    """Every distribution importable from `sys.path`: normalized name -> version.

    The first one on the path wins when a name is installed twice (it is what imports).
    An entry is listed again only when its mtime moved (an install or an uninstall adds
    or removes a folder in it); so a run costs one stat per path entry."""
    found: dict[str, str] = {}
    for entry in sys.path:
        mtime = _entry_mtime(entry)
        known = _ENTRIES.get(entry)
        if known is None or known[0] != mtime or mtime is None:
            known = (mtime, _entry_packages(entry))
            _ENTRIES[entry] = known
        for name, version in known[1].items():
            found.setdefault(name, version)
    return dict(sorted(found.items()))


def packages_digest(packages: dict[str, str]) -> str:
    """The digest naming a distribution set: equal sets, equal digests."""
    text = "\n".join(f"{n}=={v}" for n, v in sorted(packages.items()))
    return blake3(text.encode()).hexdigest(length=20)


def packages() -> tuple[str, dict[str, str]]:
    """The digest and the distribution set of this process, listed again only where
    `sys.path` or one of its folders changed (see `scan_packages`)."""
    global _PACKAGES
    state = tuple((entry, _entry_mtime(entry)) for entry in sys.path)
    cached = _PACKAGES
    if cached is not None and cached[0] == state:
        return cached[1], cached[2]
    with _LOCK:
        found = scan_packages()
        digest = packages_digest(found)
        _PACKAGES = (state, digest, found)
    return digest, found


def _fixed() -> dict[str, str]:
    """What cannot change while this process lives: Python and the platform."""
    global _FIXED
    if _FIXED is None:
        # Not platform.platform(): it runs `uname -p` in a subprocess (2 ms in every fresh
        # process, inside the first run); uname's own fields name the platform as well.
        u = platform.uname()
        _FIXED = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": f"{u.system}-{u.release}-{u.machine}",
            "executable": sys.executable,
        }
    return _FIXED


# --- git -------------------------------------------------------------------------


def repo_root(directory: Path) -> Path | None:
    """The working tree holding `directory` (where `.git` is), or None; cached per folder."""
    key = str(directory)
    if key in _ROOTS:
        return _ROOTS[key]
    root: Path | None = None
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            root = candidate
            break
    _ROOTS[key] = root
    return root


def _git_dir(root: Path) -> Path:
    """The repository folder of a working tree: `.git`, or where a `.git` file points
    (a linked worktree, a submodule)."""
    dot = root / ".git"
    if dot.is_file():
        try:
            text = dot.read_text(encoding="utf-8").strip()
        except OSError:
            return dot
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            return target if target.is_absolute() else root / target
    return dot


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-optional-locks: looking never writes the index (a concurrent `git` would then
    # fail on its lock, and our own look would move the index's mtime).
    return subprocess.run(
        ["git", "--no-optional-locks", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _look(root: Path, source: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"root": str(root)}
    try:
        status = _git(root, "status", "--porcelain=v2", "--branch", "--untracked-files=no")
        if status.returncode != 0:
            info["error"] = (status.stderr.strip() or "git status failed").splitlines()[0]
            return info
        commit = None
        dirty = False
        for line in status.stdout.splitlines():
            if line.startswith("# branch.oid "):
                oid = line.split(" ", 2)[2].strip()
                commit = None if oid == "(initial)" else oid
            elif line.startswith("# branch.head "):
                head = line.split(" ", 2)[2].strip()
                info["branch"] = None if head == "(detached)" else head
            elif line and not line.startswith("#"):
                dirty = True
        info["commit"] = commit
        try:
            relative = str(source.relative_to(root))
        except ValueError:
            relative = str(source)
        tracked = _git(root, "ls-files", "--error-unmatch", "--", relative).returncode == 0
        info["tracked"] = tracked
        # A source file git does not hold is not in the commit: the commit alone cannot
        # bring back what ran.
        info["dirty"] = dirty or not tracked
    except FileNotFoundError:
        info["error"] = "git is not installed"
    except subprocess.TimeoutExpired:
        info["error"] = f"git took longer than {GIT_TIMEOUT:g} s"
    except OSError as exc:
        info["error"] = f"git could not run: {exc}"
    return info


class GitLook:
    """A look at a repository (`git status`) running in a thread of its own, so a run
    never waits for git when it starts; the recorder takes `result()` when it writes the
    run's end (off the run's thread)."""

    def __init__(self, root: Path, source: Path, key: tuple[Any, ...]) -> None:
        self._root, self._source, self._key = root, source, key
        self._info: dict[str, Any] | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name="nbflow-git", daemon=True).start()

    def _run(self) -> None:
        try:
            info = _look(self._root, self._source)
        except Exception as exc:  # never the run's problem
            info = {"root": str(self._root), "error": f"{type(exc).__name__}: {exc}"}
        with _LOCK:
            _GIT[self._root] = (self._key, info)
            _PENDING.pop(self._root, None)
        self._info = info
        self._done.set()

    def result(self, timeout: float = 2 * GIT_TIMEOUT + 1) -> dict[str, Any]:
        """What git said (waiting at most `timeout` s; then an `error` says it did not answer)."""
        if not self._done.wait(timeout):
            return {"root": str(self._root), "error": f"git did not answer in {timeout:g} s"}
        assert self._info is not None
        return self._info


_PENDING: dict[Path, GitLook] = {}


def git_state(source: Path, source_digest: str | None) -> dict[str, Any] | GitLook | None:
    """The commit (and dirty flag) of the repository holding `source`: the last answer when
    nothing it depends on changed, else a `GitLook` under way; None outside a repository."""
    root = repo_root(source.parent)
    if root is None:
        return None
    gitdir = _git_dir(root)
    key = (
        str(source),
        source_digest,
        _mtime(gitdir / "HEAD"),
        _mtime(gitdir / "logs" / "HEAD"),
        _mtime(gitdir / "index"),
    )
    with _LOCK:
        cached = _GIT.get(root)
        if cached is not None and cached[0] == key:
            return cached[1]
        pending = _PENDING.get(root)
        if pending is not None and pending._key == key:
            return pending
        look = _PENDING[root] = GitLook(root, source, key)
    return look


# --- the whole environment ---------------------------------------------------------


def source_file(candidate: str | os.PathLike[str] | None) -> Path | None:
    """The file a run's code comes from: `candidate` when it is a file, else the notebook
    a nbflow notebook run or a Jupyter server names for this kernel, else None."""
    for path in (candidate, os.environ.get(SOURCE_ENV), os.environ.get("JPY_SESSION_NAME")):
        if path and os.path.isfile(path):
            return Path(path).absolute()
    return None


def environment(
    nbflow_version: str, source: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], str, dict[str, str], GitLook | None]:
    """The environment of a run starting now: (the `env` column, the package set's digest,
    the package set, and a `GitLook` under way whose result is the env's `git`, when git
    had to be asked). Never raises (see the module docstring)."""
    env: dict[str, Any] = dict(_fixed())
    env["nbflow"] = nbflow_version
    try:
        digest, found = packages()
    except Exception as exc:  # a path entry that breaks importlib.metadata
        digest, found = "", {}
        env["packages_error"] = f"{type(exc).__name__}: {exc}"
    env["packages"] = len(found)
    path = source_file(source)
    if path is not None:
        try:
            source_digest: str | None = file_digest(str(path))
        except OSError:
            source_digest = None
        env["source"] = {"path": str(path), "digest": source_digest}
        git = git_state(path, source_digest)
        if isinstance(git, GitLook):
            return env, digest, found, git
        if git is not None:
            env["git"] = git
    return env, digest, found, None


__all__ = ["GitLook", "environment", "packages", "packages_digest", "scan_packages", "source_file"]
