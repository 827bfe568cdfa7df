"""The simulation's bookkeeping: the preference plugin, and the before/after comparison around the
first promotion read from the registry's audit log (the loop itself: tests/e2e/test_loop.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from learner.registry import Registry
from learner.stats import welch_greater
from rlhf_loop.simulation import HERE, Served, Simulation, SimulationSettings, load_preference, prompt_set, summary
from rlhf_loop.simulation.preferences import SUITE


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


def test_each_promotion_is_tested_against_the_version_it_replaced_and_the_run_has_a_trajectory(tmp_path: Path) -> None:
    from datetime import timedelta

    settings = SimulationSettings(_env_file=None, home=tmp_path, simulate_users=2, simulate_test_answers=3)
    sim = Simulation(settings, lambda prompt, answer: 0.0, ["q"])
    at = lambda s: (sim.started_at + timedelta(seconds=s)).isoformat()  # noqa: E731
    audit = [{"action": "canary", "version": "v0001", "at": at(50)}, {"action": "promote", "version": "v0001", "at": at(60)},
             {"action": "promote", "version": "v0002", "at": at(120)}]
    sim.served = ([Served(t, None, 0.2) for t in (10, 20, 30, 40)] + [Served(55, "v0001", 0.9)]  # a canary answer: neither
                  + [Served(t, "v0001", 0.5 + 0.01 * (t % 3)) for t in (61, 70, 80, 90)]
                  + [Served(t, "v0002", 0.4) for t in (121, 130, 140, 150)])
    since = lambda iso: (datetime.fromisoformat(iso) - sim.started_at).total_seconds()  # noqa: E731
    first, second = sim.promotions(audit, since)
    assert (first["version"], first["replaced"], first["answers"], first["replaced_answers"]) == ("v0001", "base", 3, 4)
    assert first["better"] and first["gain"] == pytest.approx(0.51 - 0.2, abs=0.01)  # its first 3 answers only
    # the second against the first's whole reign (61-90), not against the base model: it is worse, not better
    assert (second["replaced"], second["replaced_answers"], second["answers"]) == ("v0001", 4, 3)
    assert second["gain"] < 0 and not second["better"]
    # the run's result against the base model: the last promoted version's first 3 answers vs the base's 4
    final = sim.vs_base(audit, since)
    assert (final["version"], final["answers"], final["base_answers"]) == ("v0002", 3, 4)
    assert final["gain"] == pytest.approx(0.2) and final["p_value"] < 0.01
    assert final["ci95"][0] <= 0.2 <= final["ci95"][1] and final["target_gain"] == pytest.approx(0.15)
    assert sim.vs_base([a for a in audit if a["action"] != "promote"], since) is None
    minutes = sim.trajectory()
    assert [m["minute"] for m in minutes] == [0.0, 1.0, 2.0]
    assert minutes[0]["adapters"] == ["base", "v0001"] and minutes[2]["mean_score"] == pytest.approx(0.4)


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


# what each suite member should like and dislike: its kind, not only its degree
LIKED = {
    "concise_question": ("Why is the sky blue?", "Sunlight scatters off air; blue scatters most. Want more detail?",
                         "The sky is blue because of Rayleigh scattering. " * 8),
    "lists": ("How can I sleep better?", "- Keep a schedule\n- Dim the lights\n- Skip late coffee\n- Move daily",
              "Keep a regular schedule, dim the lights in the evening and skip coffee late in the day."),
    "polite": ("How can I sleep better?", "Happy to help! Keep a regular schedule. I hope this helps.",
               "Obviously, just sleep. Whatever."),
    "examples": ("What is a verb?", "A word for an action, for example Run or 3 jumps.", "A word for an action."),
    "facts": ("What is the capital of Canada?", "The capital of Canada is Ottawa.",
              "The capital of Canada is Toronto, a great city!"),
    "concise_lists": ("How can I sleep better?", "- Regular hours\n- Dark room\n- No late coffee",
                      "Keep a regular schedule and a dark room. " * 10),
}


@pytest.mark.parametrize("name", sorted(SUITE))
def test_every_suite_preference_loads_scores_in_range_and_likes_its_kind(name: str) -> None:
    score = load_preference(name)
    prompt, good, bad = LIKED[name]
    values = [score(prompt, text) for text in (good, bad, "", "x " * 500, "- a\n- b\n- c", "Happy to help, for example 2!")]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values), values
    assert values[0] > values[1] + 0.3, (name, values[:2])
    assert prompt_set(name, None), "every preference comes with prompts to ask"


def test_facts_are_asked_from_their_own_keyed_prompts_no_gate_question_among_them() -> None:
    import json

    from learner.gates import load_set

    asked = set(prompt_set("facts", None))
    assert len(asked) >= 40 and asked.isdisjoint(row["prompt"] for row in load_set("golden"))
    assert set(prompt_set("lists", None)) == {json.loads(line)["prompt"] for line in (HERE / "prompts.jsonl").read_text().splitlines()}


def test_the_learner_processes_never_import_the_simulation_or_its_preferences() -> None:
    """The learner sees ratings only: neither its service nor a training cycle loads a preference."""
    import subprocess
    import sys

    code = "import sys, learner.__main__, learner.cycle; print(sorted(m for m in sys.modules if m.startswith('rlhf_loop')))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"


def test_simulated_users_chat_and_rate_through_the_http_layer(http_serving, tmp_path: Path) -> None:
    """The users are clients of serving's public API (the stand-in engine answers): they chat, duel and
    rate until stopped, and every rating is accepted."""
    import asyncio

    from rlhf_loop.simulation import simulate

    settings = SimulationSettings(_env_file=None, home=tmp_path, simulate_users=2, simulate_url=http_serving.base_url,
                                  simulate_think_s=0.1, simulate_rate_share=1.0, simulate_duel_share=0.5)

    async def run_for(seconds: float) -> dict:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await simulate(settings, stop)

    report = asyncio.run(run_for(3.0))
    assert report["answers"] >= 4 and report["ratings"] >= 2, report
    assert report["answers_by_adapter"] == {"base": report["answers"]}
