"""`rlhf-loop learn --once` end to end: stored duels -> reward model -> PPO -> gates -> a candidate
in the registry with its lineage and gate report, started as canary; with no feedback it says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from feedback.events import InteractionEvent, PairwiseEvent, Timings
from learner.ingest import EventStore
from learner.registry import Registry
from tests.learner.conftest import synthetic
from tests.learner.test_ingest import record

pytestmark = pytest.mark.slow

FLAGS = ["--rm.epochs", "1", "--rm.batch_size", "8", "--rm.max_length", "48", "--ppo.steps", "2",
         "--ppo.batch_size", "4", "--ppo.minibatch_size", "4", "--ppo.ppo_epochs", "1", "--ppo.max_new_tokens", "16",
         "--ppo.rollout_memory_share", "0.1"]


def duel_events(count: int) -> list:
    """Logged duels as serving writes them, each with the user's choice of the follow-up answer."""
    events = []
    pairs, _ = synthetic(seed=5, count=count)
    for i, pair in enumerate(pairs):
        sides = []
        for side, text in (("a", pair.chosen), ("b", pair.rejected)) if i % 2 else (("a", pair.rejected), ("b", pair.chosen)):
            sides.append(InteractionEvent(
                response_id=f"chatcmpl-{i}-{side}:0", conversation_id=f"conv-{i}", user_id=pair.user_id, model="rlhf-loop",
                adapter_version=None, messages=[{"role": "user", "content": pair.prompt[0][1]}], response=text,
                finish_reason="stop", sampling={}, prompt_tokens=10, completion_tokens=10,
                timings=Timings(time_to_first_token_s=0.1, total_s=0.2), duel_id=f"duel-{i}"))
        chosen = "b" if i % 2 == 0 else "a"
        events += [*sides, PairwiseEvent(conversation_id=f"conv-{i}", response_id_a=sides[0].response_id,
                                         response_id_b=sides[1].response_id, adapter_version_a=None,
                                         adapter_version_b=None, user_id=pair.user_id, choice=chosen,
                                         duel_id=f"duel-{i}")]
    return events


def learn_once(home: Path, model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlhf_loop.cli", "learn", "--once", *FLAGS], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL": str(model),
                               "RLHF_GATE_SAMPLES": "1", "RLHF_GATE_MAX_NEW_TOKENS": "24", "RLHF_CANARY_SHARE": "0.25"})


def test_learn_once_publishes_a_candidate_with_lineage(prepared_model: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    empty = learn_once(home, prepared_model)
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert json.loads(empty.stdout)["candidate"] is None and json.loads(empty.stdout)["reason"] == "no joined feedback yet"

    store = EventStore(home / "learner" / "events.sqlite")
    assert store.store([record(event.to_wire(), offset) for offset, event in enumerate(duel_events(48))]) == 144
    store.close()
    done = learn_once(home, prepared_model)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["candidate"] == "v0001" and report["ppo_steps"] == 2, report

    registry = Registry(home / "registry")
    assert registry.versions() == ["v0001"]
    meta = registry.meta("v0001")
    lineage = meta["lineage"]
    assert lineage["parent"] is None and lineage["reward_model"] == report["reward_model"]
    assert lineage["data_window"]["pairs"] == 48 and lineage["data_window"]["feedback_events"] == 48
    assert lineage["hyperparameters"]["ppo"]["steps"] == 2 and lineage["hyperparameters"]["reward"]["epochs"] == 1
    assert (registry.version_path("v0001") / "adapter_model.safetensors").exists()
    gates = meta["gate_report"]
    assert [g["name"] for g in gates["gates"]] == ["weights", "kl", "win_rate", "safety", "capability", "degeneration"]
    # two small PPO steps stay close to the base model: every gate passes, and the candidate starts
    # as canary; only the promotion policy or an operator makes it active
    assert gates["passed"] and report["gates_passed"] and report["canary"], gates["failed"]
    pointer = registry.read_pointer()
    assert (pointer.active, pointer.canary, pointer.canary_share) == (None, "v0001", 0.25)
    assert registry.audit()[-1]["actor"] == "learner"
