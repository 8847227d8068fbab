"""Scheduled notebook runs on a Dask cluster: one attempt of a job's run as one Dask future.

Responsibilities:
- the scheduler side (`run_attempt_on_dask`, called by `execute_run` in the runner
  process on the scheduler's host): connect to the Dask scheduler, submit the attempt,
  watch it, and hand back what happened as a `RemoteAttempt`;
- the worker side (`worker_attempt`, executed by Dask): run the notebook in a child
  process of the worker and return the executed notebook's bytes;
- the notebook process (`python -m nbflow.jobs.dask_runs SPEC`): `run_notebook`.

Policy:
- **The run store stays with the scheduler.** Workers never open the home's SQLite
  file (SQLite over a network file system is unsafe, and a worker may be on another
  continent). The runner on the scheduler's host claims the run, keeps its heartbeat
  while the future is alive, and ends the attempt; the worker only computes. So the
  job's `max_active` and the scheduler's `--max-running` count a run from its claim,
  that is from before its future is submitted: a future queued in the cluster behind
  other work still holds its slot, and the limits hold across the cluster.
- **The notebook travels with the run; the output notebook comes back with the
  result.** The notebook's bytes (as the scheduler's host has them, the version whose
  parameters `schedule add` checked) are shipped with the attempt; the kernel's working
  directory is the notebook's folder when the worker has that folder (a shared file
  system: data files and modules beside the notebook are found), else a scratch
  folder. The executed notebook's bytes are returned with the result and written into
  the home's `runs/` by the runner, which publishes it as for a local run: no worker
  needs write access to the home, and no shared `runs_url` is needed (notebooks are
  usually a few MB; Dask's comms carry hundreds).
- **One child process per attempt on the worker.** The worker thread starts
  `python -m nbflow.jobs.dask_runs` (its own process group) and waits for it: stopping
  an attempt kills that process and its kernel, which a thread could not do, and
  parallel notebooks on one worker never share an event loop or a working directory.
  The child watches the worker: when the worker dies (SIGKILL), it kills its kernel
  and exits within a second, so nothing is orphaned.
- **What the worker tells the scheduler, through Dask's scheduler metadata**
  (`Client.set_metadata` under `nbflow-runs/<key>`): `started` (worker address, host,
  pid; recorded in the run's `worker` column) and `beat`, a counter the worker thread
  increases every heartbeat interval. The scheduler side says `stop`.
- **A worker that dies crashes the attempt**, and the job's retry rules decide what
  follows (never Dask's: a re-execution of the attempt by Dask after a worker loss
  answers `lost` without running the notebook). The runner notices within a poll
  (half a second) when the worker that started the attempt leaves the cluster, when
  Dask fails the future (`KilledWorker`), or when no beat was relayed for the
  heartbeat timeout (a frozen worker).
- **Stopping.** A timeout is enforced twice: by `run_notebook` on the worker (the
  kernel is killed and the notebook says where it stopped), and, should that not end
  the attempt, by the runner `TIMEOUT_GRACE` seconds later. The runner stops an
  attempt (timeout backstop, foreground Ctrl-C, scheduler gone) by setting `stop` and
  cancelling the future: the worker thread kills the attempt's process tree within
  half a second. A future the worker is told to drop (its client vanished) is
  stopped the same way.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbflow.core.errors import JobsError, NbflowError

__all__ = [
    "EXECUTORS",
    "TIMEOUT_GRACE",
    "RemoteAttempt",
    "check_executor",
    "connect",
    "run_attempt_on_dask",
    "stop_all",
    "worker_attempt",
]

EXECUTORS = ("local", "dask")
NAMESPACE = "nbflow-runs"
TIMEOUT_GRACE = 30.0
"""Seconds past a run's timeout before the runner stops an attempt the worker did not end."""
POLL = 0.5
BEAT_EVERY = 2.0
"""Seconds between the worker's relayed beats."""
WORKER_PARENT_ENV = "NBFLOW_DASK_WORKER_PID"

_active: dict[str, Callable[[], None]] = {}
"""Stop functions of this process's attempts on Dask (`stop_all`, when the runner must exit)."""
_active_lock = threading.Lock()


