"""Helpers that tests and benchmarks share (imported, not fixtures)."""

from __future__ import annotations

from learner.settings import LearnerSettings

# the gates before issue 22 ("gates that see what users will see"): these, and of degeneration its three older checks
GATES_BEFORE_ISSUE_22 = ("weights", "kl", "win_rate", "safety", "likelihood")


def verdict_before_issue_22(report: dict, settings: LearnerSettings) -> dict:
    """What the gates of before issue 22 would have said of a report's candidate (its figures, their thresholds)."""
    gates = {g["name"]: g for g in report["gates"]}
    figures = gates["degeneration"]["figures"]
    old_degeneration = (figures["empty_rate"] <= settings.gate_max_empty_rate
                        and figures["repetition"] <= settings.gate_max_repetition
                        and figures["mean_length"] / figures["incumbent_mean_length"] <= settings.gate_max_length_ratio)
    failed = [name for name in GATES_BEFORE_ISSUE_22 if not gates[name]["passed"]] + ([] if old_degeneration else ["degeneration"])
    return {"passed": not failed, "failed": failed}
