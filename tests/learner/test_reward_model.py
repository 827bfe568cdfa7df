"""The reward model learns a preference rule it was never told, from pairs and thumbs."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.dataset import FeedbackData
from learner.config import RewardConfig
from learner.reward_model import heldout, refresh
from tests.helpers import RULE_CONFIG

pytestmark = pytest.mark.slow


def test_reward_model_learns_a_synthetic_rule_above_90_percent(rule_reward_model) -> None:
    root, report, pairs = rule_reward_model
    assert report.replaced and report.version == "rm-0001"
    assert report.heldout["pair_accuracy"] > 0.9, report
    assert report.heldout["thumb_accuracy"] > 0.8, report
    held = [p for p in pairs if heldout(p, RULE_CONFIG.heldout_fraction)]
    assert 15 <= len(held) <= 50 and report.train_pairs == len(pairs) - len(held)  # nothing held out was trained on


def test_a_worse_refresh_does_not_replace_the_current_model(rule_reward_model, prepared_model: Path, tmp_path: Path) -> None:
    import shutil

    root, _, pairs = rule_reward_model
    copy = tmp_path / "rm"
    shutil.copytree(root, copy)
    # a learning rate far too high wrecks the model: worse on the same held-out data, so it is not kept
    worse = refresh(prepared_model, copy, FeedbackData(pairs=pairs[:60]), RewardConfig(
        epochs=1, batch_size=8, max_length=48, heldout_fraction=0.25, learning_rate=0.5))
    assert worse.replaced is False and worse.version == "rm-0001"
    # all 60 pairs were trained on by rm-0001: a refresh replays only a sample of them
    assert 0 < worse.train_pairs < len([p for p in pairs[:60] if not heldout(p, 0.25)])
    assert worse.heldout["pair_accuracy"] < worse.previous_heldout["pair_accuracy"]
    assert (copy / "CURRENT").read_text() == "rm-0001"
    assert not (copy / "rm-0002").exists()


def test_the_kept_versions_scorer_merges_its_lora_and_scores_as_the_trained_model_does(rule_reward_model,
                                                                                      prepared_model: Path) -> None:
    from learner.reward_model import RewardModel

    root, _, pairs = rule_reward_model
    trained = RewardModel.create(prepared_model, RULE_CONFIG, warm_start=root / "rm-0001")
    scorer = RewardModel.scorer(prepared_model, RULE_CONFIG, root / "rm-0001")
    assert not any("lora" in name for name, _ in scorer.model.named_parameters())
    prompts, answers = [p.prompt for p in pairs[:16]], [p.chosen for p in pairs[:16]]
    expected, merged = trained.score(prompts, answers), scorer.score(prompts, answers)
    assert expected.std() > 0.1 and (expected - merged).abs().max() < 1e-3, (expected, merged)


def test_top_layers_puts_the_reward_models_lora_on_the_top_layers_only(prepared_model: Path) -> None:
    from learner.reward_model import RewardModel

    model = RewardModel.create(prepared_model, RewardConfig(top_layers=2))
    layers = model.model.config.num_hidden_layers
    trained = {name.split(".layers.")[1].split(".")[0] for name, p in model.model.named_parameters()
               if p.requires_grad and "lora_" in name}
    assert trained == {str(layers - 2), str(layers - 1)}
    every = RewardModel.create(prepared_model, RewardConfig())
    assert len({name.split(".layers.")[1].split(".")[0] for name, _ in every.model.named_parameters() if "lora_" in name}) == layers


def test_a_refresh_trains_under_the_precision_it_is_given(rule_reward_model, prepared_model: Path) -> None:
    """bfloat16 autocast (the default where the CPU computes it natively) and float32 train the same model from
    the same start: the same first loss up to bfloat16's rounding, and not bit for bit."""
    import torch

    from learner.reward_model import RewardModel, train, training_autocast

    _, _, pairs = rule_reward_model
    with training_autocast("bfloat16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with training_autocast("float32"):
        assert not torch.is_autocast_enabled("cpu")
    first = {}
    for precision in ("float32", "bfloat16"):
        config = RULE_CONFIG.model_copy(update={"precision": precision, "epochs": 1})
        # one step on a batch of two pairs: on a CPU without native bfloat16 that step is emulated (docs/results.md)
        first[precision] = train(RewardModel.create(prepared_model, config), pairs[:2], [], config)[0]["loss/bt"]
    assert first["float32"] != first["bfloat16"] and abs(first["float32"] - first["bfloat16"]) < 0.05, first
