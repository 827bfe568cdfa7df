"""Offline DPO from logged duels: each preference pair (a duel's winner over its loser, or a thumb up
over a thumb down on one prompt) trains the LoRA directly, with no reward model.

Loss (Rafailov et al. 2023, "Direct Preference Optimization", https://arxiv.org/abs/2305.18290, eq. 7;
with label smoothing, Mitchell 2023 "cDPO"), as TRL's DPOTrainer defines its "sigmoid" loss:
    logits = (log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l))
    loss = -(1 - eps) log sigmoid(beta logits) - eps log sigmoid(-beta logits)
and the implicit rewards beta (log pi(y) - log ref(y)). Hand-written because it is the product's core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learner.dataset import FeedbackData, Pair
from learner.offline import OfflineTrainer


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards of the chosen and rejected answers, each (B,)."""
    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return losses, beta * (policy_chosen - reference_chosen).detach(), beta * (policy_rejected - reference_rejected).detach()


class DPOTrainer(OfflineTrainer):
    name = "DPO"

    @staticmethod
    def examples(data: FeedbackData) -> list[Pair]:
        return list(data.pairs)

    def loss(self, batch: list[Pair]) -> tuple[torch.Tensor, dict[str, float]]:
        prompts = [p.prompt for p in batch]
        answers = [p.chosen for p in batch] + [p.rejected for p in batch]
        policy = self.logprobs(prompts * 2, answers)  # chosen and rejected in one forward pass
        reference = self.logprobs(prompts * 2, answers, reference=True)
        n = len(batch)
        losses, chosen, rejected = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:],
                                            self.config.beta, self.config.label_smoothing)
        return losses.mean(), {
            "rewards/chosen": chosen.mean().item(), "rewards/rejected": rejected.mean().item(),
            "rewards/accuracy": (chosen > rejected).float().mean().item(), "rewards/margin": (chosen - rejected).mean().item(),
            # what a cycle reports for every learner: the objective, and how far the policy moved on its data
            "objective/scores": (chosen - rejected).mean().item(),
            "objective/kl": (policy - reference).detach().mean().item(),
        }
