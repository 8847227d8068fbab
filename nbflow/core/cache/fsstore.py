"""The shared cache store: the `DiskStore` protocol on object storage, through fsspec.

`Pipeline(..., cache_dir="s3://bucket/prefix")` (any fsspec URL with a
scheme; `file:///team/cache` for a shared folder, where SQLite and so
diskcache are unsafe), the `cache.url` home setting or `$NBFLOW_CACHE_URL`
select it. Several machines read and write one cache; nothing here relies
on a lock, a rename or a transaction the service may not offer.

Objects under the prefix (each part of a name percent-escaped, so no
pipeline's folder can run into another's):

    nbflow-cache.json             signed marker: this prefix is an nbflow cache (gc needs it)
    values/<d[:2]>/<digest>.nbv   a large value, in `valuefile`'s format, named by its digest
    records/<pipeline>/<key>.rec  one signed record per cache key, never rewritten
    index/<pipeline>/<stamp>.seg  signed index segments: task -> summary of its latest record
    state/<pipeline>/<stamp>.seg  signed state changes (invalidations, failures, checks)
    bytes/<namespace>/<name>.bin  signed named bytes (the code-fingerprint memo)
    tmp/                          `file://` only: values being copied in

Write order (why no reader ever sees a partial value or a record without its value):

1. A value larger than `INLINE_LIMIT` is written to the local copy first
   (`valuefile`: temporary file, size checked, renamed), then uploaded
   unless an object of exactly its size is already there. On S3 an object
   becomes visible only when its PUT (or multipart upload) completes, so a
   writer killed mid-upload leaves nothing readable; on `file://` the bytes
   go to `tmp/` and are renamed into `values/`. Names are digests, so two
   writers of one value write the same bytes.
2. Only then, on `flush()`, is the record written, with a create-only PUT
   (S3's If-None-Match) where the service offers one: a record is immutable,
   and a second writer of the same key (same code, same inputs) keeps the
   first. Small values travel inside their record.
3. Then one index segment per pipeline and flush, listing the records just
   written. Segments are only ever added; a reader lists the folder, reads
   the segments it has not seen (they never change) and merges them, the
   newest `created` per task winning. When it finds more than `COMPACT_AT`
   segments it writes their merge as one new segment and only then deletes
   the ones it merged, so no entry is lost by compaction, and two readers
   compacting at once only leave a duplicate.

A lost or late index segment is only a cache miss: the planner then asks
for the record under the key it computed (one GET). An index entry is a
summary of a signed record and is used only when its key equals the key the
planner computed, so it is never a wrong hit. So a 1,000-task rerun costs
one LIST and a few GETs for the index, the same for the pipeline state, and
one GET for the code memo — not one request per task.

Signing, and what is checked before anything is unpickled:

* Every object except values is ``NBF1 | HMAC-SHA256(secret, NBF1 | its name |
  data) | data``, under the *team secret* (`cache.secret` setting or
  `$NBFLOW_CACHE_SECRET`; see `team_secret`), never a home's own secret:
  every machine must verify what the others wrote. The HMAC covers the
  object's name, so an object copied to another name fails; a record must
  also name the pipeline and key it was read for.
* A value's digest, kept in its signed record, is checked before the value
  is unpickled, whether it came from the local copy or the network. A value
  object that fails is deleted (it cannot be a write in progress: objects
  appear whole), so the recompute uploads a good one.
* An object that fails a check is reported with a warning and treated as a
  miss, never unpickled.

Local read-through copy: values fetched or written are kept under the home
(`shared-cache/<hash of the URL>/values`), so a second read does not go to
the network; the digest is checked on every load, so a stale or damaged
copy is fetched again. Verified segments are kept there too (their names are
never reused), so a new process lists them and fetches only unseen ones.
Deleting that folder is always safe.

Failures: every call to the service has timeouts and few retries (set in
`fsobjects.DEFAULT_OPTIONS`, overridden by fsspec's configuration or
`storage_options`), and any failure becomes a `CacheError` naming the cache
and what to check — refused credentials name the bucket — never a hang.

`gc()` deletes only objects it can judge: it refuses a prefix without a
signed marker, deletes only names of the layout above, keeps value objects
younger than the grace period (an upload from another machine may not have
written its record yet), and keeps every value while a record fails its
signature check.
"""

from __future__ import annotations

