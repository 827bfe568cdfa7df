from learner.config import due
from learner.settings import LearnerSettings


def test_a_cycle_is_due_on_enough_feedback_or_enough_time_with_some_feedback() -> None:
    settings = LearnerSettings(min_new_feedback=50, max_interval_s=3600)
    assert due(50, 0, settings)
    assert not due(49, 3599, settings)
    assert due(1, 3600, settings)
    assert not due(0, 10 * 3600, settings)  # nothing new: nothing to learn from


def test_the_always_on_learner_loop_imports_no_training_stack() -> None:
    """The learner service validates its settings and schedules cycles without torch; a cycle (its
    own process) loads it."""
    import subprocess
    import sys

    code = ("import sys, learner.__main__; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'vllm') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"
