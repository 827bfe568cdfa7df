"""The judge gate: a local instruction model served by vLLM compares candidate and incumbent answers
in both orders with constrained verdicts; its win rate gates like the reward model's."""

from __future__ import annotations

import re

import pytest

from learner.gates import judge_gate
from learner.judge import VERDICT, Judge


def test_the_judge_gate_fails_a_candidate_that_significantly_loses() -> None:
    lost = judge_gate([0.0] * 20 + [0.5] * 4, minimum=0.5)
    assert not lost.passed and lost.figures["pairs"] == 24 and "significantly below 0.5" in lost.reason
    even = judge_gate([1.0, 0.0, 0.5, 0.5] * 6, minimum=0.5)
    assert even.passed and even.figures["win_rate"] == 0.5


@pytest.mark.slow
def test_the_judge_reads_both_orders_through_vllm_with_verdicts_only(rollouts) -> None:
    # No instruction model but the bundled one can be had here: it stands in as a (weak) judge. Its
    # judgement means little; what is checked is the path: every pair gets a verdict in each order,
    # and a prompt's score is the candidate's points over both orders.
    judge = Judge(rollouts.llm)
    requests = ["What is the capital of France?", "How can I sleep better?", "Name a red fruit."]
    candidate = ["Paris.", "Why, why, why, why, why, why, why, why", "An apple."]
    incumbent = ["The capital of France is Paris.", "Keep a regular bedtime and a dark, cool room.", "Bananas."]
    verdicts = judge.verdicts(requests, candidate, incumbent)
    assert len(verdicts) == 3 and all(re.fullmatch(VERDICT, v) for v in verdicts), verdicts
    swapped = judge.verdicts(requests, incumbent, candidate)
    points = {"A": (1.0, 0.0), "B": (0.0, 1.0), "tie": (0.5, 0.5)}
    assert judge.wins(requests, candidate, incumbent) == [(points[x][0] + points[y][1]) / 2 for x, y in zip(verdicts, swapped)]
