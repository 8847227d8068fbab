"""Value files: one content-addressed file per large cached value.

Layout: ``NBV1``, the format name (2-byte length), the pickle stream (8-byte
length), the number of out-of-band buffers (4 bytes), their sizes (8 bytes
each), then the buffers themselves, back to back. Every length is
little-endian, so the file's exact size follows from its header: a truncated
file is recognised without hashing it.

Write order (why nothing half-written is ever referenced):

1. The bytes go to a temporary file in the cache's ``tmp/`` folder. `write()`
   may write fewer bytes than asked — on a full disk, after a signal, and
   always beyond 2,147,479,552 bytes per call on Linux — so every write is a
   loop until the last byte is out (`write_all`), in chunks well under that
   limit.
2. The file's size on disk is compared with the size the header promises.
3. Only then is it renamed over the target (atomic; a reader sees the old
   file or the new one). The caller commits the record pointing to it after.

A full disk (ENOSPC, a quota, a file-size limit) becomes a `CacheError` that
names the folder and the bytes the value needs; the temporary file is removed.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from nbflow.core.cache.serialize import Payload
from nbflow.core.errors import CacheError, IntegrityError

MAGIC = b"NBV1"
CHUNK = 8 * 2**20
"""Bytes per `write()` call: far below Linux's per-call limit of 2,147,479,552 bytes."""

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""errno values that mean "no room for these bytes": full disk, quota, RLIMIT_FSIZE."""


def header(payload: Payload) -> bytes:
    fmt = payload.fmt.encode()
    return b"".join(
        [
            MAGIC,
            len(fmt).to_bytes(2, "little"),
            fmt,
            len(payload.stream).to_bytes(8, "little"),
            payload.stream,
            len(payload.buffers).to_bytes(4, "little"),
            *(b.nbytes.to_bytes(8, "little") for b in payload.buffers),
        ]
    )


def file_size(payload: Payload) -> int:
    """The exact size of `payload`'s value file."""
    return len(header(payload)) + sum(b.nbytes for b in payload.buffers)


def write_all(write: Callable[[memoryview], int], data: memoryview) -> int:
    """Write every byte of `data` through `write` (e.g. `os.write` on a descriptor).

    `write` may accept fewer bytes than offered; the rest is offered again.
    A call that writes nothing means the device takes no more: that is
    raised as ENOSPC rather than looping forever.
    """
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    written = 0
    while written < view.nbytes:
        n = write(view[written : written + CHUNK])
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += n
    return written


def disk_full_error(folder: Path, needed: int, what: str) -> CacheError:
    """The error for a full disk, naming the folder and the bytes needed."""
    try:
        st = os.statvfs(folder)
        free = f"{st.f_bavail * st.f_frsize:,} bytes free"
    except OSError:
        free = "free space unknown"
    return CacheError(
        f"no room in cache folder `{folder}` for {what}: it needs {needed:,} bytes "
        f"({free}); free some space, run `nbflow cache gc --max-size ...`, or give the "
        "pipeline a cache_dir on a bigger disk. Nothing half-written was kept."
    )


def write_value(
    payload: Payload, target: Path, tmp_dir: Path, what: str, fault_mid_write: bool = False
) -> None:
    """Write `payload` to `target` through a temporary file (see the module docstring).

    `fault_mid_write` is the crash-safety tests' hook: SIGKILL this process
    right after the first chunk of a buffer is written.
    """
    tmp = tmp_dir / f"{payload.digest}.{os.getpid()}.{threading.get_ident()}.tmp"
    expected = file_size(payload)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:

            def write(chunk: memoryview) -> int:
                n = os.write(fd, chunk)
                if fault_mid_write:
                    os.kill(os.getpid(), signal.SIGKILL)
                return n

            write_all(lambda chunk: os.write(fd, chunk), memoryview(header(payload)))
            for buf in payload.buffers:
                write_all(write, buf)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != expected:
            raise CacheError(
                f"value file for {what} came out {size:,} bytes instead of {expected:,}; "
                "it was not used"
            )
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in DISK_FULL:
            raise disk_full_error(tmp_dir.parent, expected, what) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def size_ok(path: Path) -> bool:
    """Whether the file at `path` is exactly as long as its own header says (cheap: no hashing)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4 + 2)
            if len(head) < 6 or head[:4] != MAGIC:
                return False
            fh.seek(int.from_bytes(head[4:6], "little"), os.SEEK_CUR)
            stream_len = int.from_bytes(fh.read(8), "little")
            fh.seek(stream_len, os.SEEK_CUR)
            count = int.from_bytes(fh.read(4), "little")
            sizes_raw = fh.read(8 * count) if count < 2**20 else b""
            if len(sizes_raw) != 8 * count:
                return False
            total = fh.tell() + sum(
                int.from_bytes(sizes_raw[i : i + 8], "little") for i in range(0, len(sizes_raw), 8)
            )
            return total == os.fstat(fh.fileno()).st_size
    except OSError:
        return False


def read_value(path: Path, key: str) -> tuple[str, bytes, list[memoryview], int]:
    """Map a value file and slice its buffers without copying them.

    Returns the format, the stream, the buffers and the file's inode (so a
    caller that finds the bytes corrupt can remove exactly this file). The
    mapping is copy-on-write (ACCESS_COPY): arrays rebuilt on it are
    writable, and writing to them never changes the file.
    Raises `IntegrityError` for a missing, empty, foreign or truncated file.
    """
    try:
        with open(path, "rb") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            try:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            except ValueError:  # an empty file cannot be mapped
                raise IntegrityError(key, "value file is empty") from None
    except FileNotFoundError:
        raise IntegrityError(key, "value file is missing") from None
    view = memoryview(mapped)
    try:
        if view[:4] != MAGIC:
            raise IntegrityError(key, "not an nbflow value file")
        pos = 4
        fmt_len = int.from_bytes(view[pos : pos + 2], "little")
        fmt = bytes(view[pos + 2 : pos + 2 + fmt_len]).decode("ascii", "replace")
        pos += 2 + fmt_len
        stream_len = int.from_bytes(view[pos : pos + 8], "little")
        pos += 8
        stream = bytes(view[pos : pos + stream_len])
        pos += stream_len
        count = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if pos + 8 * count > len(view):
            raise IntegrityError(key, "value file is truncated")
        sizes = [
            int.from_bytes(view[pos + 8 * i : pos + 8 * i + 8], "little") for i in range(count)
        ]
        pos += 8 * count
        if pos + sum(sizes) != len(view):
            raise IntegrityError(key, "value file is truncated")
        views = []
        for size in sizes:
            views.append(view[pos : pos + size])
            pos += size
    except IntegrityError:
        view.release()
        raise
    return fmt, stream, views, inode
