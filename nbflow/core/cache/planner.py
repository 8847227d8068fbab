"""The planner: each task's cache key, and whether it is fresh — with a reason.

How a key is built (a Merkle key): hash of the pipeline and task name, the
code fingerprint, `version=`, the digests of the run parameters the task
takes, the *output digests* of its upstream tasks, the digests of watched
files, and any extra identity (a notebook's code). Upstream output digests
come from metadata records, so deciding freshness never unpickles a value.
The parameters and inputs a task names in `ignore=` are left out of its key
entirely (so a task without `ignore=` has the very key it always had), and a
stale ignored upstream does not make the task stale; a decision's `note` lists
them.

Every task's code is fingerprinted when the plan begins, before any task
runs, so each key sees the globals as the user left them; a global a task
updates (its state) is not part of its key (see fingerprint.py), and a
decision carries a `note` saying so.

How freshness is decided, in this order:
- an upstream task is stale → stale, "upstream `x` is stale: <root cause>"
  (its key is unknown until `x` reruns; if `x` then returns the same bytes,
  the runner finds this task fresh after all — early cutoff);
- the code references something that cannot be fingerprinted, or
  `cache=False` → always stale, saying so;
- `force` → stale, "forced";
- no record under the key → stale; the reason is the difference between the
  parts of the task's last record and the current parts (code of which
  function, which parameter old → new, which upstream, which file), or
  "never run", or "last attempt failed" when this very key failed last time;
- a record older than `ttl` → "expired"; older than an `invalidate()` →
  "invalidated"; otherwise fresh.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from blake3 import blake3

from nbflow.core.cache.codememo import memo_for
from nbflow.core.cache.fingerprint import PRINTS, FunctionPrint, ValueDigests
from nbflow.core.cache.hashing import Unfingerprintable, digest_value
from nbflow.core.cache.store import Record, Store
from nbflow.core.dag.graph import Graph
from nbflow.core.dag.task import Task
from nbflow.core.errors import MissingParameterError, format_value_short
from nbflow.core.types import CacheKey, Digest


@dataclass(slots=True)
class Decision:
    task: str
    fresh: bool
    reason: str
    """Why the task is stale ("" when fresh)."""
    key: CacheKey | None = None
    record: Record | None = None
    parts: dict[str, Any] = field(default_factory=dict)
    shorts: dict[str, str] = field(default_factory=dict)
    root: str = ""
    """The root cause, for downstream reasons."""
    root_task: str = ""
    """The task where the root cause lies."""
    note: str = ""
    """What the task's key leaves out on purpose (globals the task updates), for `explain`."""


_FILE_MEMO: dict[tuple[str, int, int, int, int, int], Digest] = {}

_KEYS: dict[tuple[str, str], tuple[Any, ...]] = {}
"""(pipeline, task) -> (signature, key, parts, shorts, note, reason) of its last plan in this
process. The signature holds every input of `Planner.key_for` (the code's `FunctionPrint`
object, which `PRINTS` reuses only while it holds, the options, the parameters' and
upstream outputs' digests, resource versions), so an equal signature means an equal key.
Tasks that watch files or have an identity function are keyed afresh every plan."""
_KEYS_LIMIT = 100_000


def file_digest(path: str) -> Digest:
    """The digest of a watched file's content, read again only when its stat changes.

    The memo key includes the change time (ctime) and inode beside mtime and size:
    `cp -p`, `rsync -a` and `os.utime` put an old mtime back, but every write (and
    every utime) moves the ctime, which nobody can set back, and a replacing rename
    changes the inode. So the shortcut never decides "unchanged" for changed content."""
    st = os.stat(path)
    memo_key = (
        os.path.abspath(path),
        st.st_dev,
        st.st_ino,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_size,
    )
    digest = _FILE_MEMO.get(memo_key)
    if digest is None:
        from blake3 import blake3

        h = blake3()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = Digest(h.hexdigest(length=20))
        _FILE_MEMO[memo_key] = digest
    return digest


