"""Partitions: one task, one cached result per partition key (Dagster's partitioned assets).

    daily = nf.DailyPartitions("2024-01-01")               # keys "2024-01-01", "2024-01-02", ...
    regions = nf.StaticPartitions(["us", "eu", "asia"])

    @nf.task(partitions=daily)
    def daily_orders(partition):                           # receives the key, e.g. "2024-01-03"
        ...

    nf.run(partition="2024-01-03")                          # one partition
    nf.run(partitions=daily.range("2024-01-01", "2024-01-07"))   # a backfill, one run per key

Policy:

- A partitioned task must take a parameter named `partition`; the key is
  passed there as a string. It is an ordinary run parameter, so it counts in
  the task's key: each partition is cached on its own, and tasks that do not
  take `partition` are shared by every partition.
- `run(partition=key)` checks the key against the partitions of every
  partitioned task in the run; an unknown key is refused before anything
  runs, with the valid keys listed (or their range described).
- `run(partitions=...)` takes a list of keys, `slice(first, last)` (both
  included), or a `range` of positions in the definition's keys, and runs
  the targets once per key, in order. It returns a `BackfillResult`: a
  mapping partition key -> `RunResult`. Partitions already computed are
  cached, so a backfill reruns only the partitions whose inputs changed.
- `DailyPartitions(start, end=None, tz="UTC")`: one key per day from `start`
  to `end` included; without `end`, up to today in `tz`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nbflow.core.errors import NbflowError, ParameterError, UnknownPartitionError, did_you_mean
from nbflow.core.result import RunResult


class PartitionsDefinition(Protocol):
    def keys(self) -> list[str]: ...
    def validate(self, key: Any, task: str) -> str: ...
    def describe(self) -> str: ...
    def select(self, spec: Any) -> list[str]: ...


def _as_date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise NbflowError(f"{what} must be a date like '2024-01-01', not {value!r}") from None


class DailyPartitions:
    """One partition per calendar day; keys are ISO dates ('2024-01-03')."""

    def __init__(self, start: Any, end: Any = None, tz: str = "UTC") -> None:
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise NbflowError(
                f"unknown time zone {tz!r}; use a name like 'Europe/Berlin'"
            ) from None
        self.tz_name = tz
        self.start = _as_date(start, "start")
        self._end = _as_date(end, "end") if end is not None else None
        if self._end is not None and self._end < self.start:
            raise NbflowError(
                f"daily partitions end ({self._end}) before they start ({self.start})"
            )

    @property
    def end(self) -> dt.date:
        """The last day included (today in `tz` when no end was given)."""
        return self._end if self._end is not None else dt.datetime.now(self.tz).date()

    def keys(self) -> list[str]:
        return self.range(self.start, self.end)

    def range(self, first: Any, last: Any) -> list[str]:
        """The keys from `first` to `last`, both included."""
        a, b = _as_date(first, "first"), _as_date(last, "last")
        return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]

    def validate(self, key: Any, task: str) -> str:
        try:
            day = dt.date.fromisoformat(str(key))
        except ValueError:
            raise UnknownPartitionError(key, task, self.describe()) from None
        if not self.start <= day <= self.end:
            raise UnknownPartitionError(key, task, self.describe())
        return day.isoformat()

    def describe(self) -> str:
        until = str(self._end) if self._end is not None else f"today ({self.end})"
        return (
            f"daily partitions run from {self.start} to {until}, time zone {self.tz_name}; "
            "write keys as 'YYYY-MM-DD'"
        )

    def select(self, spec: Any) -> list[str]:
        if isinstance(spec, slice):
            return self.range(spec.start or self.start, spec.stop or self.end)
        return _select(self, spec)

    def __repr__(self) -> str:
        return f"DailyPartitions({str(self.start)!r}, end={self._end and str(self._end)!r}, tz={self.tz_name!r})"


class StaticPartitions:
    """A fixed list of partition keys (regions, customers, ...)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            raise NbflowError("StaticPartitions takes a list of keys, not one string")
        self._keys = [str(k) for k in keys]
        if len(set(self._keys)) != len(self._keys):
            raise NbflowError(f"StaticPartitions keys must be distinct: {self._keys}")

    def keys(self) -> list[str]:
        return list(self._keys)

    def validate(self, key: Any, task: str) -> str:
        if key not in self._keys:
            raise UnknownPartitionError(
                key, task, self.describe(), did_you_mean(str(key), self._keys)
            )
        return str(key)

    def describe(self) -> str:
        return f"valid partitions: {', '.join(self._keys)}"

    def select(self, spec: Any) -> list[str]:
        if isinstance(spec, slice):
            first = self._keys.index(self.validate(spec.start, "?")) if spec.start else 0
            last = (
                self._keys.index(self.validate(spec.stop, "?"))
                if spec.stop
                else len(self._keys) - 1
            )
            return self._keys[first : last + 1]
        return _select(self, spec)

    def __repr__(self) -> str:
        return f"StaticPartitions({self._keys!r})"


def _select(definition: PartitionsDefinition, spec: Any) -> list[str]:
    if isinstance(spec, range):
        keys = definition.keys()
        try:
            return [keys[i] for i in spec]
        except IndexError:
            raise NbflowError(
                f"partitions={spec!r} reaches past the {len(keys)} partitions of {definition!r}"
            ) from None
    if isinstance(spec, str):
        return [spec]
    return [str(k) for k in spec]


def check_partition(tasks: Mapping[str, Any], names: Sequence[str], key: Any) -> str:
    """Validate `key` against every partitioned task among `names`; the normalized key."""
    for name in names:
        definition = tasks[name].options.partitions
        if definition is not None:
            key = definition.validate(key, name)
    return str(key)


def partitioned(tasks: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    return [n for n in names if tasks[n].options.partitions is not None]


def missing_partition_error(tasks: Mapping[str, Any], name: str) -> NbflowError:
    definition = tasks[name].options.partitions
    return ParameterError(
        f"task `{name}` is partitioned ({definition.describe()}); choose one with "
        "run(partition=...) or several with run(partitions=...)"
    )


class BackfillResult(Mapping[str, RunResult]):
    """`run(partitions=...)`: partition key -> the `RunResult` of that partition's run."""

    def __init__(self, runs: dict[str, RunResult]) -> None:
        self.runs = runs

    def __getitem__(self, key: str) -> RunResult:
        return self.runs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def ok(self) -> bool:
        """Every partition's run is ok (see `RunResult.ok`); an empty backfill is ok."""
        return all(r.ok for r in self.runs.values())

    @property
    def executed(self) -> dict[str, list[str]]:
        """partition key -> tasks that ran for it."""
        return {k: r.executed for k, r in self.runs.items()}

    def __repr__(self) -> str:
        failed = [k for k, r in self.runs.items() if not r.ok]
        state = f"{len(failed)} FAILED ({', '.join(failed[:3])})" if failed else "ok"
        return f"<BackfillResult {len(self.runs)} partitions: {state}>"
