"""Executors for the engine's tests: one real Dask cluster per session, and a fixture over executors.

The Dask cluster is the one `DaskExecutor` starts itself (two worker
processes on 127.0.0.1, one thread each), kept for the whole session because
starting one costs about a second. Its `shutdown()` at the end of each run
keeps the cluster, as it does for any executor object a user builds.

Some tests kill a worker on purpose; its nanny restarts it. Each test gets the
cluster with both workers back — and a new cluster if a worker did not come
back in time (on a loaded machine a restart can take long), so one slow
restart never fails the tests that follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nbflow.core.executors.dask import DaskExecutor

EXECUTORS = ["sequential", "threads", "processes", "dask"]


class _SessionCluster:
    """The session's Dask executor, replaced when a killed worker did not come back."""

    def __init__(self) -> None:
        self.executor = self._start()

    @staticmethod
    def _start() -> DaskExecutor:
        executor = DaskExecutor(max_workers=2)
        executor.client.wait_for_workers(2, timeout=60)
        return executor

    def with_both_workers(self) -> DaskExecutor:
        try:
            self.executor.client.wait_for_workers(2, timeout=30)
        except TimeoutError:
            self.executor.close()
            self.executor = self._start()
        return self.executor


@pytest.fixture(scope="session")
def _dask_cluster() -> Iterator[_SessionCluster]:
    cluster = _SessionCluster()
    yield cluster
    cluster.executor.close()


@pytest.fixture
def dask_executor(_dask_cluster: _SessionCluster) -> DaskExecutor:
    """The session's Dask executor, with both workers up."""
    return _dask_cluster.with_both_workers()


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Any:
    """What to pass as `run(executor=...)`: a name, or the session's Dask executor."""
    if request.param == "dask":
        return request.getfixturevalue("dask_executor")
    return request.param
