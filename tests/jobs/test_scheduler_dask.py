"""Scheduled notebook runs on a Dask cluster: a real `dask scheduler` and two `dask worker`
processes on 127.0.0.1 (one thread each, each worker under its own nanny, in a session of
its own so a test can SIGKILL one whole "machine").

The scheduler runs with the real clock here (a retry's time is real): jobs are added a
few hours in the past, so their latest hourly ticks are due at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import nbformat
import psutil
import pytest

from nbflow.jobs.attempt import execute_run
from nbflow.jobs.runstore import RunStore, utc_now
from nbflow.jobs.scheduler import Scheduler
from nbflow.jobs.schedules import Schedule
from tests.jobs.notebooks import write_notebook

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="Linux only: these tests find a notebook's kernel and worker processes in /proc, which this OS lacks",
)

# The notebook's process ancestry, from /proc: the kernel, the notebook process, the worker...
ANCESTRY = """
import os
def ancestry():
    pid, chain = os.getpid(), []
    while pid > 1:
        chain.append(pid)
        with open(f"/proc/{pid}/stat") as fh:
            pid = int(fh.read().rsplit(")", 1)[1].split()[1])
    return chain
with open(log, "a") as fh:
    fh.write(" ".join(map(str, ancestry())) + "\\n")
"""


class Cluster:
    """A Dask scheduler and two workers, as separate processes on loopback."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.env.pop("NBFLOW_HOME", None)
        file = folder / "scheduler.json"
        self.scheduler = self._start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(file)],
            "scheduler",
        )
        deadline = time.monotonic() + 60
        while not file.exists() or not file.read_text().strip():
            assert time.monotonic() < deadline, "the Dask scheduler did not start"
            time.sleep(0.2)
        import json

        self.address = json.loads(file.read_text())["address"]
        self.workers: list[subprocess.Popen[bytes]] = []
        from distributed import Client

        self.client = Client(self.address, set_as_default=False, timeout=30)

    def _start(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process's life
        return subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=log, start_new_session=True, cwd=self.folder
        )

    def ensure_two_workers(self) -> dict[str, int]:
        """Start workers until two are up; returns {worker address: worker process pid}."""
        self.workers = [w for w in self.workers if w.poll() is None]
        while len(self.workers) < 2:
            self.workers.append(
                self._start(
                    [DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1"]
                    + ["--host", "127.0.0.1", "--no-dashboard"],
                    f"worker-{len(self.workers)}-{time.monotonic_ns()}",
                )
            )
        self.client.wait_for_workers(2, timeout=90)
        deadline = time.monotonic() + 30
        while len(self.client.nthreads()) > 2:  # a killed worker not yet removed
            assert time.monotonic() < deadline
            time.sleep(0.2)
        return self.client.run(os.getpid)

    def kill_machine(self, worker_pid: int) -> None:
        """SIGKILL the worker process `worker_pid` and its nanny (the whole `dask worker`)."""
        for proc in self.workers:
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                continue
            if worker_pid in {k.pid for k in kids}:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
        raise AssertionError(f"no dask worker runs the worker process {worker_pid}")

    def close(self) -> None:
        self.client.close()
        for proc in [*self.workers, self.scheduler]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("dask-cluster"))
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(_cluster: Cluster) -> Cluster:
    _cluster.ensure_two_workers()
    return _cluster


def add_job(store: RunStore, name: str, notebook: Path, hours_ago: float = 1.5, **spec) -> None:
    spec.setdefault("cron", "0 * * * *")
    job = Schedule(name=name, notebook=str(notebook), **spec)
    store.add_job(name, job.to_dict(), now=utc_now() - timedelta(hours=hours_ago))


def ran(store: RunStore, job: str | None = None) -> list:
    """The runs that ran (not the `missed` ticks before the latest one), oldest first."""
    return [r for r in store.list_runs(job, oldest_first=True) if r.state != "missed"]


def serve_until(scheduler: Scheduler, done, timeout: float = 120.0, each=None) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, "runs did not finish in time"
            scheduler.tick_once()
            if each is not None:
                each()
            time.sleep(0.2)
    finally:
        scheduler.kill_children()


def ancestries(log: Path) -> list[list[int]]:
    return [[int(p) for p in line.split()] for line in log.read_text().splitlines()]


