"""The Dask executor on a real `distributed` scheduler and worker processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from distributed import Security
from distributed.comm import connect

from nbflow.core.errors import NbflowError, TaskTimeout, WorkerDied
from nbflow.core.executors.base import resolve_executor
from nbflow.core.executors.dask import DaskExecutor, close_local_cluster

from .test_parallel import (
    Payload,
    drain,
    fail,
    job,
    kill_self,
    payload_size,
    pid_alive,
    sleep_and_record,
    square,
)


def speaks_to(address: str, connection_args: dict) -> bool:
    """Whether a Dask comm with these connection arguments gets an answer from `address`."""

    async def identify() -> bool:
        try:
            comm = await connect(address, timeout=2, **connection_args)
        except OSError:
            return False
        try:
            await comm.write({"op": "identity"})
            return isinstance(await comm.read(), dict)
        except OSError:
            return False
        finally:
            comm.abort()

    return asyncio.run(identify())


@pytest.fixture
def dask(dask_executor: DaskExecutor) -> DaskExecutor:
    return dask_executor  # with both workers up (see conftest)


def test_values_and_user_tracebacks_come_back(dask: DaskExecutor) -> None:
    for i in range(4):
        dask.submit(job(square, f"sq{i}", x=i))
    dask.submit(job(fail, "bad", message="no rows"))
    outcomes = drain(dask)
    assert {f"sq{i}": outcomes[f"sq{i}"].value for i in range(4)} == {
        f"sq{i}": i * i for i in range(4)
    }
    bad = outcomes["bad"]
    assert isinstance(bad.error, ValueError) and str(bad.error) == "no rows"
    assert "raise ValueError(message)" in bad.traceback
    assert "nbflow/core" not in bad.traceback and "distributed" not in bad.traceback


def test_a_killed_worker_fails_only_its_task(dask: DaskExecutor) -> None:
    dask.submit(job(kill_self, "dies", signal_name="SIGKILL"))
    for i in range(3):
        dask.submit(job(square, f"sq{i}", x=i))
    outcomes = drain(dask)
    died = outcomes.pop("dies")
    assert isinstance(died.error, WorkerDied) and died.error.task == "dies"
    assert {n: o.value for n, o in outcomes.items()} == {f"sq{i}": i * i for i in range(3)}


def test_timeout_kills_the_worker_process(dask: DaskExecutor, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    dask.submit(job(sleep_and_record, "slow", path=str(pid_file), seconds=60, timeout=1.0))
    dask.submit(job(square, "quick", x=3))
    outcomes = drain(dask)
    assert isinstance(outcomes["slow"].error, TaskTimeout)
    assert outcomes["quick"].value == 9
    assert not pid_alive(int(pid_file.read_text()))


def test_a_large_value_travels_once_per_worker(dask: DaskExecutor, tmp_path: Path) -> None:
    log = tmp_path / "loads"
    log.write_text("")
    value = Payload(str(log), 200_000)
    for i in range(6):
        dask.submit(job(payload_size, f"use{i}", payload=value, i=i))
    outcomes = drain(dask)
    assert sorted(o.value for o in outcomes.values()) == [(200_000, i) for i in range(6)]
    loads = Counter(log.read_text().split())
    assert 1 <= sum(loads.values()) <= 2 and set(loads.values()) == {1}, loads
    assert str(os.getpid()) not in loads

    # The same value under a threshold it does not reach goes inline, once per task.
    log.write_text("")
    inline = DaskExecutor(client=dask.client, scatter_threshold=10**12)
    for i in range(6):
        inline.submit(job(payload_size, f"use{i}", payload=value, i=i))
    drain(inline)
    inline.shutdown()
    on_workers = Counter(log.read_text().split())
    on_workers.pop(str(os.getpid()), None)  # the in-process scheduler unpickles task specs too
    assert sum(on_workers.values()) == 6


def test_connects_to_a_running_scheduler(dask: DaskExecutor) -> None:
    address = dask.client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    with pytest.raises(NbflowError, match=r"speaks TLS: pass its credentials as security="):
        DaskExecutor(address=address, connect_timeout=2)
    with DaskExecutor(address=address, security=dask.client.security) as remote:
        assert remote.max_workers == 2 and not remote.own_cluster
        remote.submit(job(square, "remote", x=6))
        assert drain(remote)["remote"].value == 36
    assert dask.client.status == "running"


def test_a_client_passed_directly_stays_open(dask: DaskExecutor) -> None:
    executor = resolve_executor(dask.client, None)
    assert isinstance(executor, DaskExecutor) and executor.max_workers == 2
    executor.submit(job(square, "direct", x=4))
    assert drain(executor)["direct"].value == 16
    executor.shutdown()
    executor.close()
    assert dask.client.status == "running"


def test_executor_by_name_keeps_one_loopback_cluster_for_the_process() -> None:
    try:
        first = resolve_executor("dask", 1)
        assert isinstance(first, DaskExecutor) and first._client is None  # nothing starts yet
        first.submit(job(square, "one", x=5))
        workers = first.client.scheduler_info()["workers"]
        assert [w["host"] for w in workers.values()] == ["127.0.0.1"]
        assert drain(first)["one"].value == 25
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = {
            c.laddr.ip for p in processes for c in p.net_connections("inet") if c.status == "LISTEN"
        }
        assert listening == {"127.0.0.1"}
        address = first.client.scheduler.address
        # Loopback is shared with the machine's other users: without this cluster's
        # credentials, nobody can talk to its scheduler (which would run their code as us),
        # neither in plain TCP nor in TLS with credentials of their own.
        assert address.startswith("tls://127.0.0.1:")
        assert not speaks_to(address.replace("tls://", "tcp://"), {})
        assert not speaks_to(address, Security.temporary().get_connection_args("client"))
        assert speaks_to(address, first.client.security.get_connection_args("client"))
        first.shutdown()  # the end of the run: the cluster stays for the next one
        first.close()

        second = resolve_executor("dask", 2)
        assert isinstance(second, DaskExecutor)
        second.submit(job(square, "two", x=6))
        assert second.client.scheduler.address == address  # the same cluster, not a new one
        second.client.wait_for_workers(2, timeout=60)  # grown to what this run asks for
        assert drain(second)["two"].value == 36
        second.shutdown()
        assert second.client.status == "running"
    finally:
        close_local_cluster()
    third = resolve_executor("dask", 1)
    assert isinstance(third, DaskExecutor)
    try:
        third.submit(job(square, "three", x=7))  # a new cluster after close_local_cluster()
        assert drain(third)["three"].value == 49
        assert third.client.scheduler.address != address
        third.shutdown()
    finally:
        close_local_cluster()


SCRIPT_WITH_DASK_BY_NAME = """
import os, psutil
import nbflow as nf

