"""What a task prints while it runs: stdout, stderr and `logging` records, kept per task.

Policy:

- **Per thread.** While a capture is active, `sys.stdout` and `sys.stderr` are
  proxies that hand each write to the capture of the *writing thread* (if it
  has one) and always to the stream they replaced, so output still appears
  where it did before (a notebook cell, a terminal). Threads of the thread
  executor each have their own capture; a thread the task starts itself is
  not captured (its output still reaches the stream). The proxies are put in
  place by the first active capture and removed by the last, unless someone
  replaced `sys.stdout` meanwhile (then it is left alone).
- **Logging.** A handler on the root logger adds each record emitted by a
  capturing thread as `LEVEL logger: message`; records are those the
  logging configuration lets through (the root logger's default level is
  WARNING). nbflow's own loggers are left out.
- **Masked.** The text is read with every secret value this process has
  held replaced by `***` (`nbflow.core.secrets.mask_revealed`), so a task
  that prints its password leaves `***` in its log and history.
- **Bounded.** A capture keeps at most `limit` characters, the tail (the end
  of a log says why it failed), and counts what it dropped.
- **Where it applies**: around the call of a task's function, in the thread
  or process that runs it (`executors.execute_job`, the process worker, the
  Dask worker), so the text travels back with the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from nbflow.core import events as ev
from nbflow.core.secrets import mask_revealed

DEFAULT_LIMIT = 1_000_000
"""Characters kept per task (the tail); about 1 MB."""


@dataclass
class Captured:
    """Text one task wrote, in order; `dropped` counts the characters cut from the front."""

    limit: int = DEFAULT_LIMIT
    parts: list[str] = field(default_factory=list)
    size: int = 0
    dropped: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * self.limit:
            self._trim()

    def _trim(self) -> None:
        joined = "".join(self.parts)
        cut = max(0, len(joined) - self.limit)
        self.dropped += cut
        self.parts = [joined[cut:]]
        self.size = len(self.parts[0])

    def snapshot(self) -> tuple[str, int]:
        """The text so far and the characters dropped, read from any thread while another
        writes (it trims nothing: joining the list is one step under the GIL)."""
        return "".join(self.parts), self.dropped

    @property
    def text(self) -> str:
        if self.size > self.limit:
            self._trim()
        # Masked when read, not when written: a value split across two writes is still found.
        return mask_revealed("".join(self.parts))


_local = threading.local()
_lock = threading.Lock()
_active = 0
_saved: dict[str, Any] = {}


def current() -> Captured | None:
    """The capture of the calling thread, if one is active."""
    return getattr(_local, "capture", None)


class _Tee:
    """Stands for `sys.stdout`/`sys.stderr` while captures are active."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        capture = getattr(_local, "capture", None)
        if capture is not None and text:
            capture.add(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        # flush, isatty, fileno, encoding... are those of the replaced stream.
        return getattr(self._stream, name)


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        capture = getattr(_local, "capture", None)
        if capture is None or record.name == "nbflow" or record.name.startswith("nbflow."):
            return
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        capture.add(f"{record.levelname} {record.name}: {message}\n")
        last = logging.lastResort
        # Without us the record would have reached Python's last-resort handler (stderr,
        # WARNING and up): it still does.
        if last is not None and record.levelno >= last.level and _only_handler(record.name):
            with adopt(None):  # captured once, above, not again through stderr
                last.handle(record)


def _only_handler(name: str) -> bool:
    """No handler but ours would see a record of logger `name`."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(h is not _handler for h in logger.handlers):
            return False
        if not logger.propagate:
            return True
        logger = logger.parent
    return True


_handler = _Handler()


def _install() -> None:
    global _active
    with _lock:
        _active += 1
        if _active > 1:
            return
        _saved["stdout"], _saved["stderr"] = sys.stdout, sys.stderr
        sys.stdout = _Tee(sys.stdout)
        sys.stderr = _Tee(sys.stderr)
        logging.getLogger().addHandler(_handler)


def _uninstall() -> None:
    global _active
    with _lock:
        _active -= 1
        if _active:
            return
        for name in ("stdout", "stderr"):
            proxy = getattr(sys, name)
            if isinstance(proxy, _Tee):
                setattr(sys, name, _saved[name])
        _saved.clear()
        logging.getLogger().removeHandler(_handler)


@contextlib.contextmanager
def adopt(capture: Captured | None) -> Iterator[None]:
    """Let the calling thread write into `capture` (a helper thread running a task's code)."""
    previous = getattr(_local, "capture", None)
    _local.capture = capture
    try:
        yield
    finally:
        _local.capture = previous


@contextlib.contextmanager
def capture_output(limit: int = DEFAULT_LIMIT) -> Iterator[Captured]:
    """Capture what the calling thread writes to stdout, stderr and logging until exit."""
    captured = Captured(limit)
    _install()
    previous = getattr(_local, "capture", None)
    _local.capture = captured
    try:
        yield captured
    finally:
        # Output already buffered in the real stream stays there; ours is complete.
        _local.capture = previous
        _uninstall()


# --- replay of a cached task's output ------------------------------------------------------
#
# A task satisfied from the cache printed nothing in this run; what it printed when its value
# was computed is in the run history, a layer core does not know. The history layer registers
# a *replay source* here on import (`set_replay_source`); `ReplayListener` asks it, by the
# task's cache key, when a run was started with `replay_output=`.


@dataclass(frozen=True)
class Replayed:
    """What a task printed in the run that computed a cached value."""

    run_id: str
    started: float
    """When that run started (epoch seconds)."""
    text: str
    dropped: int = 0
    """Bytes cut from the front of the log by its cap."""


ReplaySource = Callable[[str, str, str], "Replayed | None"]
"""(pipeline, task, cache key) -> the output of the run that computed that value, or None."""

_replay_source: ReplaySource | None = None


def set_replay_source(source: ReplaySource | None) -> None:
    """Register where `ReplayListener` finds a cached value's output (None: nowhere)."""
    global _replay_source
    _replay_source = source


GREY, RESET = "\x1b[90m", "\x1b[0m"


class ReplayListener:
    """Prints, for each task of a run satisfied from the cache, the output captured when its
    value was computed, after a one-line marker. Nothing for a task whose computing run
    printed nothing or is not in the history; a missing or unreadable history is one note per
    run, never an error (a replay is a convenience, the run is what matters).

    `tasks`: only these tasks (None: every cached task). `grey`: the replayed text in ANSI
    grey, as a notebook shows it (the marker too), to tell it apart from live output.
    """

    def __init__(
        self,
        tasks: Collection[str] | None = None,
        *,
        grey: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.tasks = None if tasks is None else frozenset(tasks)
        self.grey = grey
        self.stream = stream
        self._done: set[tuple[str, str]] = set()
        self._noted: set[str] = set()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.TaskCached):
            self._replay(event.pipeline, event.run_id, event.task, event.key)
        elif isinstance(event, ev.RunFinished):
            # A runner may report cached tasks only here (see `RunFinished.cached`).
            for task, record in (event.cached or {}).items():
                self._replay(event.pipeline, event.run_id, task, str(record.get("key") or ""))
            self._done = {d for d in self._done if d[0] != event.run_id}
            self._noted.discard(event.run_id)

    def _replay(self, pipeline: str, run_id: str, task: str, key: str) -> None:
        if not key or (self.tasks is not None and task not in self.tasks):
            return
        if (run_id, task) in self._done:
            return
        self._done.add((run_id, task))
        source = _replay_source
        if source is None:
            self._note(run_id, "no run history here (it is switched off or not loaded)")
            return
        try:
            found = source(pipeline, task, key)
        except Exception as exc:  # a missing or locked history never fails the run
            self._note(run_id, f"could not read the run history ({type(exc).__name__}: {exc})")
            return
        if found is None or not found.text:
            return
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(found.started))
        cut = f", first {found.dropped} bytes cut" if found.dropped else ""
        marker = f"[nbflow] cached `{task}`: output of run {found.run_id} ({when} UTC{cut})"
        text = found.text if found.text.endswith("\n") else found.text + "\n"
        if self.grey:
            marker, text = f"{GREY}{marker}{RESET}", f"{GREY}{text.rstrip(chr(10))}{RESET}\n"
        self._write(f"{marker}\n{text}")

    def _note(self, run_id: str, why: str) -> None:
        if run_id not in self._noted:
            self._noted.add(run_id)
            self._write(f"[nbflow] no output to replay for cached tasks: {why}\n")

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        # Written outside any task capture: a replay is not what this run's task printed.
        with adopt(None):
            stream.write(text)
            stream.flush()
