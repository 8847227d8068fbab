"""Executing one run of a job: claim, heartbeat, `run_notebook`, final state, retry, alerts.

Every run goes through `execute_run`, whoever starts it: the scheduler daemon
(in a child process, `python -m nbflow.jobs.attempt RUN_ID`), and `nbflow
trigger` / `nbflow backfill` in the foreground (in the calling process, one
thread per run).

The story of one run:

1. `claim_attempt` (atomic: `queued` -> `running`, attempts + 1, our pid). If
   the claim fails, someone else has the run (or it waits for its retry time)
   and nothing happens. Our pid and the attempt number the claim took identify
   our attempt from then on: every later write of ours (heartbeat, output
   path, the attempt's end, a hand-back) passes both and changes nothing once
   the run is no longer running under that claim.
2. A heartbeat thread refreshes the run's heartbeat every
   `NBFLOW_HEARTBEAT_INTERVAL` seconds (default 5). The sweep (`sweep`, run by
   the scheduler every tick and by trigger/backfill before they start) marks a
   run whose heartbeat is older than the heartbeat timeout (default 30 s,
   `NBFLOW_HEARTBEAT_TIMEOUT`) `crashed`, and requeues it while retries remain,
   in the same transaction (`RunStore.end_stale_attempts`); so does the
   scheduler for a runner child it sees exit without finishing its run. A
   runner that was only stalled (a long GC pause, a suspended VM) may wake up
   after that, even while another process runs the next attempt: see 5.
3. The run's output notebook is `<home>/runs/JOB/<JOB>-<logical date>-<run id>.ipynb`
   (`output_path_for`; `runs/` and `runs/JOB` are private folders made without
   following links, so a planted link fails the run instead of redirecting its
   notebook, and notebooks are written 0600). The attempt writes its own working copy,
   `<home>/runs/JOB/.attempts/<that name without .ipynb>.attempt-N.ipynb`
   (`attempt_path_for`), recorded as the run's output path before the notebook
   starts, so a crashed attempt's partial notebook can be found; ending the
   attempt moves it onto the run's notebook (5), so a run has one output
   notebook, written by the attempt that ended it.
4. The parameters stored in the run row (rendered text, as `-p` values) are
   parsed against the notebook's declared types and `run_notebook` executes it
   with the job's timeout — here, or, for a job on a Dask cluster (`dask_address`:
   the job's `executor`/`address`, else the scheduler's), on a worker: the attempt
   is submitted as a Dask future (`nbflow.jobs.dask_runs`) while this process keeps
   the claim and the heartbeat, records the worker (`set_worker`), and writes the
   notebook that comes back as the working copy. A worker that dies ends the
   attempt `crashed` (retried by the rules of 5, as a runner that died is).
5. `RunStore.end_attempt` with `success`, `failed` or `timed_out` and a
   one-line error, our pid and attempt number, and in the same write
   transaction the retry decision (`retry_policy`): a failure with retries
   left is left `queued` with `not_before` = the attempt's end + delay
   (`retry_delay`, times `backoff ** (attempt - 1)` when the job's spec has a
   `backoff`), the attempt's error still on the run. Still inside that
   transaction, and only when the attempt was ours, the working copy replaces
   the run's output notebook (and earlier attempts' working copies are
   removed). A process killed at any point leaves the run either running (the
   sweep crashes and retries it) or ended with its retry queued, never failed
   with retries unused. If our attempt was already ended by someone else (we
   stalled past the heartbeat timeout and were swept as crashed; the run may
   be queued again, or claimed and running or ended by a later attempt),
   nothing is recorded: the outcome is `taken over`, no alert is sent, and
   our working copy is deleted unless the run still points at it (swept and
   not claimed since: it is the only notebook the run has).
6. After that commit, the alerts: `retry` when a retry was queued, else
   `failure` or `success`; each is sent at most once, and a process killed
   after the commit but before sending it loses that alert (the run's state
   and retry are not lost). Alerts never fail a run (`alerts.notify` never
   raises).

In the foreground, Ctrl-C sets the `cancel` event `run_in_foreground` and
`execute_run` share: nothing more starts, the kernels of this process are
killed (`stop_kernels`), each attempt that was running ends `cancelled` (a
terminal state: no retry, no alert; its partial notebook is published as
usual), and the command's queued runs become `cancelled` (`cancel_queued`).

A runner started by the scheduler watches its parent (`NBFLOW_PARENT_PID`):
if the scheduler disappears (SIGKILL), the runner hands its run back to the
queue (`release_run`) and exits; its kernel follows within a second (ipykernel
exits when its parent dies), so no process is orphaned and the restarted
scheduler runs the run again, into the same output notebook.

Fault injection for the reliability tests: `NBFLOW_FAULT=runner:after-claim`
(or `runner:kernel-started`, `runner:worker-started` (a run on Dask: its worker has
started it), `runner:before-finish`, `runner:after-finish` —
right after the commit that ends the attempt, before the alerts —, several
separated by commas) makes this process SIGKILL itself at that point; with
`NBFLOW_FAULT_ONCE_DIR` set, each point fires once (a marker file in that folder
remembers it), so a restarted process gets past it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nbflow.core.errors import NbflowError
from nbflow.core.home import HomeError, private_subdir
from nbflow.jobs.run_parameters import parse_run_parameters
from nbflow.jobs.runstore import (
    ACTIVE_STATES,
    EndedAttempt,
    JobRecord,
    RetryPolicy,
    RunRecord,
    RunStore,
    logical_iso,
    utc_now,
)

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "AttemptOutcome",
    "alert_attempt",
    "attempt_path_for",
    "dask_address",
    "describe_outcome",
    "execute_run",
    "fault",
    "heartbeat_interval",
    "heartbeat_timeout",
    "output_path_for",
    "rerun_advice",
    "retry_delay",
    "retry_policy",
    "run_in_foreground",
    "stop_kernels",
    "sweep",
]

DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_HEARTBEAT_TIMEOUT = 30.0
FAULT_ENV = "NBFLOW_FAULT"
FAULT_ONCE_ENV = "NBFLOW_FAULT_ONCE_DIR"
PARENT_ENV = "NBFLOW_PARENT_PID"
EXECUTOR_ENV = "NBFLOW_RUN_EXECUTOR"
ADDRESS_ENV = "NBFLOW_RUN_ADDRESS"
EXIT_HANDED_BACK = 3


def heartbeat_interval() -> float:
    return float(os.environ.get("NBFLOW_HEARTBEAT_INTERVAL") or DEFAULT_HEARTBEAT_INTERVAL)


def heartbeat_timeout() -> float:
    return float(os.environ.get("NBFLOW_HEARTBEAT_TIMEOUT") or DEFAULT_HEARTBEAT_TIMEOUT)


def fault(point: str) -> None:
    """SIGKILL this process if `point` is named in `$NBFLOW_FAULT` (reliability tests only)."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and point in {p.strip() for p in wanted.split(",")}:
        marks = os.environ.get(FAULT_ONCE_ENV)
        if marks:  # fire once per point: the marker file says it already did
            try:
                os.close(os.open(Path(marks, point.replace(":", "-")), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# --- parameters and paths ------------------------------------------------------------


def output_path_for(home: Path, run: RunRecord) -> Path:
    """`<home>/runs/JOB/<JOB>-<logical date, UTC, compact>-<run id>.ipynb`."""
    # Made without following links: a planted `runs/JOB` link must not redirect output.
    folder = private_subdir(home, "runs", run.job)
    stamp = run.logical_date.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return folder / f"{run.job}-{stamp}-{run.id}.ipynb"


def attempt_path_for(out: Path, attempt: int) -> Path:
    """Where attempt number `attempt` writes its notebook before it becomes the run's output
    notebook `out`: `<out's folder>/.attempts/<out's stem>.attempt-<attempt>.ipynb`."""
    return out.parent / ".attempts" / f"{out.stem}.attempt-{attempt}.ipynb"


def _name_output_path(work: Path, out: Path) -> None:
    """Papermill wrote the working copy's path into the notebook's metadata: name the path
    it is published under instead (best effort: a notebook it cannot read stays as it is)."""
    import nbformat

    try:
        nb = nbformat.read(work, as_version=4)
        nb.metadata.setdefault("papermill", {})["output_path"] = str(out)
        nbformat.write(nb, work)
    except Exception:  # no notebook (it never started), or not one nbformat can read
        pass


def _publish(work: Path, out: Path) -> None:
    """Our attempt's notebook becomes the run's (`os.replace`: atomic, same file system), and
    the working copies earlier attempts left (crashed, or taken over) are removed."""
    if not work.exists():
        return
    os.replace(work, out)
    prefix = f"{out.stem}.attempt-"
    for stale in work.parent.iterdir():
        if stale.name.startswith(prefix) and stale.suffix == ".ipynb":
            stale.unlink(missing_ok=True)


# --- retries, the sweep ---------------------------------------------------------------


def _attempts_this_round(run: RunRecord) -> int:
    """Attempts since the run was last reopened by a backfill reprocess."""
    return max(run.attempts - run.retry_base, 0)


def retry_delay(job: JobRecord, run: RunRecord) -> float:
    """Seconds before the next attempt: retry_delay * backoff ** (attempt - 1)."""
    spec = job.spec
    delay = float(spec.get("retry_delay", 60.0) or 0.0)
    backoff = spec.get("backoff")
    if backoff:
        delay *= float(backoff) ** max(_attempts_this_round(run) - 1, 0)
    return delay


def retry_policy(store: RunStore) -> RetryPolicy:
    """The retry decision `RunStore.end_attempt` / `end_stale_attempts` take inside the
    transaction that ends a failed, crashed or timed-out attempt: retry while the job (as
    stored then) has retries left this round, `retry_delay` after the attempt's end; None
    when its job is gone or its retries are used up."""

    def retry_at(attempt: RunRecord) -> datetime | None:
        try:
            record = store.find_job(attempt.job)
            if record is None or _attempts_this_round(attempt) > int(
                record.spec.get("retries", 0) or 0
            ):
                return None
            ended = attempt.ended_at or utc_now()
            return ended + timedelta(seconds=retry_delay(record, attempt))
        except Exception:  # an unreadable job spec must not keep the attempt from ending
            return None

    return retry_at


def alert_attempt(store: RunStore, ended: EndedAttempt) -> None:
    """After the commit that ended a failed/crashed/timed-out attempt: the `retry` alert if
    its retry was queued, else the `failure` alert (the job's targets, if it still exists)."""
    from nbflow.jobs.alerts import notify

    record = store.find_job(ended.attempt.job)
    if record is None:
        return
    schedule = record.schedule
    if ended.retrying:
        if schedule.on_retry:
            notify("retry", ended.attempt.job, ended.attempt, schedule.on_retry, store=store)
    elif schedule.on_failure:
        notify("failure", ended.attempt.job, ended.attempt, schedule.on_failure, store=store)


def sweep(
    store: RunStore, timeout: float | None = None, *, now: datetime | None = None
) -> list[RunRecord]:
    """Mark runs whose heartbeat is older than `timeout` s `crashed`, and retry them while
    retries remain (one transaction, `RunStore.end_stale_attempts`), then send their alerts.
    Returns the crashed runs (as they are after the retry decision)."""
    now = now or utc_now()
    ended = store.end_stale_attempts(
        heartbeat_timeout() if timeout is None else timeout, retry=retry_policy(store), now=now
    )
    for attempt in ended:
        alert_attempt(store, attempt)
    return [store.get_run(attempt.attempt.id) for attempt in ended]


# --- one run ---------------------------------------------------------------------------


INTERACTIVE_ADVICE = "Fix it and run again; finished tasks are cached."
"""How `nf.RunFailed` ends: advice for someone at a notebook, not for a scheduled run."""


def rerun_advice(error: str, run: RunRecord) -> str:
    """A run's error, ending with how to run this job for this run again: the command
    (trigger, or a backfill of this logical date) instead of `RunFailed`'s interactive
    "Fix it and run again", which a scheduled run's reader cannot follow."""
    if run.run_type == "manual":
        command = f"nbflow trigger {run.job}"
    elif run.run_type == "sensor":
        path = run.parameters.get("path")
        command = f"nbflow trigger {run.job}" + (f" -p path {path}" if path else "")
    else:
        when = logical_iso(run.logical_date)
        command = f"nbflow backfill {run.job} --start {when} --end {when} --reprocess failed"
    advice = f"Fix it, then rerun with `{command}` (finished tasks are cached)."
    cause = error.rstrip()
    if cause.endswith(INTERACTIVE_ADVICE):
        return cause[: -len(INTERACTIVE_ADVICE)] + advice
    return f"{cause}{'' if cause.endswith('.') else '.'} {advice}"


CANCELLED_REASON = "cancelled: the foreground command was interrupted (Ctrl-C)"


class _Cancelled(Exception):
    """The foreground command was interrupted: this attempt ends `cancelled`."""


@dataclass(frozen=True)
class AttemptOutcome:
    """What `execute_run` did with a run."""

    run: RunRecord
    """The run after this attempt (queued again when a retry was scheduled)."""
    state: str
    """This attempt's final state: success, failed, timed_out, cancelled, skipped; `not claimed`; or
    `taken over`: the attempt had already been ended by another process (the sweep, after
    this one stalled past the heartbeat timeout), so its result was not recorded and `run`
    is the run as the others left it (crashed, queued, or running/ended by a later attempt)."""
    retrying: bool = False
    duration: float | None = None
    attempt: int | None = None
    """The attempt number this process's claim took (None: it claimed none)."""
    discarded: str | None = None
    """For `taken over`: the state this process's notebook run reached, not recorded."""


class _Heartbeat(threading.Thread):
    """Refreshes the run's heartbeat; optionally watches the parent process."""

    def __init__(
        self,
        store: RunStore,
        run_id: int,
        pid: int,
        attempt: int,
        interval: float,
        parent_pid: int | None,
        finishing: threading.Lock,
    ) -> None:
        super().__init__(name=f"nbflow-heartbeat-{run_id}", daemon=True)
        self.store, self.run_id, self.pid, self.attempt = store, run_id, pid, attempt
        self.interval = interval
        self.parent_pid = parent_pid
        self.finishing = finishing
        self.stopped = threading.Event()

    def run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self.stopped.wait(0.25 if self.parent_pid else self.interval):
            if self.parent_pid and _parent_gone(self.parent_pid):
                _hand_back_and_exit(self.store, self.run_id, self.pid, self.attempt, self.finishing)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                try:
                    if not self.store.heartbeat(self.run_id, pid=self.pid, attempt=self.attempt):
                        return  # no longer ours (swept as crashed): stop beating
                except Exception:  # a locked database for 30 s: try again next beat
                    pass

    def stop(self) -> None:
        self.stopped.set()


def _parent_gone(parent_pid: int) -> bool:
    return os.getppid() != parent_pid


def _hand_back_and_exit(
    store: RunStore, run_id: int, pid: int, attempt: int, finishing: threading.Lock
) -> None:
    """The scheduler that started us died: give the run back and exit (the kernel follows)."""
    finishing.acquire()  # never released: the main thread must not finish the run now
    if "nbflow.jobs.dask_runs" in sys.modules:  # its attempts on Dask must not run on
        sys.modules["nbflow.jobs.dask_runs"].stop_all()
    try:
        store.release_run(run_id, pid=pid, attempt=attempt)
    finally:
        os._exit(EXIT_HANDED_BACK)


def dask_address(record: JobRecord) -> str | None:
    """Where the job's runs execute: the Dask scheduler's address, or None (here).

    The job's own `executor`/`address` (`schedule add --executor dask --address ...`) come
    first; a job without an executor follows the scheduler that started the runner
    (`nbflow scheduler --executor dask --address ...`, passed in `NBFLOW_RUN_EXECUTOR` and
    `NBFLOW_RUN_ADDRESS`); `--executor local` runs here whatever the scheduler says."""
    spec = record.spec
    executor = spec.get("executor") or os.environ.get(EXECUTOR_ENV) or "local"
    if executor != "dask":
        return None
    return spec.get("address") or os.environ.get(ADDRESS_ENV) or None


def _attempt_on_dask(
    store: RunStore,
    run: RunRecord,
    pid: int,
    attempt: int,
    address: str,
    schedule: Any,
    work: Path,
    cancel: threading.Event | None,
) -> tuple[Any, str | None, str | None]:
    """One attempt on a Dask worker (`nbflow.jobs.dask_runs`): the notebook's failure (None:
    it ran and succeeded), or the state and error of an attempt that got no notebook result
    (`crashed` when the worker died, `timed_out`, `failed`). Its executed notebook is
    written to `work`, as a local attempt writes it."""
    from nbflow.core.home import create_private_file
    from nbflow.jobs.dask_runs import run_attempt_on_dask

    def started(worker: dict[str, Any]) -> None:
        store.set_worker(run.id, worker, pid=pid, attempt=attempt)
        fault("runner:worker-started")

    try:
        remote = run_attempt_on_dask(
            address,
            schedule.notebook,
            run.parameters,
            label=f"{run.job}-{run.id}-{attempt}",
            timeout=schedule.timeout,
            heartbeat_timeout=heartbeat_timeout(),
            cancel=cancel,
            on_started=started,
        )
    except NbflowError as exc:  # unreachable scheduler, no `distributed`: named in the error
        return None, "failed", str(exc)
    if remote.notebook is not None:
        home = store.path.parent
        private_subdir(home, *work.parent.relative_to(home).parts)
        create_private_file(work)
        work.write_bytes(remote.notebook)
    if remote.state == "done":
        return remote.failure, None, None
    if remote.state == "timed_out":
        return None, "timed_out", rerun_advice(remote.error or "timeout", run)
    if remote.state == "stopped":
        # Cancelled (Ctrl-C): ends `cancelled` below; otherwise Dask ran a late copy.
        return None, "failed", "the attempt on the Dask worker was stopped before it ended"
    return None, remote.state, remote.error


def execute_run(
    run_id: int,
    *,
    store: RunStore | None = None,
    pid: int | None = None,
    interval: float | None = None,
    parent_pid: int | None = None,
    alerts: bool = True,
    cancel: threading.Event | None = None,
) -> AttemptOutcome:
    """Claim run `run_id` and execute it to its final state (see the module docstring).

    Three steps: claim an attempt (`_claim`), run the notebook while a heartbeat keeps
    the claim (`_run_attempt`), end the attempt with its retry, notebook and alerts
    (`_finish`).

    `cancel` (the foreground's Ctrl-C): once it is set, an attempt that has not started
    its notebook does not start it, and one whose notebook ends (its kernel stopped by
    the canceller) ends `cancelled` — never retried, no alert."""
    store = store or RunStore()
    pid = os.getpid() if pid is None else pid
    claimed = _claim(store, run_id, pid, parent_pid)
    if isinstance(claimed, AttemptOutcome):
        return claimed
    run, record, attempt, out = claimed
    finishing = threading.Lock()
    beat = _Heartbeat(
        store,
        run_id,
        pid,
        attempt,
        heartbeat_interval() if interval is None else interval,
        parent_pid,
        finishing,
    )
    beat.start()
    work = attempt_path_for(out, attempt)
    store.set_output_path(run_id, work, pid=pid, attempt=attempt)
    started = time.monotonic()
    try:
        state, error, reason = _run_attempt(store, run, record, pid, attempt, out, work, cancel)
    finally:
        beat.stop()
    return _finish(
        store,
        run,
        record.schedule,
        _Ended(pid, attempt, out, work, state, error, reason, time.monotonic() - started),
        finishing,
        alerts,
    )


def _claim(
    store: RunStore, run_id: int, pid: int, parent_pid: int | None
) -> AttemptOutcome | tuple[RunRecord, JobRecord, int, Path]:
    """Claim the next attempt of the run: (run, job, attempt, output path), or the outcome
    when there is nothing for this process to run (job removed, claimed by another, ...)."""
    run = store.get_run(run_id)
    record = store.find_job(run.job)
    if record is None:
        if run.state != "queued":  # someone else's attempt, or already ended: not ours to end
            return AttemptOutcome(run, "not claimed")
        store.finish_run(run_id, "skipped", reason="job removed")
        return AttemptOutcome(store.get_run(run_id), "skipped")
    if parent_pid and _parent_gone(parent_pid):
        return AttemptOutcome(run, "not claimed")
    attempt = store.claim_attempt(run_id, pid)
    if attempt is None:
        return AttemptOutcome(store.get_run(run_id), "not claimed")
    fault("runner:after-claim")
    try:
        out = output_path_for(store.path.parent, run)
    except HomeError as exc:  # e.g. a planted `runs/JOB` link: no notebook may be written
        store.finish_run(run_id, "failed", error=str(exc), pid=pid, attempt=attempt)
        return AttemptOutcome(store.get_run(run_id), "failed", attempt=attempt)
    return run, record, attempt, out


def _run_attempt(
    store: RunStore,
    run: RunRecord,
    record: JobRecord,
    pid: int,
    attempt: int,
    out: Path,
    work: Path,
    cancel: threading.Event | None,
) -> tuple[str, str | None, str | None]:
    """Run the notebook of this attempt (here, or on the job's Dask cluster), recorded in the
    history as a job run: its (state, error, reason). Never raises."""
    from nbflow.history.recorder import history_params, track_run
    from nbflow.jobs.notebook import run_notebook

    schedule = record.schedule
    error: str | None = None
    state = "failed"
    reason: str | None = None

    def progress(done: int, total: int, **cell: object) -> None:
        if done == 1:
            fault("runner:kernel-started")

    try:
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        values = parse_run_parameters(schedule.notebook, run.parameters)
        failure: Any = None
        remote_state: str | None = None
        """Set by an attempt on Dask that did not get to a notebook result (crashed, ...)."""
        # The history records each attempt as a job run; its notebook run links to it.
        with track_run(
            "job",
            run.job,
            params=history_params(values),
            partition=str(run.logical_date),
            run_id=f"job-{run.id}-{attempt}",
            source=schedule.notebook,
        ) as tracked:
            address = dask_address(record)
            if address is None:
                nr = run_notebook(
                    schedule.notebook,
                    values,
                    output=work,
                    timeout=schedule.timeout,
                    progress=progress,
                )
                failure = nr.error
            else:
                failure, remote_state, error = _attempt_on_dask(
                    store, run, pid, attempt, address, schedule, work, cancel
                )
            tracked.output = str(out)
            if failure is not None or remote_state is not None:
                tracked.state, tracked.error = "failed", str(failure or error)
        if remote_state is not None:
            state = remote_state
        elif failure is None:
            state = "success"
        else:
            state = "timed_out" if failure.reason == "timeout" else "failed"
            error = rerun_advice(str(failure), run)
    except _Cancelled:
        pass
    except NbflowError as exc:
        error = str(exc)
    except Exception as exc:  # a bug or an environment problem: the run fails, we go on
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
    if cancel is not None and cancel.is_set() and state != "success":
        # However the notebook ended (its kernel was killed: "kernel died", or a start-up
        # error), it ended because the user interrupted the command.
        state, error, reason = "cancelled", None, CANCELLED_REASON
    return state, error, reason


@dataclass(frozen=True, slots=True)
class _Ended:
    """How this process's attempt ended, to be recorded."""

    pid: int
    attempt: int
    out: Path
    work: Path
    state: str
    error: str | None
    reason: str | None
    duration: float


def _finish(
    store: RunStore,
    run: RunRecord,
    schedule: Any,
    end: _Ended,
    finishing: threading.Lock,
    alerts: bool,
) -> AttemptOutcome:
    """Record the attempt's end with its retry and publish its notebook (in one transaction,
    if the run is still ours), then send its alerts."""
    from nbflow.jobs.alerts import notify

    _name_output_path(end.work, end.out)
    fault("runner:before-finish")
    with finishing:  # our attempt's end, its retry and its notebook, if it is still ours
        ended = store.end_attempt(
            run.id,
            end.state,
            error=end.error,
            reason=end.reason,
            output_path=end.out,
            retry=retry_policy(store),
            pid=end.pid,
            attempt=end.attempt,
            before_commit=lambda: _publish(end.work, end.out),
        )
    fault("runner:after-finish")
    if ended is None:  # ended by another meanwhile (swept as crashed): its state stands
        current = store.get_run(run.id)
        if current.output_path != str(end.work):
            end.work.unlink(missing_ok=True)
        return AttemptOutcome(
            current, "taken over", duration=end.duration, attempt=end.attempt, discarded=end.state
        )
    done = store.get_run(run.id)
    if end.state == "success":
        if alerts and schedule.on_success:
            notify("success", run.job, done, schedule.on_success, store=store)
        return AttemptOutcome(done, end.state, duration=end.duration, attempt=end.attempt)
    if alerts and end.state != "cancelled":  # the user stopped it: nothing to alert about
        alert_attempt(store, ended)
    return AttemptOutcome(
        done, end.state, retrying=ended.retrying, duration=end.duration, attempt=end.attempt
    )


def describe_outcome(outcome: AttemptOutcome, tz: str = "UTC") -> str:
    """One progress line: `run 3 demo-etl 2024-01-02 02:00: success in 2.1 s -> path`."""
    from zoneinfo import ZoneInfo

    run = outcome.run
    local = run.logical_date.astimezone(ZoneInfo(tz))
    when = local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")
    took = f" in {outcome.duration:.1f} s" if outcome.duration is not None else ""
    line = f"run {run.id} {run.job} {when}: {outcome.state}{took}"
    if run.output_path:
        line += f" -> {run.output_path}"
    if outcome.state == "taken over":
        later = f", attempt {run.attempts}" if run.attempts != outcome.attempt else ""
        line += (
            f"\n    attempt {outcome.attempt} was ended by another process meanwhile (the run "
            f"is {run.state}{later}); its result ({outcome.discarded}) was not recorded"
        )
    if outcome.state == "cancelled" and run.reason:
        line += f"\n    {run.reason}"
    elif outcome.state not in ("success", "skipped") and run.error:
        # The error is cut to a readable length, but its last sentence, how to rerun the
        # run (`rerun_advice`), is kept whole on a line of its own.
        text = " ".join(run.error.split())
        cause, marker, advice = text.partition(" Fix it, then rerun with ")
        line += f"\n    {cause[:300]}"
        if marker:
            line += f"\n    {marker.strip()} {advice}"
    if outcome.retrying and run.not_before is not None:
        wait = max((run.not_before - utc_now()).total_seconds(), 0.0)
        line += f"\n    retrying (attempt {run.attempts + 1}) in {wait:.0f} s"
    return line


# --- the foreground: trigger and backfill ------------------------------------------------


def run_in_foreground(
    store: RunStore,
    run_ids: Iterable[int],
    *,
    max_active: int = 1,
    echo: Callable[[str], None] = print,
    poll: float = 0.2,
    cancel: threading.Event | None = None,
    cancellable: Iterable[int] | None = None,
) -> list[RunRecord]:
    """Execute `run_ids` in this process (one thread per run, at most `max_active` of the
    job's runs running at once, counting runs other processes are running), waiting out
    retry delays, until every one is final. Prints one line per attempt; returns the runs.

    When `cancel` is set (Ctrl-C), nothing more is started, the notebooks running in this
    process are stopped (their kernels killed) and those runs end `cancelled`, and so do
    those of `cancellable` (default: all of `run_ids`; the runs the caller created) still
    queued, waiting for a slot or a retry. A run another process is running, or one the
    caller only waited for, is left alone. Then it returns, once its threads ended."""
    ids = list(run_ids)
    own = set(ids if cancellable is None else cancellable)
    pending = set(ids)
    threads: dict[int, threading.Thread] = {}
    lock = threading.Lock()
    zones: dict[str, str] = {}
    cancelled = False

    def work(run_id: int) -> None:
        try:
            outcome = execute_run(run_id, store=store, cancel=cancel)
            if outcome.state != "not claimed":
                tz = zones.get(outcome.run.job, "UTC")
                with lock:
                    echo(describe_outcome(outcome, tz))
        finally:
            store.close()

    while pending:
        if cancel is not None and cancel.is_set() and not cancelled:
            cancelled = True
            store.cancel_queued((pending - threads.keys()) & own, CANCELLED_REASON)
            stop_kernels()
        if cancelled:
            # Only our own threads are waited for: the rest is cancelled or not ours.
            pending &= threads.keys()
            stop_kernels()  # a thread may have started its kernel after the first pass
        for run_id in [i for i, t in threads.items() if not t.is_alive()]:
            threads.pop(run_id).join()
        runs = {i: store.get_run(i) for i in pending}
        for run_id, run in runs.items():
            if run.state not in ACTIVE_STATES and run_id not in threads:
                pending.discard(run_id)
        if not pending:
            break
        now = utc_now()
        ready = sorted(
            (
                r
                for r in runs.values()
                if r.state == "queued"
                and r.id not in threads
                and (r.not_before is None or r.not_before <= now)
            ),
            key=lambda r: (r.logical_date, r.id),
        )
        for run in [] if cancelled else ready:
            if run.job not in zones:
                found = store.find_job(run.job)
                zones[run.job] = found.spec.get("tz", "UTC") if found else "UTC"
            running = {r.id for r in store.list_runs(run.job, states="running")}
            mine = {i for i in threads if store.get_run(i).job == run.job}
            if len(running | mine) >= max_active:
                break
            thread = threading.Thread(target=work, args=(run.id,), daemon=True)
            threads[run.id] = thread
            thread.start()
        time.sleep(poll)
    for thread in threads.values():
        thread.join()
    return [store.get_run(i) for i in ids]


def stop_kernels() -> list[int]:
    """SIGKILL this process's child processes: the kernels of the notebooks it runs (each in
    a session of its own, so the terminal's Ctrl-C never reached them). Their runs' notebooks
    then end ("kernel died") and `execute_run` records them `cancelled`. Returns the pids."""
    killed = []
    for pid in _child_pids(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def _child_pids(parent: int) -> list[int]:
    """Direct children of `parent`: from /proc on Linux, else from `ps`."""
    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        found = []
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # the command name (2nd field) may hold spaces and ")": split after the last
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
        return found
    import subprocess

    listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True)
    pairs = (line.split() for line in listing.stdout.splitlines())
    return [int(pid) for pid, ppid in pairs if int(ppid) == parent]


# --- the runner child ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m nbflow.jobs.attempt RUN_ID`: execute one run (the scheduler's child).

    Exit status: 0 success (or the run was not ours to take, or our attempt was taken over:
    its state is the other process's to record), 1 the attempt failed, 3 handed back because
    the scheduler died."""
    from nbflow.jobs.startup import skip_unused_imports

    skip_unused_imports()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m nbflow.jobs.attempt RUN_ID", file=sys.stderr)
        return 2
    parent = os.environ.get(PARENT_ENV)
    outcome = execute_run(int(args[0]), parent_pid=int(parent) if parent else None)
    if outcome.state == "not claimed":
        return 0
    tz = "UTC"
    record = RunStore().find_job(outcome.run.job)
    if record is not None:
        tz = record.spec.get("tz", "UTC")
    print(describe_outcome(outcome, tz), flush=True)
    return 0 if outcome.state in ("success", "skipped", "taken over") else 1


if __name__ == "__main__":
    sys.exit(main())
