"""Dask's scheduler, nanny and worker without an HTTP server, for the cluster nbflow starts.

Dask starts a plain-HTTP server on every scheduler and worker, dashboard or
not: health checks, Prometheus metrics, worker lists, logs and call stacks
(with task keys and file paths). On 127.0.0.1 it answers every local user,
and no Dask setting turns it off (`dashboard_address=None` only picks a free
port) or puts credentials in front of it. The local cluster's other ports
speak TLS with credentials made for the cluster (`nbflow.core.executors.dask`), so the
HTTP server was the only thing an outsider could read. These subclasses
never start it: the node keeps an empty HTTP application (which Dask stops
at close) and no socket listens. Nothing nbflow does uses those pages.

A separate module because it imports `distributed` at import time, and a
worker process started by the nanny imports its worker class by name.
"""

from __future__ import annotations

from typing import Any

from distributed import LocalCluster, Nanny, Scheduler, Worker
from distributed.http.routing import RoutingApplication

__all__ = ["QuietLocalCluster", "QuietNanny", "QuietScheduler", "QuietWorker"]


class _NoHTTP:
    http_application: RoutingApplication

    def start_http_server(
        self, routes: Any, dashboard_address: Any, default_port: int = 0, ssl_options: Any = None
    ) -> None:
        self.http_application = RoutingApplication([])


class QuietScheduler(_NoHTTP, Scheduler):
    """A Dask scheduler with no HTTP server."""


class QuietWorker(_NoHTTP, Worker):
    """A Dask worker with no HTTP server."""


class QuietNanny(Nanny):
    """A nanny whose worker process runs a `QuietWorker` (the nanny itself serves no HTTP)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("worker_class", QuietWorker)
        super().__init__(*args, **kwargs)


class QuietLocalCluster(LocalCluster):
    """A `LocalCluster` whose scheduler is a `QuietScheduler`.

    `LocalCluster` builds its scheduler's spec itself; the class is swapped in
    just before the cluster starts it. Pass `worker_class=QuietNanny` (worker
    processes) or `QuietWorker` (threads) for quiet workers.
    """

    async def _start(self) -> None:
        self.scheduler_spec = {**self.scheduler_spec, "cls": QuietScheduler}
        await super()._start()