def check_executor(executor: str | None, address: str | None, *, what: str = "--executor") -> None:
    """Refuse an unknown executor name, an address without the Dask executor, a Dask
    executor without an address, and the Dask executor without `distributed` installed."""
    if executor is not None and executor not in EXECUTORS:
        from nbflow.core.errors import did_you_mean

        raise JobsError(
            f"unknown {what} `{executor}`{did_you_mean(executor, EXECUTORS)}; "
            f"use one of {', '.join(EXECUTORS)}"
        )
    if address is not None and executor != "dask":
        raise JobsError(f"--address {address} is for {what} dask; add `{what} dask`")
    if executor == "dask":
        if not address:
            raise JobsError(
                f"{what} dask needs the Dask scheduler's address: --address tcp://HOST:8786 "
                "(or tls://...); start one with `dask scheduler` and `dask worker ADDRESS` "
                "(docs/team.md)"
            )
        if "://" not in address:
            raise JobsError(
                f"Dask scheduler address `{address}` has no protocol; write it as "
                f"tcp://{address} (or tls://{address} for a cluster with TLS)"
            )
        _distributed()


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise JobsError(
            "notebook runs on Dask need the `distributed` package on the scheduler's host "
            'and on every worker: pip install "nbflow-pipelines[dask]"'
        ) from exc
    return distributed


def connect(address: str, timeout: float = 10.0) -> Any:
    """A `distributed.Client` of the scheduler at `address` (TLS credentials from Dask's
    configuration, `distributed.comm.tls`); a clear error naming it when it is unreachable."""
    _distributed()
    from nbflow.core.executors.dask import DaskExecutor

    try:
        return DaskExecutor(address=address, max_workers=1, connect_timeout=timeout).client
    except NbflowError as exc:
        raise JobsError(str(exc)) from exc


@dataclass(frozen=True)
class RemoteAttempt:
    """What became of one attempt on Dask."""

    state: str
    """`done` (the notebook ran: see `failure`), `crashed` (the worker died or Dask lost
    the attempt), `failed` (it could not start: `error`), `timed_out` (the backstop),
    or `stopped` (cancelled by the runner)."""
    failure: Any = None
    """The `NotebookFailure` of a notebook that failed (None: it succeeded)."""
    error: str | None = None
    notebook: bytes | None = None
    """The executed notebook (also a partial one, of a stopped or timed-out attempt)."""
    worker: dict[str, Any] | None = None
    """Where it ran: the worker's `address`, `host` and `pid`."""


def stop_all() -> None:
    """Stop every attempt this process has on Dask (the runner is about to exit)."""
    with _active_lock:
        stops = list(_active.values())
    for stop in stops:
        try:
            stop()
        except Exception:  # the cluster is gone too: its workers' children watch them
            pass


