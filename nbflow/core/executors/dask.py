"""Run tasks on a Dask cluster: a local one, a running scheduler, or a `distributed.Client`.

Policy:

- **Dask runs, nbflow decides.** The driver plans, checks freshness, retries
  and stores results; the cluster only computes. Each job becomes one
  `client.submit(..., pure=False)`: Dask must run it even if an identical
  call ran before, because nbflow already decided that it has to run.
- **Three ways in.** `executor="dask"` uses this process's local cluster: a
  `LocalCluster` on 127.0.0.1 (worker processes, one thread each; nothing
  listens beyond loopback; TLS with credentials made for the cluster, so no
  other local user can submit work; and no HTTP server at all, not even the
  health and metrics pages Dask serves without a dashboard, which would show
  any local user the workers' logs and call stacks: `dask_nodes`), started on the first job of
  the first such run and kept for later ones, as a notebook's `Client()`
  is kept for the kernel's life. Starting one costs about a second, which
  would otherwise be paid by every run. It grows when a run asks for more
  workers, and stops at exit or with `close_local_cluster()`.
  `DaskExecutor(**cluster_kwargs)` starts a cluster of its own instead,
  closed with the executor.
  `DaskExecutor(address="tcp://host:8786")` connects to a running scheduler;
  `executor=client` uses the user's `distributed.Client`. An executor or a
  client the user made outlives the run: nbflow cancels what the run left
  behind and keeps the connection (call `close()` on your own executor).
- **Large values travel once per worker.** An upstream value bigger than
  `scatter_threshold` bytes is scattered once per run (keyed by the object's
  identity, which the runner keeps for the run) and tasks receive its future;
  a worker that needs it fetches it once, from a peer, and keeps it in memory
  for every task it runs. Small values go inline with the task.
- **Errors come back as values.** The worker-side wrapper formats the user's
  traceback itself, so the driver shows the task's frames, not Dask's.
  A worker that dies fails the task with `WorkerDied` (Dask's `KilledWorker`);
  on the cluster nbflow starts, a task is not retried on another worker by
  Dask (allowed-failures = 0): the runner's own retries decide. Dask blames
  every task assigned to a dead worker, so there each task marks its start
  on the scheduler first; a task that never started is submitted again
  (twice at most) instead of failing.
- **Timeouts.** On the cluster nbflow starts (one thread per worker), a task
  past its timeout kills its worker process, which the nanny restarts, and
  fails with `TaskTimeout`. On a cluster the user brings, killing a process
  could take other users' tasks with it: the task fails with `TaskTimeout`
  at the deadline but its thread runs on until it returns.
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle

from nbflow.core.errors import NbflowError, TaskTimeout, WorkerDied
from nbflow.core.executors.base import TaskAttempt, TaskOutcome, execute_job, register_executor
from nbflow.core.executors.worker import (
    SCATTER_THRESHOLD,
    approx_size,
    picklable_error,
    unpicklable_task,
)

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["DaskExecutor", "close_local_cluster"]

_INLINE_TYPES = (type(None), bool, int, float, complex, str, bytes)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise NbflowError(
            'the Dask executor needs the `distributed` package: pip install "nbflow-pipelines[dask]"'
        ) from exc
    return distributed


_STARTED = "nbflow-started"
"""Scheduler metadata under which the worker wrapper marks a task as started
(one dict per executor run, since several runs may share the local cluster)."""


def _start_local_cluster(distributed: Any, options: dict[str, Any]) -> tuple[Any, Client]:
    """A LocalCluster on loopback, as nbflow runs it, and a client of it."""
    import dask

    settings: dict[str, Any] = {
        "n_workers": os.cpu_count() or 1,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        # Loopback is shared by every user of the machine, and whoever reaches a
        # scheduler runs code as us: TLS with credentials made for this cluster
        # (kept in memory) is the token that keeps them out.
        "security": True,
    }
    settings.update(options)
    # Dask's scheduler and workers serve HTTP (logs, call stacks, task keys) to anyone
    # on loopback, dashboard or not: the nodes of `dask_nodes` start no HTTP server.
    # A caller who asks for a dashboard gets Dask's own classes, and so the dashboard.
    quiet = settings.get("dashboard_address") is None and "worker_class" not in settings
    if quiet:
        from nbflow.core.executors.dask_nodes import QuietLocalCluster, QuietNanny, QuietWorker

        settings["worker_class"] = QuietNanny if settings["processes"] else QuietWorker
    if settings["security"] is True:
        try:
            import cryptography  # noqa: F401  (Dask makes the credentials with it)
        except ImportError as exc:
            raise NbflowError(
                "the local Dask cluster makes TLS credentials with the `cryptography` "
                'package: pip install "nbflow-pipelines[dask]" (or pass security=False to '
                "DaskExecutor for a cluster without them)"
            ) from exc
    # The runner retries; Dask must not rerun a task that killed its worker. No
    # dashboard shows the statistical profiler's samples, and taking them every
    # 10 ms costs a CPU-bound task's worker about a tenth of its time: off.
    with dask.config.set(
        {"distributed.scheduler.allowed-failures": 0, "distributed.worker.profile.enabled": False}
    ):
        cluster = (QuietLocalCluster if quiet else distributed.LocalCluster)(**settings)
    return cluster, distributed.Client(cluster, set_as_default=False)


class _LocalCluster:
    """The process's local cluster behind `executor="dask"` (see the module docstring)."""

    lock = threading.Lock()
    cluster: Any = None
    client: Client | None = None

    @classmethod
    def get(cls, distributed: Any, n_workers: int) -> Client:
        with cls.lock:
            if cls.client is None or not cls._alive():
                cls._close()
                cls.cluster, cls.client = _start_local_cluster(
                    distributed, {"n_workers": n_workers}
                )
            elif len(cls.cluster.worker_spec) < n_workers:
                cls.cluster.scale(n_workers)
            return cls.client

    @classmethod
    def _alive(cls) -> bool:
        return (
            cls.client is not None
            and cls.client.status == "running"
            and cls.cluster.status.name == "running"
        )

    @classmethod
    def _close(cls) -> None:
        client, cluster, cls.client, cls.cluster = cls.client, cls.cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    @classmethod
    def close(cls) -> None:
        with cls.lock:
            cls._close()


