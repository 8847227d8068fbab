"""The persistent code-fingerprint memo: code identity -> parsed fingerprint, kept in the store.

Why: parsing is most of a fingerprint's cost (reading the source with
`inspect`'s tokenizer, `ast.parse`, the normalized walk, `dis`), about half a
millisecond per distinct function, paid again by every new process. The memo
maps a function's `code_identity` (bytecode, constants, names and nested
code, hashed in one pass) to its `CodeInfo` (the normalized-syntax-tree
digest, the globals it reads and updates), so a process that finds the entry
skips the source entirely.

Why it is never stale: the identity covers everything that decides what the
code runs; two functions with one identity run the same operations on the
same names. What they read — defaults, closure cells, globals, helpers — is
digested by value on every plan, apart from the memo. An entry that is lost
or refused (a bad signature) only costs a parse.

Storage: one signed entry in the store (`get_bytes`/`put_bytes` under
`NAMESPACE`), JSON inside (nothing that can carry code),
loaded once per store object, written back (merged with what other
processes added meanwhile) after a plan that parsed something new. It keeps
at most `MAX_ENTRIES` entries, the oldest dropped first.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

from nbflow.core.cache.fingerprint import CodeInfo
from nbflow.core.types import Digest

NAMESPACE = "code-memo"
BLOB = "code-fingerprints-1"
MAX_ENTRIES = 50_000

_LOADED: weakref.WeakKeyDictionary[Any, StoreCodeMemo] = weakref.WeakKeyDictionary()
"""Store object -> its memo; it goes with the store (no store is kept open by the memo)."""
_LOCK = threading.Lock()


class StoreCodeMemo:
    """The memo of one store (see module docstring); `get`/`put` in memory, `save` to the store."""

    def __init__(self, store: Any) -> None:
        self._store = weakref.ref(store)
        self._entries: dict[str, CodeInfo] = _decode(store.get_bytes(NAMESPACE, BLOB))
        self._new: dict[str, CodeInfo] = {}
        self._lock = threading.Lock()

    def get(self, identity: str) -> CodeInfo | None:
        return self._entries.get(identity)

    def put(self, identity: str, info: CodeInfo) -> None:
        with self._lock:
            self._entries[identity] = info
            self._new[identity] = info

    def save(self) -> None:
        """Write the entries parsed since the last save, merged with the stored ones."""
        store = self._store()
        with self._lock:
            if not self._new or store is None:
                return
            new, self._new = self._new, {}
        merged = _decode(store.get_bytes(NAMESPACE, BLOB))
        merged.update(new)
        if len(merged) > MAX_ENTRIES:
            merged = dict(list(merged.items())[-MAX_ENTRIES:])
        store.put_bytes(NAMESPACE, BLOB, _encode(merged))
        with self._lock:
            for identity, info in merged.items():
                self._entries.setdefault(identity, info)


def memo_for(store: Any) -> StoreCodeMemo | None:
    """The code memo of `store`, loaded once per process; None for a store without named bytes."""
    if not (hasattr(store, "get_bytes") and hasattr(store, "put_bytes")):
        return None
    with _LOCK:
        try:
            memo = _LOADED.get(store)
        except TypeError:  # a store that takes no weak reference: a memo per plan
            return StoreCodeMemo(store)
        if memo is None:
            memo = _LOADED[store] = StoreCodeMemo(store)
        return memo


def _encode(entries: dict[str, CodeInfo]) -> bytes:
    rows = {k: [v.digest, list(v.globals_read), list(v.updates)] for k, v in entries.items()}
    return json.dumps(rows, separators=(",", ":")).encode()


def _decode(data: bytes | None) -> dict[str, CodeInfo]:
    if not data:
        return {}
    try:
        rows = json.loads(data)
        return {
            k: CodeInfo(Digest(d), tuple(read), tuple(updates))
            for k, (d, read, updates) in rows.items()
        }
    except (ValueError, TypeError, AttributeError):
        # A blob of another format is only a memo lost: everything is parsed again.
        return {}
