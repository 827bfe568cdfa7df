"""The reward model learns a preference rule it was never told, from pairs and thumbs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from learner.dataset import FeedbackData, Pair, Pointwise
from learner.reward_model import RewardConfig, accuracy, heldout, refresh

pytestmark = pytest.mark.slow

TOPICS = ["rivers", "volcanoes", "bread", "chess", "owls", "jazz", "glaciers", "tea", "bridges", "comets",
          "tulips", "robots", "deserts", "violins", "bees", "maps", "castles", "coral", "lanterns", "kites"]
OPENERS = ["{t} are fascinating.", "People have loved {t} for ages.", "There is a lot to say about {t}.",
           "{t} come in many kinds.", "Here is a short note on {t}."]
FOLLOW_UPS = ["Would you like to know more?", "Shall I go on?", "Want an example?", "Which part interests you?"]
ENDINGS = ["That is all.", "I hope this helps.", "Enjoy.", "End of answer."]


def synthetic(seed: int, count: int) -> tuple[list[Pair], list[Pointwise]]:
    """The hidden rule: an answer that ends with a follow-up question is preferred."""
    rng = random.Random(seed)
    pairs, thumbs = [], []
    for i in range(count):
        topic = rng.choice(TOPICS)
        prompt = (("user", f"Tell me about {topic}. ({i})"),)
        body = rng.choice(OPENERS).format(t=topic.capitalize())
        good, bad = f"{body} {rng.choice(FOLLOW_UPS)}", f"{body} {rng.choice(ENDINGS)}"
        pairs.append(Pair(prompt, good, bad, f"user-{i % 7}"))
        thumbs.append(Pointwise(prompt, good if i % 2 else bad, 1.0 if i % 2 else 0.0, f"user-{i % 7}"))
    return pairs, thumbs


def test_reward_model_learns_a_synthetic_rule_above_90_percent(prepared_model: Path, tmp_path: Path) -> None:
    pairs, thumbs = synthetic(seed=0, count=220)
    config = RewardConfig(epochs=2, batch_size=8, max_length=64, heldout_fraction=0.25)
    report = refresh(prepared_model, tmp_path / "rm", FeedbackData(pointwise=thumbs, pairs=pairs), config)
    assert report.replaced and report.version == "rm-0001"
    assert report.heldout["pair_accuracy"] > 0.9, report
    assert report.heldout["thumb_accuracy"] > 0.8, report
    held = [p for p in pairs if heldout(p, config.heldout_fraction)]
    assert 30 <= len(held) <= 80 and report.train_pairs == len(pairs) - len(held)  # nothing held out was trained on

    # a refresh that wrecks the model (a learning rate far too high) is worse on the same held-out
    # data, so the previous version stays current
    worse = refresh(prepared_model, tmp_path / "rm", FeedbackData(pairs=pairs[:60]), RewardConfig(
        epochs=1, batch_size=8, max_length=64, heldout_fraction=0.25, learning_rate=0.5))
    assert worse.replaced is False and worse.version == "rm-0001"
    assert (tmp_path / "rm" / "CURRENT").read_text() == "rm-0001"
