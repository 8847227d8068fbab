"""`nbflow secret set|list|remove` through the real command: a terminal prompt that never echoes,
a pipe, an environment variable."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from nbflow.core.secrets import secret, secret_names

COMMAND = [sys.executable, "-m", "nbflow.cli", "secret"]


@pytest.fixture(autouse=True)
def _file_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_SECRET_BACKEND", "file")  # never the keyring of the tester


def _controlling_terminal() -> None:
    # In the child: a session of its own whose controlling terminal is the pty on stdin,
    # so getpass opens it as /dev/tty, as it does for a person at a terminal.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {needle!r} in {bytes(seen)!r}")
        try:
            seen += os.read(fd, 4096)
        except OSError:  # EIO: the child closed its side
            return


def test_set_prompts_on_the_terminal_without_echoing_the_value(home: Path) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*COMMAND, "set", "db_password"],
        stdin=child, stdout=child, stderr=child, preexec_fn=_controlling_terminal,
    )  # fmt: skip
    os.close(child)
    seen = bytearray()
    try:
        _read_until(main, b"value of secret db_password: ", seen)
        os.write(main, b"typed-Pa55word\n")
        _read_until(main, b"stored in", seen)
    finally:
        assert proc.wait(timeout=60) == 0, bytes(seen)
        while True:
            try:
                more = os.read(main, 4096)
            except OSError:
                break
            if not more:
                break
            seen += more
        os.close(main)
    assert b"typed-Pa55word" not in seen  # the terminal never echoed it
    assert f"{home / 'secrets.json'} (mode 0600".encode() in seen
    assert secret("db_password") == "typed-Pa55word"


def test_set_from_a_pipe_and_from_the_environment_then_list_and_remove(home: Path) -> None:
    env = {**os.environ, "DB_PW": "from-the-env"}
    piped = subprocess.run(
        [*COMMAND, "set", "piped"], input="from-a-pipe\n", capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert "from-a-pipe" not in piped.stdout + piped.stderr
    from_env = subprocess.run(
        [*COMMAND, "set", "db_password", "--from-env", "DB_PW"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert from_env.returncode == 0, from_env.stderr
    assert secret("piped") == "from-a-pipe" and secret("db_password") == "from-the-env"

    listed = subprocess.run([*COMMAND, "list"], capture_output=True, text=True)
    assert listed.stdout.splitlines() == ["db_password\tfile", "piped\tfile"]
    assert "from-" not in listed.stdout

    missing = subprocess.run([*COMMAND, "remove", "db_pasword"], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "no secret `db_pasword` (did you mean `db_password`?)" in missing.stderr
    removed = subprocess.run([*COMMAND, "remove", "db_password"], capture_output=True, text=True)
    assert removed.returncode == 0 and removed.stdout == "secret `db_password` removed\n"
    assert secret_names() == {"piped": "file"}


def test_set_refuses_an_unset_variable_an_empty_value_and_a_bad_name(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOPE"}
    unset = subprocess.run(
        [*COMMAND, "set", "x", "--from-env", "NOPE"], capture_output=True, text=True, env=env
    )
    assert unset.returncode == 2 and "environment variable `NOPE` is not set" in unset.stderr
    empty = subprocess.run([*COMMAND, "set", "x"], input="\n", capture_output=True, text=True)
    assert empty.returncode == 2 and "no value given for secret `x`" in empty.stderr
    bad = subprocess.run([*COMMAND, "set", "a b"], input="v\n", capture_output=True, text=True)
    assert bad.returncode == 2 and "'a b' is not a secret name" in bad.stderr
    assert secret_names() == {}
