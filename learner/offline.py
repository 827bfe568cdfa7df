"""What the offline learners share (learner/dpo.py, learner/kto.py, learner/sft.py): they train the LoRA straight from
logged feedback, with no reward model and no sampling. Each step draws a minibatch of the cycle's
examples, reads the log-probability of each logged answer under the policy (base + LoRA, warm-started
from the active adapter) and under the reference (the same weights, adapter disabled), and takes one
AdamW step on the learner's loss. The number of steps is fixed: a cycle's cost does not grow with all
feedback ever received.
"""

from __future__ import annotations

import random
from pathlib import Path

import structlog
import torch
from rich.console import Console
from rich.progress import Progress

from learner.config import OfflineConfig
from learner.dataset import FeedbackData, as_messages
from learner.policy import collate, lora_policy, optimizer_step, response_forward
from learner.rollout import Rollout

log = structlog.get_logger(__name__)


class OfflineTrainer:
    """`train(data)` runs `config.steps` minibatches of the subclass's `examples` through its `loss`."""

    name = "offline"

    def __init__(self, base_model: Path, run_dir: Path, config: OfflineConfig, *, warm_start: Path | None = None) -> None:
        torch.manual_seed(config.seed)
        self.config, self.run_dir = config, run_dir
        self.tokenizer, self.lm = lora_policy(base_model, warm_start, config.lora_rank, config.lora_alpha)
        self.optimizer = torch.optim.AdamW([p for p in self.lm.parameters() if p.requires_grad], lr=config.learning_rate)
        self.step = 0
        self.history: list[dict] = []

    # -- what a learner defines ---------------------------------------------------------------------
    @staticmethod
    def examples(data: FeedbackData) -> list:
        """What the learner trains on in a cycle's feedback (none: the cycle has nothing to teach it yet)."""
        raise NotImplementedError

    def loss(self, batch: list) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def logprobs(self, prompts: list, answers: list[str], reference: bool = False) -> torch.Tensor:
        """Summed log-probability of each answer (and its end of turn) after its prompt, (B,): under the
        policy with gradients, or under the reference (adapter disabled) without."""
        logprobs, mask = self.token_logprobs(prompts, answers, reference)
        return (logprobs * mask).sum(1)

    def token_logprobs(self, prompts: list, answers: list[str], reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of each answer (and its end of turn) and the mask of its real tokens, (B, T)."""
        rows = []
        for prompt, answer in zip(prompts, answers):
            text = self.tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=False)
            prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            answer_ids = self.tokenizer(answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            answer_ids = answer_ids[: self.config.max_length - 1]
            prompt_ids = prompt_ids[-(self.config.max_length - len(answer_ids)):]  # the prompt cut from the left
            rows.append(Rollout(prompt_ids, answer_ids, answer))
        batch = collate(rows, prompts, self.tokenizer.pad_token_id)  # as the policy learners read their rollouts
        if reference:
            with torch.no_grad(), self.lm.disable_adapter():
                return response_forward(self.lm, batch.input_ids, batch.attention_mask, batch.start, batch.mask.shape[1])[0], batch.mask
        return response_forward(self.lm, batch.input_ids, batch.attention_mask, batch.start, batch.mask.shape[1])[0], batch.mask

    def train(self, data: FeedbackData) -> list[dict]:
        examples = self.examples(data)
        if not examples:
            raise ValueError(f"{self.name}: no examples of the kind it learns from in this cycle's feedback")
        rng = random.Random(self.config.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with Progress(console=Console(stderr=True)) as progress:  # stdout: results only
            bar = progress.add_task(self.name, total=self.config.steps)
            while self.step < self.config.steps:
                batch = rng.sample(examples, min(self.config.batch_size, len(examples)))
                loss, stats = self.loss(batch)
                optimizer_step(self.optimizer, loss, self.config.max_grad_norm)
                self.step += 1
                row = {"step": self.step, "loss": loss.item(), **stats}
                self.history.append(row)
                log.info(f"{self.name.lower()}.step", **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                progress.update(bar, completed=self.step, description=f"{self.name} loss {row['loss']:.3f}")
        return self.history

    def save_adapter(self, directory: Path) -> Path:
        self.lm.save_pretrained(directory, selected_adapters=["default"])
        return directory
