"""`rlhf-loop up` as a user runs it: broker, serving and learner supervised on one machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer

from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.slow


def _children(log: Path) -> dict[str, int]:
    """Latest pid of each child, from the supervisor's structured log."""
    pids: dict[str, int] = {}
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"child.' in line:
            event = json.loads(line)
            if "pid" in event:
                pids[event["child"]] = event["pid"]
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split()[2] != "Z"


def test_up_serves_accepts_produce_restarts_and_stops_cleanly(prepared_model: Path, tmp_path: Path) -> None:
    port, broker_port = free_port(), free_port()
    log = tmp_path / "up.log"
    env = {
        **os.environ, "RLHF_HOME": str(tmp_path), "RLHF_MODEL": str(prepared_model),
        "RLHF_BROKER_PORT": str(broker_port), "RLHF_LEARNER_METRICS_PORT": str(free_port()),
        # the session's serving engine is still up beside this one: reserve less memory for KV
        "RLHF_GPU_MEMORY_UTILIZATION": "0.1",
    }
    env.pop("RLHF_KAFKA_BOOTSTRAP_SERVERS", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "rlhf_loop.cli", "up", "--port", str(port)], env=env,
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", up, timeout_s=300)
        producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker_port}"], acks="all")
        metadata = producer.send("rlhf.feedback", b"hello").get(timeout=30)  # the topic was created by `up`
        producer.close()
        assert metadata.topic == "rlhf.feedback" and metadata.offset >= 0

        wait_for(f"http://127.0.0.1:{port}/readyz", up, timeout_s=300)
        deadline = time.monotonic() + 10
        while "rlhf-loop is up" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"http://127.0.0.1:{port}/v1/chat/completions" in log.read_text()

        learner = _children(log)["learner"]
        os.kill(learner, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _children(log)["learner"] == learner and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text()
        assert '"child": "learner"' in text and "child.restarted" in text
        assert _alive(_children(log)["learner"])
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

        children = _children(log)
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.wait(90) == 0
        assert not [name for name, pid in children.items() if _alive(pid)]
    finally:
        if up.poll() is None:
            up.kill()
