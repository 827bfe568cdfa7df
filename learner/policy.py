"""What the policy-gradient learners share (learner/ppo.py, learner/rloo.py): the LoRA policy and its
reference, vLLM rollouts, scoring by the reward model, the KL to the reference, checkpoints, DDP.

Policy: base + LoRA (warm-started from the active adapter), with a value head on the same trunk for
the learners that have a critic. Reference: the same weights with the adapter disabled (or the
incumbent adapter, frozen), so no second model copy sits in memory. Each learner writes only its
`train_step`: how rewards become advantages, and its loss.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import Progress
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from learner import ppo_math as M
from learner.config import PolicyConfig
from learner.distributed import gather, mean_over_ranks, rank_and_world
from learner.registry import LORA_TARGET_MODULES
from learner.dataset import as_messages
from learner.rollout import VLLMRollouts

log = structlog.get_logger(__name__)


def lora_policy(base_model: Path, warm_start: Path | None, lora_rank: int, lora_alpha: int,
                incumbent_reference: bool = False):
    """(tokenizer, the base model with a trainable LoRA "default"): warm-started from an adapter (the active
    one), else new on every attention projection; with `incumbent_reference`, that adapter again, frozen,
    as "reference". The reference of every learner is this model with its adapter disabled (or "reference")."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    if warm_start is None:
        return tokenizer, get_peft_model(base, LoraConfig(r=lora_rank, lora_alpha=lora_alpha,
                                                          target_modules=LORA_TARGET_MODULES))
    lm = PeftModel.from_pretrained(base, warm_start, is_trainable=True, adapter_name="default")
    if incumbent_reference:
        lm.load_adapter(warm_start, adapter_name="reference", is_trainable=False)
    return tokenizer, lm


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float) -> None:
    """One AdamW step of every learner: gradients of `loss`, clipped to `max_grad_norm` over what the optimizer trains."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_grad_norm)
    optimizer.step()


class PolicyWithValue(nn.Module):
    """A PEFT causal LM and, for a learner with a critic, a scalar value head reading its last hidden
    layer (zero at the start). Without a head, values are None."""

    def __init__(self, peft_model, value_head: bool = True) -> None:
        super().__init__()
        self.lm = peft_model
        self.value_head = nn.Linear(peft_model.config.hidden_size, 1) if value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: torch.Tensor, length: int,
                temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, T) log-probs of the response tokens, their (B, T, V) step logits, and (B, T) values (or None):
        `response_forward` of the LM, the value head reading the last hidden layer where each token is chosen."""
        logprobs, step_logits, hidden = response_forward(self.lm, input_ids, attention_mask, start, length, temperature,
                                                         hidden_states=self.value_head is not None)
        if self.value_head is None:
            return logprobs, step_logits, None
        positions = (start[:, None] + torch.arange(length)[None, :] - 1).clamp(min=0)
        return logprobs, step_logits, torch.gather(self.value_head(hidden).squeeze(-1), 1, positions)


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, start: torch.Tensor, length: int,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens under the sampling distribution, and its logits.

    logits: (B, L, V); the response of row b occupies input_ids[b, start[b] : start[b] + length].
    Logits are divided by the sampling temperature, so ratios and KL describe the distribution
    vLLM sampled from. Returns (B, T) log-probs and (B, T, V) logits with T = length.
    """
    positions = start[:, None] + torch.arange(length)[None, :]  # (B, T) positions of response tokens
    positions = positions.clamp(max=input_ids.shape[1] - 1)
    step_logits = torch.gather(logits, 1, (positions - 1)[:, :, None].expand(-1, -1, logits.shape[-1])) / temperature
    tokens = torch.gather(input_ids, 1, positions)
    logprobs = torch.log_softmax(step_logits, dim=-1).gather(-1, tokens[:, :, None]).squeeze(-1)
    return logprobs, step_logits


def positions_before_answers(start: torch.Tensor) -> int:
    """Leading positions of a right-padded batch whose logits predict no answer token (before the earliest
    row's first prediction): a reader of answers passes `logits_to_keep` = width - this."""
    return max(int(start.min()) - 1, 0)


def response_forward(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: torch.Tensor, length: int,
                     temperature: float = 1.0, *, hidden_states: bool = False):
    """`response_logprobs` of `lm` on prompt + response rows, with logits computed only from the rows' first
    prediction of a response token on (`logits_to_keep`): no learner reads the vocabulary head and its
    softmax over the prompts (16 rows of 50 + 64 tokens: forward and backward ~10-25% faster here).
    Returns (B, T) log-probs, (B, T, V) step logits, and the last hidden layer (B, L, H) when
    `hidden_states`, else None."""
    skip = positions_before_answers(start)
    out = lm(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=input_ids.shape[1] - skip,
             output_hidden_states=hidden_states)
    logprobs, step_logits = response_logprobs(out.logits, input_ids[:, skip:], start - skip, length, temperature)
    return logprobs, step_logits, out.hidden_states[-1] if hidden_states else None


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L) prompt + response, right-padded
    attention_mask: torch.Tensor  # (B, L)
    start: torch.Tensor  # (B,) where each response begins
    mask: torch.Tensor  # (B, T) 1 on real response tokens
    prompts: list
    texts: list[str]