def close_local_cluster() -> None:
    """Stop the local cluster that `executor="dask"` keeps for this process.

    It stops at exit anyway; call this to free its worker processes sooner.
    The next `executor="dask"` run starts a new one.
    """
    _LocalCluster.close()


atexit.register(close_local_cluster)


def _run_on_worker(
    task: str,
    fn: Any,
    timeout: float | None,
    start_marks: str | None,
    kill_on_timeout: bool,
    kwargs: dict[str, Any],
) -> tuple[bool, Any, str, float, str]:
    """Runs on a Dask worker: the task, with its traceback formatted where it happened."""
    if start_marks is not None:
        # Dask blames every task assigned to a worker that dies, running or not.
        # A synchronous mark, set before the task's code runs, lets the driver
        # tell the task that killed its worker from the ones that waited there.
        import distributed

        worker = distributed.get_worker()
        key = worker.get_current_task()
        distributed.get_client().set_metadata([_STARTED, start_marks, str(key)], True)
    outcome = execute_job(TaskAttempt(id=0, task=task, fn=fn, kwargs=kwargs, timeout=timeout))
    output = outcome.extra.get("output", "")  # captured here, sent back with the outcome
    if outcome.ok:
        return True, outcome.value, "", outcome.duration, output
    if kill_on_timeout and isinstance(outcome.error, TaskTimeout):
        # Only this task runs in this process (one thread per worker): stop it
        # the only way a thread can be stopped. The nanny starts a new worker.
        os.kill(os.getpid(), signal.SIGKILL)
    assert outcome.error is not None
    return False, picklable_error(outcome.error), outcome.traceback, outcome.duration, output


