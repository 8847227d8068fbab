"""The cache store: metadata records in diskcache, large values as content-addressed files.

Write order (why a crash never leaves a partial value behind a record):

1. A value larger than `INLINE_LIMIT` is written to a temporary file and
   renamed into `values/<d[:2]>/<digest>.nbv` (see `nbflow.core.cache.valuefile`:
   every byte written, the size checked, then the rename). Files are named by
   content, so a rename is atomic and two writers of the same bytes agree.
2. Only then is the metadata record (key -> digest, signature, parts for
   explanations) queued; `flush()` commits queued records in one diskcache
   transaction. Small values travel inside their record, in the same commit.
   The same transaction updates the pipeline's index: task -> its latest
   record, without the value. The planner reads that index with one look-up,
   so a fully cached rerun costs one metadata read, not one per task.

A process killed before step 2 leaves at most an unreferenced file, removed
by `gc()`; a record that is lost is only a cache miss. A full disk is a
`CacheError` naming the folder and the bytes needed, never a partial entry.

What is signed, and when it is checked:

* diskcache never pickles or unpickles anything here (`_BytesOnlyDisk`): nbflow
  stores only bytes, and a row that diskcache would unpickle (planted in its
  pickle mode, or with a pickled key) is refused unread.
* Every metadata entry is ``NBS2 | HMAC-SHA256(secret, NBS2 | its own key |
  pickle) | pickle``, under the home's secret. The HMAC covers the entry's
  key, which names its pipeline and cache key, so a signed entry moved to
  another key (two records swapped) fails the check. The HMAC is checked
  before the pickle is loaded; a record must also name the pipeline and key
  it was read for.
* Entries written before keys were signed (``NBS1``: HMAC over the pickle
  alone) are still read, and accepted only when they name the pipeline and key
  they were read for (records, index); pipeline state carries no such name.
* A value's digest (kept in its signed record) is checked before the value
  is unpickled. A record or value that fails a check is reported with a
  warning and treated as a miss, never unpickled; a corrupt value file is
  removed, so the recompute writes a fresh one.

Key layout: ``r:<pipeline>:<key>``, ``index:<pipeline>``, ``state:<pipeline>``,
``b:<namespace>:<name>`` (signed bytes for other parts of nbflow), with ``%``
and ``:`` in each part escaped as ``%25`` and ``%3A``, so no part can run into
the next (`sales` never matches `sales:eu` or `sales2`). Names without those
two characters keep the key they had before escaping existed; entries of older
caches under a name with them are still found under their old key.

Eviction is off unless `size_limit` is set; then `gc()` evicts the oldest
records until the cache fits. `gc()` never deletes a file it cannot judge:
while some record fails its signature check (another home's secret, or
tampering), it keeps every value file, and the CLI refuses outright.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import pickle
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from nbflow.core.cache import valuefile
from nbflow.core.cache.serialize import Payload, deserialize, digest_payload
from nbflow.core.errors import CacheError, IntegrityError, NbflowWarning
from nbflow.core.home import ensure_private_dir, home_dir, secret_key
from nbflow.core.types import CacheKey

INLINE_LIMIT = 256 * 1024
# Test hook for the crash-safety tests: SIGKILL this process after the first
# chunk of a value file is written (a real kill, at a deterministic point).
_FAULT_MID_WRITE = os.environ.get("NBFLOW_FAULT") == "store-mid-write"
_SIGNED = b"NBS2"
_SIGNED_V1 = b"NBS1"
_MAC_LEN = 32
SIGNER_FILE = "signer.txt"
"""In a cache folder: the path of the home whose secret signs it (a hint for error messages)."""
Record = dict[str, Any]
"""A metadata record. Keys: key, pipeline, task, digest, fmt, size, file | inline,
parts, shorts, created, duration, metadata."""


class _Refused:
    """What `_BytesOnlyDisk` returns instead of unpickling a planted row."""

    def __repr__(self) -> str:
        return "<row diskcache would have unpickled; refused>"


_REFUSED = _Refused()


class _BytesOnlyDisk(diskcache.Disk):
    """diskcache's serializer, restricted to bytes values and str keys.

    nbflow signs and serializes everything itself; diskcache must never run
    `pickle.load` on what the database holds, because a row can be planted by
    anyone who can write the file, and unpickling it runs their code before
    any signature could be checked.
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"nbflow's cache keys are str, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        # A key stored pickled (raw=False) was not written by nbflow.
        return super().get(key, raw) if raw else _REFUSED

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        if type(value) is not bytes or read:
            raise TypeError(f"nbflow's cache stores bytes, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (MODE_RAW, MODE_BINARY) or read:
            return _REFUSED  # pickle (or text) mode: never loaded
        return super().fetch(mode, filename, value, read)


def _part(text: str) -> str:
    """One key part, with the separator (and the escape character) escaped."""
    return text.replace("%", "%25").replace(":", "%3A")


def _record_key(pipeline: str, key: str) -> str:
    return f"r:{_part(pipeline)}:{_part(key)}"


def _index_key(pipeline: str) -> str:
    return f"index:{_part(pipeline)}"


def _state_key(pipeline: str) -> str:
    return f"state:{_part(pipeline)}"


def _legacy(name: str, escaped: str) -> str | None:
    """The key an older nbflow used for `escaped`, when it differs (names with `:` or `%`)."""
    return name if name != escaped else None


@contextlib.contextmanager
def _room(folder: Path, needed: int, what: str) -> Iterator[None]:
    """Turn "database or disk is full" (SQLite) and ENOSPC into a `CacheError` naming `folder`."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "full" in str(exc):
            raise valuefile.disk_full_error(folder, needed, what) from exc
        raise
    except OSError as exc:
        if exc.errno in valuefile.DISK_FULL:
            raise valuefile.disk_full_error(folder, needed, what) from exc
        raise


def fill_record(
    record: Record, payload: Payload, write_value: Callable[[Payload, str], str]
) -> None:
    """Put `payload` into `record`, the one way every store does: its digest, format and
    size, and the value either inline (small) or as the value file `write_value` wrote first
    (large: the file exists before any record names it)."""
    record["digest"], record["fmt"], record["size"] = payload.digest, payload.fmt, payload.size
    if payload.size > INLINE_LIMIT:
        record["file"] = write_value(
            payload, f"task `{record['task']}` of pipeline `{record['pipeline']}`"
        )
        record["inline"] = None
    else:
        record["file"] = None
        record["inline"] = (payload.stream, [bytes(b) for b in payload.buffers])


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
    def get_bytes(self, namespace: str, name: str) -> bytes | None: ...
    def put_bytes(self, namespace: str, name: str, data: bytes) -> None: ...


class DiskStore:
    """The default store (see module docstring). Safe across threads and processes.

    `secret` defaults to the secret of `home` (the active home when not
    given). With `create_secret=False` a home without a secret is left as it
    is, and every signed entry then fails its check: the read-only way to
    open a cache, used by `nbflow cache gc`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        size_limit: int | None = None,
        secret: bytes | None = None,
        *,
        home: Path | None = None,
        create_secret: bool = True,
    ) -> None:
        self.directory = ensure_private_dir(Path(directory).absolute())
        self.values_dir = ensure_private_dir(self.directory / "values")
        self.tmp_dir = ensure_private_dir(self.directory / "tmp")
        self.size_limit = size_limit
        self.home: Path | None = None
        """The home whose secret this store signs with (None when `secret` was given)."""
        self._secret: bytes | None = secret
        if secret is None:
            self.home = home or home_dir(create=create_secret)
            if create_secret or (self.home / "secret.key").exists():
                self._secret = secret_key(self.home)
        self._signer_checked = False
        # nbflow serializes values itself and evicts itself: diskcache keeps
        # metadata only, as bytes (never pickles), with eviction off and a long
        # lock timeout so that concurrent runs wait instead of failing with
        # "database is locked".
        self._meta = diskcache.Cache(
            str(ensure_private_dir(self.directory / "meta")),
            disk=_BytesOnlyDisk,
            eviction_policy="none",
            size_limit=2**62,
            cull_limit=0,
            statistics=False,
            timeout=120,
        )
        self._pending: list[Record] = []
        self._indexes: dict[str, tuple[bytes, dict[str, Record]]] = {}
        """Index entry -> (its stored bytes, what they gave), for `index()`."""
        self._lock = threading.Lock()
        self.loads = 0
        """Number of values unpickled by this store object (benchmarks report it)."""

    # --- signed metadata -------------------------------------------------------

    def _mac(self, tag: bytes, name: str, data: bytes) -> bytes:
        assert self._secret is not None
        if tag == _SIGNED_V1:
            return hmac.digest(self._secret, data, "sha256")
        encoded = name.encode("utf-8", "surrogatepass")
        message = tag + len(encoded).to_bytes(4, "little") + encoded + data
        return hmac.digest(self._secret, message, "sha256")

    def _seal(self, name: str, data: bytes) -> bytes:
        """`data` signed for the entry `name` (see module docstring)."""
        if self._secret is None:
            raise CacheError(
                f"cannot write to cache `{self.directory}`: home `{self.home}` has no "
                "secret.key (opened read-only)"
            )
        self._note_signer()
        return _SIGNED + self._mac(_SIGNED, name, data) + data

    def _unseal(self, name: str, raw: Any) -> tuple[bytes, bool] | None:
        """The signed bytes of entry `name` and whether they are legacy (NBS1), or None if the
        signature does not hold. Nothing is deserialized here."""
        if self._secret is None or type(raw) is not bytes or len(raw) < 4 + _MAC_LEN:
            return None
        tag, mac, data = raw[:4], raw[4 : 4 + _MAC_LEN], raw[4 + _MAC_LEN :]
        if tag not in (_SIGNED, _SIGNED_V1):
            return None
        if not hmac.compare_digest(mac, self._mac(tag, name, data)):
            return None
        return data, tag == _SIGNED_V1

    def _read(
        self,
        name: str,
        what: str,
        belongs: Callable[[Any], bool],
        legacy_name: str | None = None,
        quiet: bool = False,
        raw: Any = None,
    ) -> Any:
        """Read, verify and only then unpickle the entry `name` (or its pre-escaping key).

        `belongs` says whether the unpickled object names what it was read
        for; an object that does not is refused like a bad signature.
        Returns None for a missing or refused entry (refusals warn unless `quiet`).
        """
        if raw is None:  # (else: the caller read it already)
            raw = self._meta.get(name)
        if raw is None and legacy_name is not None:
            name, raw = legacy_name, self._meta.get(legacy_name)
        if raw is None:
            return None
        opened = self._unseal(name, raw)
        obj = None
        if opened is not None:
            obj = pickle.loads(opened[0])  # signed by our secret: checked above
            if belongs(obj):
                return obj
        if not quiet:
            self._warn_refused(name, what, raw, opened is not None)
        return None

    def _warn_refused(self, name: str, what: str, raw: Any, signed: bool) -> None:
        if signed:
            why = "is signed but belongs to another key (moved or swapped)"
        elif raw is _REFUSED:
            why = "is not signed bytes (a row diskcache would unpickle; it was not loaded)"
        elif self._secret is None:
            why = f"cannot be checked: home `{self.home}` has no secret.key"
        else:
            why = "has a bad signature (tampered, or written under another nbflow home)"
        warnings.warn(
            f"cache entry `{name}` of {what} {why}; ignoring it and recomputing",
            NbflowWarning,
            stacklevel=4,
        )

    def _note_signer(self) -> None:
        """Leave the signing home's path in the cache folder, once, for gc's error messages."""
        if self._signer_checked or self.home is None:
            return
        self._signer_checked = True
        path = self.directory / SIGNER_FILE
        if path.exists():
            return
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{self.home}\n")

    def signer(self) -> str | None:
        """The home this cache says signs it (from `signer.txt`; a hint, not trusted).

        A cache from before `signer.txt` existed that sits in a home's
        `cache/` folder names that home.
        """
        try:
            return (self.directory / SIGNER_FILE).read_text().strip() or None
        except (OSError, UnicodeDecodeError):
            pass
        if self.directory.name == "cache" and (self.directory.parent / "secret.key").exists():
            return str(self.directory.parent)
        return None

    # --- records -----------------------------------------------------------

    def get_record(self, pipeline: str, key: CacheKey) -> Record | None:
        def belongs(obj: Any) -> bool:
            return isinstance(obj, dict) and (obj.get("pipeline"), obj.get("key")) == (
                pipeline,
                key,
            )

        name = _record_key(pipeline, key)
        record = self._read(
            name, f"pipeline `{pipeline}`", belongs, _legacy(f"r:{pipeline}:{key}", name)
        )
        return record if isinstance(record, dict) else None

    def index(self, pipeline: str) -> dict[str, Record]:
        """task -> summary of its latest record (no value), in one read."""

        def belongs(obj: Any) -> bool:
            return isinstance(obj, dict) and all(
                isinstance(v, dict) and v.get("pipeline") == pipeline and v.get("task") == t
                for t, v in obj.items()
            )

        name = _index_key(pipeline)
        # The index of 1,000 tasks is 300 kB to verify and unpickle (3 ms): a process that
        # plans again reuses what it parsed while the stored bytes are the same ones.
        raw = self._meta.get(name)
        seen = self._indexes.get(name)
        if seen is not None and raw is not None and seen[0] == raw:
            return dict(seen[1])
        index = self._read(
            name, f"pipeline `{pipeline}`", belongs, _legacy(f"index:{pipeline}", name), raw=raw
        )
        if not isinstance(index, dict):
            return {}
        if type(raw) is bytes:
            self._indexes[name] = (raw, index)
            return dict(index)
        return index

    def last_record(self, pipeline: str, task: str) -> Record | None:
        return self.index(pipeline).get(task)

    def put(self, record: Record, payload: Payload) -> None:
        """Store a value (file first when large) and queue its record for `flush()`."""
        fill_record(record, payload, self._write_value)
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
        entries = [
            (
                _record_key(r["pipeline"], r["key"]),
                self._dump(_record_key(r["pipeline"], r["key"]), r),
            )
            for r in pending
        ]
        needed = sum(len(e[1]) for e in entries)
        meta = self.directory / "meta"
        with _room(meta, needed, f"{len(pending)} cache records"), self._meta.transact():
            for name, data in entries:
                self._meta.set(name, data)
            for pipeline, records in by_pipeline.items():
                # Read-modify-write inside the transaction: concurrent runs serialize here.
                index = self.index(pipeline)
                for record in records:
                    index[record["task"]] = summary(record)
                self._set(_index_key(pipeline), index)

    def _dump(self, name: str, obj: Any) -> bytes:
        return self._seal(name, pickle.dumps(obj, protocol=5))

    def _set(self, name: str, obj: Any) -> None:
        self._meta.set(name, self._dump(name, obj))

    def _write_value(self, payload: Payload, what: str) -> str:
        rel = f"{payload.digest[:2]}/{payload.digest}.nbv"
        target = self.values_dir / rel
        # A file of the right size is taken as written by an earlier run (content-addressed);
        # a truncated one is replaced. A byte flip of the same size is caught by the digest
        # check at load, which removes the file, so the recompute lands here and rewrites it.
        if target.exists() and valuefile.size_ok(target):
            return rel
        with _room(self.directory, valuefile.file_size(payload), what):
            ensure_private_dir(target.parent)
        valuefile.write_value(payload, target, self.tmp_dir, what, _FAULT_MID_WRITE)
        return rel

    # --- named bytes (for other parts of nbflow, e.g. a fingerprint memo) ------

    def get_bytes(self, namespace: str, name: str) -> bytes | None:
        """The bytes last stored with `put_bytes(namespace, name, ...)`, after their signature
        is checked (None when missing or refused). Deserializing them is the caller's job:
        prefer a format that cannot carry code (JSON)."""
        key = f"b:{_part(namespace)}:{_part(name)}"
        raw = self._meta.get(key)
        if raw is None:
            return None
        opened = self._unseal(key, raw)
        if opened is None or opened[1]:  # no legacy form exists for named bytes
            self._warn_refused(key, f"`{namespace}`", raw, False)
            return None
        return opened[0]

    def put_bytes(self, namespace: str, name: str, data: bytes) -> None:
        """Store `data` signed under (`namespace`, `name`), committed at once."""
        key = f"b:{_part(namespace)}:{_part(name)}"
        sealed = self._seal(key, bytes(data))
        with _room(self.directory / "meta", len(sealed), f"`{namespace}` entry `{name}`"):
            self._meta.set(key, sealed)

    # --- values ----------------------------------------------------------

    def load(self, record: Record) -> Any:
        """Unpickle a record's value after checking its digest; `IntegrityError` if it fails."""
        if "inline" not in record:  # an index summary: fetch the full record
            full = self.get_record(record["pipeline"], record["key"])
            if full is None:
                raise IntegrityError(record["key"], "record is missing")
            record = full
        inode = None
        if record.get("inline") is not None:
            stream, buffers = record["inline"]
            views = [memoryview(b) for b in buffers]
        else:
            try:
                _, stream, views, inode = valuefile.read_value(
                    self.values_dir / record["file"], record["key"]
                )
            except IntegrityError:
                self._drop(record)
                raise
        if digest_payload(record["fmt"], stream, views) != record["digest"]:
            self._drop(record)
            if inode is not None:
                self._remove_corrupt(self.values_dir / record["file"], inode)
            raise IntegrityError(record["key"], "value digest mismatch")
        self.loads += 1
        return deserialize(stream, views)

    def _remove_corrupt(self, path: Path, inode: int) -> None:
        """Remove a value file whose bytes failed their digest, unless another writer has
        already renamed a fresh file over it (then the inode differs)."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == inode:
                path.unlink()

    def _drop(self, record: Record) -> None:
        pipeline = record["pipeline"]
        with self._meta.transact():
            self._meta.delete(_record_key(pipeline, record["key"]))
            legacy = _legacy(f"r:{pipeline}:{record['key']}", _record_key(pipeline, record["key"]))
            if legacy is not None:
                self._meta.delete(legacy)
            index = self.index(pipeline)
            entry = index.get(record["task"])
            if entry is not None and entry["key"] == record["key"]:
                del index[record["task"]]
                self._set(_index_key(pipeline), index)

    # --- per-pipeline state (invalidations, failures) -----------------------

    def pipeline_state(self, pipeline: str) -> dict[str, Any]:
        name = _state_key(pipeline)
        state = self._read(
            name,
            f"pipeline `{pipeline}`",
            lambda obj: isinstance(obj, dict),
            _legacy(f"state:{pipeline}", name),
        )
        return state if isinstance(state, dict) else {"invalidated": {}, "failed": {}}

    def update_pipeline_state(self, pipeline: str, **changes: Any) -> None:
        """Merge `changes` (dicts keyed by task; None deletes) into the pipeline's state."""
        what = f"the state of pipeline `{pipeline}`"
        with _room(self.directory / "meta", 0, what), self._meta.transact():
            state = self.pipeline_state(pipeline)
            for section, entries in changes.items():
                target = state.setdefault(section, {})
                for task, value in entries.items():
                    if value is None:
                        target.pop(task, None)
                    else:
                        target[task] = value
            self._set(_state_key(pipeline), state)

    # --- maintenance -------------------------------------------------------

    def _scan(self) -> tuple[list[Record], list[str]]:
        """Every record that verifies, and the keys of record entries that do not."""
        records: list[Record] = []
        unverified: list[str] = []
        for name in list(self._meta.iterkeys()):
            if not (isinstance(name, str) and name.startswith("r:")):
                continue
            raw = self._meta.get(name)
            if raw is None:  # deleted meanwhile
                continue
            opened = self._unseal(name, raw)
            record = pickle.loads(opened[0]) if opened is not None else None
            if isinstance(record, dict) and name in _names_of(record):
                records.append(record)
            else:
                unverified.append(name)
        return records, unverified

    def records(self) -> Iterator[Record]:
        """Every record that passes its signature check (the others are skipped with a warning)."""
        records, unverified = self._scan()
        if unverified:
            warnings.warn(
                f"{len(unverified)} cache records in `{self.directory}` fail their signature "
                "check (tampered, or written under another nbflow home); skipping them",
                NbflowWarning,
                stacklevel=2,
            )
        yield from records

    def clear(self, pipeline: str) -> int:
        """Delete every record of `pipeline` (files are removed by the `gc()` that follows).

        Keys are matched exactly, part by part: `sales` never touches `sales2`
        or `sales:eu` (nor their entries from before keys were escaped).
        """
        exact = {
            _index_key(pipeline),
            _state_key(pipeline),
            f"index:{pipeline}",
            f"state:{pipeline}",
        }
        prefixes = {f"r:{_part(pipeline)}:", f"r:{pipeline}:"}
        removed = 0
        with self._meta.transact():
            for name in list(self._meta.iterkeys()):
                if not isinstance(name, str):
                    continue
                is_record = any(name.startswith(p) and ":" not in name[len(p) :] for p in prefixes)
                if is_record or name in exact:
                    self._meta.delete(name)
                    removed += is_record
        self.gc()
        return removed

    def info(self) -> dict[str, Any]:
        records, unverified = self._scan()
        files = list(self.values_dir.glob("*/*.nbv"))
        per_pipeline: dict[str, int] = {}
        for r in records:
            per_pipeline[r["pipeline"]] = per_pipeline.get(r["pipeline"], 0) + 1
        return {
            "directory": str(self.directory),
            "records": len(records),
            "unverified_records": len(unverified),
            "pipelines": per_pipeline,
            "inline_bytes": sum(r["size"] for r in records if r.get("inline") is not None),
            "value_files": len(files),
            "value_bytes": sum(f.stat().st_size for f in files),
            "size_limit": self.size_limit,
        }

    def gc(
        self,
        older_than: float | None = None,
        size_limit: int | None = None,
        grace: float = 60.0,
        *,
        refuse_unverified: bool = False,
        drop_unverified: bool = False,
        verify: bool = False,
    ) -> dict[str, int]:
        """Remove orphan value files and stale temp files; optionally old or excess records.

        `older_than` (seconds): drop records created longer ago. `size_limit`
        (bytes, default the store's): drop oldest records until the rest fit.
        Files younger than `grace` seconds are kept: they may belong to a
        write still in progress in another process.
        Records go first, files after: a file is deleted only when no
        committed record points to it.

        A value file that is truncated (or, with `verify`, whose bytes fail
        their digest) is removed with the records that point to it.

        gc never deletes what it cannot judge. Records that fail their
        signature check may point to any file, so while there are any, no
        value file is removed: `refuse_unverified` raises `CacheError`
        instead (naming the home whose secret the cache needs), and
        `drop_unverified` deletes those records first.
        """
        for label, amount in (("older_than", older_than), ("size_limit", size_limit)):
            if amount is not None and not amount >= 0:
                raise ValueError(f"gc: {label} must be 0 or more, got {amount!r}")
        now = time.time()
        records, unverified = self._scan()
        if unverified and drop_unverified:
            with self._meta.transact():
                for name in unverified:
                    self._meta.delete(name)
            dropped_unverified, unverified = len(unverified), []
        else:
            dropped_unverified = 0
        if unverified and refuse_unverified:
            raise CacheError(self._unverified_message(len(unverified)))
        removed_records = 0
        removed_corrupt = 0
        limit = size_limit if size_limit is not None else self.size_limit
        keep: list[Record] = []
        corrupt: set[str] = set()
        for r in sorted(records, key=lambda r: r.get("created", 0.0)):
            if r.get("file") and (r["file"] in corrupt or not self._file_ok(r, verify)):
                corrupt.add(r["file"])
                self._drop(r)
                removed_records += 1
            elif older_than is not None and now - r.get("created", now) > older_than:
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
        for rel in corrupt:
            (self.values_dir / rel).unlink(missing_ok=True)
            removed_corrupt += 1
        removed_files = 0
        if not unverified:
            referenced = {r["file"] for r in keep if r.get("file")}
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
        return {
            "records": removed_records,
            "files": removed_files,
            "corrupt": removed_corrupt,
            "tmp": removed_tmp,
            "unverified": len(unverified),
            "dropped_unverified": dropped_unverified,
        }

    def _file_ok(self, record: Record, verify: bool) -> bool:
        path = self.values_dir / record["file"]
        if not valuefile.size_ok(path):
            return False
        if not verify:
            return True
        try:
            _, stream, views, _ = valuefile.read_value(path, record["key"])
        except IntegrityError:
            return False
        return digest_payload(record["fmt"], stream, views) == record["digest"]

    def _unverified_message(self, count: int) -> str:
        signer = self.signer()
        where = f"--cache-dir {self.directory}"
        if self._secret is None:
            mine = f"home `{self.home}` has no secret.key (none was created)"
        elif self.home is not None:
            mine = f"they do not verify with the secret of home `{self.home}`"
        else:
            mine = "they do not verify with the secret given"
        source = (
            f"per {SIGNER_FILE}" if (self.directory / SIGNER_FILE).exists() else "the home it is in"
        )
        if signer and signer != str(self.home):
            hint = (
                f"the cache was signed under home `{signer}` ({source}): run "
                f"`NBFLOW_HOME={signer} nbflow cache gc {where}`"
            )
        else:
            hint = "run gc under the nbflow home that wrote them (set NBFLOW_HOME)"
        return (
            f"refusing to collect cache `{self.directory}`: {count} results cannot be judged "
            f"because {mine}; {hint}. If they were tampered with, "
            f"`nbflow cache gc {where} --drop-unverified` deletes them. Nothing was deleted."
        )

    def close(self) -> None:
        self.flush()
        self._meta.close()


def _names_of(record: Record) -> set[str]:
    """The keys a record may be stored under: its own, and its key from before escaping."""
    pipeline, key = record.get("pipeline"), record.get("key")
    if not isinstance(pipeline, str) or not isinstance(key, str):
        return set()
    return {_record_key(pipeline, key), f"r:{pipeline}:{key}"}


def summary(record: Record) -> Record:
    """A record without its inline value: what the index keeps."""
    return {k: v for k, v in record.items() if k != "inline"}
