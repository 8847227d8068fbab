"""Core engine benchmarks (issue 2): W1–W5, each beside baselines measured in the same run.

Run: `.venv/bin/python benchmarks/bench_core.py` (or `make bench`). Prints a
table of times and ratios; nothing here is asserted — figures go to the notes.

Workloads, on a 1,000-task chain built from one step function (how large
pipelines are generated in practice):
  W1 cold run (empty cache), per task
  W2 fully cached rerun in a new process: time inside `run()`, tasks executed, values unpickled
  W3 the middle task edited: time, and the number executed (must be exactly 500)
  W4 fan-out/fan-in of 1,000 (cold and cached)
  W5 a 10,000,000 x 5 float64 DataFrame (400 MB) stored and loaded, GB/s
Baselines: plain Python calls; a plain diskcache memo (key = function source
+ pickled arguments); for W5 raw pickle to a file, and diskcache set/get.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

N = 1000
HERE = Path(__file__).resolve().parent


def chain_pipeline(cache_dir: str, name: str = "chain"):
    import nbflow as nf

    pipe = nf.Pipeline(name, cache_dir=cache_dir)

    def step(x):
        return x + 1

    pipe.task(lambda: 0, name="t0")
    for i in range(1, N):
        pipe.task(step, name=f"t{i}", inputs={"x": f"t{i - 1}"})
    return pipe


# --- baselines -----------------------------------------------------------------


def plain_chain() -> float:
    def step(x):
        return x + 1

    start = time.perf_counter()
    x = 0
    for _ in range(1, N):
        x = step(x)
    return time.perf_counter() - start


def memo(cache, fn):
    source = inspect.getsource(fn)

    def wrapper(*args):
        key = hashlib.sha256(source.encode() + pickle.dumps(args)).hexdigest()
        value = cache.get(key)
        if value is None:
            value = fn(*args)
            cache.set(key, value)
        return value

    return wrapper


def step_a(x):
    return x + 1


def step_b(x):
    return x + 2


def memo_chain(cache, edited_at: int | None = None) -> float:
    fa, fb = memo(cache, step_a), memo(cache, step_b)
    start = time.perf_counter()
    x = 0
    for i in range(1, N):
        x = (fb if edited_at is not None and i == edited_at else fa)(x)
    return time.perf_counter() - start


# --- W2 in a fresh process --------------------------------------------------------

W2_CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {here!r})
    from bench_core import chain_pipeline
    pipe = chain_pipeline({cache!r})
    start = time.perf_counter()
    r = pipe.run()
    elapsed = time.perf_counter() - start
    print(json.dumps({{"seconds": elapsed, "executed": len(r.executed), "loads": pipe.store.loads}}))
""")

W2_MEMO_CHILD = textwrap.dedent("""
    import json, sys, time, diskcache
    sys.path.insert(0, {here!r})
    from bench_core import memo_chain
    cache = diskcache.Cache({cache!r})
    print(json.dumps({{"seconds": memo_chain(cache)}}))
""")