def collate(rollouts, prompts, pad_id: int) -> Batch:
    length = max(1, max(len(r.response_ids) for r in rollouts))
    width = max(len(r.prompt_ids) for r in rollouts) + length
    ids = torch.full((len(rollouts), width), pad_id)
    attention = torch.zeros((len(rollouts), width), dtype=torch.long)
    mask = torch.zeros((len(rollouts), length))
    for row, r in enumerate(rollouts):
        sequence = r.prompt_ids + r.response_ids
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        mask[row, : len(r.response_ids)] = 1
    start = torch.tensor([len(r.prompt_ids) for r in rollouts])
    return Batch(ids, attention, start, mask, prompts, [r.text for r in rollouts])


class PolicyTrainer:
    """One run of a policy-gradient learner: `train()` does `config.steps` steps of the subclass's
    `train_step`, checkpointing to `run_dir`.

    Under `torchrun` (DDP, gloo on CPU, nccl on GPU) rank 0 owns the vLLM engine and broadcasts
    the rollouts; each rank scores and evaluates its contiguous shard of the batch, the shards are
    gathered so that advantages are computed over the whole batch, and every minibatch is split
    across ranks with gradients averaged by DDP. Rank 0 alone writes checkpoints and adapters.
    """

    name = "policy"  # the progress bar's and the logs' name of the algorithm
    value_head = True  # whether the learner has a critic on the policy's trunk
    @property
    def rollouts_per_prompt(self) -> int:
        """Answers sampled per prompt in a step: k for the learners that compare a prompt's answers (RLOO, online DPO)."""
        return getattr(self.config, "samples_per_prompt", 1)

    def __init__(self, base_model: Path, run_dir: Path, config: PolicyConfig,
                 score: Callable[[list, list[str]], torch.Tensor], *, warm_start: Path | None = None,
                 rollouts: VLLMRollouts | None = None, log_step: Callable[[dict], None] | None = None) -> None:
        torch.manual_seed(config.seed)  # the same initial LoRA and value head on every rank
        self.rank, self.world = rank_and_world()
        self.config, self.run_dir, self.score = config, run_dir, score
        if config.max_new_tokens < 1 or config.temperature == 0:
            raise ValueError("max_new_tokens 0 and temperature 0 stand for the users' sampling: resolve them "
                             "(learner.cycle.at_users_sampling) before training")
        if (config.batch_size * self.rollouts_per_prompt) % self.world or config.minibatch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} (x {self.rollouts_per_prompt} rollouts per prompt) and "
                             f"minibatch_size {config.minibatch_size} must divide by the {self.world} processes")
        self.base_model = base_model
        self.tokenizer, lm = lora_policy(base_model, warm_start, config.lora_rank, config.lora_alpha,
                                         incumbent_reference=config.reference == "incumbent")
        self.policy = PolicyWithValue(lm, value_head=self.value_head)
        self.ddp = DistributedDataParallel(self.policy) if self.world > 1 else self.policy
        self.optimizer = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=config.learning_rate)
        self.kl = M.AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        self.step = 0
        self.history: list[dict] = []
        self.rollouts = rollouts
        self.log_step = log_step or (lambda row: None)
        self._resume()

    # -- checkpoints --------------------------------------------------------------------------------
    def _resume(self) -> None:
        checkpoint = self.run_dir / "checkpoint"
        if not (checkpoint / "state.pt").exists():
            return
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.policy.lm, load_file(checkpoint / "adapter" / "adapter_model.safetensors"))
        state = torch.load(checkpoint / "state.pt", weights_only=True)  # tensors, numbers and lists only: no pickled code
        if self.policy.value_head is not None:
            self.policy.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl.value, self.step, self.history = state["kl_coef"], state["step"], state["history"]
        torch.set_rng_state(state["rng"])
        log.info("ppo.resumed", step=self.step, run_dir=str(self.run_dir))

    def _checkpoint(self) -> None:
        if self.rank != 0:
            return
        staging = self.run_dir / ".checkpoint.staging"
        shutil.rmtree(staging, ignore_errors=True)
        self.policy.lm.save_pretrained(staging / "adapter", selected_adapters=["default"])
        head = self.policy.value_head.state_dict() if self.policy.value_head is not None else {}
        torch.save({"value_head": head, "optimizer": self.optimizer.state_dict(),
                    "kl_coef": self.kl.value, "step": self.step, "history": self.history,
                    "rng": torch.get_rng_state()}, staging / "state.pt")
        old = self.run_dir / "checkpoint"
        if old.exists():
            os.replace(old, self.run_dir / ".checkpoint.old")
        os.replace(staging, old)
        shutil.rmtree(self.run_dir / ".checkpoint.old", ignore_errors=True)

    def save_adapter(self, directory: Path) -> Path:
        self.policy.lm.save_pretrained(directory, selected_adapters=["default"])
        return directory

    # -- the loop -------------------------------------------------------------------------------------
    def train(self, prompts: list) -> list[dict]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rollouts is None and self.rank == 0:
            self.rollouts = VLLMRollouts(self.base_model, max_model_len=1024, lora_rank=self.config.lora_rank,
                                         kv_cache_mib=self.config.rollout_kv_cache_mib, seed=self.config.seed)
        rng = random.Random(self.config.seed + self.step)
        with Progress(console=Console(stderr=True), disable=self.rank != 0) as progress:  # stdout: results only
            bar = progress.add_task(self.name, total=self.config.steps, completed=self.step)
            while self.step < self.config.steps:
                row = self.train_step(rng.sample(prompts, min(self.config.batch_size, len(prompts))))
                self.history.append(row)
                if self.rank == 0:
                    self.log_step(row)
                log.info(f"{self.name.lower()}.step", **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    self._checkpoint()
                    if self.world > 1:
                        dist.barrier()
                progress.update(bar, completed=self.step,
                                description=f"{self.name} reward {row['objective/scores']:.3f} kl {row['objective/kl']:.3f}")
        return self.history

    def train_step(self, prompts: list) -> dict:
        raise NotImplementedError

    def sample_and_score(self, prompts: list):
        """A step's first half, the same for every learner: rollouts of `prompts` (`rollouts_per_prompt` each,
        grouped: prompt i's are rows i*k .. i*k + k - 1), then old and reference log-probs, values (or None) and
        scores; with the step's start and timings so far."""
        started = time.perf_counter()
        batch = self.rollout([p for p in prompts for _ in range(self.rollouts_per_prompt)])
        timings = {"time/rollout_s": time.perf_counter() - started}
        t = time.perf_counter()
        old_logprobs, old_values, ref_logprobs, scores = self.evaluate(batch)
        timings["time/scoring_s"] = time.perf_counter() - t
        return started, timings, batch, old_logprobs, old_values, ref_logprobs, scores

    def finish_step(self, started: float, timings: dict[str, float], batch: Batch, scores: torch.Tensor,
                    kl: torch.Tensor, rlhf_reward: torch.Tensor, stats: dict[str, list[float]]) -> dict:
        """A step's end: adapt the KL coefficient to the measured sequence KL, count the step, and the row
        it logs (`stats`: per-minibatch losses, clip fractions, entropies, averaged over ranks)."""
        sequence_kl = kl.sum(1).mean().item()
        self.kl.update(sequence_kl, len(batch.prompts))
        self.step += 1
        averaged = mean_over_ranks({key: sum(xs) / len(xs) for key, xs in stats.items()})
        return {
            "step": self.step,
            "objective/scores": scores.mean().item(),
            "objective/kl": sequence_kl,
            "objective/kl_coef": self.kl.value,
            "objective/rlhf_reward": rlhf_reward.mean().item(),
            "objective/entropy": averaged.pop("entropy"),
            "policy/clipfrac": averaged.pop("clip", 0.0),  # none for a learner without a ratio clip
            **{f"loss/{key}": value for key, value in averaged.items()},
            "response/length": batch.mask.sum(1).mean().item(),
            **timings,
            "time/step_s": time.perf_counter() - started,
        }

    def rollout(self, prompts: list) -> Batch:
        """Answers of the current adapter from vLLM (rank 0 generates, under a fresh name and id), one per
        prompt given (a learner that samples k per prompt repeats each prompt k times)."""
        c = self.config
        generated = [None]
        if self.rank == 0:
            adapter = self.save_adapter(self.run_dir / "rollout-adapters" / f"step-{self.step:05d}")
            generated[0] = self.rollouts.generate(
                [as_messages(p) for p in prompts], adapter=adapter,
                max_tokens=c.max_new_tokens, temperature=c.temperature, seed=c.seed * 100_003 + self.step)
            shutil.rmtree(self.run_dir / "rollout-adapters" / f"step-{self.step - 1:05d}", ignore_errors=True)
        if self.world > 1:
            dist.broadcast_object_list(generated, src=0)
        return collate(generated[0], prompts, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Old log-probs and values (policy), reference log-probs (adapter off, or incumbent) and the reward
        model's scores, each rank on its shard of the batch, gathered: (B, T), (B, T) or None, (B, T), (B,)."""
        T = batch.mask.shape[1]
        share = len(batch.prompts) // self.world
        mine = torch.arange(self.rank * share, (self.rank + 1) * share)
        shard = Batch(batch.input_ids[mine], batch.attention_mask[mine], batch.start[mine], batch.mask[mine],
                      [batch.prompts[i] for i in mine], [batch.texts[i] for i in mine])
        old_logprobs, _, values = self.policy(shard.input_ids, shard.attention_mask, shard.start, T, self.config.temperature)
        old_values = gather(values) if values is not None else None
        ref_logprobs = self._reference_logprobs(shard, T)
        scores = self.score(shard.prompts, shard.texts).detach().float()  # (B / world,)
        return gather(old_logprobs), old_values, gather(ref_logprobs), gather(scores)

    def update(self, batch: Batch, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The policy on rows `idx` of the batch, with gradients: (log-probs, step logits, values or None)."""
        return self.ddp(batch.input_ids[idx], batch.attention_mask[idx], batch.start[idx], batch.mask.shape[1],
                        self.config.temperature)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        optimizer_step(self.optimizer, loss, self.config.max_grad_norm)

    def _reference_logprobs(self, batch: Batch, T: int) -> torch.Tensor:
        lm = self.policy.lm
        if self.config.reference == "incumbent":
            lm.set_adapter("reference")
            try:
                return response_forward(lm, batch.input_ids, batch.attention_mask, batch.start, T, self.config.temperature)[0]
            finally:
                lm.set_adapter("default")
        with lm.disable_adapter():
            return response_forward(lm, batch.input_ids, batch.attention_mask, batch.start, T, self.config.temperature)[0]

    @torch.no_grad()
    def measured_kl(self, prompts: list, samples: int = 1) -> float:
        """Mean sequence KL (k1, exact in expectation) of policy vs reference on fresh rollouts."""
        adapter = self.save_adapter(self.run_dir / "eval-adapter" / f"step-{self.step:05d}")
        generated = self.rollouts.generate([as_messages(p) for p in prompts] * samples, adapter=adapter,
                                           max_tokens=self.config.max_new_tokens,
                                           temperature=self.config.temperature, seed=777)
        batch = collate(generated, prompts * samples, self.tokenizer.pad_token_id)
        T = batch.mask.shape[1]
        logprobs, _, _ = self.policy(batch.input_ids, batch.attention_mask, batch.start, T, self.config.temperature)
        reference = self._reference_logprobs(batch, T)
        return ((logprobs - reference) * batch.mask).sum(1).mean().item()


def write_history(path: Path, history: list[dict]) -> None:
    path.write_text("\n".join(json.dumps(row) for row in history) + "\n")
