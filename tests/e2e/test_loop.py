"""The loop closes once, end to end: `rlhf-loop up --simulate-users` on the real broker and real
vLLM; simulated users chat and rate through the public API, the learner trains a candidate from
what reached Kafka, gates it, starts it as canary, promotes it on live feedback, and serving
answers with it. Settings are small (a tiny PPO run, a permissive promotion policy) so it fits in
CI; whether the loop raises the users' score is `make demo`'s question, not this test's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.ingest import EventStore
from learner.registry import Registry
from tests.conftest import free_port

pytestmark = pytest.mark.slow

SMALL = {
    "RLHF_MIN_NEW_FEEDBACK": "16",
    "RLHF_REWARD": json.dumps({"epochs": 1, "batch_size": 8, "max_length": 64}),
    "RLHF_PPO": json.dumps({"steps": 2, "batch_size": 4, "minibatch_size": 4, "ppo_epochs": 1, "max_new_tokens": 16,
                            "rollout_memory_share": 0.1}),
    "RLHF_GATE_SAMPLES": "1", "RLHF_GATE_MAX_NEW_TOKENS": "16",
    # promote on the first few thumbs whatever they say: this test is about the plumbing
    "RLHF_CANARY_SHARE": "0.5", "RLHF_PROMOTION_MIN_FEEDBACK": "3", "RLHF_PROMOTION_MARGIN": "1",
    "RLHF_PROMOTION_MIN_DUELS": "100000", "RLHF_ROLLBACK_MIN_FEEDBACK": "100000", "RLHF_PROMOTION_CHECK_S": "2",
    "RLHF_SIMULATE_THINK_S": "0.5", "RLHF_SIMULATE_MAX_TOKENS": "24",
}


def test_simulated_feedback_trains_gates_canaries_promotes_and_serves_a_new_adapter(prepared_model: Path,
                                                                                     tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "up.log"
    env = {**os.environ, **SMALL, "RLHF_HOME": str(tmp_path), "RLHF_MODEL": str(prepared_model),
           "RLHF_BROKER_PORT": str(free_port()), "RLHF_LEARNER_METRICS_PORT": str(free_port()),
           "RLHF_SIMULATE_METRICS_PORT": str(free_port()), "RLHF_GPU_MEMORY_UTILIZATION": "0.1"}
    env.pop("RLHF_KAFKA_BOOTSTRAP_SERVERS", None)
    up = subprocess.Popen([sys.executable, "-m", "rlhf_loop.cli", "up", "--port", str(port), "--simulate-users", "3"],
                          env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    report_path = tmp_path / "simulation.json"
    try:
        deadline = time.monotonic() + 900
        report: dict = {}
        while time.monotonic() < deadline and up.poll() is None:
            time.sleep(2)
            if report_path.exists():
                report = json.loads(report_path.read_text())
                if report.get("promoted") and report["answers_by_adapter"].get(report["promoted"], 0) >= 2:
                    break
        assert up.poll() is None, log.read_text()[-5000:]
        assert report.get("promoted") == "v0001", (report, log.read_text()[-5000:])
        assert report["answers_by_adapter"]["v0001"] >= 2  # answers served by the new adapter
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(120)
    registry = Registry(tmp_path / "registry")
    assert registry.read_pointer().active == "v0001"
    actions = [(row["action"], row["version"], row["actor"]) for row in registry.audit()]
    assert actions[:2] == [("canary", "v0001", "learner"), ("promote", "v0001", "canary-policy")], actions
    meta = registry.meta("v0001")
    assert meta["gate_report"]["passed"] and meta["lineage"]["ppo_history"][0]["step"] == 1
    store = EventStore(tmp_path / "learner" / "events.sqlite")  # what the learner consumed from Kafka
    assert store.count("thumb") + store.count("pairwise") >= 16 and store.count("interaction") >= 16
    store.close()
    assert code == 0 and "simulated users: 3" in log.read_text()
