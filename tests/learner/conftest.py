"""Learner fixtures: one small reward model trained on a hidden synthetic rule (tests/helpers.py), and
one vLLM rollout engine per xdist worker that runs learner tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from filelock import FileLock

from learner.dataset import FeedbackData, Pair
from learner.reward_model import RefreshReport, refresh
from tests.helpers import RULE_CONFIG, held_out_scores, run_directory, synthetic


@pytest.fixture(scope="session")
def rule_reward_model(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RefreshReport, list[Pair]]:
    """(reward-model root, its first refresh report, the pairs it saw), trained once per run: under
    pytest-xdist the first worker to ask trains it and the other reads it (tests only copy the root)."""
    pairs, thumbs = synthetic(seed=0, count=120)
    run_dir = run_directory(tmp_path_factory)
    root, saved = run_dir / "rule-reward-models", run_dir / "rule-reward-report.json"
    with FileLock(f"{saved}.lock"):
        if not saved.exists():
            report = refresh(prepared_model, root, FeedbackData(pointwise=thumbs, pairs=pairs), RULE_CONFIG)
            saved.write_text(json.dumps(dataclasses.asdict(report)))
    return root, RefreshReport(**json.loads(saved.read_text())), pairs


@pytest.fixture(scope="session")
def rollouts(prepared_model: Path):
    """One vLLM rollout engine for the learner tests (PPO, gates), with LoRA, started once and shut
    down at the end of the session (not at interpreter exit, after pytest has closed its streams)."""
    from learner.rollout import VLLMRollouts

    engine = VLLMRollouts(prepared_model, max_model_len=512, lora_rank=8, kv_cache_mib=128)
    yield engine
    engine.llm.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="session")
def rule_scorer(prepared_model: Path, rule_reward_model):
    """The rule's reward model, loaded to score answers (up to 96 tokens of prompt + answer)."""
    from learner.config import RewardConfig
    from learner.reward_model import load_current

    scorer, _ = load_current(prepared_model, rule_reward_model[0], RewardConfig(max_length=96))
    return scorer


@pytest.fixture(scope="session")
def base_held_out_scores(rollouts, rule_scorer):
    """The base model's held-out scores, the "before" of every learner's test (sampled once)."""
    return held_out_scores(rollouts, rule_scorer, None)

