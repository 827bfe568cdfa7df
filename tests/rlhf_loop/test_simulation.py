"""The simulation's bookkeeping: the preference plugin, and the before/after comparison around the
first promotion read from the registry's audit log (the loop itself: tests/e2e/test_loop.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from learner.registry import Registry
from learner.stats import welch_greater
from rlhf_loop.simulation import HERE, Served, Simulation, SimulationSettings, load_preference, summary


def test_the_default_preference_likes_concise_answers_that_ask_back() -> None:
    score = load_preference(HERE / "concise_question.py")
    short_question = score("q", "Paris. Would you like to know more about France?")
    short = score("q", "Paris is the capital of France.")
    rambling = score("q", " ".join(["word"] * 200) + "?")
    assert short_question == 1.0 and 0.5 < short < 1.0 and rambling == 0.4 and score("q", "") == 0.0


def test_a_plugin_without_score_is_refused(tmp_path: Path) -> None:
    plugin = tmp_path / "pref.py"
    plugin.write_text("def rate(prompt, answer):\n    return 1.0\n")
    with pytest.raises(ValueError, match="defines no score"):
        load_preference(plugin)


def test_welch_test_sees_a_real_gain_and_not_noise() -> None:
    assert welch_greater([0.6, 0.7, 0.8, 0.65] * 10, [0.2, 0.3, 0.25, 0.35] * 10) < 1e-6
    assert welch_greater([0.2, 0.3, 0.25, 0.35] * 10, [0.2, 0.3, 0.25, 0.35] * 10) > 0.4
    assert welch_greater([0.5], [0.1, 0.2]) == 1.0  # too few to say


def test_report_compares_answers_before_the_first_promotion_with_the_promoted_adapter_after(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(tmp_path / "registry")
    settings = SimulationSettings(_env_file=None, home=tmp_path, simulate_users=2, simulate_test_answers=4)
    sim = Simulation(settings, lambda prompt, answer: 0.0, ["q"])
    sim.first_feedback_s = 1.0
    version = registry.publish(adapter, {"parent": None}, {"passed": True, "gates": [], "failed": []})
    registry.canary(version, 0.5, actor="learner", reason="passed its gates")
    registry.promote(version, actor="canary-policy", reason="non-inferior")
    promoted_at = (datetime.fromisoformat(registry.audit()[-1]["at"]) - sim.started_at).total_seconds()
    sim.served = ([Served(promoted_at - 10 + i, None, 0.2) for i in range(5)]
                  + [Served(promoted_at - 5, version, 0.9)]  # the canary before its promotion: neither side
                  + [Served(promoted_at + 1 + i, version, 0.8 + 0.01 * i) for i in range(3)]
                  + [Served(promoted_at + 2, None, 0.1)])  # a straggler of the old version after: neither side
    report = sim.report(registry)
    assert report["after"]["answers"] == 3 and report["p_value"] is None  # 3 of the 4 tested answers so far
    assert "not served the tested number" in summary(report)

    sim.served += [Served(promoted_at + 4, version, 0.81), Served(promoted_at + 5, version, 0.0)]
    report = sim.report(registry)
    assert report["promoted"] == version
    assert report["before"] == {"answers": 5, "mean_score": pytest.approx(0.2), "sd": pytest.approx(0.0)}
    # one test on the first 4 answers after the promotion: the fifth (0.0) is outside the fixed sample
    assert report["after"]["answers"] == 4 and report["after"]["mean_score"] == pytest.approx(0.81)
    assert report["significant"] and report["gain"] > 0.4
    events = [e["event"] for e in report["events"]]
    assert events.index(f"canary {version} by learner") < events.index(f"promote {version} by canary-policy")
    assert report["feedback_to_active_s"] == pytest.approx(promoted_at - 1.0)
    assert "significant at 0.05" in summary(report)


def test_up_gives_serving_and_the_learner_their_own_cores_unless_bound_already() -> None:
    import os

    from rlhf_loop.supervisor import split_cores

    serving, learner = split_cores({})
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        bound = [int(c) for side in (serving, learner) for c in side["VLLM_CPU_OMP_THREADS_BIND"].split(",")]
        assert sorted(bound) == cores and not set(serving["VLLM_CPU_OMP_THREADS_BIND"].split(",")) & set(
            learner["VLLM_CPU_OMP_THREADS_BIND"].split(","))
    assert split_cores({"VLLM_CPU_OMP_THREADS_BIND": "0-1"}) == ({}, {})  # the operator's binding stands
