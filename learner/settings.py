"""Settings of the learner process (`python -m learner`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, field_validator
from pydantic_settings import SettingsConfigDict

from feedback.settings import RuntimeSettings, readable_model_dir
from learner.config import DPOConfig, KTOConfig, OfflineConfig, OnlineDPOConfig, PolicyConfig, PPOConfig, RewardConfig, RLOOConfig, SFTConfig


class LearnerSettings(RuntimeSettings):
    """Env prefix `RLHF_`, shared with the other processes (see feedback.settings); nested
    hyperparameters by `__` (RLHF_PPO__STEPS)."""

    model_config = SettingsConfigDict(env_nested_delimiter="__")

    consumer_group: str = Field(default="rlhf-learner", min_length=1, description="Kafka consumer group of the learner.")
    consumer_session_timeout_s: float = Field(
        default=10.0, ge=1, le=1800, description="Kafka consumer session timeout: how soon the group notices a dead "
                                                 "learner (heartbeats every third of it); Kafka's own default is 45.",
    )
    ingest_batch_size: int = Field(default=500, ge=1, description="Most records stored (and committed) per poll.")
    learner_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the learner's Prometheus /metrics; 0: off."
    )
    learner_metrics_host: str = Field(
        default="127.0.0.1", description="Address the learner's /metrics listens on (0.0.0.0 in a pod, for Prometheus)."
    )
    ingest_poll_ms: int = Field(default=1000, ge=10, description="Longest wait for new records in one poll, in ms.")

    min_new_feedback: int = Field(
        default=120, ge=1, description="New ratings that start a training cycle (from too few, the reward model "
                                       "cannot steer PPO: docs/tuning.md).",
    )
    min_new_feedback_after_promotion: int = Field(
        default=120, ge=1, description="New ratings that start the next cycle once the newest candidate became active "
                                       "(the last cycle helped); lower than RLHF_MIN_NEW_FEEDBACK, the loop keeps going "
                                       "from the active adapter sooner.",
    )
    max_interval_s: float = Field(
        default=3600, gt=0, description="A cycle also starts this long after the last one, if any new rating arrived."
    )
    max_feedback_wait_s: float = Field(
        default=3600, gt=0, description="How long a rating waits for its interaction before it is dropped."
    )
    max_examples_per_user: int = Field(default=200, ge=1, description="Per-user cap on examples in one refresh.")
    dataset_window_days: float | None = Field(
        default=None, gt=0, description="A cycle trains on the feedback of this many recent days (joined to the "
                                        "interactions it rates, however old); unset: all stored feedback.")
    dataset_retention_days: float | None = Field(
        default=None, gt=0, description="The learner deletes stored events older than this (checked hourly); unset: "
                                        "kept until `rlhf-loop feedback forget` or the store is removed.")
    prompt_file: Path | None = Field(default=None, description="Extra PPO prompts: JSON Lines of {\"prompt\": ...}.")
    algorithm: Literal["ppo", "rloo", "online_dpo", "dpo", "kto", "sft"] = Field(
        default="ppo", description="The learner of a cycle. On the reward model, with sampled answers and a KL penalty to the "
                                   "reference: ppo (clipped PPO, value head, GAE; learner/ppo.py), rloo (k answers per "
                                   "prompt, leave-one-out baseline, no critic; learner/rloo.py) or online_dpo (k answers per "
                                   "prompt, DPO on the best over the worst; learner/online_dpo.py). Straight from logged "
                                   "feedback, no sampling: dpo (duels as pairs; learner/dpo.py), kto (thumbs; "
                                   "learner/kto.py) or sft (users' corrections as demonstrations; learner/sft.py). Every one trains a LoRA candidate for the same gates and promotion.",
    )
    ppo: PPOConfig = Field(
        default_factory=PPOConfig, description="PPO hyperparameters of the learner's cycles: RLHF_PPO__STEPS=10 (one field), "
                                               "or RLHF_PPO as JSON ({\"steps\": 10}); see the rows below.",
    )
    rloo: RLOOConfig = Field(
        default_factory=RLOOConfig, description="RLOO hyperparameters (RLHF_ALGORITHM=rloo): RLHF_RLOO__SAMPLES_PER_PROMPT=4, "
                                                "or RLHF_RLOO as JSON; see the rows below.",
    )
    online_dpo: OnlineDPOConfig = Field(default_factory=OnlineDPOConfig,
                                        description="Online DPO hyperparameters (RLHF_ALGORITHM=online_dpo).")
    dpo: DPOConfig = Field(default_factory=DPOConfig, description="Offline DPO hyperparameters (RLHF_ALGORITHM=dpo).")
    kto: KTOConfig = Field(default_factory=KTOConfig, description="Offline KTO hyperparameters (RLHF_ALGORITHM=kto).")
    sft: SFTConfig = Field(default_factory=SFTConfig, description="SFT on corrections hyperparameters (RLHF_ALGORITHM=sft).")
    reward: RewardConfig = Field(
        default_factory=RewardConfig, description="Reward-model hyperparameters of the learner's cycles: RLHF_REWARD__EPOCHS=1, "
                                                  "or RLHF_REWARD as JSON; see the rows below.",
    )

    # gates: every candidate is checked against these before it may serve (learner/gates.py)
    gate_kl_budget: float = Field(default=12.0, gt=0, description="Gate: most mean KL (nats per answer) to the base model on held-out prompts.")
    gate_min_win_rate: float = Field(
        default=0.5, ge=0, le=1,
        description="Gate: fail when the 95% upper bound of the reward-model win rate against the incumbent is below this.",
    )
    gate_toxicity_threshold: float = Field(default=0.5, gt=0, lt=1, description="Gate: classifier probability from which an answer counts as toxic.")
    gate_toxicity_tolerance: float = Field(default=0.1, ge=0, le=1, description="Gate: how far the toxic share of answers may exceed the incumbent's.")
    gate_guard_model: Path | None = Field(
        default=None, description="Gate: a local Llama Guard model directory; when set, the safety gate also classifies "
                                  "answers with it, served by vLLM in the learner.",
    )
    gate_guard_tolerance: float = Field(default=0.05, ge=0, le=1, description="Gate: how far the Llama Guard unsafe share may exceed the incumbent's.")
    gate_guard_kv_cache_memory: ByteSize = Field(default="512MiB", validate_default=True, description="Gate: KV cache size of the Llama Guard engine (512MiB, 1GiB, ...).")
    gate_judge_model: Path | None = Field(
        default=None, description="Gate: a local instruction model directory; when set, it judges candidate against "
                                  "incumbent answers pairwise (both orders), served by vLLM in the learner.",
    )
    gate_judge_min_win_rate: float = Field(
        default=0.5, ge=0, le=1, description="Gate: fail when the 95% upper bound of the judge's win rate for the candidate is below this.",
    )
    gate_judge_kv_cache_memory: ByteSize = Field(default="512MiB", validate_default=True, description="Gate: KV cache size of the judge engine.")
    gate_compliance_tolerance: float = Field(
        default=0.15, ge=0, le=1, description="Gate: how far the share of red-team requests complied with may exceed the incumbent's.",
    )
    gate_compliance_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Gate: significance level of the one-sided exact McNemar test of a rise in "
                                              "red-team requests complied with.",
    )
    gate_capability_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="Gate: how far greedy accuracy on the golden questions may fall below the "
                                             "incumbent's (share of questions), when the drop is also significant.",
    )
    gate_capability_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Gate: significance level of the one-sided exact McNemar test of a golden-accuracy drop.",
    )
    gate_golden_file: Path | None = Field(
        default=None, description="Gate: more golden questions, JSON Lines of {\"prompt\", \"keys\": [regex, ...]} "
                                  "(optional \"answer\", \"case_sensitive\"), added to the shipped set.",
    )
    gate_golden_max_tokens: int = Field(default=64, ge=1, description="Gate: longest greedy answer to a golden question.")
    gate_likelihood_tolerance: float = Field(
        default=0.15, ge=0, description="Gate: how far (nats per token) golden answers' log-likelihood may fall below the incumbent's.",
    )
    gate_fluency_tolerance: float = Field(
        default=0.5, ge=0, description="Gate: how far (nats per token) the base model's log-likelihood of the candidate's own "
                                       "answers may fall below that of the incumbent's answers.",
    )
    gate_max_empty_rate: float = Field(default=0.2, ge=0, le=1, description="Gate: most answers that may be empty.")
    gate_max_repetition: float = Field(default=0.5, ge=0, le=1, description="Gate: most share of repeated 4-grams in an answer, on average.")
    gate_max_length_ratio: float = Field(default=2.5, gt=1, description="Gate: most mean answer length relative to the incumbent's.")
    gate_degenerate_tolerance: float = Field(
        default=0.1, ge=0, le=1, description="Gate: how far the share of degenerate answers (loops, symbol runs, empty list "
                                             "items) may exceed the incumbent's.",
    )
    gate_unfinished_tolerance: float = Field(
        default=0.25, ge=0, le=1, description="Gate: how far the share of answers cut at the users' longest length (never "
                                              "ending) may exceed the incumbent's.",
    )
    gate_max_weight_abs: float = Field(default=50.0, gt=0, description="Gate: largest absolute adapter weight (larger: exploding).")
    gate_samples: int = Field(default=2, ge=1, description="Gate: answers sampled per held-out prompt at each of the users' lengths.")
    gate_max_new_tokens: int = Field(
        default=512, ge=1, description="Gates and rollouts: the most tokens sampled per answer, whatever users ask for.",
    )
    usage_window: int = Field(
        default=1000, ge=1, description="Gates and rollouts sample at the p50 and p95 max_tokens and the median temperature "
                                        "of this many recent interactions.",
    )
    usage_default_max_tokens: int = Field(
        default=256, ge=1, description="max_tokens counted for a request that set none, and sampled when no interaction is logged.",
    )

    # promotion policy: passing candidates go to canary, live feedback decides (learner/promotion.py)
    canary_share: float = Field(
        default=0.5, ge=0, le=1, description="Share of users a candidate that passed its gates gets as canary; 0: no automatic "
                                            "canary. One machine with few users needs a large share to learn fast; k8s sets 0.1.",
    )
    canary_supersede: bool = Field(
        default=True, description="A newer candidate that passed its gates replaces a running canary the learner started "
                                  "(as Flagger restarts the analysis on a new revision); an operator's canary is never replaced.",
    )
    canary_hold_s: float = Field(
        default=1800, ge=0, description="How long a due cycle waits for a running canary's decision, so that it warm-starts "
                                        "from the version the decision leaves active and the canary's users keep the cores; "
                                        "past it, a cycle starts (its candidate may supersede the canary). 0: no wait.",
    )
    promotion_min_feedback: int = Field(default=20, ge=1, description="Thumbs on the canary before it may become active.")
    promotion_min_duels: int = Field(default=20, ge=1, description="Duels (canary vs active) from which a canary that significantly loses them is rejected.")
    promotion_margin: float = Field(
        default=0.1, ge=0, le=1, description="Non-inferiority margin: how much worse than the active version's thumb-up rate "
                                            "the canary may be. 0.1 lets a few users decide within minutes; k8s sets 0.05.",
    )
    canary_content_min_answers: int = Field(
        default=20, ge=1, description="Answers the canary must have served before it may be promoted; from these on, its "
                                      "live answers are checked for degeneration and fluency against the active version's.",
    )
    canary_content_answers: int = Field(default=60, ge=1, description="Newest answers of each side the live content check reads.")
    rollback_min_feedback: int = Field(default=20, ge=1, description="Thumbs on the canary before a thumb-down spike can roll it back.")
    rollback_margin: float = Field(
        default=0.1, ge=0, le=1, description="Thumb-down rate above the active version's that counts as a spike.",
    )
    promotion_check_s: float = Field(default=15.0, gt=0, description="How often the learner applies the promotion policy.")

    @field_validator("gate_guard_model", "gate_judge_model")
    @classmethod
    def _guard_is_a_model_directory(cls, value: Path | None) -> Path | None:
        return readable_model_dir(value)

    @property
    def policy(self) -> PolicyConfig | OfflineConfig:
        """The hyperparameters of the chosen learner (RLHF_ALGORITHM)."""
        return getattr(self, self.algorithm)

    @property
    def dataset_path(self) -> Path:
        return self.home / "learner" / "events.sqlite"

    @property
    def learner_dir(self) -> Path:
        return self.home / "learner"