def run_attempt_on_dask(
    address: str,
    notebook: str | Path,
    parameters: Mapping[str, Any],
    *,
    label: str,
    timeout: float | None = None,
    heartbeat_timeout: float = 30.0,
    cancel: threading.Event | None = None,
    on_started: Callable[[dict[str, Any]], None] | None = None,
) -> RemoteAttempt:
    """Execute one attempt of the notebook at `notebook` (its bytes are shipped) on a
    worker of the Dask scheduler at `address`, and wait for it (see the module docstring).

    `parameters` are the run's stored texts (parsed against the notebook's types on the
    worker, as `-p` values); `label` names the Dask key (`nbflow-run-<label>-<random>`);
    `on_started(worker)` is called once the worker has started the attempt; `cancel`
    (Ctrl-C in the foreground) stops it."""
    source = Path(notebook).absolute()
    try:
        data = source.read_bytes()
    except OSError as exc:
        return RemoteAttempt("failed", error=f"cannot read notebook `{source}`: {exc}")
    client = connect(address)
    distributed = _distributed()
    key = f"nbflow-run-{label}-{uuid.uuid4().hex[:12]}"
    payload = {
        "key": key,
        "name": source.name,
        "folder": str(source.parent),
        "notebook": data,
        "parameters": dict(parameters),
        "timeout": timeout,
    }
    future = client.submit(worker_attempt, payload, key=key, pure=False)
    finished = threading.Event()
    future.add_done_callback(lambda _: finished.set())
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        client.set_metadata([NAMESPACE, key, "stop"], True)
        future.cancel()

    with _active_lock:
        _active[key] = stop
    started: dict[str, Any] | None = None
    started_at = 0.0
    beat, beat_seen = None, time.monotonic()
    try:
        while not future.done():
            finished.wait(POLL)  # set as soon as the future is done: no poll's delay
            if future.done():
                break
            now = time.monotonic()
            if started is None:
                started = client.get_metadata([NAMESPACE, key, "started"], default=None)
                if started is not None:
                    started_at = beat_seen = now
                    if on_started is not None:
                        on_started(started)
            if cancel is not None and cancel.is_set():
                stop()
                return RemoteAttempt("stopped", worker=started)
            if started is None:
                continue  # waiting in the cluster's queue: its slot is already counted
            if started["address"] not in client.nthreads():
                stop()
                return RemoteAttempt("crashed", error=_left(started), worker=started)
            now_beat = client.get_metadata([NAMESPACE, key, "beat"], default=None)
            if now_beat != beat:
                beat, beat_seen = now_beat, now
            elif now - beat_seen > heartbeat_timeout:
                stop()
                why = f"no heartbeat from the Dask worker {started['address']} for "
                why += f"{heartbeat_timeout:g} s (it stopped answering)"
                return RemoteAttempt("crashed", error=why, worker=started)
            if timeout is not None and now - started_at > timeout + TIMEOUT_GRACE:
                stop()
                why = f"timeout after {timeout:g} s: the attempt on the Dask worker "
                why += f"{started['address']} was stopped {TIMEOUT_GRACE:g} s later"
                return RemoteAttempt("timed_out", error=why, worker=started)
        return _collect(distributed, future, started)
    finally:
        with _active_lock:
            _active.pop(key, None)
        if not future.done() and not stopped:
            stop()
        try:
            # No delete in Dask's metadata API: the entry shrinks to the stop flag, which
            # a copy of the attempt Dask may still run (or start) must find.
            client.set_metadata([NAMESPACE, key], {"stop": True})
        except Exception:  # the scheduler went away meanwhile: nothing is left to clean
            pass
        client.close()


def _left(worker: Mapping[str, Any]) -> str:
    return (
        f"the Dask worker {worker['address']} (host {worker['host']}, pid {worker['pid']}) "
        "left the cluster while running the notebook (it died or was stopped)"
    )


def _collect(distributed: Any, future: Any, started: dict[str, Any] | None) -> RemoteAttempt:
    """The attempt's result, from a future that is done."""
    if future.status == "finished":
        result: dict[str, Any] = future.result()
        if "lost" in result:  # Dask ran it again after the first worker died
            return RemoteAttempt("crashed", error=_left(result["lost"]), worker=result["lost"])
        return RemoteAttempt(
            result["state"],
            failure=result.get("failure"),
            error=result.get("error"),
            notebook=result.get("notebook"),
            worker=result["worker"],
        )
    if future.status == "error":
        exc = future.exception()
        if isinstance(exc, distributed.scheduler.KilledWorker):
            where = _left(started) if started else "the Dask worker running it died"
            return RemoteAttempt("crashed", error=f"{where} (Dask: KilledWorker)", worker=started)
        return RemoteAttempt(
            "failed", error=f"on the Dask worker: {type(exc).__name__}: {exc}", worker=started
        )
    why = f"Dask reported the attempt {future.status} (its scheduler restarted or forgot it)"
    return RemoteAttempt("crashed", error=why, worker=started)


# --- on the worker -----------------------------------------------------------------------


