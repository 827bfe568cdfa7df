"""The preference suite x the learners: how much the loop raises the served score for users whose
taste no learner knows, on this machine, with the defaults. Writes bench/results/learning.json and
the table between the README's `learning:start` and `learning:end` markers.

    python -m tests.bench.learning [--preferences lists polite] [--algorithms ppo rloo] [--seeds 0 1]
                                   [--minutes 30] [--users 4] [--again]

Each cell is one `rlhf-loop up --simulate-users USERS --minutes MINUTES` run from an empty registry and
dataset (its own RLHF_HOME), as `make demo PREFERENCE=<p>` runs it, with RLHF_ALGORITHM=<a> and
RLHF_SIMULATE_SEED=<seed>; every other setting is the default. The learner sees ratings only. A cell
reports the gain of the run's last promoted version over the base model (its first
RLHF_SIMULATE_TEST_ANSWERS answers after its promotion against the base model's answers before the
first promotion: one Welch test on samples fixed in advance, with its 95% interval), the time from the
first rating to the first promotion, every promotion against the version it replaced, and each
published candidate's gates and KL. A run meets the issue's target when the gain is at least
min(0.15, half the headroom above the base score) with p < 0.01 (a promoted version passed every gate,
the KL budget included). Cells accumulate in the JSON (a cell already there with the same minutes and
users is not run again without --again), so the suite can be filled over several sessions; every run is
kept and shown, not the best.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, get_args

from rich.progress import Progress

from learner.registry import Registry
from learner.settings import LearnerSettings
from rlhf_loop.config import between_markers
from rlhf_loop.simulation.preferences import SUITE
from tests.bench.common import RESULTS, write_result
from tests.helpers import free_port

# every RLHF_ALGORITHM but sft, which learns from corrections: simulated users give none
ALGORITHMS = tuple(a for a in get_args(LearnerSettings.model_fields["algorithm"].annotation) if a != "sft")
README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- learning:start -->", "<!-- learning:end -->"


def run_cell(preference: str, algorithm: str, seed: int, minutes: float, users: int, work: Path) -> dict[str, Any]:
    """One `up` run; its simulation report and registry, summarised."""
    home = work / f"{preference}-{algorithm}-{seed}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    report_path = home / "simulation.json"
    env = {**os.environ, "RLHF_HOME": str(home), "RLHF_ALGORITHM": algorithm, "RLHF_SIMULATE_PREFERENCE": preference,
           "RLHF_SIMULATE_SEED": str(seed), "RLHF_BROKER_PORT": str(free_port())}
    for name in ("RLHF_KAFKA_BOOTSTRAP_SERVERS", "RLHF_LEARNER_METRICS_PORT", "RLHF_SIMULATE_METRICS_PORT"):
        env.pop(name, None)
    started = time.perf_counter()
    with (home / "up.log").open("w") as log:
        done = subprocess.run([str(Path(sys.executable).parent / "rlhf-loop"), "up", "--port", str(free_port()),
                               "--simulate-users", str(users), "--minutes", str(minutes), "--report", str(report_path)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, timeout=minutes * 60 + 900)
    cell = {"preference": preference, "algorithm": algorithm, "seed": seed, "minutes": minutes, "users": users,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": time.perf_counter() - started,
            "returncode": done.returncode, "home": str(home)}
    if not report_path.exists():
        return {**cell, "error": f"no simulation report (exit {done.returncode}; see {home / 'up.log'})"}
    return {**cell, **summarise(json.loads(report_path.read_text()), Registry(home / "registry"))}


def summarise(report: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """What a cell of the table shows, from the simulation report and the run's registry."""
    candidates = []
    for version in registry.versions():
        gates = registry.meta(version).get("gate_report") or {}
        kl = next((g["figures"].get("mean_kl") for g in gates.get("gates", []) if g["name"] == "kl"), None)
        candidates.append({"version": version, "gates_passed": bool(gates.get("passed")),
                           "failed": gates.get("failed", []), "mean_kl": kl})
    final = report.get("vs_base")
    met = bool(final and final["p_value"] is not None and final["gain"] >= final["target_gain"] and final["p_value"] < 0.01)
    promotions = report.get("promotions", [])
    return {
        "base_score": final["base_mean_score"] if final else report["before"]["mean_score"],
        "vs_base": final, "met": met,
        "first_rating_to_first_promotion_s": report.get("feedback_to_active_s"),
        "promotions": [{k: row[k] for k in ("version", "replaced", "at_s", "gain", "p_value", "better")} for row in promotions],
        # no regression: no promoted version served worse than the one it replaced (on the tested sample)
        "regressions": [row["version"] for row in promotions if row["gain"] is not None and row["gain"] < 0],
        "candidates": candidates, "ratings": report["ratings"], "answers": report["answers"],
    }


