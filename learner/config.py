"""The learner's hyperparameters and schedule: plain data, no torch, so the always-on learner loop
validates them at start (and decides when a cycle is due) without importing the training stack.

Each learner's hyperparameters are a pydantic model nested in `LearnerSettings` (`RLHF_PPO__STEPS=10`,
`rlhf-loop learn --once --ppo.steps 10`) and the stand-alone jobs' flags (`learner/train_*.py`): one
spelling, validated when read. Why the defaults are what they are: docs/tuning.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings

if TYPE_CHECKING:
    from learner.settings import LearnerSettings


class Hyperparameters(BaseModel):
    """A misspelt hyperparameter is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoRATraining(Hyperparameters):
    """What every learner of the policy reads: the LoRA it trains and its optimizer."""

    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate.")
    lora_rank: int = Field(default=8, ge=1, description="LoRA rank when not warm-starting from an adapter.")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA alpha when not warm-starting.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping.")
    seed: int = Field(default=0, description="Seed.")


class PolicyConfig(LoRATraining):
    """What every policy-gradient learner (PPO, RLOO) reads: rollouts and the KL to the reference."""

    steps: int = Field(default=5, ge=1, description="Steps (rollouts + update) per run.")
    batch_size: int = Field(default=16, ge=1, description="Prompts per step.")
    minibatch_size: int = Field(default=8, ge=1, description="Rollouts per gradient step.")
    ppo_epochs: int = Field(default=2, ge=1, description="Passes over each step's rollouts.")
    max_new_tokens: int = Field(default=0, ge=0, description=(
        "Longest response generated; 0: the p95 max_tokens of recent interactions (learner/usage.py), so the "
        "policy is trained on the lengths users read and a cut answer is scored as cut."))
    temperature: float = Field(default=0.0, ge=0, description=(
        "Sampling temperature of rollouts, at which the policy's log-probs and its KL to the reference are read; "
        "0: the median temperature of recent interactions (learner/usage.py), so the policy is trained, and its KL "
        "kept, on the distribution users sample from: the one the KL gate measures."))
    clip_range: float = Field(default=0.2, gt=0, description="Policy ratio clip.")
    kl_coef: float = Field(default=0.05, ge=0, description="Initial KL penalty coefficient (beta).")
    kl_target: float = Field(default=1.0, gt=0, description="Target sequence KL (nats) of the adaptive controller.")
    kl_horizon: int = Field(default=1000, ge=1, description="Horizon of the adaptive KL controller.")
    kl_estimator: Literal["k1", "k3"] = Field(default="k3", description="Per-token KL estimator in the reward.")
    reference: Literal["base", "incumbent"] = Field(default="base", description="KL reference: base model or incumbent adapter.")
    rollout_kv_cache_mib: int = Field(default=256, ge=16, description="KV cache of the rollout engine, in MiB (one batch of rollouts).")
    checkpoint_every: int = Field(default=5, ge=1, description="Steps between resumable checkpoints.")


class PPOConfig(PolicyConfig):
    gamma: float = Field(default=1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(default=0.95, ge=0, le=1, description="Lambda of GAE.")
    clip_range_value: float = Field(default=0.2, gt=0, description="Value clip.")
    vf_coef: float = Field(default=0.1, ge=0, description="Weight of the value loss.")
    whiten_rewards: bool = Field(default=False, description="Whiten per-token rewards before GAE.")
    score_baseline: Literal["batch_mean", "none"] = Field(default="batch_mean", description=(
        "Subtract the batch's mean reward-model score before GAE (the value head starts at zero)."))


class RLOOConfig(PolicyConfig):
    batch_size: int = Field(default=4, ge=1, description="Prompts per step (each answered samples_per_prompt times).")
    samples_per_prompt: int = Field(default=4, ge=2, description="Answers sampled per prompt (k): each one's baseline is "
                                                                 "the mean reward of the other k - 1.")
    normalize_advantages: bool = Field(default=True, description="Whiten the leave-one-out advantages over the batch.")


class OnlineDPOConfig(PolicyConfig):
    """Online DPO reads the rollout fields of PolicyConfig; its KL to the reference is DPO's own (beta), so the
    KL penalty's controller only reports."""

    batch_size: int = Field(default=4, ge=1, description="Prompts per step (each answered samples_per_prompt times).")
    samples_per_prompt: int = Field(default=4, ge=2, description="Answers sampled per prompt (k): the reward model's best "
                                                                 "and worst of them form the step's pair.")
    minibatch_size: int = Field(default=4, ge=1, description="Pairs per gradient step.")
    beta: float = Field(default=0.1, gt=0, description="Strength of the implicit KL to the reference (the adapter disabled).")


class OfflineConfig(LoRATraining):
    """What the offline learners (DPO, KTO, SFT) read: they train on logged feedback, no sampling, no reward model."""

    steps: int = Field(default=30, ge=1, description="Minibatches per run, drawn from the cycle's feedback (a bounded "
                                                     "cost, however much feedback there is).")
    batch_size: int = Field(default=8, ge=2, description="Examples per minibatch.")
    learning_rate: float = Field(default=1e-4, gt=0, description="AdamW learning rate.")
    max_length: int = Field(default=256, ge=8, description="Tokens kept per prompt + answer (the prompt cut from the left).")


class OfflinePreferenceConfig(OfflineConfig):
    """What DPO and KTO add: the implicit KL to the reference."""

    beta: float = Field(default=0.1, gt=0, description="Strength of the implicit KL to the reference (the adapter disabled).")


class DPOConfig(OfflinePreferenceConfig):
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="Conservative DPO: assumed share of flipped labels.")


