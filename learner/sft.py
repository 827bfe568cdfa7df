"""Supervised fine-tuning on users' corrections: each correction (a user's better answer to a served
response, `POST /v1/feedback/correction`) is a demonstration the LoRA learns to write. The same
correction also reaches every preference learner as a pair (the correction over the served answer):
learner/dataset.py.

Loss: the mean negative log-likelihood of the demonstration's tokens (its end of turn included) after
its prompt, the prompt itself not trained on, as TRL's SFTTrainer computes it with
`completion_only_loss` (token-level cross-entropy averaged over the batch's completion tokens). The
KL to the base model is not in the loss: the gates measure it (and refuse a candidate past budget),
and the fixed number of steps at a small learning rate keeps the move small.
"""

from __future__ import annotations

import torch

from learner.dataset import Demonstration, FeedbackData
from learner.offline import OfflineTrainer


def sft_loss(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the real tokens of the batch, (B, T) -> ()."""
    return -(token_logprobs * mask).sum() / mask.sum().clamp(min=1)


class SFTTrainer(OfflineTrainer):
    name = "SFT"

    @staticmethod
    def examples(data: FeedbackData) -> list[Demonstration]:
        return list(data.demonstrations)

    def loss(self, batch: list[Demonstration]) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, answers = [d.prompt for d in batch], [d.answer for d in batch]
        logprobs, mask = self.token_logprobs(prompts, answers)
        loss = sft_loss(logprobs, mask)
        with torch.no_grad():
            reference, _ = self.token_logprobs(prompts, answers, reference=True)
        tokens = mask.sum().clamp(min=1)
        return loss, {
            # what a cycle reports for every learner: the objective, and how far the policy moved on its data
            "objective/scores": -loss.item(),
            "objective/kl": (((logprobs.detach() - reference) * mask).sum() / len(batch)).item(),
            "sft/reference_nll": (-(reference * mask).sum() / tokens).item(),
        }
