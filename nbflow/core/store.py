"""The cache store: metadata records in diskcache, large values as content-addressed files.

Write order (why a crash never leaves a partial value behind a record):

1. A value larger than `INLINE_LIMIT` is written to a temporary file and
   renamed into `values/<d[:2]>/<digest>.nbv`. Files are named by content, so
   a rename is atomic and two writers of the same bytes agree.
2. Only then is the metadata record (key -> digest, signature, parts for
   explanations) queued; `flush()` commits queued records in one diskcache
   transaction. Small values travel inside their record, in the same commit.
   The same transaction updates the pipeline's index: task -> its latest
   record, without the value. The planner reads that index with one look-up,
   so a fully cached rerun costs one metadata read, not one per task.

A process killed before step 2 leaves at most an unreferenced file, removed
by `gc()`; a record that is lost is only a cache miss. Metadata entries are
stored as bytes signed with HMAC-SHA256 under the home's secret, and the
signature is checked before they are unpickled; a value's digest (kept in
its signed record) is checked before the value is unpickled. A record or value that fails
either check is reported with a warning and treated as a miss, never
unpickled.

Eviction is off unless `size_limit` is set; then `gc()` evicts the oldest
records until the cache fits.
"""

from __future__ import annotations

import hmac
import mmap
import os
import pickle
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import diskcache

from nbflow.core.errors import IntegrityError, NbflowWarning
from nbflow.core.home import ensure_private_dir, secret_key
from nbflow.core.serialize import Payload, deserialize, digest_payload
from nbflow.core.types import CacheKey

INLINE_LIMIT = 256 * 1024
_CHUNK = 8 * 2**20
# Test hook for the crash-safety tests: SIGKILL this process after the first
# chunk of a value file is written (a real kill, at a deterministic point).
_FAULT_MID_WRITE = os.environ.get("NBFLOW_FAULT") == "store-mid-write"
_MAGIC = b"NBV1"
_SIGNED = b"NBS1"
Record = dict[str, Any]
"""A metadata record. Keys: key, pipeline, task, digest, fmt, size, file | inline,
parts, shorts, created, duration, metadata."""


class Store(Protocol):
    """What the planner and runner need from a cache."""

    def get_record(self, pipeline: str, key: CacheKey) -> Record | None: ...
    def index(self, pipeline: str) -> dict[str, Record]: ...
    def put(self, record: Record, payload: Payload) -> None: ...
    def flush(self) -> None: ...
    def load(self, record: Record) -> Any: ...
    def last_record(self, pipeline: str, task: str) -> Record | None: ...
    def pipeline_state(self, pipeline: str) -> dict[str, Any]: ...
    def update_pipeline_state(self, pipeline: str, **changes: Any) -> None: ...
    def clear(self, pipeline: str) -> int: ...


def _record_key(pipeline: str, key: str) -> str:
    return f"r:{pipeline}:{key}"


