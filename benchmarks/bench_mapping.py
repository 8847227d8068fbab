"""Dynamic mapping benchmark (issue 7): 10,000 small items, beside baselines measured in the same run.

Run: `.venv/bin/python benchmarks/bench_mapping.py`. Prints times and ratios;
nothing is asserted. Figures:

  M1 cold: a mapped task over 10,000 ints (sequential executor), per-item overhead
     = (nbflow time - plain loop time) / 10,000. Target: <= 100 us.
  M2 one element changed: time, and how many instances executed (must be 1).
  M3 nothing changed: time (the mapped task is cached as a whole).
Baselines: a plain Python loop; a plain diskcache memo per item (key = source + pickled item).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import tempfile
import time
from pathlib import Path

N = 10_000


def work(item):
    return item * 2 + 1


def build(cache_dir: str, items: list[int]):
    import nbflow as nf

    pipe = nf.Pipeline("map", cache_dir=cache_dir)
    pipe.task(lambda: items, name="items")
    pipe.task(work, name="work", map="item", inputs={"item": "items"})
    return pipe


def memo_loop(cache, items: list[int]) -> float:
    source = inspect.getsource(work)
    start = time.perf_counter()
    out = []
    for item in items:
        key = hashlib.sha256(source.encode() + pickle.dumps(item)).hexdigest()
        value = cache.get(key)
        if value is None:
            value = work(item)
            cache.set(key, value)
        out.append(value)
    return time.perf_counter() - start


def main() -> None:
    import diskcache

    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-map-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "home")
    items = list(range(N))

    start = time.perf_counter()
    [work(i) for i in items]
    plain = time.perf_counter() - start
    memo = diskcache.Cache(str(tmp / "memo"))
    memo_cold = memo_loop(memo, items)

    pipe = build(str(tmp / "cache"), items)
    start = time.perf_counter()
    r = pipe.run()
    m1 = time.perf_counter() - start
    assert len(r.map_executed["work"]) == N

    changed = list(items)
    changed[N // 2] = -1
    memo_changed = memo_loop(memo, changed)
    pipe = build(str(tmp / "cache"), changed)
    start = time.perf_counter()
    r = pipe.run()
    m2 = time.perf_counter() - start
    m2_executed = len(r.map_executed["work"])

    pipe = build(str(tmp / "cache"), changed)
    start = time.perf_counter()
    r = pipe.run()
    m3 = time.perf_counter() - start
    memo_same = memo_loop(memo, changed)

    per_item = (m1 - plain) / N * 1e6
    print(f"mapping over {N:,} items, sequential executor")
    print(f"{'figure':<44}{'nbflow':>12}{'baseline':>26}")
    print(
        f"{'M1 cold, per-item overhead':<44}{per_item:>9.1f} us"
        f"{f'diskcache memo {(memo_cold - plain) / N * 1e6:.1f} us':>26}"
        f"   ratio {per_item / ((memo_cold - plain) / N * 1e6):.2f}   target <= 100 us"
    )
    print(
        f"{'M2 one element changed':<44}{m2 * 1e3:>9.1f} ms"
        f"{f'diskcache memo {memo_changed * 1e3:.1f} ms':>26}"
        f"   ratio {m2 / memo_changed:.2f}   instances executed: {m2_executed} (target 1)"
    )
    print(
        f"{'M3 nothing changed':<44}{m3 * 1e3:>9.1f} ms"
        f"{f'diskcache memo {memo_same * 1e3:.1f} ms':>26}"
        f"   ratio {m3 / memo_same:.2f}   executed: {len(r.executed)}"
    )
    print(f"(plain loop: {plain * 1e3:.1f} ms for {N:,} items)")


if __name__ == "__main__":
    main()
