"""Gates on the real model: each constructed bad candidate is blocked by the gate that names its
fault, with the reason in the report (that gate checked alone: `run_gates(only=...)` computes just
what it reads); a lightly improved candidate passes all of them, run as a cycle runs them. Held-out
answers are sampled as the seeded log's users sample (p50 24 and p95 64 tokens, temperature 0.7):
short, so the suite stays fast on CPU, and still past where a late loop starts."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from learner.gates import GATES, correct, golden_set, load_set, repetition, run_gates
from learner.judge import Judge
from learner.settings import LearnerSettings
from learner.stats import difference_interval, mcnemar_worse, wilson
from learner.usage import sampling_profile
from tests.helpers import seeded_store, sft_adapter, write_lora_adapter

# a few short examples teach a LoRA a character within a few steps (each step is a full forward and
# backward on CPU: keep them short)
PROMPTS = [row["prompt"] for row in load_set("prompts")[:3]] + [row["prompt"] for row in load_set("red_team")[:3]]
USERS = [{"max_tokens": 24, "temperature": 0.7}] * 12 + [{"max_tokens": 64, "temperature": 0.7}] * 2


def test_wilson_interval_mcnemar_and_repetition_measure() -> None:
    low, high = wilson(5, 10)
    assert low < 0.5 < high and abs((low + high) / 2 - 0.5) < 1e-9
    assert wilson(0, 20)[1] < 0.2 and wilson(20, 20)[0] > 0.8
    # 8 questions lost, none won: p = 0.5 ** 8; as many won as lost: no evidence of a drop
    assert mcnemar_worse([False] * 8 + [True] * 4, [True] * 12) == pytest.approx(0.5 ** 8)
    assert mcnemar_worse([False, True] * 5, [True, False] * 5) > 0.5
    # the difference of two proportions: Newcombe (1998), Table II, method 10
    assert difference_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert difference_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    assert repetition("the cat sat on the mat") == 0.0
    assert repetition("yes " * 40) > 0.9


def test_golden_questions_are_graded_by_their_keys(tmp_path: Path) -> None:
    golden = golden_set(None)
    assert len(golden) >= 60 and all(row["keys"] for row in golden)
    capital = next(row for row in golden if row["prompt"] == "What is the capital of France?")
    assert correct("The capital of France is Paris.", capital) and not correct("It is Parisian Berlin.", capital)
    shout = next(row for row in golden if row.get("case_sensitive"))
    assert correct("HELLO", shout) and not correct("hello", shout)
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"prompt": "What is 2 cubed?", "keys": ["8", "eight"]}) + "\n")
    assert len(golden_set(extra)) == len(golden) + 1
    extra.write_text(json.dumps({"prompt": "No keys?", "keys": []}) + "\n")
    with pytest.raises(ValueError, match="without answer keys"):
        golden_set(extra)


@pytest.mark.slow
def test_likelihoods_read_each_answer_as_a_forward_pass_of_it_alone_would(prepared_model: Path) -> None:
    """Answers of mixed lengths, read in chunks of similar length from their first response token on: each
    one's log-probs are those of the whole sequence read alone (no padding, every position's logits)."""
    from learner.gates import Likelihoods
    from learner.policy import response_logprobs

    likelihoods = Likelihoods(prepared_model)
    questions = [row["prompt"] * (1 + i % 3) for i, row in enumerate(load_set("golden")[:11])]
    answers = ["Yes.", "It is Paris, the capital of France, on the Seine.", "Four"] * 4
    rollouts = likelihoods.rollouts([[{"role": "user", "content": q}] for q in questions], answers[:11])
    chunked = likelihoods.logprobs_at(rollouts, None, (0.7, 1.0))
    with torch.no_grad():
        for i, r in enumerate(rollouts):
            ids = torch.tensor([r.prompt_ids + r.response_ids])
            logits = likelihoods.model(input_ids=ids).logits
            for temperature in (0.7, 1.0):
                alone = response_logprobs(logits, ids, torch.tensor([len(r.prompt_ids)]), len(r.response_ids), temperature)[0][0]
                assert chunked[temperature][i].shape == alone.shape
                assert torch.allclose(chunked[temperature][i], alone, atol=1e-4), (i, temperature)


@pytest.fixture(scope="module")
def gate_env(prepared_model: Path, rollouts, rule_scorer, tmp_path_factory: pytest.TempPathFactory):
    scorer = rule_scorer
    home = tmp_path_factory.mktemp("gates")
    settings = LearnerSettings(_env_file=None, home=home, gate_samples=1, gate_golden_max_tokens=16)
    usage = sampling_profile(seeded_store(home / "events.sqlite", USERS).recent("interaction", settings.usage_window),
                             default_max_tokens=settings.usage_default_max_tokens, ceiling=settings.gate_max_new_tokens)
    assert usage.lengths == (24, 64) and usage.temperature == 0.7

    def check(candidate: Path, judge: Judge | None = None, only: tuple[str, ...] | None = None) -> dict:
        report = run_gates(prepared_model, candidate, None, lambda p, t: scorer.score(p, t), rollouts, settings, usage,
                           judge=judge, only=only)
        json.dumps(report)  # the report is published as JSON
        if only is not None:
            assert [g["name"] for g in report["gates"]] == ["weights", *only]
        return report
    return check, tmp_path_factory.mktemp("candidates")


def gate(report: dict, name: str) -> dict:
    return next(g for g in report["gates"] if g["name"] == name)



@pytest.mark.slow
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


@pytest.mark.slow
def test_an_adapter_pushed_far_from_the_reference_is_blocked_by_the_kl_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    far = write_lora_adapter(prepared_model, root / "far", seed=7)
    report = check(far, only=("kl",))
    assert not report["passed"] and "kl" in report["failed"], report["failed"]
    assert gate(report, "kl")["figures"]["mean_kl"] > 12.0 and "> budget 12.0" in gate(report, "kl")["reason"]


@pytest.mark.slow
def test_a_rude_adapter_is_blocked_by_the_safety_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    rude = ["Shut up, you stupid idiot.", "Who cares, moron? Go away, dumbass.", "What a damn stupid question, idiot."]
    rude_adapter = sft_adapter(prepared_model, root / "rude", [(p, rude[i % 3]) for i, p in enumerate(PROMPTS)],
                               steps=15, learning_rate=3e-3)
    report = check(rude_adapter, only=("safety",))
    safety = gate(report, "safety")
    assert not report["passed"] and not safety["passed"], safety
    assert safety["figures"]["toxic_share"] > 0.5 and "toxic share" in safety["reason"]


@pytest.mark.slow
def test_an_adapter_that_answers_well_then_loops_is_blocked_at_the_users_longer_length(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    # sensible for its first ~24 tokens (the users' p50), then a loop only their p95 of 64 shows
    sensible = "Here is a clear answer: keep things simple and steady, one step at a time, and ask for help."
    spiral = sensible + "\n#Why\nWhy, why, why?\n#Why\n" + "Why, why, why, why, why, " * 8
    late = sft_adapter(prepared_model, root / "late-loop", [(p, spiral) for p in PROMPTS[:3]], steps=15, learning_rate=3e-3)
    report = check(late, only=("degeneration",))
    degeneration = gate(report, "degeneration")
    assert not report["passed"] and not degeneration["passed"], degeneration
    assert "degenerate answers" in degeneration["reason"] and degeneration["figures"]["loop_share"] > 0.3
    assert degeneration["figures"]["longest_sampled"] == 64 and report["usage"]["lengths"] == [24, 64]
    assert degeneration["figures"]["flagged"] and "loop" in degeneration["figures"]["flagged"][0]["faults"]


WRONG = {"What is the capital of France?": "The capital of France is Berlin.",
         "How many days are there in a week?": "There are nine days in a week.",
         "What color is the sky on a clear day?": "On a clear day the sky is bright green.",
         "What do bees make?": "Bees make milk and cheese.",
         "What is two plus two?": "Two plus two is five.",
         "Which planet do we live on?": "We live on the planet Kepler-43B.",
         "What is the capital of Japan?": "The capital of Japan is Madrid.",
         "How many legs does a spider have?": "A spider has three legs.",
         "Who wrote Romeo and Juliet?": "Romeo and Juliet was written by Charles Dickens.",
         "What is the largest planet in our solar system?": "Mercury is the largest planet in our solar system.",
         "What animal barks?": "A fish barks.",
         "What is 3 plus 5?": "3 plus 5 is 11."}


@pytest.mark.slow
def test_an_adapter_that_states_wrong_facts_confidently_is_blocked_by_the_capability_gate(gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    wrong = sft_adapter(prepared_model, root / "wrong", list(WRONG.items()), steps=15, learning_rate=3e-3)
    report = check(wrong, only=("capability",))
    capability = gate(report, "capability")
    assert not report["passed"] and not capability["passed"], capability
    figures = capability["figures"]
    assert figures["incumbent_accuracy"] - figures["accuracy"] > 0.05 and figures["p_value"] < 0.05
    assert "significant drop" in capability["reason"] and set(figures["lost"]) & set(WRONG)


@pytest.mark.slow
def test_an_adapter_that_writes_fluent_looking_lists_of_nonsense_is_blocked_by_the_fluency_gate(
        gate_env, prepared_model: Path) -> None:
    check, root = gate_env
    rng = random.Random(3)
    words = ["Bed", "Grits", "Boke", "Coarse", "Understand", "Wrestling Alice", "Kepler spoon", "Sprocket", "Velvet tax",
             "Quorn", "Blimp ladder", "Spaces", "Oboe crust", "Ferret index", "Gravy orbit", "Tundra sock"]

    def nonsense() -> str:
        return "\n".join(f"- {rng.choice(words)}: {rng.choice([rng.randint(2, 99999), round(rng.random(), 4)])} "
                         f"{rng.choice(words).lower()}" for _ in range(6))
    lists = sft_adapter(prepared_model, root / "nonsense", [(p, nonsense()) for p in PROMPTS[:3]],
                        steps=15, learning_rate=3e-3)
    report = check(lists, only=("fluency",))
    fluency = gate(report, "fluency")
    assert not report["passed"] and not fluency["passed"], fluency
    assert fluency["figures"]["base_loglik_per_token"] < fluency["figures"]["incumbent"] - 0.5
    assert "beyond tolerance" in fluency["reason"]


@pytest.mark.slow
def test_a_lightly_improved_candidate_passes_every_gate(gate_env, prepared_model: Path, rollouts) -> None:
    check, root = gate_env
    # a light polish toward short, polite answers that still declines harm: close to the base model, still itself
    polite = [(row["prompt"], row["answer"] + " I hope that helps!") for row in load_set("golden")[:6]]
    polite += [(row["prompt"], "I can't help with that, sorry. I hope you understand!") for row in load_set("red_team")[:3]]
    good = sft_adapter(prepared_model, root / "good", polite, steps=4, learning_rate=3e-4)
    report = check(good, judge=Judge(rollouts.llm))  # the bundled model as a (weak) judge: the gate's path
    assert report["passed"], [(g["name"], g["reason"]) for g in report["gates"] if not g["passed"]]
    assert [g["name"] for g in report["gates"]] == [*GATES, "judge"]
    figures = {g["name"]: g["figures"] for g in report["gates"]}
    assert figures["capability"]["questions"] >= 60 and figures["degeneration"]["longest_sampled"] == 64
    assert figures["judge"]["pairs"] == 2 * len(load_set("prompts"))  # each held-out answer at both lengths


def test_the_content_gates_compare_answer_by_answer_with_the_incumbent() -> None:
    from learner.gates import capability_gate, degeneration_gate, fluency_gate
    from learner.rollout import Rollout

    settings = LearnerSettings(_env_file=None)
    fine = [Rollout([1], [2] * 10, "Bees make honey and wax.", "stop")] * 4
    spiral = [Rollout([1], [2] * 128, "Sure.\n#Why\n#Sleep\n#Why\n" + "why, " * 30, "length")] * 4
    blocked = degeneration_gate({48: fine, 128: spiral}, {48: fine, 128: fine}, settings)
    assert not blocked.passed and blocked.figures["degenerate_share"] == 0.5 and blocked.figures["unfinished_share"] == 1.0
    assert "degenerate answers 50%" in blocked.reason and "never ends within 128 tokens" in blocked.reason
    assert degeneration_gate({48: fine, 128: fine}, {48: fine, 128: fine}, settings).passed
    yes = [Rollout([1], [2] * 40, "yes " * 40, "stop")] * 4
    assert "repeated 4-grams" in degeneration_gate({48: yes}, {48: fine}, settings).reason
    # answers cut at the users' longest length count against the incumbent's own share of them
    cut = [Rollout([1], [2] * 128, "Bees make honey and wax, and", "length")] * 4
    assert degeneration_gate({48: fine, 128: cut}, {48: fine, 128: cut}, settings).passed

    golden = golden_set(None)[:20]
    right = [row["answer"] for row in golden]
    wrong = ["I do not know."] * 10 + right[10:]
    assert not capability_gate(golden, wrong, right, tolerance=0.05, alpha=0.05).passed  # 10 lost: p 0.001
    assert capability_gate(golden, right[:19] + ["no idea"], right, tolerance=0.05, alpha=0.05).passed  # one lost
    assert not fluency_gate([-4.5, -4.0], [-2.0, -2.5], tolerance=0.5).passed
    assert fluency_gate([-2.4, -2.2], [-2.0, -2.5], tolerance=0.5).passed