def main():
    pipe = nf.Pipeline("bydask", cache_dir={cache!r})

    @pipe.task
    def pid() -> int:
        return os.getpid()

    result = pipe.run(executor="dask", max_workers=1)
    children = [c.pid for c in psutil.Process().children(recursive=True)]
    print("worker", result["pid"], "children", *children, flush=True)

if __name__ == "__main__":
    main()
"""


def test_the_local_cluster_stops_when_the_process_exits(tmp_path: Path) -> None:
    script = tmp_path / "by_name.py"
    script.write_text(SCRIPT_WITH_DASK_BY_NAME.format(cache=str(tmp_path / "cache")))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    worker, children = int(words[1]), [int(w) for w in words[3:]]
    assert worker in children  # the task ran in a worker process, a child of the script
    # None outlives the script (those still exiting get a few seconds).
    deadline = time.monotonic() + 10
    while (alive := [pid for pid in children if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, [psutil.Process(pid).cmdline() for pid in alive]


def test_unreachable_scheduler_is_named() -> None:
    with pytest.raises(
        NbflowError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        DaskExecutor(address="tcp://127.0.0.1:9", connect_timeout=0.5)


def test_conflicting_arguments_are_refused(dask: DaskExecutor) -> None:
    with pytest.raises(NbflowError, match="either address= or client="):
        DaskExecutor(address="tcp://127.0.0.1:9", client=dask.client)
    with pytest.raises(NbflowError, match="cluster options n_workers only apply"):
        DaskExecutor(client=dask.client, n_workers=3)
    with pytest.raises(NbflowError, match="client= must be a distributed.Client"):
        DaskExecutor(client="tcp://127.0.0.1:9")  # type: ignore[arg-type]
    with pytest.raises(NbflowError, match="a client= has its own"):
        DaskExecutor(client=dask.client, security=False)


def test_a_cluster_of_its_own_can_go_without_credentials_when_asked() -> None:
    with DaskExecutor(max_workers=1, security=False) as plain:
        plain.submit(job(square, "plain", x=3))
        assert drain(plain)["plain"].value == 9
        address = plain.client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:")  # loopback still, no TLS
        assert speaks_to(address, {})


def test_missing_distributed_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from nbflow.core.executors.base import resolve_executor\n"
        "from nbflow.core.errors import NbflowError\n"
        "try:\n"
        "    resolve_executor('dask', None)\n"
        "except NbflowError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert 'pip install "nbflow-pipelines[dask]"' in out.stdout


SCRIPT_WITH_LISTENING_CLUSTERS = """
import os, sys, time
import nbflow as nf
from nbflow.core.executors.dask import DaskExecutor

pipe = nf.Pipeline("ports", cache_dir={cache!r})

@pipe.task
def pid() -> int:
    return os.getpid()

@pipe.task(timeout=0.5, cache=False)
def stuck() -> None:
    time.sleep(60)  # past its timeout: its worker is killed and the nanny starts a new one

def main():
    assert pipe.run(["pid"], executor="dask", max_workers=2).ok  # the shared local cluster
    assert not pipe.run(["stuck"], executor="dask", max_workers=2, raise_on_failure=False).ok
    assert pipe.run(["pid"], executor="dask", max_workers=2, force=True).ok  # after the restart
    own = DaskExecutor(max_workers=1)  # a cluster of the executor's own
    assert pipe.run(["pid"], executor=own, force=True).ok
    print("ready", flush=True)
    sys.stdin.readline()
    own.close()

if __name__ == "__main__":
    main()
"""


def answers_http(port: int) -> bytes:
    """What a plain HTTP request without credentials gets from 127.0.0.1:`port`."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        sock.settimeout(3)
        try:
            return sock.recv(200)
        except (TimeoutError, ConnectionResetError):
            return b""


def test_no_port_of_the_local_clusters_answers_http(tmp_path: Path) -> None:
    """Dask's HTTP pages (worker lists, logs, call stacks) answer every local user on loopback:
    the clusters nbflow starts serve none, on the scheduler, the nannies or the workers,
    a restarted worker included. Every listening TCP port of the script's processes is tried."""
    script = tmp_path / "ports.py"
    script.write_text(SCRIPT_WITH_LISTENING_CLUSTERS.format(cache=str(tmp_path / "cache")))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        ports = {
            (p.pid, c.laddr.port)
            for p in tree
            for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
        owners = {pid for pid, _ in ports}
        # the driver (both schedulers and the three nannies) and the three worker processes
        assert len(owners) >= 4 and len(ports) >= 8, ports
        answers = {port: answers_http(port) for _, port in ports}
        assert not {port: a for port, a in answers.items() if a.startswith(b"HTTP/")}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