import hmac
import json
import os
import pickle
import re
import stat
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from blake3 import blake3

from nbflow.core.cache import valuefile
from nbflow.core.cache.fsobjects import Objects, escape, mtime, stamp
from nbflow.core.cache.serialize import Payload, deserialize, digest_payload
from nbflow.core.cache.store import Record, fill_record, summary
from nbflow.core.errors import CacheError, HomeError, IntegrityError, NbflowWarning
from nbflow.core.home import ensure_private_dir, home_dir
from nbflow.core.types import CacheKey

URL_ENV = "NBFLOW_CACHE_URL"
SECRET_ENV = "NBFLOW_CACHE_SECRET"
SETTINGS_FILE = "cache.json"
"""In the home: the `cache.url` and `cache.secret` settings (mode 0600)."""
MIN_SECRET_CHARS = 32
COMPACT_AT = 8
"""A reader that finds more index (or state) segments than this merges them into one."""
MARKER = "nbflow-cache.json"
FORMAT = "nbflow-shared-cache-1"
PREFETCH_TTL = 1.0
"""Seconds a listing of segment names taken ahead (with the state, for the index) is used."""
LISTING_TTL = 5.0
"""Seconds a listing of a pipeline's records answers "is there a record under this key?"."""
DEFAULT_GRACE = 3600.0
"""gc keeps unreferenced values younger than this (seconds): their record may be on its way."""