def table(cells: list[dict[str, Any]]) -> str:
    """One row per (preference, algorithm), every run of it in the row (not the best)."""
    rows = {}
    for cell in sorted(cells, key=lambda c: (c["preference"], ALGORITHMS.index(c["algorithm"]) if c["algorithm"] in ALGORITHMS else 99, c["seed"])):
        rows.setdefault((cell["preference"], cell["algorithm"], cell["minutes"], cell["users"]), []).append(cell)
    fmt = lambda x, spec: "–" if x is None else format(x, spec)  # noqa: E731
    lines = ["| preference | learner | runs (min x users) | base score | gain over base [95% CI], p | "
             "first promotion (min) | promotions | KL of promoted (nats) | target met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (preference, algorithm, minutes, users), runs in rows.items():
        gains, firsts, kls = [], [], []
        for run in runs:
            final = run.get("vs_base") or {}
            if run.get("error"):
                gains.append("failed")
            elif final.get("p_value") is None:
                gains.append("no tested promotion")
            else:
                low, high = final["ci95"] or (None, None)
                gains.append(f"{final['gain']:+.3f} [{fmt(low, '+.2f')}, {fmt(high, '+.2f')}], p {final['p_value']:.2g}")
            first = run.get("first_rating_to_first_promotion_s")
            firsts.append(fmt(first / 60 if first is not None else None, ".1f"))
            promoted = {p["version"] for p in run.get("promotions", [])}
            kls.append(", ".join(fmt(c["mean_kl"], ".1f") for c in run.get("candidates", []) if c["version"] in promoted) or "–")
        base = [run.get("base_score") for run in runs]
        lines.append(f"| {preference} | {algorithm} | {len(runs)} ({fmt(minutes, 'g')} x {users}) | "
                     f"{' / '.join(fmt(b, '.3f') for b in base)} | {'<br>'.join(gains)} | {' / '.join(firsts)} | "
                     f"{' / '.join(str(len(run.get('promotions', []))) for run in runs)} | {' / '.join(kls)} | "
                     f"{sum(bool(run.get('met')) for run in runs)} of {len(runs)} |")
    return "\n".join(lines)


def readme_with_table(readme: str, cells: list[dict[str, Any]], at: str) -> str:
    return between_markers(readme, START, END, f"_Written by `python -m tests.bench.learning` ({at}); every run shown._\n\n{table(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preferences", nargs="+", default=list(SUITE), choices=list(SUITE), help="suite members (default: all)")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--again", action="store_true", help="run cells already in the results again (kept beside them)")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "rlhf-loop" / "learning")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    path = RESULTS / "learning.json"
    cells: list[dict[str, Any]] = json.loads(path.read_text())["cells"] if path.exists() else []
    todo = [(p, a, s) for p in args.preferences for a in args.algorithms for s in args.seeds
            if args.again or not any((c["preference"], c["algorithm"], c["seed"], c["minutes"], c["users"])
                                     == (p, a, s, args.minutes, args.users) for c in cells)]
    with Progress() as progress:
        bar = progress.add_task(f"{len(todo)} runs of {args.minutes:g} min", total=len(todo))
        for preference, algorithm, seed in todo:
            progress.update(bar, description=f"{preference} x {algorithm} (seed {seed})")
            cells.append(run_cell(preference, algorithm, seed, args.minutes, args.users, args.work_dir))
            write_result("learning", {"cells": cells})  # after each run: a cut-off session keeps what ran
            progress.advance(bar)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.readme.write_text(readme_with_table(args.readme.read_text(), cells, at))
    print(table(cells))


if __name__ == "__main__":
    main()
