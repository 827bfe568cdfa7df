"""One writer wins, none is lost: concurrent pointer moves (threads and processes) on a local registry
and on a real S3-compatible server (moto's server mode) each either apply or are refused with a
Conflict; the audit log holds exactly the applied ones; a move made against a revision that is no
longer current is refused."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from learner.registry import Conflict, Registry

PASSED = {"passed": True, "gates": [], "failed": []}
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    """moto's S3-compatible server in a subprocess: real HTTP, real conditional PUTs (If-Match)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path, monkeypatch) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    bucket = f"registry-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/registry"


def versions(root: str, tmp_path: Path, count: int) -> list[str]:
    registry = Registry(root, tmp_path / "cache")
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    return [registry.publish(adapter, {}, PASSED) for _ in range(count)]


def move(root: str, version: str, expected: int | None) -> bool:
    """One writer's canary move in its own Registry (as a replica, the learner or the CLI would)."""
    try:
        Registry(root).canary(version, 0.1, actor=f"writer-{version}", reason="race", expected=expected)
        return True
    except Conflict:
        return False


def test_moves_against_one_revision_apply_once_and_the_rest_are_refused(root: str, tmp_path: Path) -> None:
    names = versions(root, tmp_path, 6)
    with ThreadPoolExecutor(6) as pool:
        applied = list(pool.map(lambda v: move(root, v, 0), names))
    registry = Registry(root)
    assert sum(applied) == 1, applied  # all decided on revision 0: one wins, five are told it moved
    winner = names[applied.index(True)]
    assert registry.read_pointer().canary == winner and registry.read_pointer().revision == 1
    assert [(row["version"], row["revision"]) for row in registry.audit()] == [(winner, 1)]
    with pytest.raises(Conflict, match="expected 0"):
        registry.promote(winner, actor="policy", reason="stale decision", expected=0)


def test_concurrent_operator_moves_from_threads_and_processes_all_land_and_are_all_audited(root: str, tmp_path: Path) -> None:
    names = versions(root, tmp_path, 8)
    with ThreadPoolExecutor(4) as threads:
        in_threads = list(threads.map(lambda v: move(root, v, None), names[:4]))
    with multiprocessing.get_context("spawn").Pool(4) as processes:
        in_processes = processes.starmap(move, [(root, v, None) for v in names[4:]])
    applied = [v for v, ok in zip(names, in_threads + in_processes) if ok]
    registry = Registry(root)
    audit = registry.audit()
    # an operator's move without an expected revision is re-read and applied on top when it loses a race
    assert sorted(row["version"] for row in audit) == sorted(applied) and len(applied) >= 7
    assert [row["revision"] for row in audit] == list(range(1, len(applied) + 1))  # none lost, none twice
    assert registry.read_pointer().revision == len(applied) and registry.read_pointer().canary == audit[-1]["version"]
