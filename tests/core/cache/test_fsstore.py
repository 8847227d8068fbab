"""The shared cache (`nbflow.core.cache.fsstore`) against a real S3-protocol server and a shared folder.

The server is moto's standalone server in its own process on 127.0.0.1
(`tests/core/cache/s3server.py`); pipelines run in separate Python processes
(`tests/fixtures/pipelines/shared_cache.py`), each with a home of its own and
the team secret, as two machines would. Tests that need the server are marked
`s3` (`pytest -m "not s3"` leaves them out); the `file://` ones always run.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.core.cache.fsstore import FsStore, team_secret
from nbflow.core.errors import CacheError
from tests.conftest import FIXTURES
from tests.core.cache.s3server import CREDENTIALS, MotoServer, Relay, moto_server

SECRET = "team-secret-for-tests-" + "k" * 20
SCRIPT = FIXTURES / "pipelines" / "shared_cache.py"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _team_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_CACHE_SECRET", SECRET)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def _point_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Send this process (fsspec's config) and child processes (its env form) to `endpoint`."""
    import fsspec.config

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})


def _new_bucket(endpoint: str, **credentials: str) -> str:
    import s3fs

    name = f"nbflow-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint,
        key=credentials.get("key", CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        secret=credentials.get("secret", CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
        skip_instance_cache=True,
    )
    fs.mkdir(name)
    return name


@pytest.fixture
def bucket(s3: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    _point_at(monkeypatch, s3.endpoint)
    return _new_bucket(s3.endpoint)


def _objects(endpoint: str, bucket: str) -> dict[str, int]:
    """Every object in `bucket`: name -> size (read with a plain s3fs client)."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    found = fs.find(bucket, detail=True)
    return {path[len(bucket) + 1 :]: int(info["size"]) for path, info in found.items()}


def run_child(
    url: str, tmp: Path, machine: str, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the fixture pipeline in a new process with a home of its own (another machine)."""
    calls = tmp / f"{machine}.calls"
    full_env = {
        **os.environ,
        "NBFLOW_HOME": str(tmp / f"home-{machine}"),
        "CALLS": str(calls),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), url],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=tmp,
    )


def outcome(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def calls(tmp: Path, machine: str) -> list[str]:
    path = tmp / f"{machine}.calls"
    return path.read_text().split() if path.exists() else []


# --- two machines, one cache -----------------------------------------------------------


@pytest.mark.s3
def test_two_processes_on_one_bucket_the_second_reruns_nothing(bucket: str, tmp_path: Path):
    url = f"s3://{bucket}/team"
    first = outcome(run_child(url, tmp_path, "a", BIG_MB="2"))
    assert first["executed"] == ["raw", "total", "summary"]
    second = outcome(run_child(url, tmp_path, "b", BIG_MB="2"))
    assert second["executed"] == [] and sorted(second["cached"]) == ["raw", "summary", "total"]
    assert second["total"] == first["total"] and second["raw_len"] == 2**18
    assert calls(tmp_path, "b") == []
    # Machine b keeps a local copy of the large value it read.
    local = list((tmp_path / "home-b" / "shared-cache").glob("*/values/*/*.nbv"))
    assert len(local) == 1


def test_two_processes_on_a_shared_folder(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"
    first = outcome(run_child(url, tmp_path, "a", BIG_MB="2"))
    second = outcome(run_child(url, tmp_path, "b", BIG_MB="2"))
    assert first["executed"] == ["raw", "total", "summary"] and second["executed"] == []
    assert second["summary"] == first["summary"]
    names = {p.relative_to(tmp_path / "shared").parts[0] for p in (tmp_path / "shared").rglob("*")}
    assert {"values", "records", "index", "nbflow-cache.json"} <= names
    assert not any((tmp_path / "shared").rglob("*.sqlite*"))  # no SQLite on the shared folder


@pytest.mark.parametrize("where", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_processes_writing_at_once_corrupt_nothing(where: str, tmp_path: Path, request):
    if where == "s3":
        url = f"s3://{request.getfixturevalue('bucket')}/team"
    else:
        url = f"file://{tmp_path / 'shared'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIG_MB": "8"}
    children = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**env, "NBFLOW_HOME": str(tmp_path / f"home-{m}"), "CALLS": str(tmp_path / m)},
        )
        for m in ("a", "b")
    ]
    results = [child.communicate(timeout=240) for child in children]
    assert [c.returncode for c in children] == [0, 0], [r[1][-2000:] for r in results]
    totals = {json.loads(out.strip().splitlines()[-1])["total"] for out, _ in results}
    assert len(totals) == 1
    third = outcome(run_child(url, tmp_path, "c", BIG_MB="8"))
    assert third["executed"] == [] and third["total"] in totals


