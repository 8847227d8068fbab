"""`ProgressListener`: one line redrawn in place on a terminal, plain lines anywhere else."""

from __future__ import annotations

import io
import os
import pty

import nbflow as nf
from nbflow import Pipeline


def _three_tasks(pipe: Pipeline) -> None:
    pipe.task(lambda: 1, name="a")
    pipe.task(lambda a: a + 1, name="b")
    pipe.task(lambda b: b + 1, name="c")


def test_progress_to_a_file_is_plain_lines_without_control_characters(pipe: Pipeline):
    _three_tasks(pipe)
    stream = io.StringIO()
    pipe.run(listeners=[nf.ProgressListener(stream, interval=0)])
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text, repr(text)
    lines = text.splitlines()
    assert lines[-1].startswith("[nbflow] 3/3 tasks"), lines
    assert all(line.startswith("[nbflow] ") for line in lines)


def test_progress_on_a_terminal_redraws_one_line(pipe: Pipeline):
    _three_tasks(pipe)
    main, child = pty.openpty()
    with os.fdopen(child, "w") as terminal:
        pipe.run(listeners=[nf.ProgressListener(terminal, interval=0)])
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: everything written has been read
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    text = b"".join(chunks).decode()
    assert text.count("\n") == 1 and text.count("\r") >= 3, repr(text)  # \n becomes \r\n on a tty
    assert "3/3 tasks" in text.rsplit("\r\x1b[K", 1)[1]
