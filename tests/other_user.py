"""A second, unprivileged user of this machine, for tests of who may own a home.

The tests run as root here, so they can create the user (`useradd`) and act as
it (`runuser -u USER --` for commands, a forked child after `setuid` for Python). Where that is impossible (not root, no `useradd`),
the tests that need the user are skipped with the reason.
"""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import signal
import subprocess
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int
    shared: Path
    """A folder both users can write to (mode 1777, like /tmp)."""

    def run(
        self, *command: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` as this user (no shell), checking that it succeeded."""
        return subprocess.run(
            ["runuser", "-u", self.name, "--", *command],
            capture_output=True,
            text=True,
            check=True,
            cwd=self.shared,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        )

    def call(self, fn: Callable[[], T], **env: str) -> T:
        """`fn()` in a forked child that has become this user (with `env` set); its result.

        A fork, not a new interpreter: Python lives under /root here, which the
        other user cannot enter, so the child keeps the modules already loaded.
        An exception in the child is raised here as `ChildFailed` with its traceback.
        """
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            status = 0
            try:
                # Forked from a process that may have other threads (a Dask loop): if one
                # held a lock the child needs, the child would wait forever; it dies instead.
                signal.alarm(120)
                os.close(read)
                os.environ.update(env)
                os.chdir(self.shared)
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                try:
                    payload = pickle.dumps((True, fn()))
                except BaseException:
                    payload = pickle.dumps((False, traceback.format_exc()))
                with os.fdopen(write, "wb") as fh:
                    fh.write(payload)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            raise ChildFailed(f"the child ended (wait status {status}) without a result")
        ok, value = pickle.loads(data)
        if not ok:
            raise ChildFailed(value)
        return value


class ChildFailed(Exception):
    """What the other user's code raised (the message is its traceback)."""


@pytest.fixture(scope="session")
def other_user() -> Iterator[OtherUser]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user (useradd); these tests run as a user")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("this machine has no useradd/runuser to create and act as a second user")
    name = f"nbflowt{uuid.uuid4().hex[:8]}"
    made = subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd could not create a second user: {made.stderr.strip()}")
    shared = Path(tempfile.mkdtemp(prefix="nbflow-users-"))
    os.chmod(shared, 0o1777)
    try:
        entry = pwd.getpwnam(name)
        yield OtherUser(name, entry.pw_uid, entry.pw_gid, shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
