from learner.config import due
from learner.settings import LearnerSettings
from tests.helpers import stand_in_adapter


def test_a_cycle_is_due_on_enough_feedback_or_enough_time_with_some_feedback() -> None:
    settings = LearnerSettings(min_new_feedback=50, max_interval_s=3600)
    assert due(50, 0, settings)
    assert not due(49, 3599, settings)
    assert due(1, 3600, settings)
    assert not due(0, 10 * 3600, settings)  # nothing new: nothing to learn from


def test_after_a_cycle_that_helped_fewer_ratings_start_the_next(tmp_path) -> None:
    from learner.__main__ import newest_is_active
    from learner.registry import Registry

    settings = LearnerSettings(min_new_feedback=50, min_new_feedback_after_promotion=20, max_interval_s=3600)
    assert due(20, 0, settings, helped=True) and not due(20, 0, settings)
    assert not due(19, 0, settings, helped=True)

    registry = Registry(str(tmp_path / "registry"), cache_dir=tmp_path / "cache")
    assert not newest_is_active(registry)  # no candidate yet
    adapter = stand_in_adapter(tmp_path / "adapter")
    first = registry.publish(adapter, {"parent": None}, {"passed": True, "gates": []})
    registry.promote(first, actor="canary-policy", reason="won")
    assert newest_is_active(registry)  # the last cycle's candidate serves: it helped
    registry.publish(adapter, {"parent": first}, {"passed": False, "gates": []})
    assert not newest_is_active(registry)  # the newest candidate did not make it


def test_the_always_on_learner_loop_imports_no_training_stack() -> None:
    """The learner service validates its settings and schedules cycles without torch; a cycle (its
    own process) loads it."""
    import subprocess
    import sys

    code = ("import sys, learner.__main__; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'vllm') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"


def test_hyperparameters_are_typed_settings_one_spelling_refused_at_start_in_one_line(monkeypatch) -> None:
    import subprocess
    import sys

    from feedback.settings import load_settings

    monkeypatch.setenv("RLHF_PPO__STEPS", "10")
    monkeypatch.setenv("RLHF_REWARD", '{"epochs": 1}')  # the whole model as JSON works too
    settings = LearnerSettings()
    assert settings.ppo.steps == 10 and settings.reward.epochs == 1 and settings.ppo.batch_size == 16
    # flags (pydantic-settings' own parser) over the environment
    flagged = load_settings(LearnerSettings, cli_args=["--ppo.steps", "3", "--ppo.whiten_rewards", "true"])
    assert flagged.ppo.steps == 3 and flagged.ppo.whiten_rewards is True and flagged.reward.epochs == 1
    # a word that is not a boolean is an error, not False; a misspelt field is an error, not a default
    bad = subprocess.run([sys.executable, "-m", "learner"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "RLHF_PPO__WHITEN_REWARDS": "maybe", "RLHF_PPO__STEPZ": "3",
                              "RLHF_REWARD__EPOCHS": "0"})
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    for problem in ("RLHF_PPO__WHITEN_REWARDS: Input should be a valid boolean", "RLHF_PPO__STEPZ: Extra inputs",
                    "RLHF_REWARD__EPOCHS: Input should be greater than or equal to 1"):
        assert problem in bad.stderr, bad.stderr
    # JSON that does not parse is a one-line refusal too, not a traceback
    broken = subprocess.run([sys.executable, "-m", "learner"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "RLHF_PPO": "{bad"})
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    assert 'error parsing value for field "ppo"' in broken.stderr, broken.stderr


def test_a_due_cycle_waits_for_the_running_canarys_decision_at_most_canary_hold_s(tmp_path) -> None:
    from datetime import datetime, timedelta, timezone

    from learner.promotion import awaited_canary
    from learner.registry import Registry

    settings = LearnerSettings(canary_hold_s=1800)
    registry = Registry(str(tmp_path / "registry"), cache_dir=tmp_path / "cache")
    now = datetime.now(timezone.utc)
    assert awaited_canary(registry, settings, now) is None  # nothing to wait for
    adapter = stand_in_adapter(tmp_path / "adapter")
    first = registry.publish(adapter, {"parent": None}, {"passed": True, "gates": []})
    registry.canary(first, 0.5, actor="learner", reason="passed its gates")
    assert awaited_canary(registry, settings, datetime.now(timezone.utc)) == first
    # a canary undecided for longer than the hold no longer holds the loop back; 0 never waits
    assert awaited_canary(registry, settings, datetime.now(timezone.utc) + timedelta(seconds=1800)) is None
    assert awaited_canary(registry, LearnerSettings(canary_hold_s=0), datetime.now(timezone.utc)) is None
    registry.promote(first, actor="canary-policy", reason="won")
    assert awaited_canary(registry, settings, datetime.now(timezone.utc)) is None  # decided: the next cycle builds on it
