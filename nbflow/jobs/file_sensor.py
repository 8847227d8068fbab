"""The file sensor: one run per new or changed file matching a job's `--when-file` glob.

Rules (as built, and as docs/scheduling.md states them):
- Every scheduler tick globs the job's pattern (stored absolute; `**` matches
  folders recursively). Each matching regular file is identified by its path
  and the SHA-256 of its content: a file never seen, or seen with other
  content, gets one run of type `sensor`; the same content again (a `touch`,
  a copy back) gets none. Files already there when the job is added count as
  new. Deleting a file does nothing.
- The file's absolute path is passed to the notebook as the parameter `path`
  (it overrides a `-p path ...` given at `schedule add`), as a value: it is
  never rendered as a template, whatever the file is called (a file named
  `x{{ 7 * 7 }}.csv` arrives as `x{{ 7 * 7 }}.csv`); the notebook declares
  it in its parameters cell (`path = ""`). The job's other parameters are
  rendered as for any run; the run's logical date is the moment the file was
  seen (to the microsecond; files found in one tick get consecutive microseconds).
- Deduplication is crash-safe: the run is created first, with the reason
  `file PATH (sha256 DIGEST)`, then the (job, path, digest) record. A
  scheduler killed between the two finds the run by its reason after a
  restart instead of creating a second one.
- Digests are cached per (path, mtime, size) in the scheduler, so an
  unchanged file is not read again every tick. Write files atomically (write
  elsewhere, then rename into the folder): a file still being written may be
  taken half-written, and then again once complete.
- Paused jobs sense nothing; files that appear meanwhile are taken on resume.
- One tick makes at most `RUNS_PER_TICK` runs per job; further new files wait
  for the next tick (they are still new then).
"""

from __future__ import annotations

import glob
import hashlib
import os
from datetime import datetime, timedelta

from nbflow.jobs.attempt import fault
from nbflow.jobs.runstore import JobRecord, RunRecord, RunStore, utc_now

__all__ = ["PATH_PARAMETER", "RUNS_PER_TICK", "file_digest", "matching_files", "sense"]

PATH_PARAMETER = "path"
RUNS_PER_TICK = 1_000
"""At most this many sensor runs per job in one tick (a folder of a million new files is
taken a thousand at a time, in path order, not in one scheduler tick)."""

DigestCache = dict[tuple[str, str], tuple[int, int, str]]


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matching_files(pattern: str) -> list[str]:
    """Regular files matching `pattern`, sorted (hidden files only if the pattern says so)."""
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def _reason(path: str, digest: str) -> str:
    return f"file {path} (sha256 {digest})"


def sense(
    store: RunStore,
    record: JobRecord,
    *,
    now: datetime | None = None,
    cache: DigestCache | None = None,
) -> list[RunRecord]:
    """Create the runs for `record`'s new or changed files; returns the runs created."""
    from nbflow.jobs.launch import create_job_run

    schedule = record.schedule
    if not schedule.when_file or record.paused:
        return []
    now = now or utc_now()
    cache = {} if cache is None else cache
    created: list[RunRecord] = []
    known_reasons: dict[str, int] | None = None
    for path in matching_files(schedule.when_file):
        if len(created) >= RUNS_PER_TICK:
            break  # the work of one tick is bounded: the other files are taken next tick
        try:
            stat = os.stat(path)
            key = (record.name, path)
            hit = cache.get(key)
            if hit is not None and hit[:2] == (stat.st_mtime_ns, stat.st_size):
                digest = hit[2]
            else:
                digest = file_digest(path)
                cache[key] = (stat.st_mtime_ns, stat.st_size, digest)
        except OSError:
            continue  # vanished or unreadable between glob and read: next tick
        if store.sensor_file_seen(record.name, path, digest):
            continue
        reason = _reason(path, digest)
        if known_reasons is None:
            known_reasons = {
                r.reason: r.id for r in store.list_runs(record.name, run_types="sensor") if r.reason
            }
        run_id = known_reasons.get(reason)
        if run_id is None:
            moment = now + timedelta(microseconds=len(created))
            if moment.microsecond == 0:
                moment += timedelta(microseconds=1)
            run, made = create_job_run(
                store, record, "sensor", moment, literals={PATH_PARAMETER: path},
                now=now, reason=reason,
            )  # fmt: skip
            while not made:  # that instant is taken by another file's run: the next one
                moment += timedelta(microseconds=1)
                run, made = create_job_run(
                    store, record, "sensor", moment, literals={PATH_PARAMETER: path},
                    now=now, reason=reason,
                )  # fmt: skip
            fault("scheduler:after-insert")
            run_id = run.id
            created.append(run)
        store.record_sensor_file(record.name, path, digest, run_id=run_id, now=now)
    return created