def pid_gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_a_scheduled_run_executes_on_a_worker_and_its_notebook_lands_in_runs(
    cluster: Cluster, home: Path
) -> None:
    workers = cluster.ensure_two_workers()
    log = Path.cwd() / "ancestry.txt"
    notebook = write_notebook(
        Path.cwd() / "where.ipynb", f"log = {str(log)!r}", [ANCESTRY, "print('ran on a worker')"]
    )
    store = RunStore()
    add_job(store, "where", notebook)
    scheduler = Scheduler(store, executor="dask", address=cluster.address, echo=lambda _: None)
    serve_until(scheduler, lambda: store.count_runs("where") == 0 and ran(store, "where"))
    (run,) = ran(store, "where")
    assert run.state == "success", run.error
    assert run.worker is not None and run.worker["pid"] in workers.values()
    assert workers[run.worker["address"]] == run.worker["pid"]
    (chain,) = ancestries(log)
    assert run.worker["pid"] in chain  # the kernel is a descendant of that worker process
    assert run.pid not in chain  # ... not of the runner process that claimed the run
    out = Path(run.output_path or "")
    assert out.parent == home / "runs" / "where" and out.is_file()
    executed = nbformat.read(out, as_version=4)
    assert "ran on a worker" in executed.cells[-1].outputs[0]["text"]
    assert executed.metadata.papermill["input_path"] == str(notebook)
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_a_worker_killed_mid_run_crashes_the_run_and_the_retry_succeeds_on_the_other(
    cluster: Cluster,
) -> None:
    workers = cluster.ensure_two_workers()
    log = Path.cwd() / "ancestry.txt"
    marker = Path.cwd() / "first-attempt-started"
    slow_once = (
        "import time, pathlib\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        "    time.sleep(120)  # the first attempt: its worker is killed meanwhile"
    )
    notebook = write_notebook(
        Path.cwd() / "slow.ipynb", f"log = {str(log)!r}", [ANCESTRY, slow_once]
    )
    store = RunStore()
    add_job(store, "slow", notebook, retries=1, retry_delay=0)
    scheduler = Scheduler(store, executor="dask", address=cluster.address, echo=lambda _: None)
    seen: list[tuple[str, int, str | None]] = []
    killed: dict[str, int] = {}

    def watch() -> None:
        runs = ran(store, "slow")
        if not runs:
            return
        run = runs[0]
        seen.append((run.state, run.attempts, run.error))
        if not killed and marker.exists() and run.worker is not None:
            killed.update(worker=run.worker["pid"], kernel=ancestries(log)[0][0])
            cluster.kill_machine(run.worker["pid"])

    serve_until(
        scheduler, lambda: bool(killed) and store.count_runs("slow") == 0, timeout=180, each=watch
    )
    (run,) = ran(store, "slow")
    assert run.state == "success" and run.attempts == 2, (run.state, run.error)
    crashed = [e for state, attempts, e in seen if state == "queued" and attempts == 1]
    assert crashed and "left the cluster" in (crashed[-1] or ""), seen
    (other,) = [pid for pid in workers.values() if pid != killed["worker"]]
    assert run.worker is not None and run.worker["pid"] == other
    first, second = ancestries(log)
    assert killed["worker"] in first and other in second
    assert pid_gone(killed["kernel"])  # the dead worker's kernel did not outlive it
    assert Path(run.output_path or "").is_file()


def test_max_active_one_holds_with_two_workers(cluster: Cluster) -> None:
    times = Path.cwd() / "times.txt"
    cells = [
        "import time, os\n"
        f"open({str(times)!r}, 'a').write(f'start {{time.time()}}\\n')\n"
        "time.sleep(2)\n"
        f"open({str(times)!r}, 'a').write(f'end {{time.time()}}\\n')"
    ]
    notebook = write_notebook(Path.cwd() / "one.ipynb", "", cells)
    store = RunStore()
    add_job(store, "one", notebook, hours_ago=2.5, catchup=True, max_active=1)  # 2 or 3 ticks
    scheduler = Scheduler(store, executor="dask", address=cluster.address, echo=lambda _: None)
    most = []
    serve_until(
        scheduler,
        lambda: len(ran(store, "one")) >= 2 and store.count_runs("one") == 0,
        each=lambda: most.append(store.count_running("one")),
    )
    runs = ran(store, "one")
    assert [r.state for r in runs] == ["success"] * len(runs)
    assert max(most) == 1
    events = [line.split() for line in times.read_text().splitlines()]
    order = [e[0] for e in sorted(events, key=lambda e: float(e[1]))]
    assert order == ["start", "end"] * len(runs)  # never two notebooks at once


def test_the_global_limit_counts_runs_waiting_in_the_cluster(cluster: Cluster) -> None:
    """Two jobs, two workers, `--max-running 1`: one notebook at a time on the cluster."""
    times = Path.cwd() / "times.txt"
    cells = [
        "import time\n"
        f"open({str(times)!r}, 'a').write(f'start {{time.time()}}\\n')\n"
        "time.sleep(2)\n"
        f"open({str(times)!r}, 'a').write(f'end {{time.time()}}\\n')"
    ]
    store = RunStore()
    for name in ("a", "b"):
        add_job(store, name, write_notebook(Path.cwd() / f"{name}.ipynb", "", cells))
    scheduler = Scheduler(
        store, executor="dask", address=cluster.address, max_running=1, echo=lambda _: None
    )
    serve_until(scheduler, lambda: len(ran(store)) == 2 and store.count_runs() == 0)
    assert [r.state for r in ran(store)] == ["success"] * 2
    events = [line.split() for line in times.read_text().splitlines()]
    assert [e[0] for e in sorted(events, key=lambda e: float(e[1]))] == ["start", "end"] * 2


