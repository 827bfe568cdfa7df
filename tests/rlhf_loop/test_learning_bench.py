"""The suite bench's bookkeeping (tests/bench/learning.py) on a constructed run: what a cell reports
from a simulation report and its registry, and the README table written from the cells."""

from __future__ import annotations

from pathlib import Path

from learner.registry import Registry
from tests.bench.learning import END, START, readme_with_table, summarise, table


def constructed_run(tmp_path: Path, gain: float, p_value: float) -> tuple[dict, Registry]:
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(tmp_path / "registry")
    passed = {"passed": True, "failed": [], "gates": [{"name": "kl", "passed": True, "figures": {"mean_kl": 3.2}}]}
    refused = {"passed": False, "failed": ["degeneration"], "gates": [{"name": "kl", "passed": True, "figures": {"mean_kl": 9.0}}]}
    v1 = registry.publish(adapter, {"parent": None}, passed)
    registry.publish(adapter, {"parent": v1}, refused)
    report = {"before": {"mean_score": 0.4}, "ratings": 300, "answers": 500, "feedback_to_active_s": 600.0,
              "promotions": [{"version": v1, "replaced": "base", "at_s": 700.0, "gain": gain, "p_value": p_value,
                              "better": p_value < 0.05, "answers": 80}],
              "vs_base": {"version": v1, "answers": 80, "mean_score": 0.4 + gain, "base_answers": 200,
                          "base_mean_score": 0.4, "gain": gain, "ci95": [gain - 0.05, gain + 0.05],
                          "p_value": p_value, "target_gain": 0.15}}
    return report, registry


def test_a_cell_meets_the_target_only_with_the_gain_and_the_significance(tmp_path: Path) -> None:
    report, registry = constructed_run(tmp_path, gain=0.2, p_value=0.001)
    cell = summarise(report, registry)
    assert cell["met"] and cell["regressions"] == [] and cell["base_score"] == 0.4
    assert [(c["gates_passed"], c["mean_kl"]) for c in cell["candidates"]] == [(True, 3.2), (False, 9.0)]
    assert not summarise({**report, "vs_base": {**report["vs_base"], "gain": 0.1}}, registry)["met"]  # under +0.15
    assert not summarise({**report, "vs_base": {**report["vs_base"], "p_value": 0.02}}, registry)["met"]  # not p < 0.01
    worse = {**report, "promotions": [{**report["promotions"][0], "gain": -0.05}]}
    assert summarise(worse, registry)["regressions"] == [report["promotions"][0]["version"]]


def test_the_readme_table_shows_every_run_of_a_cell(tmp_path: Path) -> None:
    report, registry = constructed_run(tmp_path, gain=0.2, p_value=0.001)
    base = {"preference": "lists", "algorithm": "ppo", "minutes": 30, "users": 4}
    cells = [{**base, "seed": 0, **summarise(report, registry)},
             {**base, "seed": 1, "error": "no simulation report"},
             {**base, "algorithm": "rloo", "seed": 0, **summarise({**report, "vs_base": None, "promotions": []}, registry)}]
    rows = table(cells).splitlines()[2:]
    assert len(rows) == 2  # one row per (preference, learner), every seed in it
    assert "+0.200 [+0.15, +0.25], p 0.001" in rows[0] and "failed" in rows[0] and "1 of 2" in rows[0]
    assert "no tested promotion" in rows[1] and "0 of 1" in rows[1]
    readme = f"# x\n{START}\nold\n{END}\nrest\n"
    written = readme_with_table(readme, cells, "2026-12-06T00:00:00Z")
    assert "old" not in written and written.endswith(f"{END}\nrest\n") and "| lists | ppo |" in written