class DaskExecutor:
    """Runs jobs on a Dask cluster (see the module docstring for the policy)."""

    def __init__(
        self,
        address: str | None = None,
        client: Client | None = None,
        max_workers: int | None = None,
        *,
        scatter_threshold: int = SCATTER_THRESHOLD,
        connect_timeout: float = 10.0,
        security: Any = None,
        shared: bool = False,
        **cluster_kwargs: Any,
    ) -> None:
        """`shared=True` uses the process's local cluster, as `executor="dask"` does.
        `security=`: with `address`, the `distributed.Security` that scheduler requires;
        for the cluster this executor starts, what it uses instead of credentials of its
        own (`False`: none, plain TCP on loopback)."""
        self._distributed = _import_distributed()
        if address is not None and client is not None:
            raise NbflowError("pass either address= or client= to DaskExecutor, not both")
        if client is not None and not isinstance(client, self._distributed.Client):
            raise NbflowError(f"client= must be a distributed.Client, not {type(client).__name__}")
        if (address is not None or client is not None or shared) and cluster_kwargs:
            raise NbflowError(
                f"cluster options {', '.join(sorted(cluster_kwargs))} only apply when "
                "DaskExecutor starts its own LocalCluster; drop them or drop "
                "address=/client=/shared="
            )
        if shared and (address is not None or client is not None):
            raise NbflowError("shared=True uses the local cluster; drop address=/client=")
        if security is not None and (client is not None or shared):
            raise NbflowError(
                "security= is for a scheduler at address= or the cluster DaskExecutor starts; "
                "a client= has its own, and the shared local cluster makes its own credentials"
            )
        if max_workers is not None and (
            not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1
        ):
            raise NbflowError(f"max_workers must be a positive integer, not {max_workers!r}")
        self.address = address
        self.scatter_threshold = scatter_threshold
        self.own_cluster = client is None and address is None
        """True when this executor starts its cluster, and so may kill its workers."""
        self._client: Client | None = client
        self._owns_client = client is None and not shared
        self._shared = shared
        self._cluster: Any = None
        self._cluster_kwargs = cluster_kwargs
        if security is not None and self.own_cluster:
            # LocalCluster takes True (credentials of its own), a Security, or None (none).
            self._cluster_kwargs["security"] = security or None
        self._max_workers = max_workers
        self._marks = uuid.uuid4().hex
        """This executor's key in the scheduler's start marks (`_STARTED`)."""
        self._futures: dict[str, _Submitted] = {}
        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._scattered: dict[int, tuple[Any, Future]] = {}
        self._unsent: list[TaskOutcome] = []
        """Outcomes of jobs that never reached Dask (they did not pickle)."""
        if address is not None:
            self._connect(address, connect_timeout, security)
        if max_workers is not None:
            self.max_workers = max_workers
        elif self.own_cluster:
            workers = cluster_kwargs.get("n_workers") or os.cpu_count() or 1
            self.max_workers = workers * cluster_kwargs.get("threads_per_worker", 1)
        else:
            # A cluster that scales from zero reports no threads yet: keep one job in flight.
            self.max_workers = max(1, sum(self.client.nthreads().values()))

    # --- the cluster -----------------------------------------------------------

    def _connect(self, address: str, timeout: float, security: Any) -> None:
        if (
            address.startswith("tls://")
            and security is None
            and self._distributed.Security().get_connection_args("client")["ssl_context"] is None
        ):
            # Refused here: a Client left to fail in its TLS set-up can leave Dask's
            # event loop unusable for the next client of this process.
            raise NbflowError(
                f"the Dask scheduler at {address} speaks TLS: pass its credentials as "
                "security=distributed.Security(tls_ca_file=..., tls_client_cert=..., "
                "tls_client_key=...), or set them in Dask's configuration (distributed.comm.tls)"
            )
        try:
            self._client = self._distributed.Client(
                address, set_as_default=False, timeout=timeout, security=security
            )
        except OSError as exc:
            raise NbflowError(
                f"cannot reach the Dask scheduler at {address} ({exc}); "
                "check that it runs and the address (tcp://host:8786)"
            ) from exc

    @property
    def client(self) -> Client:
        """The Dask client; the local cluster starts on first use."""
        if self._client is None:
            n_workers = self._max_workers or os.cpu_count() or 1
            if self._shared:
                self._client = _LocalCluster.get(self._distributed, n_workers)
            else:
                self._cluster, self._client = _start_local_cluster(
                    self._distributed, {"n_workers": n_workers, **self._cluster_kwargs}
                )
        return self._client

    @property
    def _kills_on_timeout(self) -> bool:
        return self.own_cluster and self._cluster_kwargs.get("threads_per_worker", 1) == 1

    # --- jobs ------------------------------------------------------------------

    def submit(self, job: TaskAttempt, *, resubmits: int = 0) -> None:
        client = self.client
        try:
            self._submit(client, job, resubmits)
        except Exception as exc:
            try:
                cloudpickle.dumps((job.fn, job.kwargs))
            except Exception as pickling_error:
                self._unsent.append(unpicklable_task(job, pickling_error))
                return
            raise exc

    def _submit(self, client: Client, job: TaskAttempt, resubmits: int) -> None:
        kwargs = {name: self._maybe_scatter(value) for name, value in job.kwargs.items()}
        future = client.submit(
            _run_on_worker,
            job.task,
            job.fn,
            job.timeout,
            self._marks if self.own_cluster else None,
            self._kills_on_timeout,
            kwargs,
            key=f"nbflow-{job.task}-{uuid.uuid4().hex[:12]}",
            pure=False,
            priority=job.priority,
        )
        key = str(future.key)
        self._futures[key] = _Submitted(job, future, time.monotonic(), resubmits)
        future.add_done_callback(lambda _: self._done.put(key))

    def _maybe_scatter(self, value: Any) -> Any:
        if isinstance(value, _INLINE_TYPES) and approx_size(value) < self.scatter_threshold:
            return value
        known = self._scattered.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        if approx_size(value) < self.scatter_threshold:
            return value
        # hash=False: identity, not a content hash, decides what is the same value.
        future = self.client.scatter(value, hash=False)
        # Keeping `value` alive keeps its id from being reused within the run.
        self._scattered[id(value)] = (value, future)
        return future

    def poll(self, timeout: float | None = None) -> list[TaskOutcome]:
        if self._unsent:
            unsent, self._unsent = self._unsent, []
            return unsent
        end = None if timeout is None else time.monotonic() + timeout
        outcomes: list[TaskOutcome] = []
        while self._futures and not outcomes:
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                keys = [self._done.get(timeout=left)]
            except queue.Empty:
                break
            while not self._done.empty():
                keys.append(self._done.get_nowait())
            finished = [self._futures.pop(k) for k in keys if k in self._futures]
            outcomes = self._collect(finished)
        return outcomes

    def _collect(self, finished: list[_Submitted]) -> list[TaskOutcome]:
        succeeded = [s for s in finished if s.future.status == "finished"]
        results = self.client.gather([s.future for s in succeeded]) if succeeded else []
        outcomes = []
        for entry, (ok, payload, traceback, duration, output) in zip(
            succeeded, results, strict=True
        ):
            extra = {"output": output} if output else {}
            if ok:
                outcomes.append(
                    TaskOutcome(job=entry.job, value=payload, duration=duration, extra=extra)
                )
            else:
                outcomes.append(
                    TaskOutcome(
                        job=entry.job,
                        error=payload,
                        traceback=traceback,
                        duration=duration,
                        extra=extra,
                    )
                )
        failed = [s for s in finished if s.future.status != "finished"]
        if failed:
            started = self._started()
            for entry in failed:
                outcome = self._failure(entry, started)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _started(self) -> set[str]:
        if not self.own_cluster:
            return set()
        return set(self.client.get_metadata([_STARTED, self._marks], default={}))

    def _failure(self, entry: _Submitted, started: set[str]) -> TaskOutcome | None:
        """A future that erred in Dask itself: its worker died, or a value it needed was lost.

        Returns None when the job is submitted again instead: it never started,
        it only waited on a worker that another task killed (at most twice, so
        a task that kills its worker before its start mark arrives still ends).
        """
        job, future = entry.job, entry.future
        exc = future.exception()
        elapsed = time.monotonic() - entry.submitted
        if isinstance(exc, self._distributed.scheduler.KilledWorker) or future.status == "lost":
            # Scattered values may have lived on that worker: scatter again when needed.
            self._release_scattered()
        if self.own_cluster and str(future.key) not in started and entry.resubmits < 2:
            self.submit(job, resubmits=entry.resubmits + 1)
            return None
        error: Exception
        if isinstance(exc, self._distributed.scheduler.KilledWorker):
            if job.timeout and elapsed >= job.timeout:
                error = TaskTimeout(job.task, job.timeout)
            else:
                error = WorkerDied(job.task, "Dask lost the worker")
        elif isinstance(exc, Exception):
            error = exc
        else:
            error = WorkerDied(job.task, f"Dask reported the task {future.status}")
        return TaskOutcome(
            job=job, error=error, traceback=f"{type(error).__name__}: {error}\n", duration=elapsed
        )

    def pending(self) -> int:
        return len(self._futures) + len(self._unsent)

    def _release_scattered(self) -> None:
        for _, future in self._scattered.values():
            future.release()
        self._scattered.clear()

    def shutdown(self) -> None:
        """Cancel what the run left running and free its scattered values; the cluster stays."""
        if self._client is not None and self._futures:
            self._client.cancel([s.future for s in self._futures.values()])
        self._futures.clear()
        self._unsent.clear()
        self._release_scattered()
        while not self._done.empty():
            self._done.get_nowait()
        if self._client is not None and self.own_cluster:
            self._client.set_metadata([_STARTED, self._marks], {})

    def close(self) -> None:
        """Disconnect; stop the local cluster if this executor started it (never a user's
        client, nor the process's shared one: see `close_local_cluster`)."""
        if self._client is not None and self._owns_client:
            self._client.close()
        if self._owns_client or self._shared:
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.close()


@dataclass(slots=True)
class _Submitted:
    job: TaskAttempt
    future: Future
    submitted: float
    resubmits: int


register_executor("dask", lambda n: DaskExecutor(max_workers=n, shared=True))
register_executor(
    "dask-client",
    lambda client, max_workers=None: DaskExecutor(client=client, max_workers=max_workers),  # type: ignore[misc]
)