class DiskStore:
    """The default store (see module docstring). Safe across threads and processes."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        size_limit: int | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.directory = ensure_private_dir(Path(directory).absolute())
        self.values_dir = ensure_private_dir(self.directory / "values")
        self.tmp_dir = ensure_private_dir(self.directory / "tmp")
        self.size_limit = size_limit
        self._secret = secret if secret is not None else secret_key()
        # nbflow serializes values itself and evicts itself: diskcache keeps
        # metadata only, with eviction off and a long lock timeout so that
        # concurrent runs wait instead of failing with "database is locked".
        self._meta = diskcache.Cache(
            str(ensure_private_dir(self.directory / "meta")),
            eviction_policy="none",
            size_limit=2**62,
            cull_limit=0,
            statistics=False,
            timeout=120,
            disk_pickle_protocol=5,
        )
        self._pending: list[Record] = []
        self._lock = threading.Lock()
        self.loads = 0
        """Number of values unpickled by this store object (benchmarks report it)."""

    # --- signed metadata -------------------------------------------------------
    #
    # Every metadata entry is stored as bytes: a tag, an HMAC-SHA256 of the
    # pickle under the home's secret, then the pickle. The HMAC is checked
    # before anything is unpickled; diskcache only ever sees bytes.

    def _dump(self, obj: Any) -> bytes:
        data = pickle.dumps(obj, protocol=5)
        return _SIGNED + hmac.digest(self._secret, data, "sha256") + data

    def _load_signed(self, raw: Any, what: str) -> Any:
        if raw is None:
            return None
        if (
            isinstance(raw, bytes)
            and raw[:4] == _SIGNED
            and hmac.compare_digest(raw[4:36], hmac.digest(self._secret, raw[36:], "sha256"))
        ):
            return pickle.loads(raw[36:])
        warnings.warn(
            f"cache entry for {what} has a bad signature (tampered, or written under "
            "another nbflow home); ignoring it and recomputing",
            NbflowWarning,
            stacklevel=3,
        )
        return None

    # --- records -----------------------------------------------------------

    def get_record(self, pipeline: str, key: CacheKey) -> Record | None:
        record = self._load_signed(
            self._meta.get(_record_key(pipeline, key)), f"pipeline `{pipeline}`"
        )
        return record if isinstance(record, dict) else None

    def index(self, pipeline: str) -> dict[str, Record]:
        """task -> summary of its latest record (no value), in one read."""
        index = self._load_signed(self._meta.get(f"index:{pipeline}"), f"pipeline `{pipeline}`")
        return index if isinstance(index, dict) else {}

    def last_record(self, pipeline: str, task: str) -> Record | None:
        return self.index(pipeline).get(task)

    def put(self, record: Record, payload: Payload) -> None:
        """Store a value (file first when large) and queue its record for `flush()`."""
        record["digest"], record["fmt"], record["size"] = payload.digest, payload.fmt, payload.size
        if payload.size > INLINE_LIMIT:
            record["file"] = self._write_value(payload)
            record["inline"] = None
        else:
            record["file"] = None
            record["inline"] = (payload.stream, [bytes(b) for b in payload.buffers])
        with self._lock:
            self._pending.append(record)

    def flush(self) -> None:
        """Commit queued records, and the index entries pointing to them, in one transaction."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        by_pipeline: dict[str, list[Record]] = {}
        for record in pending:
            # Instances of a mapped task are found by key only: the index lists tasks.
            if not record.get("instance"):
                by_pipeline.setdefault(record["pipeline"], []).append(record)
        with self._meta.transact():
            for record in pending:
                self._meta.set(_record_key(record["pipeline"], record["key"]), self._dump(record))
            for pipeline, records in by_pipeline.items():
                # Read-modify-write inside the transaction: concurrent runs serialize here.
                index = self.index(pipeline)
                for record in records:
                    index[record["task"]] = summary(record)
                self._meta.set(f"index:{pipeline}", self._dump(index))

    def _write_value(self, payload: Payload) -> str:
        rel = f"{payload.digest[:2]}/{payload.digest}.nbv"
        target = self.values_dir / rel
        if target.exists():
            return rel
        ensure_private_dir(target.parent)
        tmp = self.tmp_dir / f"{payload.digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        fmt = payload.fmt.encode()
        header = [
            _MAGIC,
            len(fmt).to_bytes(2, "little"),
            fmt,
            len(payload.stream).to_bytes(8, "little"),
            payload.stream,
            len(payload.buffers).to_bytes(4, "little"),
            *(b.nbytes.to_bytes(8, "little") for b in payload.buffers),
        ]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=0) as fh:
                fh.write(b"".join(header))
                for buf in payload.buffers:
                    view = buf.cast("B")
                    written = 0
                    while written < view.nbytes:
                        written += fh.write(view[written : written + _CHUNK])
                        if _FAULT_MID_WRITE:
                            os.kill(os.getpid(), signal.SIGKILL)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return rel

    # --- values ----------------------------------------------------------

    def load(self, record: Record) -> Any:
        """Unpickle a record's value after checking its digest; `IntegrityError` if it fails."""
        if "inline" not in record:  # an index summary: fetch the full record
            full = self.get_record(record["pipeline"], record["key"])
            if full is None:
                raise IntegrityError(record["key"], "record is missing")
            record = full
        if record.get("inline") is not None:
            stream, buffers = record["inline"]
            views = [memoryview(b) for b in buffers]
        else:
            stream, views = self._read_value(record)
        if digest_payload(record["fmt"], stream, views) != record["digest"]:
            self._drop(record)
            raise IntegrityError(record["key"], "value digest mismatch")
        self.loads += 1
        return deserialize(stream, views)

    def _read_value(self, record: Record) -> tuple[bytes, list[memoryview]]:
        """Map a value file and slice its buffers without copying them.

        The mapping is copy-on-write (ACCESS_COPY): arrays rebuilt on it are
        writable, and writing to them never changes the file.
        """
        path = self.values_dir / record["file"]
        try:
            with open(path, "rb") as fh:
                try:
                    mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
                except ValueError:  # an empty file cannot be mapped
                    raise IntegrityError(record["key"], "value file is empty") from None
        except FileNotFoundError:
            self._drop(record)
            raise IntegrityError(record["key"], "value file is missing") from None
        view = memoryview(mapped)
        try:
            if view[:4] != _MAGIC:
                raise IntegrityError(record["key"], "not an nbflow value file")
            pos = 4
            fmt_len = int.from_bytes(view[pos : pos + 2], "little")
            pos += 2 + fmt_len
            stream_len = int.from_bytes(view[pos : pos + 8], "little")
            pos += 8
            stream = bytes(view[pos : pos + stream_len])
            pos += stream_len
            count = int.from_bytes(view[pos : pos + 4], "little")
            pos += 4
            sizes = [
                int.from_bytes(view[pos + 8 * i : pos + 8 * i + 8], "little") for i in range(count)
            ]
            pos += 8 * count
            if pos + sum(sizes) != len(view):
                raise IntegrityError(record["key"], "value file is truncated")
            views = []
            for size in sizes:
                views.append(view[pos : pos + size])
                pos += size
        except IntegrityError:
            view.release()
            raise
        return stream, views

    def _drop(self, record: Record) -> None:
        with self._meta.transact():
            self._meta.delete(_record_key(record["pipeline"], record["key"]))
            index = self.index(record["pipeline"])
            entry = index.get(record["task"])
            if entry is not None and entry["key"] == record["key"]:
                del index[record["task"]]
                self._meta.set(f"index:{record['pipeline']}", self._dump(index))

    # --- per-pipeline state (invalidations, failures) -----------------------

    def pipeline_state(self, pipeline: str) -> dict[str, Any]:
        state = self._load_signed(self._meta.get(f"state:{pipeline}"), f"pipeline `{pipeline}`")
        return state if isinstance(state, dict) else {"invalidated": {}, "failed": {}}

    def update_pipeline_state(self, pipeline: str, **changes: Any) -> None:
        """Merge `changes` (dicts keyed by task; None deletes) into the pipeline's state."""
        with self._meta.transact():
            state = self.pipeline_state(pipeline)
            for section, entries in changes.items():
                target = state.setdefault(section, {})
                for task, value in entries.items():
                    if value is None:
                        target.pop(task, None)
                    else:
                        target[task] = value
            self._meta.set(f"state:{pipeline}", self._dump(state))

    # --- named blobs (the code-fingerprint memo, nbflow/core/codememo.py) ----

    def get_blob(self, name: str) -> bytes | None:
        """The bytes last stored under `name` by `put_blob`, signed like any entry; or None."""
        data = self._load_signed(self._meta.get(f"blob:{name}"), f"`{name}`")
        return data if isinstance(data, bytes) else None

    def put_blob(self, name: str, data: bytes) -> None:
        """Store `data` under `name` (its own keyspace: no record, index or state uses it)."""
        self._meta.set(f"blob:{name}", self._dump(data))

    # --- maintenance -------------------------------------------------------

    def records(self) -> Iterator[Record]:
        for key in list(self._meta.iterkeys()):
            if isinstance(key, str) and key.startswith("r:"):
                record = self._load_signed(self._meta.get(key), key)
                if isinstance(record, dict):
                    yield record

    def clear(self, pipeline: str) -> int:
        """Delete every record of `pipeline` (files are removed by the `gc()` that follows)."""
        prefixes = (f"r:{pipeline}:", f"index:{pipeline}", f"state:{pipeline}")
        removed = 0
        with self._meta.transact():
            for key in list(self._meta.iterkeys()):
                if isinstance(key, str) and key.startswith(prefixes):
                    self._meta.delete(key)
                    removed += key.startswith("r:")
        self.gc()
        return removed

    def info(self) -> dict[str, Any]:
        records = list(self.records())
        files = list(self.values_dir.glob("*/*.nbv"))
        per_pipeline: dict[str, int] = {}
        for r in records:
            per_pipeline[r["pipeline"]] = per_pipeline.get(r["pipeline"], 0) + 1
        return {
            "directory": str(self.directory),
            "records": len(records),
            "pipelines": per_pipeline,
            "inline_bytes": sum(r["size"] for r in records if r.get("inline") is not None),
            "value_files": len(files),
            "value_bytes": sum(f.stat().st_size for f in files),
            "size_limit": self.size_limit,
        }

    def gc(
        self, older_than: float | None = None, size_limit: int | None = None, grace: float = 60.0
    ) -> dict[str, int]:
        """Remove orphan value files and stale temp files; optionally old or excess records.

        `older_than` (seconds): drop records created longer ago. `size_limit`
        (bytes, default the store's): drop oldest records until the rest fit.
        Files younger than `grace` seconds are kept: they may belong to a
        write still in progress in another process.
        Records go first, files after: a file is deleted only when no
        committed record points to it.
        """
        now = time.time()
        removed_records = 0
        limit = size_limit if size_limit is not None else self.size_limit
        records = sorted(self.records(), key=lambda r: r.get("created", 0.0))
        keep: list[Record] = []
        for r in records:
            if older_than is not None and now - r.get("created", now) > older_than:
                self._drop(r)
                removed_records += 1
            else:
                keep.append(r)
        if limit is not None:
            total = sum(r["size"] for r in keep)
            while keep and total > limit:
                r = keep.pop(0)
                self._drop(r)
                total -= r["size"]
                removed_records += 1
        referenced = {r["file"] for r in keep if r.get("file")}
        removed_files = 0
        for path in self.values_dir.glob("*/*.nbv"):
            rel = f"{path.parent.name}/{path.name}"
            if rel not in referenced and now - path.stat().st_mtime >= grace:
                path.unlink(missing_ok=True)
                removed_files += 1
        removed_tmp = 0
        for path in self.tmp_dir.glob("*.tmp"):
            if now - path.stat().st_mtime >= grace:
                path.unlink(missing_ok=True)
                removed_tmp += 1
        return {"records": removed_records, "files": removed_files, "tmp": removed_tmp}

    def close(self) -> None:
        self.flush()
        self._meta.close()


def summary(record: Record) -> Record:
    """A record without its inline value: what the index keeps."""
    return {k: v for k, v in record.items() if k != "inline"}
