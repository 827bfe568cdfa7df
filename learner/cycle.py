"""One training cycle: stored feedback -> reward-model refresh -> PPO -> gates -> candidate in the
registry; a candidate that passed its gates starts as canary (RLHF_CANARY_SHARE; it replaces an older
canary the learner started), and the promotion policy (learner/promotion.py) decides on live feedback
whether it becomes active.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import structlog

from learner import dataset
from learner.gates import run_gates
from learner.store import EventStore
from learner.promotion import start_canary
from learner.config import DPOConfig, KTOConfig, OfflineConfig, OnlineDPOConfig, PolicyConfig, PPOConfig, RewardConfig, RLOOConfig, SFTConfig
from learner.dpo import DPOTrainer
from learner.kto import KTOTrainer
from learner.policy import write_history
from learner.online_dpo import OnlineDPOTrainer
from learner.ppo import PPOTrainer
from learner.rloo import RLOOTrainer
from learner.sft import SFTTrainer
from learner.rollout import VLLMRollouts
from learner.registry import Registry
from learner.reward_model import load_current, refresh
from learner.settings import LearnerSettings
from learner.usage import SamplingProfile, sampling_profile

log = structlog.get_logger(__name__)


@dataclass
class CycleReport:
    candidate: str | None
    reason: str
    reward_model: str | None = None
    reward_model_heldout: dict | None = None
    ppo_steps: int = 0
    final_scores: float | None = None
    final_kl: float | None = None
    gates_passed: bool | None = None
    failed_gates: list[str] | None = None
    canary: bool = False
    seconds: float = 0.0


# the learner a cycle runs, by the type of its hyperparameters (RLHF_ALGORITHM picks them: settings.policy)
TRAINERS = {PPOConfig: PPOTrainer, RLOOConfig: RLOOTrainer, OnlineDPOConfig: OnlineDPOTrainer, DPOConfig: DPOTrainer,
            KTOConfig: KTOTrainer, SFTConfig: SFTTrainer}


def run_cycle(settings: LearnerSettings, policy: PolicyConfig | OfflineConfig, reward: RewardConfig, *,
              rollouts=None) -> CycleReport:
    started = time.perf_counter()
    log.info("cycle.reading", dataset=str(settings.dataset_path))  # imports done: what follows, to cycle.data, is the read
    store = EventStore(settings.dataset_path)
    try:
        data = dataset.build(store, max_per_user=settings.max_examples_per_user,
                             max_wait_s=settings.max_feedback_wait_s,
                             window_s=settings.dataset_window_days * 86400 if settings.dataset_window_days else None)
        feedback_count = store.feedback_count()
        usage = sampling_profile(store.recent("interaction", settings.usage_window),
                                 default_max_tokens=settings.usage_default_max_tokens, ceiling=settings.gate_max_new_tokens)
    finally:
        store.close()
    log.info("cycle.data", pairs=len(data.pairs), thumbs=len(data.pointwise), demonstrations=len(data.demonstrations), prompts=len(data.prompts),
             waiting=data.waiting, dropped=data.dropped, capped=data.capped, usage_lengths=usage.lengths,
             usage_temperature=usage.temperature)
    if not data.pairs and not data.pointwise and not data.demonstrations:
        return CycleReport(None, "no joined feedback yet", seconds=time.perf_counter() - started)
    if isinstance(policy, OfflineConfig) and not TRAINERS[type(policy)].examples(data):
        return CycleReport(None, f"no examples for {trainer_name(policy)} in the feedback yet",
                           seconds=time.perf_counter() - started)

    # 1. refresh the reward model (kept only if not worse on held-out data): PPO and RLOO train on it, and
    # the win-rate gate reads it whatever the learner
    rm_root = settings.learner_dir / "reward_models"
    rm_report = refresh(settings.model_dir, rm_root, data, reward)
    scorer, rm_version = load_current(settings.model_dir, rm_root, reward) or (None, None)
    if scorer is None:
        return CycleReport(None, "no reward model passed its held-out check", seconds=time.perf_counter() - started)

    # 2. the learner, from the active adapter: PPO, RLOO or online DPO on logged prompts (plus the prompt file), answers as
    # long as users read; DPO, KTO or SFT on the logged feedback itself
    registry = Registry.from_settings(settings)
    parent = registry.read_pointer().active
    prompts = list(data.prompts)
    if settings.prompt_file is not None:
        prompts += dataset.load_prompt_file(settings.prompt_file)
    random.Random(reward.seed).shuffle(prompts)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_dir = settings.learner_dir / "runs" / run_id
    incumbent = registry.version_path(parent) if parent else None
    if isinstance(policy, OfflineConfig):
        trainer = TRAINERS[type(policy)](settings.model_dir, run_dir, policy, warm_start=incumbent)
        history = trainer.train(data)
    else:
        policy = at_users_sampling(policy, usage)
        trainer = TRAINERS[type(policy)](settings.model_dir, run_dir, policy, score=scorer.score, warm_start=incumbent,
                                         rollouts=rollouts)
        history = trainer.train(prompts)
        rollouts = trainer.rollouts
    write_history(run_dir / "ppo_history.jsonl", history)
    adapter = trainer.save_adapter(run_dir / "candidate")
    del trainer  # free the policy before the gates load their own copy
    if rollouts is None:  # an offline learner sampled nothing: the gates' engine
        rollouts = VLLMRollouts(settings.model_dir, max_model_len=1024, lora_rank=policy.lora_rank,
                                kv_cache_mib=settings.ppo.rollout_kv_cache_mib, seed=policy.seed)

    # 3. gates, against the incumbent (the active adapter, or the base model)
    gate_report = run_gates(settings.model_dir, adapter, incumbent, scorer.score, rollouts, settings, usage)

    # 4. publish the candidate with its lineage and gate report; if it passed, it starts as canary
    window = {"events_until": data.newest_event_at.isoformat() if data.newest_event_at else None,
              "feedback_events": feedback_count, "pairs": len(data.pairs), "thumbs": len(data.pointwise),
              "demonstrations": len(data.demonstrations)}
    candidate = registry.publish(adapter, {
        "parent": parent, "data_window": window, "reward_model": rm_version,
        "reward_model_heldout": rm_report.heldout, "hyperparameters": {"algorithm": trainer_name(policy), trainer_name(policy): policy.model_dump(),
                            "reward": reward.model_dump()},
        "ppo_final": history[-1] if history else None, "run": str(run_dir),
        "ppo_history": [{"step": row["step"], "reward": row["objective/scores"], "kl": row["objective/kl"]} for row in history],
    }, gate_report)
    canary = gate_report["passed"] and start_canary(registry, candidate, settings)
    (run_dir / "report.json").write_text(json.dumps({"candidate": candidate, "parent": parent, "reward_model": rm_version,
                                                     "gates_passed": gate_report["passed"], "canary": canary}))
    log.info("cycle.published", candidate=candidate, parent=parent, reward_model=rm_version,
             gates_passed=gate_report["passed"], failed_gates=gate_report["failed"], canary=canary)
    return CycleReport(candidate, "published", rm_version, rm_report.heldout, len(history),
                       history[-1]["objective/scores"], history[-1]["objective/kl"], gate_report["passed"],
                       gate_report["failed"], canary, time.perf_counter() - started)


def trainer_name(policy: PolicyConfig | OfflineConfig) -> str:
    return TRAINERS[type(policy)].name.lower()


def at_users_sampling(policy: PolicyConfig, usage: SamplingProfile) -> PolicyConfig:
    """max_new_tokens 0 stands for the users' longest length (their p95), temperature 0 for their median temperature."""
    users = {"max_new_tokens": usage.longest, "temperature": usage.temperature}
    return policy.model_copy(update={name: value for name, value in users.items() if getattr(policy, name) == 0})


if __name__ == "__main__":  # `python -m learner.cycle`: one cycle with RLHF_PPO / RLHF_REWARD hyperparameters (vLLM spawns)
    import dataclasses
    import sys

    from feedback.logs import configure_logging
    from feedback.settings import load_settings

    configure_logging("learner-cycle")
    settings = load_settings(LearnerSettings)
    print(json.dumps(dataclasses.asdict(run_cycle(settings, settings.policy, settings.reward))))
    sys.exit(0)
