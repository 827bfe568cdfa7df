"""Gates on the real model: each constructed bad candidate is blocked by its gate with the reason
in the report; a good candidate passes all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from learner.gates import load_set, repetition, run_gates, wilson
from learner.reward_model import RewardConfig, load_current
from learner.settings import LearnerSettings
from tests.conftest import write_lora_adapter
from tests.learner.conftest import sft_adapter

pytestmark = pytest.mark.slow

# a few short examples teach a LoRA a character within a few steps (each step is a full forward and
# backward on CPU: keep them short)
PROMPTS = [row["prompt"] for row in load_set("prompts")[:3]] + [row["prompt"] for row in load_set("red_team")[:3]]


def test_wilson_interval_and_repetition_measure() -> None:
    low, high = wilson(5, 10)
    assert low < 0.5 < high and abs((low + high) / 2 - 0.5) < 1e-9
    assert wilson(0, 20)[1] < 0.2 and wilson(20, 20)[0] > 0.8
    assert repetition("the cat sat on the mat") == 0.0
    assert repetition("yes " * 40) > 0.9


@pytest.fixture(scope="module")
def gate_env(prepared_model: Path, rule_reward_model, rollouts, tmp_path_factory: pytest.TempPathFactory):
    root, _, _ = rule_reward_model
    scorer, _ = load_current(prepared_model, root, RewardConfig(max_length=96))
    settings = LearnerSettings(_env_file=None, home=tmp_path_factory.mktemp("gates"), gate_samples=1, gate_max_new_tokens=40)

    def check(candidate: Path) -> dict:
        report = run_gates(prepared_model, candidate, None, lambda p, t: scorer.score(p, t), rollouts, settings)
        json.dumps(report)  # the report is published as JSON
        return report
    return check, tmp_path_factory.mktemp("candidates")


def gate(report: dict, name: str) -> dict:
    return next(g for g in report["gates"] if g["name"] == name)


def test_nan_weights_are_blocked_by_the_weights_gate(gate_env, prepared_model: Path, lora_adapters: list[Path]) -> None:
    check, root = gate_env
    broken = shutil.copytree(lora_adapters[0], root / "nan")
    weights = load_file(broken / "adapter_model.safetensors")
    first = sorted(weights)[0]
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, broken / "adapter_model.safetensors")
    report = check(broken)
    assert not report["passed"] and "weights" in report["failed"]
    assert gate(report, "weights")["reason"] == "non-finite (NaN or inf) adapter weights"


def test_an_adapter_pushed_far_from_the_reference_is_blocked_by_the_kl_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    far = write_lora_adapter(prepared_model, root / "far", seed=7)
    report = check(far)
    assert not report["passed"] and "kl" in report["failed"], report["failed"]
    assert gate(report, "kl")["figures"]["mean_kl"] > 12.0 and "> budget 12.0" in gate(report, "kl")["reason"]


def test_a_rude_adapter_is_blocked_by_the_safety_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    rude = ["Shut up, you stupid idiot.", "Who cares, moron? Go away, dumbass.", "What a damn stupid question, idiot."]
    rude_adapter = sft_adapter(prepared_model, root / "rude", [(p, rude[i % 3]) for i, p in enumerate(PROMPTS)],
                               steps=15, learning_rate=3e-3)
    report = check(rude_adapter)
    safety = gate(report, "safety")
    assert not report["passed"] and not safety["passed"], safety
    assert safety["figures"]["toxic_share"] > 0.5 and "toxic share" in safety["reason"]


def test_an_adapter_that_repeats_itself_is_blocked_by_the_degeneration_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    loop = sft_adapter(prepared_model, root / "loop", [(p, "yes " * 16) for p in PROMPTS], steps=15, learning_rate=3e-3)
    report = check(loop)
    degeneration = gate(report, "degeneration")
    assert not report["passed"] and not degeneration["passed"], degeneration
    assert "repeated 4-grams" in degeneration["reason"]


def test_a_good_candidate_passes_every_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    # a light polish toward short, polite answers: close to the base model, still itself
    polite = [(row["prompt"], row["answer"] + " I hope that helps!") for row in load_set("golden")[:6]]
    good = sft_adapter(prepared_model, root / "good", polite, steps=4, learning_rate=3e-4)
    report = check(good)
    assert report["passed"], [(g["name"], g["reason"]) for g in report["gates"] if not g["passed"]]
    assert [g["name"] for g in report["gates"]] == ["weights", "kl", "win_rate", "safety", "capability", "degeneration"]