_TAG = b"NBF1"
_MAC_LEN = 32
_VALUE_NAME = re.compile(r"^values/[0-9a-f]{2}/[0-9a-f]{8,128}\.nbv$")
_RECORD_NAME = re.compile(r"^records/[^/]+/[^/]+\.rec$")
_SEGMENT_NAME = re.compile(r"^(index|state)/[^/]+/[^/]+\.seg$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: object) -> bool:
    """Whether a `cache_dir` is an fsspec URL (it has a scheme), not a local folder."""
    return isinstance(location, str) and bool(_URL.match(location))


# --- settings: where the shared cache is, and its secret ---------------------------------


def read_cache_settings(home: Path) -> dict[str, str]:
    """The home's `cache.*` settings ({} when none); refused unless the file is ours and 0600,
    since it holds the secret that signs what nbflow unpickles."""
    path = home / SETTINGS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise HomeError(
            path, f"cannot read the cache settings `{path}` ({exc}): remove it"
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise HomeError(path, f"the cache settings `{path}` are not a file of yours: remove it")
        if info.st_mode & 0o077:
            raise HomeError(
                path,
                f"the cache settings `{path}` (they hold the team's cache secret) can be read or "
                f"written by others: run `chmod 600 {path}` if nobody else could have used it",
            )
        try:
            data = json.loads(fh.read() or b"{}")
        except ValueError as exc:
            raise HomeError(path, f"the cache settings `{path}` are not JSON: remove it") from exc
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def write_cache_settings(home: Path, **changes: str | None) -> None:
    """Set (or, with None, remove) `cache.*` settings; written 0600 through a rename."""
    ensure_private_dir(home, what=f"the nbflow home `{home}`")
    current = read_cache_settings(home)
    for name, value in changes.items():
        if value is None:
            current.pop(name, None)
        else:
            current[name] = value
    tmp = home / f".{SETTINGS_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(current, fh, indent=2)
    os.replace(tmp, home / SETTINGS_FILE)


def configured_url(home: Path | None = None) -> str | None:
    """The shared cache URL: `$NBFLOW_CACHE_URL`, else the home's `cache.url`, else None."""
    url = os.environ.get(URL_ENV)
    if url:
        return url
    home = home or home_dir(create=False)
    return read_cache_settings(home).get("url") if home.is_dir() else None


def team_secret(url: str, home: Path | None = None) -> bytes:
    """The secret shared by everyone who uses the cache at `url`.

    `$NBFLOW_CACHE_SECRET`, else the home's `cache.secret`. A home's own
    `secret.key` would not do: each machine must verify what the others
    signed. A missing or short secret is a `CacheError` saying how to set one.
    """
    text = os.environ.get(SECRET_ENV)
    source = f"${SECRET_ENV}"
    if not text:
        home = home or home_dir(create=False)
        text = read_cache_settings(home).get("secret") if home.is_dir() else None
        source = f"the `cache.secret` setting of home `{home}`"
    how = (
        'generate one once with `python -c "import secrets; print(secrets.token_urlsafe(32))"`, '
        f"give it to every machine that uses the cache (set {SECRET_ENV} from your secret "
        "manager or CI secrets, or `nbflow settings set cache.secret VALUE`); see docs/team.md"
    )
    if not text:
        raise CacheError(
            f"the shared cache `{url}` needs the team's cache secret, which signs its entries: "
            f"neither {SECRET_ENV} nor the `cache.secret` setting is set; {how}"
        )
    if len(text) < MIN_SECRET_CHARS:
        raise CacheError(
            f"the cache secret from {source} has {len(text)} characters; it needs at least "
            f"{MIN_SECRET_CHARS} (anyone who can guess it can plant entries nbflow unpickles): {how}"
        )
    return text.encode()


# --- the store --------------------------------------------------------------------------


class FsStore:
    """The shared store (see module docstring); the same protocol as `DiskStore`.

    `secret` defaults to the team secret (`team_secret`); `home` holds the
    local copies of values and the settings (the active home by default).
    `storage_options` go to fsspec (e.g. `endpoint_url`, `key`, `secret`).
    """

    def __init__(
        self,
        url: str,
        size_limit: int | None = None,
        secret: bytes | None = None,
        *,
        home: Path | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if not is_url(url):
            raise CacheError(f"`{url}` is not a cache URL (scheme://...)")
        self.url = url.rstrip("/")
        self.directory = self.url
        """Where the cache is (the URL; `DiskStore` has a folder here)."""
        self.size_limit = size_limit
        self.home = home or home_dir()
        self._secret = secret if secret is not None else team_secret(self.url, self.home)
        local = self.home / "shared-cache" / blake3(self.url.encode()).hexdigest(length=8)
        self.local_dir = ensure_private_dir(local)
        self.values_dir = ensure_private_dir(local / "values")
        self.tmp_dir = ensure_private_dir(local / "tmp")
        self.objects = Objects(self.url, storage_options)
        self._pending: list[Record] = []
        self._lock = threading.Lock()
        self._segments: dict[str, Any] = {}
        """Verified segments by name: they never change, so each is read once per store."""
        self._records: dict[str, Record] = {}
        self._index_memo: dict[str, tuple[float, dict[str, Record]]] = {}
        self._listings: dict[str, tuple[float, set[str]]] = {}
        self._listed_segments: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._marked = False
        self._warned: set[str] = set()
        self._bad: set[str] = set()
        """Objects refused by a check: a record written under such a name replaces it."""
        self.refused = 0
        """Objects refused by a check (bad signature, wrong name), warned about once per kind."""
        self.loads = 0
        """Number of values unpickled by this store object (benchmarks report it)."""

    def __repr__(self) -> str:
        return f"<nbflow FsStore {self.url}>"

    @property
    def requests(self) -> int:
        """Requests sent to the service by this store object (benchmarks report it)."""
        return self.objects.requests

    # --- signing ---------------------------------------------------------------------

    def _mac(self, name: str, data: bytes) -> bytes:
        encoded = name.encode("utf-8", "surrogatepass")
        message = _TAG + len(encoded).to_bytes(4, "little") + encoded + data
        return hmac.digest(self._secret, message, "sha256")

    def _seal(self, name: str, data: bytes) -> bytes:
        return _TAG + self._mac(name, data) + data

    def _unseal(self, name: str, raw: bytes) -> bytes | None:
        if len(raw) < 4 + _MAC_LEN or raw[:4] != _TAG:
            return None
        mac, data = raw[4 : 4 + _MAC_LEN], raw[4 + _MAC_LEN :]
        return data if hmac.compare_digest(mac, self._mac(name, data)) else None

    def _open(self, name: str, raw: bytes, belongs: Callable[[Any], bool], kind: str) -> Any:
        """Verify, only then unpickle, then check the object names what it was read for."""
        data = self._unseal(name, raw)
        if data is not None:
            obj = pickle.loads(data)  # signed with the team secret: checked above
            if belongs(obj):
                return obj
            why = "is signed but belongs to another name (moved or copied)"
        else:
            why = "has a bad signature (tampered, or signed with another team secret)"
        self._refuse(name, kind, why)
        return None

    def _refuse(self, name: str, kind: str, why: str) -> None:
        self._bad.add(name)
        self.refused += 1
        if kind in self._warned:
            return
        self._warned.add(kind)
        warnings.warn(
            f"{kind} `{name}` of shared cache `{self.url}` {why}; ignoring it (never unpickled) "
            f"and recomputing. Further refusals of this kind are counted, not reported; "
            f"`nbflow cache info --cache-dir {self.url}` shows them",
            NbflowWarning,
            stacklevel=4,
        )

    def _dump(self, name: str, obj: Any) -> bytes:
        return self._seal(name, pickle.dumps(obj, protocol=5))

    def _mark(self) -> None:
        """Write the signed marker once: gc collects only a prefix that carries it."""
        if self._marked:
            return
        body = json.dumps({"format": FORMAT}).encode()
        self.objects.put_many(
            {MARKER: self._seal(MARKER, body)}, f"marking `{self.url}`", create=True
        )
        self._marked = True

    def is_cache(self) -> bool:
        """Whether the prefix holds a marker signed with this secret (it is our cache)."""
        raw = self.objects.get(MARKER, "reading the marker")
        return raw is not None and self._unseal(MARKER, raw) is not None

    # --- names -----------------------------------------------------------------------

    @staticmethod
    def _record_name(pipeline: str, key: str) -> str:
        return f"records/{escape(pipeline)}/{escape(key)}.rec"

    # --- records ---------------------------------------------------------------------

    def get_record(
        self, pipeline: str, key: CacheKey, *, trust_listing: bool = True
    ) -> Record | None:
        """The record under `key` (None when missing or refused). With `trust_listing`, a
        name missing from a recent listing of the pipeline's records is a miss, unread."""
        name = self._record_name(pipeline, key)
        known = self._records.get(name)
        if known is not None:
            return known
        if trust_listing and name not in self._listed_records(pipeline):
            return None
        raw = self.objects.get(name, f"reading a record of pipeline `{pipeline}`")
        if raw is None:
            return None
        record = self._open(
            name,
            raw,
            lambda o: isinstance(o, dict) and (o.get("pipeline"), o.get("key")) == (pipeline, key),
            "record",
        )
        if isinstance(record, dict):
            self._records[name] = record  # immutable: kept for this store's life
            return record
        return None

    def _listed_records(self, pipeline: str) -> set[str]:
        """The record names of `pipeline`, listed at most every `LISTING_TTL` seconds.

        A plan of a pipeline that has never run asks for every task's record:
        one LIST (per 1,000 records) answers them all instead of one GET per
        task. A record another machine wrote since the listing is a miss, no more.
        """
        listed = self._listings.get(pipeline)
        if listed is None or time.monotonic() - listed[0] > LISTING_TTL:
            names = self.objects.listing(
                f"records/{escape(pipeline)}/", f"listing the records of `{pipeline}`"
            )
            listed = self._listings[pipeline] = (time.monotonic(), set(names))
        return listed[1]

    def put(self, record: Record, payload: Payload) -> None:
        """Store a value (uploaded first when large) and queue its record for `flush()`."""
        fill_record(record, payload, self._write_value)
        with self._lock:
            self._pending.append(record)

    def _write_value(self, payload: Payload, what: str) -> str:
        name = f"values/{payload.digest[:2]}/{payload.digest}.nbv"
        local = self.values_dir / payload.digest[:2] / f"{payload.digest}.nbv"
        if not (local.exists() and valuefile.size_ok(local)):
            ensure_private_dir(local.parent)
            valuefile.write_value(payload, local, self.tmp_dir, what)
        size = local.stat().st_size
        self._mark()
        # Content-addressed: an object of the right size was written whole by someone.
        if self.objects.size(name, f"checking the value of {what}") != size:
            self.objects.upload(local, name, f"uploading the value of {what}")
        return name

    def flush(self) -> None:
        """Write queued records (create-only), then one index segment per pipeline."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        self._mark()
        records = {}
        for r in pending:
            name = self._record_name(r["pipeline"], r["key"])
            records[name] = self._dump(name, r)
        # Create-only, except over an object this store refused (tampered, or another
        # team's): else a forged record would keep its name, and so a miss, forever.
        replace = {n: d for n, d in records.items() if n in self._bad}
        try:
            self.objects.put_many(replace, f"replacing {len(replace)} refused records")
            self.objects.put_many(
                {n: d for n, d in records.items() if n not in replace},
                f"writing {len(records)} records",
                create=True,
            )
        except CacheError:
            with self._lock:  # not written: kept for a later flush (the error is raised)
                self._pending[:0] = pending
            raise
        for r in pending:
            listed = self._listings.get(r["pipeline"])
            if listed is not None:
                listed[1].add(self._record_name(r["pipeline"], r["key"]))
        by_pipeline: dict[str, dict[str, Record]] = {}
        for r in pending:
            # Instances of a mapped task are found by key only: the index lists tasks.
            if not r.get("instance"):
                by_pipeline.setdefault(r["pipeline"], {})[r["task"]] = summary(r)
        segments = {}
        for pipeline, entries in by_pipeline.items():
            name = f"index/{escape(pipeline)}/{stamp()}.seg"
            content = {"pipeline": pipeline, "entries": entries}
            segments[name] = self._dump(name, content)
            self._segments[name] = content
            self._index_memo.pop(pipeline, None)
        # A segment lost here (the process dies) is only a miss: the records are written.
        self.objects.put_many(segments, "writing index segments", create=True)

    # --- segments: the index and the pipeline state ------------------------------------

    def _refresh(self, pipeline: str, kinds: tuple[str, ...]) -> None:
        """List the segment folders of `kinds` at once, then fetch every new segment at once:
        two round trips, however many kinds and segments."""
        folders = [f"{kind}/{escape(pipeline)}/" for kind in kinds]
        listings = self.objects.list_many(folders, f"listing the index of `{pipeline}`")
        now = time.monotonic()
        new: list[str] = []
        for kind, listing in zip(kinds, listings, strict=True):
            names = [n for n in listing if _SEGMENT_NAME.match(n)]
            self._listed_segments[(kind, pipeline)] = (now, names)
            new += [n for n in names if n not in self._segments]
        # Segments never change once written, so a copy kept locally (signed bytes, checked
        # again like any read) spares a fresh process that round trip.
        local = {n: self._local_segment(n) for n in new}
        fetched: dict[str, bytes | None] = {n: r for n, r in local.items() if r is not None}
        missing = [n for n in new if n not in fetched]
        fetched |= self.objects.get_many(missing, f"reading the index of pipeline `{pipeline}`")
        for name, raw in fetched.items():
            if raw is None:  # compacted away between the listing and the read
                continue
            kind = name.split("/", 1)[0]
            key = "entries" if kind == "index" else "changes"

            def belongs(obj: Any, key: str = key) -> bool:
                return (
                    isinstance(obj, dict)
                    and obj.get("pipeline") == pipeline
                    and isinstance(obj.get(key), dict)
                )

            content = self._open(name, raw, belongs, f"{kind} segment")
            if content is not None:
                self._segments[name] = content
                if name in missing:
                    self._keep_segment(name, raw)

    def _segment_copy(self, name: str) -> Path:
        return self.local_dir / "segments" / name.replace("/", "~")

    def _local_segment(self, name: str) -> bytes | None:
        try:
            return self._segment_copy(name).read_bytes()
        except OSError:
            return None

    def _keep_segment(self, name: str, raw: bytes) -> None:
        """Keep a segment's bytes locally (through a rename: a reader sees all or nothing)."""
        path = self._segment_copy(name)
        ensure_private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, path)

    def _read_segments(self, kind: str, pipeline: str) -> dict[str, Any]:
        """Every verified segment of `kind` for `pipeline`, by name. A listing taken in the
        last `PREFETCH_TTL` seconds (the planner reads state, then index) is used as is: a
        segment it misses is only a miss."""
        listed = self._listed_segments.pop((kind, pipeline), None)
        if listed is None or time.monotonic() - listed[0] > PREFETCH_TTL:
            self._refresh(pipeline, (kind,))
            listed = self._listed_segments.pop((kind, pipeline))
        return {n: self._segments[n] for n in listed[1] if n in self._segments}

    def _compact(self, kind: str, pipeline: str, merged: list[str], content: Any) -> None:
        """Write `content` (the merge of `merged`) as one segment, then delete those merged."""
        name = f"{kind}/{escape(pipeline)}/{stamp()}.seg"
        self.objects.put_many(
            {name: self._dump(name, content)}, f"compacting the {kind} of `{pipeline}`"
        )
        self._segments[name] = content
        self.objects.delete(merged, f"compacting the {kind} of `{pipeline}`")
        for old in merged:
            self._segments.pop(old, None)

    def index(self, pipeline: str) -> dict[str, Record]:
        """task -> summary of its latest record (no value): one LIST and a few GETs."""
        segments = self._read_segments("index", pipeline)
        index = _merge_index(pipeline, segments.values())
        if len(segments) > COMPACT_AT:
            content = {"pipeline": pipeline, "entries": index}
            self._compact("index", pipeline, list(segments), content)
        self._index_memo[pipeline] = (time.monotonic(), index)
        return index

    def last_record(self, pipeline: str, task: str) -> Record | None:
        # Called per task by `status()`: an index read a moment ago is good enough for a reason.
        memo = self._index_memo.get(pipeline)
        if memo is not None and time.monotonic() - memo[0] < 2.0:
            return memo[1].get(task)
        return self.index(pipeline).get(task)

    def pipeline_state(self, pipeline: str) -> dict[str, Any]:
        """Invalidations, failures and checks: the newest change per (section, task) wins."""
        # The planner asks for the index next: both are listed and fetched together.
        self._refresh(pipeline, ("state", "index"))
        segments = self._read_segments("state", pipeline)
        latest: dict[str, dict[str, list[Any]]] = {}
        for content in segments.values():
            for section, entries in content["changes"].items():
                target = latest.setdefault(section, {})
                for task, change in entries.items():
                    if target.get(task) is None or change[0] >= target[task][0]:
                        target[task] = change
        if len(segments) > COMPACT_AT:
            self._compact(
                "state", pipeline, list(segments), {"pipeline": pipeline, "changes": latest}
            )
        state: dict[str, Any] = {"invalidated": {}, "failed": {}}
        for section, entries in latest.items():
            state.setdefault(section, {}).update(
                {t: c[1] for t, c in entries.items() if c[1] is not None}
            )
        return state

    def update_pipeline_state(self, pipeline: str, **changes: Any) -> None:
        """Record `changes` (dicts keyed by task; None deletes) as one new state segment.

        Each change carries its time, so segments merge in any order; deletions
        are kept (as None) so an older change read later cannot bring a value back.
        """
        now = time.time()
        content = {
            "pipeline": pipeline,
            "changes": {s: {t: [now, v] for t, v in e.items()} for s, e in changes.items()},
        }
        name = f"state/{escape(pipeline)}/{stamp()}.seg"
        self._mark()
        self.objects.put_many(
            {name: self._dump(name, content)}, f"writing the state of `{pipeline}`", create=True
        )
        self._segments[name] = content

    # --- named bytes -----------------------------------------------------------------

    def get_bytes(self, namespace: str, name: str) -> bytes | None:
        """The bytes last stored under (`namespace`, `name`), once their signature holds."""
        obj = f"bytes/{escape(namespace)}/{escape(name)}.bin"
        raw = self.objects.get(obj, f"reading `{namespace}`")
        if raw is None:
            return None
        data = self._unseal(obj, raw)
        if data is None:
            self._refuse(obj, f"`{namespace}` entry", "has a bad signature")
        return data

    def put_bytes(self, namespace: str, name: str, data: bytes) -> None:
        """Store `data` signed under (`namespace`, `name`); the last writer wins."""
        obj = f"bytes/{escape(namespace)}/{escape(name)}.bin"
        self._mark()
        self.objects.put_many({obj: self._seal(obj, bytes(data))}, f"writing `{namespace}`")

    # --- values ----------------------------------------------------------------------

    def load(self, record: Record) -> Any:
        """Unpickle a record's value after checking its digest; `IntegrityError` if it fails."""
        if "inline" not in record:  # an index summary: fetch the full record
            # Not through the listing: the index may name a record newer than it.
            full = self.get_record(record["pipeline"], record["key"], trust_listing=False)
            if full is None:
                raise IntegrityError(record["key"], "record is missing")
            record = full
        if record.get("inline") is not None:
            stream, buffers = record["inline"]
            views = [memoryview(b) for b in buffers]
            if digest_payload(record["fmt"], stream, views) != record["digest"]:
                raise IntegrityError(record["key"], "value digest mismatch")
            self.loads += 1
            return deserialize(stream, views)
        local = self.values_dir / record["digest"][:2] / f"{record['digest']}.nbv"
        value = self._load_local(record, local)
        if value is _MISSING:
            self._fetch(record, local)
            value = self._load_local(record, local)
            if value is _MISSING:
                # The object itself is bad (objects appear whole, so this is no upload in
                # progress): delete it, so the recompute uploads a good one.
                self.objects.delete([record["file"]], "removing a corrupt value")
                raise IntegrityError(record["key"], "value digest mismatch")
        self.loads += 1
        return value

    def _load_local(self, record: Record, local: Path) -> Any:
        """The value from the local copy, or `_MISSING` (the copy is removed if it is bad)."""
        if not local.exists():
            return _MISSING
        try:
            _, stream, views, _ = valuefile.read_value(local, record["key"])
        except IntegrityError:
            local.unlink(missing_ok=True)
            return _MISSING
        if digest_payload(record["fmt"], stream, views) != record["digest"]:
            local.unlink(missing_ok=True)
            return _MISSING
        return deserialize(stream, views)

    def _fetch(self, record: Record, local: Path) -> None:
        what = f"fetching the value of task `{record['task']}` of `{record['pipeline']}`"
        ensure_private_dir(local.parent)
        tmp = self.tmp_dir / f"{record['digest']}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            try:
                self.objects.download(record["file"], tmp, what)
            except CacheError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    raise IntegrityError(record["key"], "value object is missing") from exc
                raise
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    # --- maintenance -----------------------------------------------------------------

    def _scan(self) -> tuple[list[Record], list[str], dict[str, dict[str, Any]]]:
        """Every record that verifies, the names of those that do not, and every object."""
        listing = self.objects.listing("", f"listing `{self.url}`")
        names = [n for n in listing if _RECORD_NAME.match(n)]
        fetched = self.objects.get_many(names, "reading the records")
        records: list[Record] = []
        unverified: list[str] = []
        for name, raw in fetched.items():
            if raw is None:
                continue
            data = self._unseal(name, raw)
            record = pickle.loads(data) if data is not None else None
            if (
                isinstance(record, dict)
                and self._record_name(str(record.get("pipeline")), str(record.get("key"))) == name
            ):
                records.append(record)
            else:
                unverified.append(name)
        return records, unverified, listing

    def records(self) -> Iterator[Record]:
        """Every record that passes its signature check."""
        yield from self._scan()[0]

    def clear(self, pipeline: str) -> int:
        """Delete every record, index and state segment of `pipeline` (its folders exactly:
        `sales` never touches `sales2`); values go with the next `gc()` after the grace period."""
        part = escape(pipeline)
        names: list[str] = []
        removed = 0
        for kind in ("records", "index", "state"):
            found = list(self.objects.listing(f"{kind}/{part}/", f"listing `{pipeline}`"))
            names += found
            removed += len(found) if kind == "records" else 0
        self.objects.delete(names, f"clearing pipeline `{pipeline}`")
        self._segments = {n: c for n, c in self._segments.items() if n not in set(names)}
        self._records = {n: r for n, r in self._records.items() if n not in set(names)}
        self._index_memo.pop(pipeline, None)
        self._listings.pop(pipeline, None)
        return removed

    def info(self) -> dict[str, Any]:
        records, unverified, listing = self._scan()
        values = {n: i for n, i in listing.items() if _VALUE_NAME.match(n)}
        per_pipeline: dict[str, int] = {}
        for r in records:
            per_pipeline[r["pipeline"]] = per_pipeline.get(r["pipeline"], 0) + 1
        return {
            "directory": self.url,
            "records": len(records),
            "unverified_records": len(unverified),
            "pipelines": per_pipeline,
            "inline_bytes": sum(r["size"] for r in records if r.get("inline") is not None),
            "value_files": len(values),
            "value_bytes": sum(int(i.get("size", 0)) for i in values.values()),
            "size_limit": self.size_limit,
            "local_copies": str(self.local_dir),
        }

    def gc(
        self,
        older_than: float | None = None,
        size_limit: int | None = None,
        grace: float = DEFAULT_GRACE,
        *,
        refuse_unverified: bool = False,
        drop_unverified: bool = False,
        verify: bool = False,
    ) -> dict[str, int]:
        """Remove unreferenced values older than `grace`; optionally old or excess records.

        Refuses (`CacheError`, nothing deleted) a prefix without this cache's
        signed marker, so a wrong URL never loses a bucket. Records go first,
        values after; while some record fails its signature check no value is
        deleted (`refuse_unverified` raises, `drop_unverified` deletes those
        records first). `verify` is accepted for `DiskStore`'s signature; values
        are always checked when loaded.
        """
        for label, amount in (("older_than", older_than), ("size_limit", size_limit)):
            if amount is not None and not amount >= 0:
                raise ValueError(f"gc: {label} must be 0 or more, got {amount!r}")
        if not self.is_cache():
            raise CacheError(
                f"refusing to collect `{self.url}`: it has no `{MARKER}` signed with this cache "
                "secret, so it is not an nbflow cache of this team (or the secret is another "
                "one). Nothing was deleted"
            )
        now = time.time()
        records, unverified, listing = self._scan()
        dropped_unverified = 0
        if unverified and drop_unverified:
            self.objects.delete(unverified, "dropping unverified records")
            dropped_unverified, unverified = len(unverified), []
        if unverified and refuse_unverified:
            raise CacheError(
                f"refusing to collect `{self.url}`: {len(unverified)} records fail their signature "
                "check (tampered, or signed with another team secret), so what they point to "
                f"cannot be judged; `nbflow cache gc --cache-dir {self.url} --drop-unverified` "
                "deletes them. Nothing was deleted"
            )
        drop: list[Record] = []
        keep: list[Record] = []
        for r in sorted(records, key=lambda r: r.get("created", 0.0)):
            if older_than is not None and now - r.get("created", now) > older_than:
                drop.append(r)
            else:
                keep.append(r)
        limit = size_limit if size_limit is not None else self.size_limit
        if limit is not None:
            total = sum(r["size"] for r in keep)
            while keep and total > limit:
                r = keep.pop(0)
                drop.append(r)
                total -= r["size"]
        self._drop_records(drop)
        removed_files = 0
        if not unverified:
            referenced = {r["file"] for r in keep if r.get("file")}
            old = [
                n
                for n, i in listing.items()
                if _VALUE_NAME.match(n) and n not in referenced and now - mtime(i) >= grace
            ]
            old += [
                n for n, i in listing.items() if n.startswith("tmp/") and now - mtime(i) >= grace
            ]
            self.objects.delete(old, "removing unreferenced values")
            removed_files = sum(1 for n in old if n.startswith("values/"))
            digests = {Path(n).stem for n in referenced}
            for path in self.values_dir.glob("*/*.nbv"):
                if path.stem not in digests:
                    path.unlink(missing_ok=True)
        # Local copies of segments compacted away are of no more use.
        listed = {self._segment_copy(n).name for n in listing if _SEGMENT_NAME.match(n)}
        for path in (self.local_dir / "segments").glob("*.seg"):
            if path.name not in listed:
                path.unlink(missing_ok=True)
        return {
            "records": len(drop),
            "files": removed_files,
            "corrupt": 0,
            "tmp": 0,
            "unverified": len(unverified),
            "dropped_unverified": dropped_unverified,
        }

    def _drop_records(self, drop: list[Record]) -> None:
        """Delete records, then rewrite the index of their pipelines without them."""
        if not drop:
            return
        self.objects.delete(
            [self._record_name(r["pipeline"], r["key"]) for r in drop], "removing old records"
        )
        gone: dict[str, set[str]] = {}
        for r in drop:
            gone.setdefault(r["pipeline"], set()).add(r["key"])
        for pipeline, keys in gone.items():
            # Merged and deleted from one listing: a segment added meanwhile is left alone.
            segments = self._read_segments("index", pipeline)
            index = _merge_index(pipeline, segments.values())
            kept = {t: e for t, e in index.items() if e.get("key") not in keys}
            self._compact(
                "index", pipeline, list(segments), {"pipeline": pipeline, "entries": kept}
            )
            self._index_memo.pop(pipeline, None)
        self._records.clear()

    def close(self) -> None:
        self.flush()


_MISSING = object()


def _merge_index(pipeline: str, segments: Iterable[Any]) -> dict[str, Record]:
    """The merge of index segments: per task, the entry of the newest record."""
    index: dict[str, Record] = {}
    for content in segments:
        for task, entry in content["entries"].items():
            if not (
                isinstance(entry, dict)
                and entry.get("pipeline") == pipeline
                and entry.get("task") == task
            ):
                continue
            current = index.get(task)
            if current is None or entry.get("created", 0.0) >= current.get("created", 0.0):
                index[task] = entry
    return index
