"""Executors for the engine's tests: one real Dask cluster per session, and a fixture over executors.

The Dask cluster is the one `DaskExecutor` starts itself (two worker
processes on 127.0.0.1, one thread each), kept for the whole session because
starting one costs about a second. Its `shutdown()` at the end of each run
keeps the cluster, as it does for any executor object a user builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nbflow.core.dask import DaskExecutor

EXECUTORS = ["sequential", "threads", "processes", "dask"]


@pytest.fixture(scope="session")
def dask_executor() -> Iterator[DaskExecutor]:
    executor = DaskExecutor(max_workers=2)
    executor.client.wait_for_workers(2)
    yield executor
    executor.close()


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Any:
    """What to pass as `run(executor=...)`: a name, or the session's Dask executor."""
    if request.param == "dask":
        executor = request.getfixturevalue("dask_executor")
        # A test that killed a worker leaves the nanny restarting it; start from two.
        executor.client.wait_for_workers(2, timeout=30)
        return executor
    return request.param