KERNEL_PID_THEN_SLEEP = [
    "import os, time\nopen({pidfile!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"
]


def _kernel_sleeper(name: str) -> tuple[Path, Path]:
    pidfile = Path.cwd() / "kernel.pid"
    cells = [c.format(pidfile=str(pidfile)) for c in KERNEL_PID_THEN_SLEEP]
    return write_notebook(Path.cwd() / f"{name}.ipynb", "", cells), pidfile


def test_a_timeout_kills_the_kernel_on_the_worker(cluster: Cluster) -> None:
    notebook, pidfile = _kernel_sleeper("stuck")
    store = RunStore()
    add_job(store, "stuck", notebook, executor="dask", address=cluster.address, timeout=6)
    run, _ = store.create_run("stuck", "manual", utc_now())
    outcome = execute_run(run.id, store=store)
    assert outcome.state == "timed_out", outcome.run.error
    assert "timeout" in (outcome.run.error or "")
    assert pid_gone(int(pidfile.read_text()))
    # the notebook as far as it ran came back
    assert "timeout" in Path(outcome.run.output_path or "").read_text().lower()


def test_cancelling_a_run_kills_its_kernel_on_the_worker(cluster: Cluster) -> None:
    notebook, pidfile = _kernel_sleeper("cancel")
    store = RunStore()
    add_job(store, "cancel", notebook, executor="dask", address=cluster.address)
    run, _ = store.create_run("cancel", "manual", utc_now())
    cancel = threading.Event()
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(outcome=execute_run(run.id, store=store, cancel=cancel))
    )
    thread.start()
    deadline = time.monotonic() + 90
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the kernel did not start"
        time.sleep(0.2)
    cancel.set()
    thread.join(60)
    assert result["outcome"].state == "cancelled"
    assert pid_gone(int(pidfile.read_text()))


def test_an_unreachable_scheduler_is_named(home: Path) -> None:
    nbflow = [sys.executable, "-m", "nbflow"]
    done = subprocess.run(
        [*nbflow, "scheduler", "--once", "--executor", "dask", "--address", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.stderr
    done = subprocess.run(
        [*nbflow, "scheduler", "--once", "--executor", "dask"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "--executor dask needs the Dask scheduler's address" in (
        done.stderr
    )
    # a job whose cluster is down fails its run with that error (and its retries apply)
    notebook = write_notebook(Path.cwd() / "nb.ipynb", "", ["1"])
    store = RunStore()
    add_job(store, "down", notebook, executor="dask", address="tcp://127.0.0.1:9")
    run, _ = store.create_run("down", "manual", utc_now())
    outcome = execute_run(run.id, store=store)
    assert outcome.state == "failed"
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in (outcome.run.error or "")


def test_schedule_add_stores_the_executor_and_refuses_bad_ones(home: Path) -> None:
    notebook = write_notebook(Path.cwd() / "nb.ipynb", "", ["1"])
    nbflow = [sys.executable, "-m", "nbflow"]
    base = [*nbflow, "schedule", "add", "etl", str(notebook), "--cron", "0 2 * * *"]
    bad = subprocess.run([*base, "--address", "tcp://h:8786"], capture_output=True, text=True)
    assert bad.returncode == 2 and "add `--executor dask`" in bad.stderr, bad.stderr
    bad = subprocess.run(
        [*base, "--executor", "dask", "--address", "h:8786"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "tcp://h:8786" in bad.stderr, bad.stderr
    ok = subprocess.run(
        [*base, "--executor", "dask", "--address", "tcp://10.0.0.1:8786"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    spec = RunStore().get_job("etl").spec
    assert (spec["executor"], spec["address"]) == ("dask", "tcp://10.0.0.1:8786")
    shown = subprocess.run([*nbflow, "schedule", "show", "etl"], capture_output=True, text=True)
    assert "executor:   dask at tcp://10.0.0.1:8786" in shown.stdout


def test_missing_distributed_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from nbflow.jobs.dask_runs import check_executor\n"
        "from nbflow.core.errors import JobsError\n"
        "try:\n"
        "    check_executor('dask', 'tcp://127.0.0.1:8786')\n"
        "except JobsError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert 'pip install "nbflow-pipelines[dask]"' in out.stdout
