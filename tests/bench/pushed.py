"""The v0001 class, reproduced: the bundled preference pushed hard with PPO at the old 48-token
horizon, then gated twice: as the gates sampled before issue 22 (64 tokens, teacher-forced
capability, no fluency, degeneration as empty / repeated 4-grams / length) and as they sample now
(the users' lengths: demo users read 48 tokens, a person on the chat page 256). Writes
bench/results/pushed.json with both verdicts, the preference score of each adapter's answers at
both lengths, and example answers at 256 tokens.

    python -m tests.bench.pushed [--steps 10 20] [--preference NAME] [--work-dir DIR]

Feedback is made offline the way the simulated users of `make demo` make it (the bundled preference
on base-model answers at 48 tokens, temperature 0.7: duels to the higher score, thumbs up with the
score's probability); nothing else of the simulation is needed, so no broker or server runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in tests/bench/ppo.py: no spinning OpenMP threads

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from feedback.settings import RuntimeSettings  # noqa: E402
from learner.dataset import FeedbackData, Pair, Pointwise, as_messages  # noqa: E402
from learner.gates import run_gates  # noqa: E402
from learner.config import PPOConfig  # noqa: E402
from learner.ppo import PPOTrainer  # noqa: E402
from learner.config import RewardConfig  # noqa: E402
from learner.reward_model import load_current, refresh  # noqa: E402
from learner.rollout import VLLMRollouts  # noqa: E402
from learner.settings import LearnerSettings  # noqa: E402
from learner.usage import SamplingProfile  # noqa: E402
from rlhf_loop.model import prepare  # noqa: E402
from rlhf_loop.simulation import load_preference, prompt_set  # noqa: E402
from tests.bench.common import write_result  # noqa: E402
from tests.helpers import verdict_before_issue_22  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20], help="PPO steps at which the adapter is gated")
    parser.add_argument("--samples", type=int, default=4, help="Base-model answers per prompt for the offline feedback")
    parser.add_argument("--preference", default="concise_question",
                        help="a suite preference (rlhf_loop/simulation/preferences) or plugin file; its own prompts")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rlhf-pushed-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = RuntimeSettings()
    model = base.model or prepare(base.model_dir)
    score = load_preference(args.preference)
    prompts = prompt_set(args.preference, None)
    engine = VLLMRollouts(model, max_model_len=1024, lora_rank=8, kv_cache_mib=256)

    # 1. the demo's users: 48-token answers at temperature 0.7, rated by the bundled preference
    rng = random.Random(0)
    asked = [(("user", p),) for p in prompts for _ in range(args.samples)]
    answers = [r.text for r in engine.generate([as_messages(p) for p in asked], adapter=None, max_tokens=48,
                                               temperature=0.7, seed=1)]
    pairs, thumbs = [], []
    for i in range(0, len(asked), 2):
        (p, a), (_, b) = (asked[i], answers[i]), (asked[i + 1], answers[i + 1])
        user = f"user-{i % 4}"
        if score(p[0][1], a) != score(p[0][1], b):
            chosen, rejected = (a, b) if score(p[0][1], a) > score(p[0][1], b) else (b, a)
            pairs.append(Pair(p, chosen, rejected, user))
        for answer in (a, b):
            thumbs.append(Pointwise(p, answer, float(rng.random() < score(p[0][1], answer)), user))
    data = FeedbackData(pointwise=thumbs, pairs=pairs, prompts=sorted(set(asked)))
    reward = RewardConfig()
    kept = load_current(model, work / "reward_models", reward)  # a --work-dir run again: its reward model
    rm_heldout = refresh(model, work / "reward_models", data, reward).heldout if kept is None else "reused"
    scorer, _ = load_current(model, work / "reward_models", reward)

    # 2. PPO at the old horizon, pushed: the adapter is saved and gated at each of --steps
    config = PPOConfig(steps=max(args.steps), max_new_tokens=48, temperature=1.0)
    run_dir = work / ("run-" + "-".join(map(str, sorted(args.steps))))  # a fresh PPO run per set of --steps
    trainer = PPOTrainer(model, run_dir, config, score=scorer.score, rollouts=engine)
    settings = LearnerSettings(_env_file=None, home=work / "home")
    then = SamplingProfile((64,), 0.7, 0)  # the gates before issue 22: a fixed 64 tokens
    now = SamplingProfile((48, 256), 0.7, 0)  # demo users (p50 48) and the chat page (p95 256)
    heldout = [(("user", p),) for p in prompts]

    def preference(adapter: Path | None, max_tokens: int) -> float:
        texts = [r.text for r in engine.generate([as_messages(p) for p in heldout], adapter=adapter,
                                                 max_tokens=max_tokens, temperature=0.7, seed=99, cache=adapter is None)]
        return statistics.fmean(score(p[0][1], t) for p, t in zip(heldout, texts))

    results = {"base": {"preference_48": preference(None, 48), "preference_256": preference(None, 256)}}
    for steps in sorted(args.steps):
        trainer.config = config.model_copy(update={"steps": steps})
        history = trainer.train(sorted(set(asked)))
        adapter = trainer.save_adapter(work / f"adapter-{steps}")
        before = run_gates(model, adapter, None, scorer.score, engine, settings, then)
        after = run_gates(model, adapter, None, scorer.score, engine, settings, now)
        results[f"steps_{steps}"] = {
            "ppo_reward": [history[0]["objective/scores"], history[-1]["objective/scores"]],
            "ppo_kl": history[-1]["objective/kl"],
            "preference_48": preference(adapter, 48), "preference_256": preference(adapter, 256),
            "gates_before_issue_22": verdict_before_issue_22(before, settings),
            "gates_now": {"passed": after["passed"], "failed": after["failed"],
                          "reasons": {g["name"]: g["reason"] for g in after["gates"] if not g["passed"]}},
            "report_at_64": before, "report_now": after,
        }
        print(json.dumps({k: v for k, v in results[f"steps_{steps}"].items() if not k.startswith("report")}))
    name = "pushed" if args.preference == "concise_question" else f"pushed_{Path(args.preference).stem}"
    path = write_result(name, {
        "model": str(model), "preference": args.preference,
        "feedback": {"pairs": len(pairs), "thumbs": len(thumbs), "reward_model_heldout": rm_heldout},
        "ppo": config.model_dump(), "minutes": (time.perf_counter() - started) / 60, **results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
