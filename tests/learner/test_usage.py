"""How users sample, read from the logged interactions: the lengths and temperature that gates and
rollouts use; the text checks of whole answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.cycle import at_users_sampling
from learner.degeneration import degeneration, shares
from learner.config import PPOConfig
from learner.usage import sampling_profile
from tests.helpers import seeded_store


def test_lengths_are_the_p50_and_p95_users_ask_for_and_temperature_their_median(tmp_path: Path) -> None:
    # 90 short requests, 10 long, a few without max_tokens (counted at the default): p50 64, p95 300
    samplings = ([{"max_tokens": 64, "temperature": 0.7}] * 85 + [{"max_completion_tokens": 300, "temperature": 0.2}] * 10
                 + [{}] * 5)
    store = seeded_store(tmp_path / "events.sqlite", samplings)
    usage = sampling_profile(store.recent("interaction", 1000), default_max_tokens=256, ceiling=512)
    assert usage.lengths == (64, 300) and usage.longest == 300 and usage.temperature == 0.7 and usage.interactions == 100
    # a ceiling bounds what a gate or a rollout samples, whatever is asked
    assert sampling_profile(store.recent("interaction", 1000), default_max_tokens=256, ceiling=128).lengths == (64, 128)
    # only the recent window counts: the last 10 are 5 long requests and 5 without max_tokens
    recent = sampling_profile(store.recent("interaction", 10), default_max_tokens=256, ceiling=512)
    assert recent.lengths == (256, 300) and recent.temperature == 0.6 and recent.interactions == 10


def test_an_empty_log_samples_at_least_256_tokens_at_openais_default_temperature() -> None:
    usage = sampling_profile([], default_max_tokens=256, ceiling=512)
    assert usage.lengths == (256,) and usage.temperature == 1.0 and usage.interactions == 0


def test_ppo_trains_at_the_users_longest_length_and_temperature_unless_told_otherwise(tmp_path: Path) -> None:
    samplings = [{"max_tokens": 200, "temperature": 0.7}] * 20
    usage = sampling_profile(seeded_store(tmp_path / "e.sqlite", samplings).recent("interaction", 100),
                             default_max_tokens=256, ceiling=512)
    assert PPOConfig().max_new_tokens == 0 and PPOConfig().temperature == 0  # the defaults: read from users
    resolved = at_users_sampling(PPOConfig(), usage)
    assert resolved.max_new_tokens == 200 and resolved.temperature == 0.7
    told = at_users_sampling(PPOConfig(max_new_tokens=16, temperature=1.0), usage)
    assert told.max_new_tokens == 16 and told.temperature == 1.0
    # greedy users: rollouts and gates sample at the floor, where samples still differ and log-probs are defined
    greedy = seeded_store(tmp_path / "greedy.sqlite", [{"max_tokens": 64, "temperature": 0.0}] * 5)
    assert sampling_profile(greedy.recent("interaction", 100), default_max_tokens=256, ceiling=512).temperature == 0.3


def test_whole_answers_are_checked_for_loops_symbols_empty_items_and_never_ending() -> None:
    fine = "To make coffee:\n- Grind the beans\n- Boil water\n\n| a | b |\n|---|---|\n| 1 | 2 |\n**Note:** enjoy... it is good."
    assert degeneration(fine, "stop").faults == []
    looping = "A short list.\n#SleepTooFast\n#Sleep\nWhy, why, why?\n#Sleep\n" + "why, " * 20
    assert degeneration(looping, "length").faults == ["loop", "symbols", "unfinished"]
    assert degeneration("Here:\n1.\n2.\n3. ***", "stop").faults == ["empty_items"]
    assert degeneration("Tea!!!! is great$$$$ and fine.", "stop").faults == ["symbols"]
    assert degeneration("Bees make honey.", "length").degenerate is False  # cut, but not broken text
    assert shares([degeneration(fine, "stop"), degeneration(looping, "length")]) == {
        "degenerate": 0.5, "loop": 0.5, "symbols": 0.5, "empty_items": 0.0, "unfinished": 0.5}


def test_a_stand_alone_ppo_run_must_be_told_the_length_and_temperature_users_would_have_given(tmp_path: Path) -> None:
    from learner.train_ppo import main  # torch: imported only where it is needed

    job = ["--model", str(tmp_path), "--reward_models", str(tmp_path), "--prompts", str(tmp_path / "p.jsonl"),
           "--run_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="--ppo.max_new_tokens: a stand-alone run has no users' sampling"):
        main(job)
    with pytest.raises(SystemExit, match="--ppo.temperature: a stand-alone run has no users' sampling"):
        main([*job, "--ppo.max_new_tokens", "16"])