class Planner:
    """Computes keys and decisions for one run (or one `status()`), memoizing per plan."""

    def __init__(
        self,
        pipeline: str,
        tasks: Mapping[str, Task],
        graph: Graph,
        store: Store,
        params: Mapping[str, Any],
        force: bool | Collection[str] = False,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.resources = resources or {}
        self.tasks = tasks
        self.graph = graph
        self.store = store
        self.params = dict(params)
        self.force = force
        self.state = store.pipeline_state(pipeline)
        self.index = store.index(pipeline)
        self._prints: dict[int, FunctionPrint] = {}
        self._values: ValueDigests = {}
        """Global values' digests for this run: each global is digested once, however many
        functions read it, and as it was when the plan began."""
        self._code_memo = memo_for(store)
        self._param_digests: dict[str, tuple[Digest | None, str, str]] = {}
        self.decisions: dict[str, Decision] = {}

    # --- parts of a key ------------------------------------------------------

    def code_print(self, task: Task) -> FunctionPrint:
        return self.function_print(task.fn, f"function `{task.name}`")

    def function_print(self, fn: Any, label: str) -> FunctionPrint:
        """The fingerprint of `fn` (a task's function, a check), once per run."""
        fp = self._prints.get(id(fn))
        if fp is None:
            own = getattr(fn, "__nbflow_fingerprint__", None)
            fp = (
                own()
                if own is not None
                else PRINTS.fingerprint(fn, label, memo=self._code_memo, values=self._values)
            )
            self._prints[id(fn)] = fp
        return fp

    def fingerprint(self, names: Collection[str]) -> None:
        """Fingerprint the code of `names` now, before any of them runs.

        So every key of the run sees the globals as the user left them, not as
        the tasks run so far have changed them; and what was parsed is saved to
        the store's code memo once, for the next process.
        """
        for name in names:
            self.code_print(self.tasks[name])
        if self._code_memo is not None:
            self._code_memo.save()

    def state_note(self, task: Task) -> str:
        """ "global `log` is updated by this task; it is not part of its key", or ""."""
        state = self.code_print(task).state
        if not state:
            return ""
        one = len(state) == 1
        return (
            f"{', '.join(state)} {'is' if one else 'are'} updated by this task; "
            f"{'it is' if one else 'they are'} not part of its key"
        )

    def ignore_note(self, task: Task) -> str:
        """ "not in its key: `log_level` (ignore=)", or "" for a task that ignores nothing."""
        if not task.options.ignore:
            return ""
        deps = self.graph.deps.get(task.name, {})
        labels = []
        for param in task.options.ignore:
            upstream = deps.get(param)
            if upstream is None or upstream == param:
                labels.append(f"`{param}`")
            elif param.startswith("__in_"):  # a task cell's input: named by its cell
                labels.append(f"upstream `{upstream}`")
            else:
                labels.append(f"`{param}` from `{upstream}`")
        return f"not in its key: {', '.join(labels)} (ignore=)"

    def key_note(self, task: Task) -> str:
        """What `task`'s key leaves out on purpose: the globals it updates, what it ignores."""
        return "; ".join(n for n in (self.state_note(task), self.ignore_note(task)) if n)

    def param_value(self, task: Task, param: str) -> Any:
        if param in self.params:
            return self.params[param]
        if param in task.defaults:
            return task.defaults[param]
        raise MissingParameterError(task.name, param, self.tasks)

    def _param_digest(self, task: Task, param: str) -> tuple[Digest | None, str, str]:
        """The digest of a parameter's value (None if it has none), its short repr, and why not."""
        if param in self.params:
            memo = self._param_digests.get(param)
            if memo is not None:
                return memo
        value = self.param_value(task, param)
        result: tuple[Digest | None, str, str]
        try:
            result = (digest_value(value), format_value_short(value, 30), "")
        except Unfingerprintable as exc:
            result = (None, format_value_short(value, 30), exc.brief())
        if param in self.params:
            self._param_digests[param] = result
        return result

    def check_params(self, names: Collection[str]) -> None:
        """Raise `MissingParameterError` before anything runs if a needed parameter is missing."""
        for name in names:
            task = self.tasks[name]
            for param in self.graph.run_params[name]:
                self.param_value(task, param)

    def key_for(self, name: str, upstream_digests: Mapping[str, Digest | None]) -> Decision:
        """Key and parts of `name` given its upstream output digests (param -> digest).

        This runs once per task per plan, so it is kept lean: one string of
        key material (names length-prefixed, digests fixed-width hex), one hash.
        """
        task = self.tasks[name]
        opts = task.options
        fp = self.code_print(task)
        signature = None
        if not opts.watch and not opts.identity:
            # Everything else the key is made of, cheap to compare: the same as the last
            # plan of this task in this process gives the same key, parts and reasons.
            # Built for every task of every plan, so the common case (no run parameters, no
            # resources) makes no generator; `deps` is the graph's read-only mapping (equal
            # to itself at once; a regraphed pipeline's is compared by value).
            graph = self.graph
            deps = graph.deps[name]
            run_params = graph.run_params[name]
            uses = graph.resources.get(name)
            signature = (
                fp,
                opts.version,
                opts.ignore,
                opts.always_run,
                opts.cache,
                tuple([self._param_digest(task, p)[0] for p in run_params]) if run_params else (),
                tuple(map(upstream_digests.get, deps)),
                deps,
                tuple([self.resources[p].version for p in uses]) if uses else (),
            )
            known = _KEYS.get((self.pipeline, name))
            if known is not None and known[0] == signature:
                _, key, parts, shorts, note, reason = known
                return Decision(name, False, reason, key, None, parts, shorts, note=note)
        volatile = fp.volatile
        shorts = fp.shorts
        material = [
            f"nbflow-key-1|{len(self.pipeline)}:{self.pipeline}|{len(name)}:{name}|{fp.digest}|{opts.version!r}"
        ]
        params: dict[str, Digest] = {}
        ignored = opts.ignore
        run_params = self.graph.run_params[name]
        if ignored:
            run_params = tuple(p for p in run_params if p not in ignored)
        if run_params:
            shorts = dict(shorts)
            for param in run_params:
                digest, short, why = self._param_digest(task, param)
                if digest is None:
                    volatile = [*volatile, f"parameter `{param}` cannot be fingerprinted ({why})"]
                    digest = Digest("volatile")
                params[param] = digest
                shorts[f"parameter `{param}`"] = short
                material.append(f"p{len(param)}:{param}={digest}")
        inputs: dict[str, list[Any]] = {}
        for param, upstream in self.graph.deps[name].items():
            if param in ignored:
                continue
            d = upstream_digests.get(param) or "absent"
            inputs[param] = [upstream, d]
            material.append(f"i{len(param)}:{param}={len(upstream)}:{upstream}={d}")
        versions: dict[str, str] = {}
        for param in self.graph.resources.get(name, ()):
            version = self.resources[param].version
            if version is not None and param not in ignored:
                versions[param] = version
                material.append(f"r{len(param)}:{param}={version!r}")
        files: dict[str, str] = {}
        for pattern in opts.watch:
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                files[pattern] = "missing"
            for path in matches:
                if os.path.isfile(path):
                    files[path] = file_digest(path)
        identity: dict[str, str] = dict(opts.identity()) if opts.identity else {}
        for prefix, mapping in (("f", files), ("x", identity)):
            for k in sorted(mapping):
                material.append(f"{prefix}{len(k)}:{k}={mapping[k]}")
        key = CacheKey(blake3("\x1f".join(material).encode()).hexdigest(length=20))
        parts = {
            "code": fp.parts,
            "version": opts.version,
            "params": params,
            "inputs": inputs,
            "files": files,
            "identity": identity,
        }
        if versions:
            parts["resources"] = versions
        decision = Decision(name, False, "", key, None, parts, shorts)
        decision.note = self.key_note(task) if fp.state or opts.ignore else ""
        if volatile:
            decision.reason = f"always reruns: {volatile[0]}"
        elif opts.always_run:
            decision.reason = f"always reruns: {opts.always_run}"
        elif not opts.cache:
            decision.reason = "caching is off for this task (cache=False)"
        if signature is not None:
            if len(_KEYS) >= _KEYS_LIMIT:
                _KEYS.clear()
            _KEYS[(self.pipeline, name)] = (
                signature,
                key,
                parts,
                shorts,
                decision.note,
                decision.reason,
            )
        return decision

    # --- decisions -----------------------------------------------------------

    def decide(self, name: str, upstream_digests: Mapping[str, Digest | None]) -> Decision:
        """Decide one task whose upstream digests are all known."""
        decision = self.key_for(name, upstream_digests)
        if decision.reason:  # volatile or cache=False
            decision.root = decision.reason
            return decision
        forced = self.force is True or (not isinstance(self.force, bool) and name in self.force)
        if forced:
            decision.reason = decision.root = "forced"
            return decision
        assert decision.key is not None
        latest = self.index.get(name)
        record: Record | None
        if latest is not None and latest["key"] == decision.key:
            record = latest
        else:  # an older result (a reverted edit) may still be cached under this key
            record = self.store.get_record(self.pipeline, decision.key)
        if record is None:
            decision.reason = self._why_missing(name, decision)
            decision.root = decision.reason
            return decision
        ttl = self.tasks[name].options.ttl
        created = record.get("created", 0.0)
        if ttl is not None and time.time() - created > ttl:
            decision.reason = decision.root = f"expired: cached {_ago(created)}, ttl is {ttl:g} s"
        elif self.state["invalidated"].get(name, 0.0) > created:
            decision.reason = decision.root = "invalidated"
        else:
            decision.fresh = True
            decision.record = record
        return decision

    def plan(self, names: Collection[str]) -> dict[str, Decision]:
        """Static decisions for `names` (plus nothing else), in topological order."""
        wanted = set(names)
        self.fingerprint([n for n in self.graph.order if n in wanted and n not in self.decisions])
        for name in self.graph.order:
            if name not in wanted:
                continue
            digests: dict[str, Digest | None] = {}
            stale_up: Decision | None = None
            ignored = self.tasks[name].options.ignore
            for param, upstream in self.graph.deps[name].items():
                up = self.decisions[upstream]
                if not up.fresh:
                    if param not in ignored:  # an ignored input's value is not in the key
                        stale_up = stale_up or up
                    continue
                assert up.record is not None
                digests[param] = up.record["digest"]
            if stale_up is not None:
                root_task = stale_up.root_task or stale_up.task
                via = f" (via `{stale_up.task}`)" if root_task != stale_up.task else ""
                reason = f"upstream `{root_task}` is stale{via}: {stale_up.root}"
                decision = Decision(name, False, reason, root=stale_up.root, root_task=root_task)
            else:
                decision = self.decide(name, digests)
            self.decisions[name] = decision
        return {n: self.decisions[n] for n in self.graph.order if n in wanted}

    def _why_missing(self, name: str, decision: Decision) -> str:
        failed = self.state["failed"].get(name)
        if failed and failed.get("key") == decision.key:
            return f"last attempt failed: {failed.get('error', 'error')}"
        last = self.index.get(name)
        if last is None:
            return "never run"
        return describe_difference(name, last, decision) or (
            "no cached result for these inputs (the entry was cleared or evicted)"
        )


def describe_difference(name: str, last: Record, now: Decision) -> str:
    """Name what differs between a task's last record and its current parts (the first
    difference, in the order of `differences`)."""
    found = differences(
        name, last.get("parts") or {}, last.get("shorts") or {}, now.parts, now.shorts
    )
    return next(found, "")


def differences(
    name: str,
    old: Mapping[str, Any],
    old_shorts: Mapping[str, str],
    new: Mapping[str, Any],
    new_shorts: Mapping[str, str],
) -> Iterator[str]:
    """Every difference between two sets of key parts of task `name`, each said as a stale
    reason: code (own, then helpers, globals, libraries), version, parameters, upstream
    values, resources, watched files, identity. Also what `nbflow history diff` says."""
    old_code, new_code = old.get("code", {}), new.get("code", {})
    own = f"function `{name}`"
    own_changed = old_code.get(own) != new_code.get(own)
    if own_changed:
        yield f"code of `{name}` changed"
    for label in sorted(set(old_code) | set(new_code)):
        if old_code.get(label) == new_code.get(label) or (own_changed and label == own):
            continue
        if label not in old_code:
            yield f"code of `{name}` now uses {label}"
        elif label not in new_code:
            yield f"code of `{name}` no longer uses {label}"
        elif label.startswith(("helper", "method", "class", "module")):
            yield f"code of {label} changed"
        elif label.startswith("library"):
            yield f"{label} changed version"
        else:
            before, after = old_shorts.get(label), new_shorts.get(label)
            change = f": {before} → {after}" if before is not None and after is not None else ""
            yield f"{label} changed{change}"
    if old.get("version") != new.get("version"):
        yield f"version changed: {old.get('version')} → {new.get('version')}"
    old_params, new_params = old.get("params", {}), new.get("params", {})
    for param in sorted(set(old_params) | set(new_params)):
        if old_params.get(param) != new_params.get(param):
            label = f"parameter `{param}`"
            before, after = old_shorts.get(label, "(none)"), new_shorts.get(label, "(none)")
            yield f"{label} changed: {before} → {after}"
    old_inputs, new_inputs = old.get("inputs", {}), new.get("inputs", {})
    for param in sorted(set(old_inputs) | set(new_inputs)):
        o, n = old_inputs.get(param), new_inputs.get(param)
        if o != n:
            upstream = (n or o)[0]
            yield f"upstream `{upstream}` produced a new value"
    old_res, new_res = old.get("resources", {}), new.get("resources", {})
    for res in sorted(set(old_res) | set(new_res)):
        if old_res.get(res) != new_res.get(res):
            yield f"resource `{res}` version changed: {old_res.get(res)} → {new_res.get(res)}"
    old_files, new_files = old.get("files", {}), new.get("files", {})
    for path in sorted(set(old_files) | set(new_files)):
        if old_files.get(path) != new_files.get(path):
            yield f"watched file `{path}` changed"
    old_id, new_id = old.get("identity", {}), new.get("identity", {})
    for label in sorted(set(old_id) | set(new_id)):
        if old_id.get(label) != new_id.get(label):
            yield f"{label} changed"


def _ago(ts: float) -> str:
    seconds = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
