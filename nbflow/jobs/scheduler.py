"""The scheduler daemon (`nbflow scheduler`); the runs it records come from `jobs.launch`.

One `Scheduler` per home, held by an OS lock (`fcntl.flock` on
`<home>/scheduler.lock`, which also holds the holder's pid); a second one
exits with a message naming that pid. Each `tick_once(now)`:

(a) **sweeps**: running runs whose heartbeat is older than the heartbeat
    timeout (30 s) become `crashed` and are requeued while retries remain
    (in the same transaction); if such a run's runner is our child and still
    exists (stopped, frozen), its process group is killed and it no longer
    counts toward any limit (`drop_swept`); a runner child the scheduler sees exit without
    finishing its run makes that run `crashed` at once (and queues its retry
    in the same transaction);
(b) **records due runs** for every active cron/interval job, for the ticks
    after the later of its last recorded tick (`last_tick`), the moment it was
    added or resumed, and its `start`:
    - catch-up off (default): a run for the most recent due tick if it is at
      most one schedule period late (the grace period), and `missed` (with the
      reason) for every other due tick, oldest first, the run last;
    - `--catchup`: one run per due tick, oldest first.
    Runs are unique per (job, run type, logical date), so a scheduler killed
    anywhere in this step and restarted finds what it already recorded and
    records the rest. A tick that already has a backfill run that succeeded
    or is queued or running gets no scheduled run: it is recorded `skipped`
    ("logical date already covered by backfill run N"), so the notebook runs
    once per logical date;
(c) **file sensors**: one `sensor` run per new or changed file (`file_sensor.py`);
(d) **starts queued runs** that are ready (retry time reached), oldest logical
    date first, while the job has fewer than `max_active` running and the home
    fewer than the global limit (`--max-running`). Each run executes in a child
    process (`python -m nbflow.jobs.attempt RUN_ID`, its own process group),
    which claims the run atomically, heartbeats, and finishes it. With
    `executor="dask"` (`nbflow scheduler --executor dask --address ...`) the child
    of a job without an executor of its own runs the notebook on the Dask cluster
    (`nbflow.jobs.dask_runs`); the limits count it from its claim, so a future still
    queued in the cluster holds its slot.

The clock is injectable (`Scheduler(clock=...)`, `tick_once(now)`), so tests
step through time without sleeping; the children use the real clock.

SIGTERM (or SIGINT): no new runs are made or started; children get `grace`
seconds to finish, then they are killed and their runs handed back
(`release_run`: queued again, the attempt given back); exit status 0.
If the scheduler itself is SIGKILLed, each child notices within a second,
hands its run back and exits; its kernel follows.

Fault injection for the reliability tests: `NBFLOW_FAULT=scheduler:after-tick`
(due ticks computed, nothing recorded), `scheduler:after-insert` (a run row
inserted), `scheduler:after-spawn` (a runner process started) make the
scheduler SIGKILL itself there.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from nbflow.core.errors import JobsError
from nbflow.jobs.attempt import (
    ADDRESS_ENV,
    EXECUTOR_ENV,
    PARENT_ENV,
    alert_attempt,
    fault,
    heartbeat_timeout,
    retry_policy,
    sweep,
)
from nbflow.jobs.launch import create_job_run
from nbflow.jobs.processes import kill_group
from nbflow.jobs.runstore import (
    ACTIVE_STATES,
    JobRecord,
    RunRecord,
    RunStore,
    utc_now,
)

__all__ = [
    "MISSED_CATCHUP_LIMIT",
    "Scheduler",
    "SchedulerLocked",
    "TickReport",
]

MISSED_CATCHUP_LIMIT = 10_000
"""At most this many due ticks of one job are computed and recorded in one tick (the most
recent ones); a minute cron after a month of downtime would otherwise write 43,000 rows at
once, and a one-second interval after a year 31 million."""

Clock = Callable[[], datetime]


class SchedulerLocked(JobsError):
    """Another scheduler holds this home's lock."""

    def __init__(self, home: Path, pid: str) -> None:
        self.home = home
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another nbflow scheduler is already running for home {home} ({who} holds "
            f"{home / 'scheduler.lock'}); one scheduler per home — stop it first"
        )


