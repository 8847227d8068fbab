"""`python -m nbflow.ui.runner RUN_ID...`: execute job runs the dashboard created.

The dashboard's server starts this in a session of its own (`actions.start_runner`),
so a run goes on when a page is closed or the server stops. It does what `nbflow
trigger` and `nbflow backfill` do in the foreground: `run_in_foreground`, which claims
each run atomically (a scheduler on the same home never runs one twice), waits out
retry delays, and respects the job's max-active.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from nbflow.jobs.attempt import run_in_foreground, sweep
    from nbflow.jobs.runstore import RunStore

    args = sys.argv[1:] if argv is None else argv
    if not args or not all(a.isdigit() for a in args):
        print("usage: python -m nbflow.ui.runner RUN_ID...", file=sys.stderr)
        return 2
    ids = [int(a) for a in args]
    store = RunStore()
    sweep(store)  # a run left `running` by a dead process must not block these
    jobs = {store.get_run(i).job for i in ids}
    limits = [store.find_job(j) for j in jobs]
    max_active = min((int(r.spec.get("max_active", 1) or 1) for r in limits if r), default=1)
    runs = run_in_foreground(store, ids, max_active=max_active, echo=print)
    return 0 if all(r.state == "success" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
