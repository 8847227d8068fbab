"""The persistent code memo never serves a stale fingerprint (issue 21).

Each case runs a real pipeline module in fresh processes: once to fill the
cache and the memo, then after an edit that keeps the file's size, line
count and mtime (what `cp -p` or `rsync -a` leave), and once more with
nothing changed, where no source may be parsed at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbflow import Pipeline
from nbflow.core.cache import codememo
from nbflow.core.cache.fingerprint import fingerprint_function

from ..cells import define

MODULE = """
import logging

log = logging.getLogger("memo-test")


def make(n):
    def adder(x):
        return x + n

    return adder


def deep(x):
    return x * 2


def shallow(x):
    return deep(x) + 1


def f(x):
    '''Own code.'''
    log.debug("f")
    return x + 1


def g(x, k=1):
    return x * k


h = make(1)


def top(x):
    return shallow(x)
"""

DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[2])
import nbflow as nf
from nbflow.core.cache import fingerprint
parsed = []
parse = fingerprint._parse_code
fingerprint._parse_code = lambda fn: (parsed.append(fn.__name__), parse(fn))[1]
import pipeline_module as m
pipe = nf.Pipeline("memo", cache_dir=sys.argv[1])
pipe.task(lambda: 3, name="start")
for name in ("f", "g", "h", "top"):
    pipe.task(getattr(m, name), name=name, inputs={"x": "start"})
r = pipe.run()
print(json.dumps({"executed": r.executed, "reasons": r.reasons, "parsed": parsed}))
"""

# (case, old text, new text of the same length, task that reruns, its reason)
EDITS = [
    ("body edited", "return x + 1", "return x + 2", "f", "code of `f` changed"),
    ("default changed", "k=1", "k=2", "g", "defaults of function `g` changed"),
    ("closure cell changed", "make(1)", "make(2)", "h", "closure variable `n` changed: 1 → 2"),
    (
        "helper two levels down",
        "x * 2",
        "x * 3",
        "top",
        "code of helper `deep` changed",
    ),
]


def _run(tmp: Path, **extra: str) -> dict[str, object]:
    env = {
        **os.environ,
        **extra,
        "NBFLOW_HOME": str(tmp / "home"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp / "cache"), str(tmp / "src")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("case", "old", "new", "task", "reason"), EDITS, ids=[e[0] for e in EDITS])
def test_the_memo_never_serves_a_stale_fingerprint(
    tmp_path: Path, case: str, old: str, new: str, task: str, reason: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "pipeline_module.py"
    path.write_text(MODULE)
    first = _run(tmp_path)
    assert first["executed"] == ["start", "f", "g", "h", "top"]
    assert _run(tmp_path) == {"executed": [], "reasons": {}, "parsed": []}, "memo not used"

    stat = path.stat()
    assert len(old) == len(new) and MODULE.count(old) == 1
    path.write_text(MODULE.replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns

    edited = _run(tmp_path)
    assert edited["executed"] == [task]
    assert edited["reasons"][task] == reason
    assert _run(tmp_path)["executed"] == []


SETS = MODULE.replace(
    "def top(x):",
    """def member(x):
    return [c in {"a", "b", "c"} for c in str(x)]


def top(x):""",
)


def test_code_with_a_set_constant_is_found_in_the_memo_whatever_the_hash_seed(
    tmp_path: Path,
) -> None:
    """A set's order follows the process's string-hash seed; the code identity must not,
    or every new kernel would parse it again."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pipeline_module.py").write_text(SETS)
    driver_names = ("f", "g", "h", "top", "member")
    global DRIVER
    saved = DRIVER
    DRIVER = DRIVER.replace('("f", "g", "h", "top")', repr(driver_names))
    try:
        first = _run(tmp_path, PYTHONHASHSEED="1")
        assert "member" in first["executed"]
        for seed in ("2", "3", "4"):
            again = _run(tmp_path, PYTHONHASHSEED=seed)
            assert again == {"executed": [], "reasons": {}, "parsed": []}, seed
    finally:
        DRIVER = saved


def test_comment_docstring_and_formatting_edits_keep_the_fingerprint(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "pipeline_module.py"
    path.write_text(MODULE)
    assert len(_run(tmp_path)["executed"]) == 5  # type: ignore[arg-type]
    path.write_text(
        MODULE.replace("'''Own code.'''", "'''Other words.'''  # a comment").replace(
            "return x + 1", "return (x +\n            1)"
        )
    )
    assert _run(tmp_path)["executed"] == []


def test_a_source_edited_but_not_reloaded_is_not_memoized(home: Path, pipe: Pipeline) -> None:
    # The running code is the old one; the file on disk says otherwise. Its parse
    # is used (as inspect would) but must not be shared by code identity.
    ns = define("def f(x):\n    return x + 1\n")
    fn = ns["f"]
    import linecache

    filename = fn.__code__.co_filename
    linecache.cache[filename] = (0, None, ["def f(x):\n", "    return x + 2\n"], filename)
    memo = codememo.memo_for(pipe.store)
    assert memo is not None
    fingerprint_function(fn, memo=memo)
    memo.save()
    assert codememo._decode(pipe.store.get_bytes(codememo.NAMESPACE, codememo.BLOB)) == {}


def test_a_store_without_blobs_has_no_memo() -> None:
    assert codememo.memo_for(object()) is None


def test_a_tampered_memo_is_refused_and_only_costs_a_parse(home: Path, pipe: Pipeline) -> None:
    from nbflow.core.errors import NbflowWarning

    ns = define("def f():\n    return 1\n")
    pipe.task(ns["f"])
    pipe.run()
    store = pipe.store
    assert codememo._decode(
        store.get_bytes(codememo.NAMESPACE, codememo.BLOB)
    )  # the memo was written, signed
    raw = store._meta.get(f"b:{codememo.NAMESPACE}:{codememo.BLOB}")
    store._meta.set(f"b:{codememo.NAMESPACE}:{codememo.BLOB}", raw[:-5] + b"XXXXX")
    with pytest.warns(NbflowWarning, match="bad signature"):
        assert store.get_bytes(codememo.NAMESPACE, codememo.BLOB) is None
    assert codememo._decode(b"not json") == {}


def test_a_reload_after_an_edit_that_keeps_size_and_mtime_is_seen_in_one_process(
    home: Path, pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "same_size_module.py"
    path.write_text("def f():\n    return 1\n")
    module = importlib.import_module("same_size_module")
    try:
        pipe.task(module.f)
        assert pipe.run()["f"] == 1
        stat = path.stat()
        path.write_text("def f():\n    return 2\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        module = importlib.reload(module)  # linecache still holds the old text
        pipe.task(module.f)
        assert pipe.explain("f") == "stale: code of `f` changed"
        assert pipe.run()["f"] == 2
    finally:
        sys.modules.pop("same_size_module", None)