@dataclass
class TickReport:
    """What one `tick_once` did."""

    crashed: list[RunRecord] = field(default_factory=list)
    created: list[RunRecord] = field(default_factory=list)
    missed: list[RunRecord] = field(default_factory=list)
    sensed: list[RunRecord] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    finished: list[RunRecord] = field(default_factory=list)


@dataclass
class _Child:
    run: RunRecord
    process: subprocess.Popen[bytes]


class Scheduler:
    """The daemon's logic; `serve()` is the loop `nbflow scheduler` runs."""

    def __init__(
        self,
        store: RunStore | None = None,
        *,
        clock: Clock = utc_now,
        max_running: int | None = None,
        heartbeat_timeout: float | None = None,
        grace: float = 30.0,
        poll: float = 2.0,
        echo: Callable[[str], None] | None = None,
        python: str = sys.executable,
        executor: str = "local",
        address: str | None = None,
    ) -> None:
        self.store = store or RunStore()
        self.executor, self.address = executor, address
        """For jobs without an executor of their own: `dask` runs them on the cluster at
        `address` (the runner child submits the attempt; see `nbflow.jobs.dask_runs`)."""
        self.home = self.store.path.parent
        self.clock = clock
        self.max_running = max_running or max(os.cpu_count() or 2, 2)
        self.heartbeat_timeout = (
            heartbeat_timeout if heartbeat_timeout is not None else _env_heartbeat_timeout()
        )
        self.grace = grace
        self.poll = poll
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.python = python
        self.children: dict[int, _Child] = {}
        self.stopping = threading.Event()
        self._lock_file: IO[str] | None = None
        self._digests: dict[tuple[str, str], tuple[int, int, str]] = {}

    # -- the lock

    def acquire_lock(self) -> None:
        """Take `<home>/scheduler.lock` or raise `SchedulerLocked` naming the holder's pid."""
        path = self.home / "scheduler.lock"
        fh = open(path, "a+")  # noqa: SIM115 - held for the scheduler's life
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip()
            fh.close()
            raise SchedulerLocked(self.home, pid) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    def release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    # -- one tick

    def tick_once(self, now: datetime | None = None, *, start: bool = True) -> TickReport:
        """Sweep, record due runs, sense files, and (when `start`) start ready runs."""
        now = now or self.clock()
        report = TickReport()
        report.finished = self.reap(now)
        report.crashed = sweep(self.store, self.heartbeat_timeout, now=now)
        self.drop_swept(report.crashed)
        if self.stopping.is_set():
            return report
        jobs = self.store.list_jobs(include_paused=False)
        for record in jobs:
            try:
                schedule = record.schedule
                if schedule.cron is not None or schedule.every is not None:
                    created, missed = self.record_due(record, now)
                    report.created += created
                    report.missed += missed
                if schedule.when_file:
                    from nbflow.jobs.file_sensor import sense

                    report.sensed += sense(self.store, record, now=now, cache=self._digests)
            except Exception as exc:  # one broken job must not stop the others
                self.echo(f"job {record.name}: skipped this tick: {type(exc).__name__}: {exc}")
        if start:
            report.started = self.start_ready(now, {r.name: r for r in jobs})
        return report

    def due_ticks(self, record: JobRecord, now: datetime) -> list[datetime]:
        """Ticks of `record` after the later of its last recorded tick and the moment it
        was added or resumed (and within its start/end), up to `now`: at most the latest
        `MISSED_CATCHUP_LIMIT` of them.

        The ticks are looked for backwards from `now` in growing windows, so the work
        (and memory) of one tick is bounded by the limit, not by the downtime: a
        once-a-second job after a year away is not a list of 31 million instants."""
        schedule = record.schedule
        after = record.active_since - timedelta(microseconds=1)
        last = self.store.last_tick(record.name)
        if last is not None and last > after:
            after = last
        # Ticks are at least a minute (a cron) or `every` apart, so the first window holds
        # at most the limit; it covers the usual case (a short downtime) in one call.
        span = timedelta(seconds=(schedule.every or 60) * MISSED_CATCHUP_LIMIT)
        while True:
            # Compared as durations: `now - span` may be before year 1 for a yearly interval.
            since = after if now - after <= span else now - span
            ticks = schedule.ticks_between(since, now)
            if since == after or len(ticks) >= MISSED_CATCHUP_LIMIT:
                return ticks[-MISSED_CATCHUP_LIMIT:]
            span *= 4

    def record_due(
        self, record: JobRecord, now: datetime
    ) -> tuple[list[RunRecord], list[RunRecord]]:
        """Record the runs (and missed ticks) of `record`'s due ticks; see the module docstring."""
        schedule = record.schedule
        due = self.due_ticks(record, now)
        if not due:
            return [], []
        fault("scheduler:after-tick")
        due = due[-MISSED_CATCHUP_LIMIT:]
        created: list[RunRecord] = []
        missed: list[RunRecord] = []
        if schedule.catchup:
            to_run, to_miss = due, []
        else:
            latest = due[-1]
            grace = schedule.period_before(latest) or timedelta(0)
            if now - latest <= grace:
                to_run, to_miss = [latest], due[:-1]
                why = "the scheduler was not running at this tick; catch-up is off, so only "
                why += f"the latest missed tick ({latest.isoformat()}) ran"
            else:
                to_run, to_miss = [], due
                why = "the scheduler was not running at this tick; catch-up is off and the "
                why += f"latest missed tick was more than one schedule period ({grace}) late"
        for tick in to_miss:
            if self._covered(record, tick, now):
                continue
            run, made = self.store.record_missed(record.name, tick, why, now=now)
            fault("scheduler:after-insert")
            if made:
                missed.append(run)
        for tick in to_run:
            if self._covered(record, tick, now):
                continue
            made_run = self._create(record, "scheduled", tick, now=now)
            if made_run is not None:
                created.append(made_run)
        return created, missed

    def _covered(self, record: JobRecord, tick: datetime, now: datetime) -> bool:
        """Has `tick` already run (or is it queued or running) as a backfill? Then the
        scheduler must not run the notebook for that logical date again: it records the
        tick `skipped`, naming that run, which also marks the tick as handled
        (`last_tick`). A manual trigger never covers a tick (its logical date is the
        instant it was asked for); a failed backfill does not either (the tick is due)."""
        other = self.store.find_run(record.name, "backfill", tick)
        if other is None or other.state not in ("success", *ACTIVE_STATES):
            return False
        why = f"logical date already covered by backfill run {other.id} ({other.state})"
        self.store.create_run(record.name, "scheduled", tick, state="skipped", reason=why, now=now)
        fault("scheduler:after-insert")
        return True

    def _create(
        self, record: JobRecord, run_type: str, tick: datetime, *, now: datetime
    ) -> RunRecord | None:
        run, made = create_job_run(self.store, record, run_type, tick, now=now)
        fault("scheduler:after-insert")
        return run if made else None

    # -- starting and reaping runs

    def active_counts(self) -> tuple[dict[str, set[int]], set[int]]:
        """Run ids running (in the store, any process) or started by us, per job and in all."""
        per_job: dict[str, set[int]] = {}
        everything: set[int] = set()
        for run in self.store.list_runs(states="running"):
            per_job.setdefault(run.job, set()).add(run.id)
            everything.add(run.id)
        for run_id, child in self.children.items():
            per_job.setdefault(child.run.job, set()).add(run_id)
            everything.add(run_id)
        return per_job, everything

    def start_ready(self, now: datetime, jobs: dict[str, JobRecord] | None = None) -> list[int]:
        """Start queued runs that are ready, within per-job and global limits."""
        if self.stopping.is_set():
            return []
        if jobs is None:
            jobs = {r.name: r for r in self.store.list_jobs(include_paused=False)}
        per_job, everything = self.active_counts()
        started: list[int] = []
        for run in self.store.queued_runs(now=now):
            if len(everything) >= self.max_running:
                break
            if run.id in self.children:
                continue
            record = jobs.get(run.job)
            if record is None:
                if self.store.find_job(run.job) is None:
                    self.store.finish_run(run.id, "skipped", reason="job removed")
                continue  # paused: its queued runs wait for `schedule resume`
            active = per_job.setdefault(run.job, set())
            if len(active) >= int(record.spec.get("max_active", 1) or 1):
                continue
            self.spawn(run)
            active.add(run.id)
            everything.add(run.id)
            started.append(run.id)
        return started

    def spawn(self, run: RunRecord) -> None:
        """Start the runner child for `run` (own process group; it claims the run itself)."""
        env = {**os.environ, "NBFLOW_HOME": str(self.home), PARENT_ENV: str(os.getpid())}
        env[EXECUTOR_ENV] = self.executor
        if self.address:
            env[ADDRESS_ENV] = self.address
        process = subprocess.Popen(
            [self.python, "-m", "nbflow.jobs.attempt", str(run.id)],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children[run.id] = _Child(run, process)
        fault("scheduler:after-spawn")
        self.echo(f"started run {run.id} {run.job} {_short(run.logical_date)} (pid {process.pid})")

    def drop_swept(self, crashed: list[RunRecord]) -> None:
        """Kill the runner children whose attempts the sweep just ended, and forget them.

        A runner that stopped heartbeating but still exists (SIGSTOP, a frozen VM) no longer
        owns its run: the sweep marked the attempt `crashed` and perhaps queued its retry.
        Left in `children` it would still count toward `--max-active` and `--max-running`
        and keep the retry from starting until it woke up; so its process group is killed
        (a stopped process dies of SIGKILL too), and its slot is free this very tick. Were
        it to wake first, it could record nothing anyway (its claim is gone)."""
        for run in crashed:
            child = self.children.pop(run.id, None)
            if child is None:
                continue
            kill_group(child.process)
            self.echo(
                f"run {run.id} {run.job}: runner pid {child.process.pid} missed its heartbeat "
                f"for {self.heartbeat_timeout:g} s; killed it, its slot is free"
            )

    def reap(self, now: datetime | None = None) -> list[RunRecord]:
        """Collect finished children; a run its child left `running` is `crashed` at once."""
        finished: list[RunRecord] = []
        for run_id, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[run_id]
            run = self.store.get_run(run_id)
            if run.state == "running" and run.pid == child.process.pid:
                why = f"the runner process {child.process.pid} exited ({_exit_text(code)}) "
                why += "without finishing the run"
                ended = self.store.end_attempt(  # crashed, and its retry, in one commit
                    run_id,
                    "crashed",
                    error=why,
                    retry=retry_policy(self.store),
                    pid=child.process.pid,  # still that child's claim, as just read
                    attempt=run.attempts,
                    now=now,
                )
                if ended is not None:
                    alert_attempt(self.store, ended)
                    self.echo(f"run {run_id} {run.job}: crashed ({why})")
            finished.append(self.store.get_run(run_id))
        return finished

    # -- the loop

    def serve(self, *, once: bool = False) -> int:
        """Run until SIGTERM/SIGINT (or, with `once`, one tick and the runs it can start)."""
        self.acquire_lock()
        self.apply_retention()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        self.echo(
            f"nbflow scheduler (pid {os.getpid()}) for {self.home}: "
            f"max running {self.max_running}, heartbeat timeout {self.heartbeat_timeout:g} s"
            + (f", runs on the Dask cluster at {self.address}" if self.executor == "dask" else "")
        )
        try:
            if once:
                report = self.tick_once()
                while not self.stopping.is_set():
                    report.finished += self.reap(self.clock())
                    report.started += self.start_ready(self.clock())
                    if not self.children:
                        break
                    self.stopping.wait(0.2)
                self.echo(self.summary(report))
            else:
                while not self.stopping.is_set():
                    try:
                        self.tick_once()
                    except Exception as exc:  # e.g. the database locked for 30 s: next tick
                        self.echo(f"tick failed, retrying: {type(exc).__name__}: {exc}")
                    self.stopping.wait(self._sleep_for())
            self.shutdown()
        finally:
            self.kill_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.release_lock()
        return 0

    def apply_retention(self) -> None:
        """Prune the run history by the home's `history.keep_days` setting, if set (once per
        scheduler start, as `nbflow history prune --older-than Nd` would). A failure is reported
        and never stops the scheduler: retention is housekeeping."""
        days = (self.store.get_setting("history", {}) or {}).get("keep_days")
        if not days:
            return
        from nbflow.history.prune import prune

        try:
            report = prune(older_than=float(days) * 86400)
        except Exception as exc:  # a locked or unreadable history must not stop the daemon
            self.echo(f"history retention skipped: {type(exc).__name__}: {exc}")
            return
        self.echo(
            f"history retention (keep_days {days}): removed {len(report.runs)} run(s), "
            f"{len(report.files)} file(s)"
        )

    def summary(self, report: TickReport) -> str:
        """`--once`'s last line: what its tick did, and when the next tick is due."""
        ended = report.finished
        ok = sum(1 for r in ended if r.state == "success")
        retrying = sum(1 for r in ended if r.state == "queued")
        failed = len(ended) - ok
        parts = [
            f"{len(report.started)} run(s) started",
            f"{len(ended)} finished ({ok} success, {failed} failed"
            + (f", {retrying} to retry" if retrying else "")
            + ")",
            f"{len(report.missed)} missed",
        ]
        if report.crashed:
            parts.append(f"{len(report.crashed)} crashed (no heartbeat)")
        if report.sensed:
            parts.append(f"{len(report.sensed)} from new files")
        waiting = self.store.count_runs(states=("queued",))
        if waiting:
            parts.append(f"{waiting} queued")
        nxt = self.next_due(self.clock())
        when = (
            f"next tick due {_short(nxt[0])} (job `{nxt[1]}`)"
            if nxt
            else "no tick is due: no active cron or interval job has one"
        )
        return f"scheduler --once: {', '.join(parts)}; {when}"

    def next_due(self, now: datetime) -> tuple[datetime, str] | None:
        """The earliest next tick of the active cron/interval jobs, and its job."""
        best: tuple[datetime, str] | None = None
        for record in self.store.list_jobs(include_paused=False):
            try:
                schedule = record.schedule
                if schedule.cron is None and schedule.every is None:
                    continue
                ticks = schedule.next_ticks(max(now, record.active_since), 1)
            except JobsError:
                continue  # a job whose spec no longer loads: tick_once reports it
            if ticks and (best is None or ticks[0] < best[0]):
                best = (ticks[0], record.name)
        return best

    def _sleep_for(self) -> float:
        """Until the next poll, or sooner if a child may finish (children are polled)."""
        return self.poll if not self.children else min(self.poll, 0.5)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        """Wait up to `grace` s for children, then kill them and hand their runs back."""
        if self.children:
            self.echo(
                f"stopping: waiting up to {self.grace:g} s for {len(self.children)} running run(s)"
            )
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.1)
        self.reap()
        for run_id, child in list(self.children.items()):
            kill_group(child.process)
            if self.store.release_run(run_id, pid=child.process.pid):
                self.echo(f"run {run_id} {child.run.job}: handed back to the queue")
            else:
                self.reap()
            self.children.pop(run_id, None)

    def kill_children(self) -> None:
        for child in self.children.values():
            kill_group(child.process)
            self.store.release_run(child.run.id, pid=child.process.pid)
        self.children.clear()


# --- helpers -----------------------------------------------------------------------------


def _env_heartbeat_timeout() -> float:
    return heartbeat_timeout()


def _short(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if moment.second else "%Y-%m-%d %H:%M UTC")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
