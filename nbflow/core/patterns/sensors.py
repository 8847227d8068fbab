"""Sensors: tasks that wait for a condition (Airflow's sensors in "poke" mode, Dagster's sensors inside a run).

`@nf.sensor(interval=30, timeout=3600, soft_fail=False)` registers a task
whose function returns something truthy once its condition holds. That
value becomes the sensor's value (`nf.wait_for_file` returns the list of
matching paths).

Policy:

- The function is called at once, then every `interval` seconds, inside one
  job on the run's executor (so a sensor occupies one worker while it waits).
- `timeout` is counted from the first check. When it passes without a truthy
  result the sensor fails with `SensorTimeout`, which is never retried; with
  `soft_fail=True` it ends `skipped` instead, with the reason, and skips
  spread by the downstream tasks' trigger rules.
- A sensor is never fresh: each run checks again ("always reruns: a sensor
  re-checks its condition on every run"). Its value is still stored, so a
  downstream task whose sensor returned the same value stays cached.
- In development, `run(assume={"wait_for_upstream"})` marks a sensor
  satisfied without checking (its value is `True`), and
  `run(assume={"wait_for_upstream": value})` gives the value to use.
  (`nbflow.jobs.file_sensor` is the scheduler's side: a file that *starts* a run.)
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbflow.core.errors import NbflowError, SensorTimeout

ALWAYS_RUN_REASON = "a sensor re-checks its condition on every run"
ASSUMED_REASON = "assumed satisfied (run(assume=...)); not checked"


@dataclass(frozen=True, slots=True)
class SensorSpec:
    interval: float = 60.0
    """Seconds between checks."""
    timeout: float | None = 3600.0
    """Seconds from the first check until the sensor gives up (None: wait forever)."""
    soft_fail: bool = False
    """On timeout, end `skipped` instead of `failed`."""

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int | float) or self.interval <= 0:
            raise NbflowError(
                f"a sensor's interval must be a positive number of seconds, not {self.interval!r}"
            )
        if self.timeout is not None and (
            not isinstance(self.timeout, int | float) or self.timeout <= 0
        ):
            raise NbflowError(
                f"a sensor's timeout must be a positive number of seconds or None, not {self.timeout!r}"
            )


def poke(spec: SensorSpec, task: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Check `fn(**kwargs)` until it is truthy (return it) or `spec.timeout` passes (raise)."""
    start = time.monotonic()
    checks = 0
    while True:
        value = fn(**kwargs)
        checks += 1
        if value:
            return value
        elapsed = time.monotonic() - start
        if spec.timeout is not None and elapsed >= spec.timeout:
            raise SensorTimeout(task, spec.timeout, checks, spec.soft_fail)
        pause = spec.interval
        if spec.timeout is not None:
            pause = min(pause, spec.timeout - elapsed)  # one last check at the deadline
        time.sleep(max(0.0, pause))


def assumed(value: Any) -> Any:
    """The job of a sensor marked satisfied with `run(assume=...)`."""
    return value


def sensor_options(
    interval: float, timeout: float | None, soft_fail: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """Task options for a sensor: its spec, and never fresh."""
    return {
        **options,
        "sensor": SensorSpec(interval, timeout, soft_fail),
        "always_run": ALWAYS_RUN_REASON,
    }


def file_check(pattern: str) -> Callable[[], list[str]]:
    """A sensor function: the sorted paths matching `pattern` (empty, so falsy, until one exists)."""
    pattern = os.path.abspath(os.path.expanduser(pattern))

    def wait_for_file() -> list[str]:
        return sorted(glob.glob(pattern, recursive=True))

    return wait_for_file