class KTOConfig(OfflinePreferenceConfig):
    desirable_weight: float = Field(default=1.0, gt=0, description="Weight of thumbs up (and chosen answers).")
    undesirable_weight: float = Field(default=1.0, gt=0, description="Weight of thumbs down (and rejected answers).")


class SFTConfig(OfflineConfig):
    """Supervised fine-tuning on users' corrections (their better answers)."""

    learning_rate: float = Field(default=5e-5, gt=0, description="AdamW learning rate.")


class RewardConfig(Hyperparameters):
    lora_rank: int = Field(default=16, ge=1, description="LoRA rank of the reward model.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha (scale = alpha / rank).")
    top_layers: int = Field(default=0, ge=0, description=(
        "LoRA on the top N transformer layers only (0: on every layer): the backward pass stops below them."))
    learning_rate: float = Field(default=2e-4, gt=0, description="AdamW learning rate.")
    precision: Literal["auto", "bfloat16", "float32"] = Field(default="auto", description=(
        "Training's forward and backward under bfloat16 autocast, or in float32; auto: bfloat16 where the CPU "
        "computes it natively (oneDNN), else float32. Scoring is float32 either way."))
    epochs: int = Field(default=3, ge=1, description="Passes over the training data per refresh.")
    batch_size: int = Field(default=8, ge=1, description="Pairs (and thumbs) per optimizer step.")
    max_length: int = Field(default=160, ge=8, description="Tokens kept per prompt + response (left-truncated).")
    pointwise_weight: float = Field(default=1.0, ge=0, description="Weight of the thumbs (BCE) loss next to Bradley-Terry.")
    heldout_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of examples held out for accuracy (by hash).")
    replay_fraction: float = Field(default=0.5, ge=0, le=1, description="Share of older examples replayed in a refresh.")
    replay_max: int = Field(default=256, ge=0, description="Most older examples of each kind (pairs, thumbs) replayed in a "
                                                        "refresh: its cost does not grow with all feedback ever received.")
    max_steps: int = Field(default=32, ge=1, description=(
        "Most optimizer steps of a refresh: the epochs stop there, and a refresh reads at most max_steps x batch_size "
        "examples of each kind (the newest new ones first, then replay), so a cycle that found much new feedback "
        "is not the slowest one."))
    heldout_max: int = Field(default=256, ge=1, description="Most held-out examples of each kind (the newest) a refresh "
                                                         "is measured on.")
    seed: int = Field(default=0, description="Seed for shuffling and initialisation.")


class JobFlags(BaseSettings):
    """The flags of a stand-alone training job (`python -m learner.train_ppo --ppo.steps 20`), read by
    pydantic-settings' own parser (`feedback.settings.load_settings(cli_args=...)`); flags only, no env."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_):
        return (init_settings,)


def due(new_feedback: int, seconds_since_last: float, settings: LearnerSettings, *, helped: bool = False) -> bool:
    """The schedule: enough new ratings, or enough time with at least one new rating. After a cycle that
    helped (its candidate became active), fewer new ratings start the next one: the loop is on a good path."""
    needed = settings.min_new_feedback_after_promotion if helped else settings.min_new_feedback
    return new_feedback >= needed or (new_feedback > 0 and seconds_since_last >= settings.max_interval_s)
