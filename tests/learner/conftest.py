"""Learner fixtures: one small reward model trained on a hidden synthetic rule, per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from learner.dataset import FeedbackData, Pair, Pointwise
from learner.reward_model import RefreshReport, RewardConfig, refresh

TOPICS = ["rivers", "volcanoes", "bread", "chess", "owls", "jazz", "glaciers", "tea", "bridges", "comets",
          "tulips", "robots", "deserts", "violins", "bees", "maps", "castles", "coral", "lanterns", "kites"]
OPENERS = ["{t} are fascinating.", "People have loved {t} for ages.", "There is a lot to say about {t}.",
           "{t} come in many kinds.", "Here is a short note on {t}."]
FOLLOW_UPS = ["Would you like to know more?", "Shall I go on?", "Want an example?", "Which part interests you?"]
ENDINGS = ["That is all.", "I hope this helps.", "Enjoy.", "End of answer."]

RULE_CONFIG = RewardConfig(epochs=2, batch_size=8, max_length=48, heldout_fraction=0.25)


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
        if i % 2 == 0:  # fewer thumbs than pairs, as in real traffic
            thumbs.append(Pointwise(prompt, good if i % 4 else bad, 1.0 if i % 4 else 0.0, f"user-{i % 7}"))
    return pairs, thumbs


@pytest.fixture(scope="session")
def rule_reward_model(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RefreshReport, list[Pair]]:
    """(reward-model root, its first refresh report, the pairs it saw)."""
    pairs, thumbs = synthetic(seed=0, count=120)
    root = tmp_path_factory.mktemp("reward-models")
    return root, refresh(prepared_model, root, FeedbackData(pointwise=thumbs, pairs=pairs), RULE_CONFIG), pairs