def test_a_lost_index_costs_reads_never_a_wrong_result(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"
    outcome(run_child(url, tmp_path, "a"))
    for segment in (tmp_path / "shared" / "index").rglob("*.seg"):
        segment.unlink()  # every index update lost
    again = outcome(run_child(url, tmp_path, "b"))
    assert again["executed"] == []  # the records are found under the keys computed
    assert calls(tmp_path, "b") == [] and again["summary"] == {"total": again["total"]}


def test_a_rerun_decides_with_a_handful_of_requests_whatever_the_number_of_tasks(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"

    def chain(n: int) -> nf.Pipeline:
        pipe = nf.Pipeline(f"chain{n}", cache_dir=url)

        def step(x: int) -> int:
            return x + 1

        pipe.task(lambda: 0, name="t0")
        for i in range(1, n):
            pipe.task(step, name=f"t{i}", inputs={"x": f"t{i - 1}"})
        return pipe

    counts = {}
    for n in (10, 200):
        chain(n).run()
        fresh = chain(n)
        fresh._store = FsStore(url)  # a new store object: nothing known in memory
        fresh._store_dir = url
        r = fresh.run()
        assert r.executed == [] and len(r.cached) == n
        counts[n] = fresh.store.requests
    assert counts[200] == counts[10] <= 6


def test_a_reader_compacts_many_index_segments_without_losing_an_entry(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"
    from nbflow.core.cache.serialize import serialize

    writer = FsStore(url)
    for i in range(12):  # twelve flushes, twelve index segments (nobody reads meanwhile)
        record = {"key": f"k{i}", "pipeline": "many", "task": f"t{i}", "created": time.time()}
        writer.put(record, serialize(i))
        writer.flush()
    folder = tmp_path / "shared" / "index" / "many"
    assert len(list(folder.glob("*.seg"))) == 12
    index = FsStore(url).index("many")
    assert sorted(index) == sorted(f"t{i}" for i in range(12))
    assert len(list(folder.glob("*.seg"))) == 1
    assert FsStore(url).index("many").keys() == index.keys()


def test_state_changes_merge_newest_first_and_invalidate_reaches_other_machines(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"
    pipe = nf.Pipeline("p", cache_dir=url)
    pipe.task(lambda: 1, name="a")
    pipe.run()
    other = nf.Pipeline("p", cache_dir=url)
    other.task(lambda: 1, name="a")
    other._store = FsStore(url)
    other._store_dir = url
    assert other.status()["a"].state == "fresh"
    pipe.invalidate("a")
    assert other.explain("a").endswith("invalidated")
    assert other.run().executed == ["a"]


# --- crashes, tampering, credentials, the network --------------------------------------


@pytest.mark.s3
def test_sigkill_during_a_large_upload_leaves_nothing_readable(
    bucket: str, s3: MotoServer, tmp_path: Path
):
    url = f"s3://{bucket}/team"
    # 120 MB: s3fs uploads it in parts; the hook kills the process after the first part.
    killed = run_child(url, tmp_path, "a", BIG_MB="120", NBFLOW_FAULT="fsstore-mid-upload")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert calls(tmp_path, "a") == ["raw"]
    left = _objects(s3.endpoint, bucket)
    assert not [n for n in left if "/values/" in n or "/records/" in n], left
    other = outcome(run_child(url, tmp_path, "b", BIG_MB="120"))
    assert other["executed"] == ["raw", "total", "summary"]
    assert other["raw_len"] == 120 * 2**20 // 8
    again = outcome(run_child(url, tmp_path, "c", BIG_MB="120"))
    assert again["executed"] == [] and again["total"] == other["total"]


def test_sigkill_during_a_copy_to_a_shared_folder_leaves_nothing_readable(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"
    killed = run_child(url, tmp_path, "a", BIG_MB="40", NBFLOW_FAULT="fsstore-mid-upload")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not list((tmp_path / "shared").rglob("*.nbv"))
    assert not (tmp_path / "shared" / "records").exists()
    other = outcome(run_child(url, tmp_path, "b", BIG_MB="40"))
    assert other["executed"] == ["raw", "total", "summary"]
    store = FsStore(url)
    assert store.gc(grace=0)["files"] == 0  # the partial copy in tmp/ is gone, values stay
    assert not list((tmp_path / "shared" / "tmp").iterdir())
    assert outcome(run_child(url, tmp_path, "c", BIG_MB="40"))["executed"] == []


PLANTED = Path("/nonexistent")


class _Planted:
    """Unpickling this creates a file: it shows whether a tampered record was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


@pytest.mark.s3
def test_a_tampered_record_or_value_is_refused_and_never_unpickled(
    bucket: str, s3: MotoServer, tmp_path: Path
):
    import s3fs

    url = f"s3://{bucket}/team"
    outcome(run_child(url, tmp_path, "a", BIG_MB="2"))
    fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True)
    planted = tmp_path / "planted"
    payload = pickle.dumps(_Planted(str(planted)))
    names = _objects(s3.endpoint, bucket)
    for name in names:
        if "/records/" in name or "/index/" in name:
            raw = fs.cat_file(f"{bucket}/{name}")
            # A forged object: the right tag and length of signature, the attacker's pickle.
            fs.pipe_file(f"{bucket}/{name}", raw[:36] + payload)
    done = run_child(url, tmp_path, "b", BIG_MB="2")
    assert outcome(done)["executed"] == ["raw", "total", "summary"]
    assert "has a bad signature" in done.stderr and f"s3://{bucket}/team" in done.stderr
    assert not planted.exists()
    # The recomputed records were written afresh: a third machine reruns nothing.
    assert outcome(run_child(url, tmp_path, "c", BIG_MB="2"))["executed"] == []
    assert calls(tmp_path, "c") == []
    assert not planted.exists()
    # A forged record left in the bucket: gc judges nothing while it is there.
    record = next(n for n in _objects(s3.endpoint, bucket) if "/records/" in n)
    fs.pipe_file(f"{bucket}/{record}", fs.cat_file(f"{bucket}/{record}")[:36] + payload)
    with pytest.raises(CacheError, match="fail their signature check.*Nothing was deleted"):
        FsStore(url).gc(refuse_unverified=True)
    assert _objects(s3.endpoint, bucket).keys() >= {record}


@pytest.mark.s3
def test_a_value_object_with_flipped_bytes_is_recomputed_not_loaded(
    bucket: str, s3: MotoServer, tmp_path: Path
):
    import s3fs

    url = f"s3://{bucket}/team"
    outcome(run_child(url, tmp_path, "a", BIG_MB="2"))
    fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True)
    (value,) = [n for n in _objects(s3.endpoint, bucket) if "/values/" in n]
    raw = bytearray(fs.cat_file(f"{bucket}/{value}"))
    raw[len(raw) // 2] ^= 0xFF
    fs.pipe_file(f"{bucket}/{value}", bytes(raw))
    done = run_child(url, tmp_path, "b", BIG_MB="2")
    # Every record holds: the tasks are fresh; the value fails its digest when loaded, so it
    # is recomputed (never unpickled), and the bad object is replaced by a good one.
    assert outcome(done)["executed"] == [] and calls(tmp_path, "b") == ["raw"]
    assert "value digest mismatch" in done.stderr
    assert fs.cat_file(f"{bucket}/{value}") != bytes(raw)
    third = outcome(run_child(url, tmp_path, "c", BIG_MB="2"))
    assert third["raw_len"] == 2**18 and calls(tmp_path, "c") == []


@pytest.mark.s3
def test_wrong_credentials_give_a_clear_error_naming_the_bucket(tmp_path: Path, monkeypatch):
    import boto3

    # A server that checks credentials after the first four requests (bucket, user, key, policy).
    with moto_server(tmp_path / "auth.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as server:
        _point_at(monkeypatch, server.endpoint)
        bucket = f"nbflow-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", endpoint_url=server.endpoint)
        iam.create_user(UserName="team")
        key = iam.create_access_key(UserName="team")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip
        iam.put_user_policy(UserName="team", PolicyName="s3", PolicyDocument=json.dumps(policy))
        url = f"s3://{bucket}/team"
        wrong = run_child(url, tmp_path, "a", AWS_ACCESS_KEY_ID="nobody", timeout=120)
        assert wrong.returncode != 0
        assert f"access to bucket `{bucket}`" in wrong.stderr and "credentials" in wrong.stderr
        right = run_child(
            url,
            tmp_path,
            "b",
            AWS_ACCESS_KEY_ID=key["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
        )
        assert outcome(right)["executed"] == ["raw", "total", "summary"]


@pytest.mark.s3
def test_the_network_gone_mid_run_fails_clearly_and_corrupts_nothing(
    s3: MotoServer, tmp_path: Path, monkeypatch
):
    relay = Relay(s3.port)
    _point_at(monkeypatch, relay.endpoint)
    bucket = _new_bucket(s3.endpoint)
    url = f"s3://{bucket}/team"
    gate = tmp_path / "gate"
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "NBFLOW_HOME": str(tmp_path / "home-a"),
            "CALLS": str(tmp_path / "a.calls"),
            "PYTHONPATH": str(ROOT),
            "BIG_MB": "2",
            "GATE": str(gate),
        },
    )
    deadline = time.monotonic() + 120
    while not Path(f"{gate}.waiting").exists():
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    relay.pull()  # the network is gone while `total` runs
    gate.touch()
    started = time.monotonic()
    _, stderr = child.communicate(timeout=120)  # never hangs
    assert child.returncode != 0
    assert f"cannot reach cache `{url}`" in stderr, stderr[-3000:]
    assert time.monotonic() - started < 90
    relay.plug()
    # Whatever was written verifies; a rerun computes only what was not stored.
    store = FsStore(url)
    with_warnings = store.info()
    assert with_warnings["unverified_records"] == 0
    done = outcome(run_child(url, tmp_path, "b", BIG_MB="2"))
    assert set(done["executed"]) <= {"raw", "total", "summary"} and "summary" in done["executed"]
    assert outcome(run_child(url, tmp_path, "c", BIG_MB="2"))["executed"] == []
    relay.pull()


# --- settings, secrets, gc ---------------------------------------------------------------


def test_a_shared_cache_without_a_secret_is_a_clear_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("NBFLOW_CACHE_SECRET")
    monkeypatch.setenv("NBFLOW_CACHE_URL", f"file://{tmp_path / 'shared'}")
    pipe = nf.Pipeline("p")
    pipe.task(lambda: 1, name="a")
    with pytest.raises(CacheError, match=r"NBFLOW_CACHE_SECRET nor the `cache.secret` setting"):
        pipe.run()
    monkeypatch.setenv("NBFLOW_CACHE_SECRET", "short")
    with pytest.raises(CacheError, match="at least 32"):
        team_secret("file:///x")


def test_cache_url_setting_sends_pipelines_without_cache_dir_to_the_shared_cache(
    tmp_path: Path, home: Path
):
    from click.testing import CliRunner

    from nbflow.cli import cli

    url = f"file://{tmp_path / 'shared'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["settings", "set", "cache.url", url]).exit_code == 0
    assert runner.invoke(cli, ["settings", "set", "cache.secret", "s" * 40]).exit_code == 0
    shown = runner.invoke(cli, ["settings", "show"]).output
    assert f"cache.url = '{url}'" in shown and "s" * 40 not in shown
    assert oct((home / "cache.json").stat().st_mode & 0o777) == "0o600"
    pipe = nf.Pipeline("p")
    pipe.task(lambda: 1, name="a")
    pipe.run()
    assert isinstance(pipe.store, FsStore) and (tmp_path / "shared" / "records" / "p").is_dir()
    info = runner.invoke(cli, ["cache", "info"])
    assert f"cache:        {url}" in info.output and "p: 1" in info.output


def test_gc_keeps_young_and_referenced_values_and_refuses_a_foreign_prefix(tmp_path: Path):
    from click.testing import CliRunner

    from nbflow.cli import cli

    url = f"file://{tmp_path / 'shared'}"
    pipe = nf.Pipeline("p", cache_dir=url)
    pipe.task(lambda: b"x" * 400_000, name="big")
    pipe.run()
    orphan = tmp_path / "shared" / "values" / "ab" / ("ab" * 20 + ".nbv")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"NBV1 left by a crash")
    store = FsStore(url)
    assert store.gc()["files"] == 0  # younger than the grace period: its record may be coming
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    assert store.gc()["files"] == 1 and not orphan.exists()
    assert pipe.run().executed == []  # the referenced value stayed
    # A folder that is no nbflow cache of this team: nothing is deleted.
    foreign = tmp_path / "data"
    (foreign / "values" / "ab").mkdir(parents=True)
    keep = foreign / "values" / "ab" / ("ab" * 20 + ".nbv")
    keep.write_bytes(b"someone's data")
    os.utime(keep, (0, 0))
    result = CliRunner().invoke(cli, ["cache", "gc", "--cache-dir", f"file://{foreign}"])
    assert result.exit_code == 0 and "nothing to collect" in result.output
    with pytest.raises(CacheError, match="Nothing was deleted"):
        FsStore(f"file://{foreign}").gc()
    assert keep.exists()


def test_clear_cache_removes_exactly_one_pipeline(tmp_path: Path):
    url = f"file://{tmp_path / 'shared'}"
    pipes = {}
    for name in ("sales", "sales2", "sales:eu"):
        pipes[name] = nf.Pipeline(name, cache_dir=url)
        pipes[name].task(lambda: 1, name="a")
        pipes[name].run()
    assert pipes["sales"].clear_cache() == 1
    assert pipes["sales"].run().executed == ["a"]
    assert pipes["sales2"].run().executed == [] and pipes["sales:eu"].run().executed == []