def child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import diskcache

    import nbflow as nf

    rows: list[tuple[str, str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "home")

    # W1 cold
    base_plain = plain_chain()
    memo_cache = diskcache.Cache(str(tmp / "memo"))
    base_memo_cold = memo_chain(memo_cache)
    pipe = chain_pipeline(str(tmp / "cache"))
    start = time.perf_counter()
    r = pipe.run()
    w1 = time.perf_counter() - start
    assert len(r.executed) == N
    rows.append(
        (
            "W1 cold, per task",
            f"{w1 / N * 1e6:.0f} µs",
            f"memo {base_memo_cold / N * 1e6:.0f} µs ({w1 / base_memo_cold:.2f}x); "
            f"plain Python {base_plain / N * 1e6:.2f} µs",
        )
    )

    # W2 no-change rerun in a new process
    w2 = child(W2_CHILD.format(here=str(HERE), cache=str(tmp / "cache")))
    m2 = child(W2_MEMO_CHILD.format(here=str(HERE), cache=str(tmp / "memo")))
    rows.append(
        (
            "W2 no-change rerun (new process)",
            f"{w2['seconds'] * 1e3:.1f} ms",
            f"memo {m2['seconds'] * 1e3:.1f} ms ({w2['seconds'] / m2['seconds']:.2f}x); "
            f"executed {w2['executed']}, values unpickled {w2['loads']}",
        )
    )

    # W3 middle task edited
    def step_edited(x):
        return x + 2

    pipe.task(step_edited, name="t500", inputs={"x": "t499"})
    start = time.perf_counter()
    r = pipe.run()
    w3 = time.perf_counter() - start
    base_memo_w3 = memo_chain(memo_cache, edited_at=500)
    rows.append(
        (
            "W3 middle task edited",
            f"{w3 * 1e3:.1f} ms",
            f"memo {base_memo_w3 * 1e3:.1f} ms ({w3 / base_memo_w3:.2f}x); executed {len(r.executed)}",
        )
    )

    # W4 fan-out / fan-in
    fan = nf.Pipeline("fan", cache_dir=str(tmp / "fan"))

    def leaf(source, i=0):
        return source + i

    fan.task(lambda: 1, name="source")
    for i in range(N):
        fan.task(leaf, name=f"leaf{i}", inputs={"source": "source"})
    # The fan-in task takes every leaf by parameter name (generated source).
    leaves = ", ".join(f"leaf{i}" for i in range(N))
    namespace: dict = {}
    exec(f"def sink({leaves}):\n    return sum([{leaves}])\n", namespace)
    fan.task(namespace["sink"], name="sink")
    start = time.perf_counter()
    rf = fan.run()
    w4_cold = time.perf_counter() - start
    start = time.perf_counter()
    rf2 = fan.run()
    w4_warm = time.perf_counter() - start
    assert rf["sink"] == N and len(rf2.executed) == 0
    rows.append(
        (
            "W4 fan-out/fan-in 1,000",
            f"cold {w4_cold * 1e3:.0f} ms",
            f"cached rerun {w4_warm * 1e3:.1f} ms",
        )
    )

    # W5 400 MB DataFrame
    import numpy as np
    import pandas as pd

    from nbflow.core.cache.serialize import serialize
    from nbflow.core.cache.store import DiskStore

    df = pd.DataFrame(np.random.default_rng(0).random((10_000_000, 5)), columns=list("abcde"))
    size = df.memory_usage(index=False).sum()
    raw_file = tmp / "raw.pkl"
    start = time.perf_counter()
    with open(raw_file, "wb") as fh:
        pickle.dump(df, fh, protocol=5)
    raw_write = time.perf_counter() - start
    start = time.perf_counter()
    with open(raw_file, "rb") as fh:
        pickle.load(fh)
    raw_read = time.perf_counter() - start
    raw_file.unlink()
    dc = diskcache.Cache(str(tmp / "dc"))
    start = time.perf_counter()
    dc.set("df", df)
    dc_write = time.perf_counter() - start
    start = time.perf_counter()
    dc.get("df")
    dc_read = time.perf_counter() - start
    dc.clear()
    store = DiskStore(tmp / "w5")
    start = time.perf_counter()
    payload = serialize(df, "df")
    record = {
        "key": "w5",
        "pipeline": "bench",
        "task": "df",
        "parts": {},
        "shorts": {},
        "created": time.time(),
        "duration": 0.0,
        "metadata": None,
    }
    store.put(record, payload)
    store.flush()
    nb_write = time.perf_counter() - start
    del payload
    start = time.perf_counter()
    loaded = store.load(store.get_record("bench", "w5"))
    nb_read = time.perf_counter() - start
    assert loaded.shape == df.shape
    gbs = lambda s: f"{size / s / 1e9:.2f} GB/s"  # noqa: E731
    rows.append(
        (
            "W5 400 MB DataFrame write",
            gbs(nb_write),
            f"raw pickle {gbs(raw_write)}; diskcache {gbs(dc_write)}",
        )
    )
    rows.append(
        (
            "W5 400 MB DataFrame read",
            gbs(nb_read),
            f"raw pickle {gbs(raw_read)}; diskcache {gbs(dc_read)}",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(
        f"nbflow core benchmarks (N={N}, Python {sys.version.split()[0]}, {os.cpu_count()} cores)"
    )
    for name, value, baseline in rows:
        print(f"  {name:<{width}}  {value:>12}   {baseline}")


if __name__ == "__main__":
    main()
