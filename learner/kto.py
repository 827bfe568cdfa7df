"""Offline KTO from logged thumbs: a thumb up is a desirable answer, a thumb down an undesirable one
(and a duel's winner and loser count as one of each); no pairs are needed, no reward model.

Loss (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
https://arxiv.org/abs/2402.01306, eq. 8), as TRL's KTOTrainer.kto_loss defines it:
    z = max(0, mean over mismatched (prompt, answer) pairs of log pi - log ref), without gradient
    desirable:   lambda_D (1 - sigmoid(beta (log pi(y) - log ref(y) - z)))
    undesirable: lambda_U (1 - sigmoid(beta (z - (log pi(y) - log ref(y)))))
The mismatched pairs are the batch's answers each put after the next example's prompt (TRL shifts the
completions by one the same way). Hand-written because it is the product's core.
"""

from __future__ import annotations

import torch

from learner.dataset import FeedbackData, Pointwise
from learner.offline import OfflineTrainer


def kto_loss(policy_desirable: torch.Tensor, policy_undesirable: torch.Tensor, policy_kl: torch.Tensor,
             reference_desirable: torch.Tensor, reference_undesirable: torch.Tensor, reference_kl: torch.Tensor,
             beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(losses of the desirable then the undesirable answers, their implicit rewards each, the KL estimate z)."""
    kl = (policy_kl - reference_kl).mean().clamp(min=0).detach()
    desirable_ratio = policy_desirable - reference_desirable
    undesirable_ratio = policy_undesirable - reference_undesirable
    losses = torch.cat((desirable_weight * (1 - torch.sigmoid(beta * (desirable_ratio - kl))),
                        undesirable_weight * (1 - torch.sigmoid(beta * (kl - undesirable_ratio)))))
    return losses, beta * desirable_ratio.detach(), beta * undesirable_ratio.detach(), kl


class KTOTrainer(OfflineTrainer):
    name = "KTO"

    @staticmethod
    def examples(data: FeedbackData) -> list[Pointwise]:
        unpaired = [Pointwise(p.prompt, answer, label, p.user_id) for p in data.pairs
                    for answer, label in ((p.chosen, 1.0), (p.rejected, 0.0))]
        return list(data.pointwise) + unpaired

    def loss(self, batch: list[Pointwise]) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, answers = [e.prompt for e in batch], [e.response for e in batch]
        good = torch.tensor([e.label >= 0.5 for e in batch])
        policy = self.logprobs(prompts, answers)
        reference = self.logprobs(prompts, answers, reference=True)
        shifted = prompts[1:] + prompts[:1]  # each answer after another example's prompt: the KL estimate
        with torch.no_grad():
            policy_kl = self.logprobs(shifted, answers)
        reference_kl = self.logprobs(shifted, answers, reference=True)
        c = self.config
        losses, desirable, undesirable, kl = kto_loss(policy[good], policy[~good], policy_kl, reference[good],
                                                      reference[~good], reference_kl, c.beta, c.desirable_weight,
                                                      c.undesirable_weight)
        rewards = torch.cat((desirable, undesirable))
        return losses.mean(), {
            "rewards/desirable": desirable.mean().item() if len(desirable) else 0.0,
            "rewards/undesirable": undesirable.mean().item() if len(undesirable) else 0.0,
            "kl": kl.item(),
            "objective/scores": (desirable.sum() - undesirable.sum()).item() / max(1, len(rewards)),
            "objective/kl": (policy - reference).detach().mean().item(),
        }
