"""The PPO math against reference implementations (TRL PPOTrainer's GAE loop and whitening,
the KL estimators against the exact KL)."""

from __future__ import annotations

import torch

from learner.ppo_math import (
    AdaptiveKLController, baseline, gae, kl_per_token, masked_mean, masked_whiten, policy_loss, token_rewards, value_loss,
)


def trl_gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL 0.x-1.12 PPOTrainer's loop, verbatim in substance (no padding)."""
    lastgaelam = 0
    advantages_reversed = []
    gen_length = rewards.shape[1]
    for t in reversed(range(gen_length)):
        nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    return advantages, advantages + values


def test_gae_matches_trl_on_full_sequences() -> None:
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 7), torch.randn(4, 7)
    ours = gae(rewards, values, torch.ones(4, 7), gamma=0.99, lam=0.95)
    reference = trl_gae(rewards, values, gamma=0.99, lam=0.95)
    assert torch.allclose(ours[0], reference[0], atol=1e-6) and torch.allclose(ours[1], reference[1], atol=1e-6)


def test_gae_on_padded_rows_equals_gae_on_the_unpadded_prefix() -> None:
    torch.manual_seed(1)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    lengths = [6, 4, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (6 - n) for n in lengths])
    advantages, returns = gae(rewards * mask, values, mask, gamma=1.0, lam=0.9)
    for row, n in enumerate(lengths):
        ref_adv, ref_ret = trl_gae(rewards[row : row + 1, :n], values[row : row + 1, :n], gamma=1.0, lam=0.9)
        assert torch.allclose(advantages[row, :n], ref_adv[0], atol=1e-6)
        assert torch.allclose(returns[row, :n], ref_ret[0], atol=1e-6)
        assert torch.all(advantages[row, n:] == 0) and torch.all(returns[row, n:] == 0)


def test_whitening_matches_the_textbook_formula() -> None:
    torch.manual_seed(2)
    values, mask = torch.randn(5, 9) * 3 + 2, (torch.rand(5, 9) > 0.3).float()
    picked = values[mask.bool()]
    expected = (picked - picked.mean()) / picked.std(unbiased=True)
    assert torch.allclose(masked_whiten(values, mask)[mask.bool()], expected, atol=1e-4)
    kept = masked_whiten(values, mask, shift_mean=False)[mask.bool()]
    assert torch.allclose(kept.mean(), picked.mean(), atol=1e-4)


def test_kl_estimators_are_unbiased_and_k3_is_non_negative() -> None:
    torch.manual_seed(3)
    p = torch.distributions.Categorical(logits=torch.randn(10))
    q = torch.distributions.Categorical(logits=torch.randn(10))
    exact = torch.distributions.kl_divergence(p, q)
    samples = p.sample((200_000,))
    k1 = kl_per_token(p.log_prob(samples), q.log_prob(samples), "k1")
    k3 = kl_per_token(p.log_prob(samples), q.log_prob(samples), "k3")
    assert torch.allclose(k1.mean(), exact, rtol=0.05) and torch.allclose(k3.mean(), exact, rtol=0.05)
    assert (k3 >= 0).all() and (k1 < 0).any()
    assert k3.var() < k1.var()


def test_adaptive_kl_moves_toward_the_target_and_is_capped() -> None:
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=60.0, n_steps=1000)  # far above: +20% * 0.1, the cap
    assert abs(controller.value - 0.1 * 1.02) < 1e-9
    controller.update(current_kl=0.0, n_steps=1000)
    assert controller.value < 0.1 * 1.02


def test_rewards_put_the_score_on_the_last_real_token() -> None:
    kl = torch.ones(2, 4)
    mask = torch.tensor([[1.0, 1, 1, 0], [1.0, 1, 1, 1]])
    rewards = token_rewards(torch.tensor([5.0, -1.0]), kl, mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.1, -0.1, 4.9, 0.0], [-0.1, -0.1, -0.1, -1.1]]))


def _advantages(scores: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Step 4 of a PPO step with no KL and an untrained (zero) value head."""
    rewards = token_rewards(baseline(scores, kind), torch.zeros_like(mask), mask, kl_coef=0.1)
    advantages, _ = gae(rewards, torch.zeros_like(mask), mask, gamma=1.0, lam=0.95)
    return masked_whiten(advantages, mask) * mask


def test_without_a_baseline_equal_negative_scores_push_against_stopping_early() -> None:
    mask = torch.tensor([[1.0, 1, 0, 0, 0, 0], [1.0, 1, 1, 1, 1, 1]])  # a short and a long answer
    same = torch.tensor([-1.5, -1.5])  # the reward model cannot tell them apart
    biased = _advantages(same, mask, "none")
    assert biased[0, 1] < 0 < biased[1, 0]  # the short answer's end is blamed, the long one's start credited
    assert torch.all(_advantages(same, mask, "batch_mean") == 0)  # with the baseline: no preference at all


def test_with_the_batch_mean_baseline_a_constant_score_offset_changes_no_advantage() -> None:
    torch.manual_seed(5)
    mask = (torch.arange(8)[None, :] < torch.tensor([[3], [8], [5], [1]])).float()
    scores = torch.randn(4)
    assert torch.allclose(_advantages(scores, mask, "batch_mean"), _advantages(scores - 1.5, mask, "batch_mean"), atol=1e-5)
    assert not torch.allclose(_advantages(scores, mask, "none"), _advantages(scores - 1.5, mask, "none"), atol=1e-2)


def test_clipped_policy_loss_and_clip_fraction() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 1.0, 0.5]]))  # ratios 1.5, 1.0, 0.5
    advantages = torch.tensor([[1.0, 1.0, -1.0]])
    loss, clipped = policy_loss(new, old, advantages, torch.ones(1, 3), clip_range=0.2)
    # per token: -min(1.5, 1.2) = -1.2 ; -1.0 ; for A<0: -max(-0.5, -0.8)*... = max(0.5, 0.8) = 0.8
    assert torch.allclose(loss, torch.tensor((-1.2 - 1.0 + 0.8) / 3))
    assert torch.allclose(clipped, torch.tensor(2 / 3))


def test_value_loss_clips_large_moves() -> None:
    old, returns = torch.zeros(1, 2), torch.tensor([[1.0, 1.0]])
    near, far = torch.tensor([[0.1, 0.1]]), torch.tensor([[3.0, 3.0]])
    assert torch.allclose(value_loss(near, old, returns, torch.ones(1, 2), 0.2), torch.tensor(0.5 * 0.9**2))
    # moving to 3.0 is clipped to 0.2 for the second term: max((3-1)^2, (0.2-1)^2) = 4
    assert torch.allclose(value_loss(far, old, returns, torch.ones(1, 2), 0.2), torch.tensor(2.0))
    assert masked_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0])) == 1.0