def worker_attempt(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs on a Dask worker: the notebook in a child process; its executed notebook back."""
    import distributed

    worker = distributed.get_worker()
    client = distributed.get_client()
    key = payload["key"]
    if client.get_metadata([NAMESPACE, key, "stop"], default=False):
        return {"state": "stopped", "worker": None}  # the attempt ended before it got here
    prior = client.get_metadata([NAMESPACE, key, "started"], default=None)
    if prior is not None:
        # Dask reruns a task whose worker died: that attempt crashed, and nbflow's retry
        # rules, not Dask's, decide whether it runs again.
        return {"lost": prior}
    here = {"address": worker.address, "host": socket.gethostname(), "pid": os.getpid()}
    client.set_metadata([NAMESPACE, key, "started"], here)
    with tempfile.TemporaryDirectory(prefix="nbflow-dask-run-") as scratch:
        work = Path(scratch)
        source = work / payload["name"]
        source.write_bytes(payload["notebook"])
        folder = Path(payload["folder"])
        spec = {
            "notebook": str(source),
            "input_path": str(folder / payload["name"]),
            "output": str(work / "out.ipynb"),
            "result": str(work / "result.pickle"),
            "cwd": str(folder if folder.is_dir() else work),
            "parameters": payload["parameters"],
            "timeout": payload["timeout"],
        }
        (work / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, WORKER_PARENT_ENV: str(os.getpid())}
        child = subprocess.Popen(
            [sys.executable, "-m", "nbflow.jobs.dask_runs", str(work / "spec.json")],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        state = _wait(child, client, worker, key, payload["timeout"])
        notebook = Path(spec["output"]).read_bytes() if Path(spec["output"]).exists() else None
        if state != "done":
            return {"state": state, "notebook": notebook, "worker": here}
        try:
            result = pickle.loads(Path(spec["result"]).read_bytes())
        except OSError:
            code = child.returncode
            why = f"the notebook process on the worker exited ({code}) without a result"
            return {"state": "crashed", "error": why, "notebook": notebook, "worker": here}
        return {**result, "notebook": notebook, "worker": here}


def _wait(child: subprocess.Popen[bytes], client: Any, worker: Any, key: str, timeout: Any) -> str:
    """Wait for the notebook process, relaying beats; kill it when told to stop."""
    beats = 0
    last_beat = 0.0
    started = time.monotonic()
    while True:
        try:
            child.wait(timeout=POLL)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - last_beat >= BEAT_EVERY:
            beats += 1
            last_beat = now
            client.set_metadata([NAMESPACE, key, "beat"], beats)
        stop = client.get_metadata([NAMESPACE, key, "stop"], default=False)
        if stop or _dropped(worker, key):
            _kill_tree(child)
            return "stopped"
        if timeout is not None and now - started > float(timeout) + TIMEOUT_GRACE:
            _kill_tree(child)
            return "timed_out"
    return "done"


def _dropped(worker: Any, key: str) -> bool:
    """Has the scheduler told this worker to forget the task (its client vanished, or it
    was cancelled)? Read from the worker's state machine; best effort across versions."""
    try:
        task = worker.state.tasks.get(key)
    except AttributeError:
        return False
    return task is None or task.state in ("cancelled", "released", "forgotten")


def _kill_tree(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the notebook process and its kernel (in a session of its own)."""
    import psutil

    try:
        kids = psutil.Process(child.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    for proc in [*kids]:
        try:
            proc.kill()
        except psutil.Error:
            pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


# --- the notebook process ------------------------------------------------------------------


def _watch_worker(parent: int) -> None:
    """Exit (killing our kernel first) when the worker that started us is gone."""
    import psutil

    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            for proc in psutil.Process().children(recursive=True):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            os._exit(3)


def main(argv: list[str] | None = None) -> int:
    """`python -m nbflow.jobs.dask_runs SPEC`: run the notebook SPEC names, write its result."""
    from nbflow.jobs.notebook import run_notebook
    from nbflow.jobs.run_parameters import parse_run_parameters

    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    parent = os.environ.get(WORKER_PARENT_ENV)
    if parent:
        threading.Thread(target=_watch_worker, args=(int(parent),), daemon=True).start()
    result: dict[str, Any]
    try:
        values = parse_run_parameters(spec["notebook"], spec["parameters"])
        nr = run_notebook(
            spec["notebook"],
            values,
            output=spec["output"],
            timeout=spec["timeout"],
            cwd=spec["cwd"],
        )
        _name_input(Path(spec["output"]), spec["input_path"])
        result = {"state": "done", "failure": nr.error}
    except NbflowError as exc:
        result = {"state": "failed", "error": str(exc)}
    except Exception as exc:  # a bug or the worker's environment: the attempt fails
        result = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
    Path(spec["result"]).write_bytes(pickle.dumps(result))
    return 0


def _name_input(out: Path, input_path: str) -> None:
    """The output notebook names the notebook as the scheduler's host has it, not the copy."""
    import nbformat

    try:
        nb = nbformat.read(out, as_version=4)
        nb.metadata.setdefault("papermill", {})["input_path"] = input_path
        nbformat.write(nb, out)
    except Exception:  # no notebook was written (the kernel never started)
        pass


if __name__ == "__main__":
    sys.exit(main())
