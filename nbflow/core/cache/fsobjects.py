"""Named objects under one fsspec prefix: the few operations the shared cache needs.

Responsibilities:
- reach any fsspec URL (`s3://`, `file://`, ...), with firm timeouts and few
  retries on S3 (`DEFAULT_OPTIONS`; fsspec's configuration and
  `storage_options` override them);
- read and write many small objects concurrently, create-only where the
  service offers it (S3's If-None-Match), and list folders with plain LISTs;
- copy a value file in so that no reader ever sees part of it (one PUT or a
  multipart upload on S3; `tmp/` and a rename on a folder);
- translate every failure of the service into a `CacheError` that names the
  cache and what to check (refused credentials name the bucket), and count
  the requests sent (the benchmarks report them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from nbflow.core.cache import valuefile
from nbflow.core.errors import CacheError, NbflowError

DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # s3fs retries 5 times with back-off and botocore 5 more inside each: a dead endpoint
    # would take minutes to report. Few retries and firm timeouts make it a prompt error.
    "s3": {
        "config_kwargs": {
            "connect_timeout": 5,
            "read_timeout": 60,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
        # Listings must be fresh: other machines add segments all the time.
        "use_listings_cache": False,
    },
}

S3_RETRIES = 2
"""s3fs's own retries of a failed request (its default is 5, each with botocore's inside)."""

_FAULT = os.environ.get("NBFLOW_FAULT", "")


def escape(part: str) -> str:
    """One name part, safe as one path segment on every service ("." and ".." included)."""
    escaped = quote(part, safe="")
    return "%2E" + escaped[1:] if escaped.startswith(".") else escaped


def stamp() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


class Objects:
    """Named objects under one prefix: the few operations the store needs, with errors
    translated at this boundary and every request counted (benchmarks report them)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None) -> None:
        import fsspec
        import fsspec.config
        from fsspec.implementations.local import LocalFileSystem

        self.url = url
        scheme = urlparse(url).scheme
        self.bucket = urlparse(url).netloc
        options = {
            **DEFAULT_OPTIONS.get(scheme, {}),
            **fsspec.config.conf.get(scheme, {}),
            **(storage_options or {}),
        }
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:
            extra = "s3" if scheme in ("s3", "s3a") else None
            hint = (
                f'pip install "nbflow-pipelines[{extra}]"'
                if extra
                else f"install the fsspec implementation for `{scheme}://`"
            )
            raise CacheError(
                f"the shared cache `{url}` needs {exc.name or scheme}: {hint}"
            ) from exc
        except ValueError as exc:
            raise CacheError(f"`{url}` is not a cache URL fsspec knows ({exc})") from exc
        if scheme in ("s3", "s3a") and "retries" not in options:
            self.fs.retries = S3_RETRIES  # a class attribute in s3fs, not an argument
        self.root = root.rstrip("/")
        self.s3 = scheme in ("s3", "s3a")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.is_async = bool(getattr(self.fs, "async_impl", False))
        self.requests = 0
        self._lock = threading.Lock()

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _count(self, n: int = 1) -> None:
        with self._lock:
            self.requests += n

    @contextlib.contextmanager
    def boundary(self, what: str) -> Iterator[None]:
        """Turn the service's errors into a `CacheError` that names the cache and the fix."""
        try:
            yield
        except (NbflowError, TypeError, AttributeError):
            raise  # ours, or a bug: not the service's doing
        except PermissionError as exc:
            raise CacheError(
                f"access to bucket `{self.bucket}` of cache `{self.url}` was refused while "
                f"{what} ({exc}): check the credentials this machine uses (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the fsspec configuration) and the bucket's "
                "policy"
            ) from exc
        except FileNotFoundError as exc:
            raise CacheError(
                f"cache `{self.url}` is not there while {what} ({exc}): create bucket "
                f"`{self.bucket}` (or the folder), or fix the URL"
            ) from exc
        except Exception as exc:
            # Connection refused, timeouts, DNS, TLS: aiohttp, botocore and OSError types.
            raise CacheError(
                f"cannot reach cache `{self.url}` while {what} ({type(exc).__name__}: {exc}); "
                "check the network and the endpoint (AWS_ENDPOINT_URL or FSSPEC_S3_ENDPOINT_URL). "
                "Nothing half-written was kept"
            ) from exc

    def _gather(self, coros: list[Any]) -> list[Any]:
        from fsspec.asyn import sync

        async def run() -> list[Any]:
            return await asyncio.gather(*coros, return_exceptions=True)

        return sync(self.fs.loop, run)

    def get_many(self, names: Iterable[str], what: str) -> dict[str, bytes | None]:
        """name -> bytes, None for a missing object; fetched concurrently where possible."""
        names = list(names)
        if not names:
            return {}
        self._count(len(names))
        with self.boundary(what):
            if self.is_async:
                # s3fs sends a HEAD first (to split large objects) unless told one stream will
                # do; ours are small, so one GET each.
                extra = {"max_concurrency": 1} if self.s3 else {}
                results = self._gather([self.fs._cat_file(self.path(n), **extra) for n in names])
            else:
                results = []
                for n in names:
                    try:
                        results.append(self.fs.cat_file(self.path(n)))
                    except Exception as exc:
                        results.append(exc)
            out: dict[str, bytes | None] = {}
            for name, result in zip(names, results, strict=True):
                if isinstance(result, FileNotFoundError):
                    out[name] = None
                elif isinstance(result, BaseException):
                    raise result
                else:
                    out[name] = bytes(result)
            return out

    def get(self, name: str, what: str) -> bytes | None:
        return self.get_many([name], what)[name]

    def put_many(self, items: dict[str, bytes], what: str, *, create: bool = False) -> None:
        """Write objects; with `create`, one that exists is kept (create-only where offered)."""
        if not items:
            return
        self._count(len(items))
        with self.boundary(what):
            if self.local:
                for name, data in items.items():
                    self._write_local(name, data, create)
                return
            if self.is_async:
                mode = {"mode": "create"} if create else {}
                results = self._gather(
                    [self.fs._pipe_file(self.path(n), d, **mode) for n, d in items.items()]
                )
                for result in results:
                    if isinstance(result, FileExistsError) and create:
                        continue  # immutable: the first writer's object stays
                    if isinstance(result, BaseException):
                        raise result
                return
            for name, data in items.items():
                self.fs.pipe_file(self.path(name), data)

    def _write_local(self, name: str, data: bytes, create: bool) -> None:
        target = Path(self.path(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(data)
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, target)  # never replaces: the first writer's object stays
            else:
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def listing(self, folder: str, what: str) -> dict[str, dict[str, Any]]:
        """name (relative to the prefix) -> its info (size, mtime), for every object under folder."""
        self._count()
        with self.boundary(what):
            with contextlib.suppress(AttributeError):
                self.fs.invalidate_cache(self.path(folder))
            try:
                if self.is_async:
                    from fsspec.asyn import sync

                    found = sync(self.fs.loop, self._find, folder)
                else:
                    found = self.fs.find(self.path(folder), detail=True)
            except FileNotFoundError:
                return {}
        start = len(self.root) + 1
        return {
            path[start:]: info
            for path, info in found.items()
            if info.get("type", "file") == "file" and not path.rsplit("/", 1)[-1].startswith(".")
        }

    def list_many(self, folders: list[str], what: str) -> list[dict[str, dict[str, Any]]]:
        """`listing` of several folders, concurrently where the service allows."""
        if not self.is_async or len(folders) < 2:
            return [self.listing(folder, what) for folder in folders]
        self._count(len(folders))
        with self.boundary(what):
            for folder in folders:
                self.fs.invalidate_cache(self.path(folder))
            results = self._gather([self._find(f) for f in folders])
        out: list[dict[str, dict[str, Any]]] = []
        start = len(self.root) + 1
        for result in results:
            if isinstance(result, FileNotFoundError):
                out.append({})
                continue
            if isinstance(result, BaseException):
                with self.boundary(what):
                    raise result
            out.append(
                {
                    path[start:]: info
                    for path, info in result.items()
                    if info.get("type", "file") == "file"
                    and not path.rsplit("/", 1)[-1].startswith(".")
                }
            )
        return out

    async def _find(self, folder: str) -> dict[str, dict[str, Any]]:
        """Every object under `folder` (full paths -> info). On S3, plain LIST requests, one
        per 1,000 keys: s3fs's `find` adds a HEAD and a second LIST when a folder is empty."""
        if not self.s3:
            found: dict[str, dict[str, Any]] = await self.fs._find(self.path(folder), detail=True)
            return found
        bucket, _, key = self.path(folder).partition("/")
        out: dict[str, dict[str, Any]] = {}
        token: dict[str, str] = {}
        while True:
            page = await self.fs._call_s3(
                "list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1000, **token
            )
            for item in page.get("Contents", []):
                out[f"{bucket}/{item['Key']}"] = {
                    "size": item["Size"],
                    "LastModified": item["LastModified"],
                    "type": "file",
                }
            if not page.get("IsTruncated"):
                return out
            self._count()
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def size(self, name: str, what: str) -> int | None:
        self._count()
        with self.boundary(what):
            try:
                return int(self.fs.info(self.path(name))["size"])
            except FileNotFoundError:
                return None

    def delete(self, names: Iterable[str], what: str) -> None:
        names = list(names)
        if not names:
            return
        self._count(max(1, len(names) // 1000) if not self.local else len(names))
        with self.boundary(what):
            if self.local:
                for name in names:
                    Path(self.path(name)).unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm([self.path(n) for n in names])

    def upload(self, local: Path, name: str, what: str) -> None:
        """Copy a local value file to `name`, so that no reader ever sees part of it."""
        self._count()
        with self.boundary(what):
            if self.local:
                target = Path(self.path(name))
                tmp_dir = Path(self.path("tmp"))
                tmp_dir.mkdir(parents=True, exist_ok=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = tmp_dir / f"{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
                try:
                    with open(local, "rb") as src, open(tmp, "wb") as dst:
                        for chunk in iter(lambda: src.read(valuefile.CHUNK), b""):
                            dst.write(chunk)
                            _maybe_fault()
                    os.replace(tmp, target)  # atomic on a POSIX folder, NFS included
                finally:
                    tmp.unlink(missing_ok=True)
                return
            # One PUT, or a multipart upload that becomes visible only when complete.
            self.fs.put_file(str(local), self.path(name), callback=_FaultCallback())

    def download(self, name: str, local: Path, what: str) -> None:
        self._count()
        with self.boundary(what):
            self.fs.get_file(self.path(name), str(local))


def _maybe_fault() -> None:
    # Test hook for the crash tests: SIGKILL this process once part of a value is uploaded.
    if _FAULT == "fsstore-mid-upload":
        os.kill(os.getpid(), signal.SIGKILL)


class _FaultCallback:
    """An fsspec callback that only serves the crash-test hook (`_maybe_fault`)."""

    def __init__(self) -> None:
        from fsspec.callbacks import Callback

        self._inner = Callback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def relative_update(self, inc: int = 1) -> None:
        _maybe_fault()

    def branched(self, *args: Any, **kwargs: Any) -> Any:
        return None


def mtime(info: dict[str, Any]) -> float:
    """An object's modification time (seconds since the epoch), from an fsspec info dict."""
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return time.time()  # unknown: treated as new, so never collected
