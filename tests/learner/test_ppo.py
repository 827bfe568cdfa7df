"""PPO on the real model with vLLM rollouts: the reward model's score goes up on held-out prompts,
the KL to the reference stays under budget, and a killed run resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.config import PPOConfig
from learner.ppo import PPOTrainer
from tests.helpers import HELD_OUT_MAX_TOKENS, LEARNER_TRAIN, assert_held_out_reward_rises_within_kl

pytestmark = pytest.mark.slow

# the KL budget of this run: 12 nats per answer of up to 40 tokens (0.3 nats a token): the policy
# may move, but only so far from the base model
CONFIG = PPOConfig(steps=3, batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=HELD_OUT_MAX_TOKENS, temperature=1.0,
                   learning_rate=1e-3, kl_coef=0.05, kl_target=12.0, checkpoint_every=1)


def test_ppo_raises_held_out_reward_within_kl_budget_and_resumes(prepared_model: Path, rule_scorer, rollouts,
                                                                 base_held_out_scores, tmp_path: Path) -> None:
    score = lambda prompts, texts: rule_scorer.score(prompts, texts)  # noqa: E731

    first = PPOTrainer(prepared_model, tmp_path / "run", CONFIG.model_copy(update={"steps": 2}), score, rollouts=rollouts)
    first.train(LEARNER_TRAIN)
    assert first.step == 2 and (tmp_path / "run" / "checkpoint" / "state.pt").exists()
    del first  # "killed" after step 2: only the checkpoint remains

    resumed = PPOTrainer(prepared_model, tmp_path / "run", CONFIG, score, rollouts=rollouts)
    assert resumed.step == 2 and len(resumed.history) == 2
    history = resumed.train(LEARNER_TRAIN)
    assert [row["step"] for row in history] == list(range(1, CONFIG.steps + 1))
    for key in ("objective/scores", "objective/kl", "objective/entropy", "policy/clipfrac", "loss/value",
                "time/rollout_s", "time/scoring_s", "time/update_s"):
        assert key in history[-1]

    # the reward model's score of held-out answers rises, beyond the noise of sampling them, within budget
    assert_held_out_reward_rises_within_kl(resumed, rollouts, rule_scorer, base_held_out_scores, tmp_path / "eval",
                                           CONFIG.kl_target)


def test_the_policy_reads_each_answer_of_a_batch_as_a_forward_pass_of_it_alone_would(prepared_model: Path) -> None:
    """Rows of mixed prompt and answer lengths, logits only from the first response token on: each row's
    log-probs and values are those of its whole sequence read alone (no padding, every position's logits)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from learner.policy import PolicyWithValue, collate, response_logprobs
    from learner.registry import LORA_TARGET_MODULES
    from learner.rollout import Rollout

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(prepared_model)
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(prepared_model, dtype=torch.float32),
                        LoraConfig(r=4, target_modules=LORA_TARGET_MODULES, init_lora_weights=False))  # a LoRA that moves the model
    policy = PolicyWithValue(lm).eval()
    torch.nn.init.normal_(policy.value_head.weight)
    texts = [("What is tea?", "A drink."), ("Name three rivers of Europe, please, in a list.", "The Rhine, the Danube and the Loire."),
             ("Hi", "Hello! How can I help you today with anything at all?")]
    rows = [Rollout(tokenizer(q)["input_ids"], tokenizer(a)["input_ids"], a) for q, a in texts]
    batch = collate(rows, [q for q, _ in texts], tokenizer.pad_token_id)
    T = batch.mask.shape[1]
    with torch.no_grad():
        logprobs, step_logits, values = policy(batch.input_ids, batch.attention_mask, batch.start, T, 0.7)
        assert step_logits.shape == (3, T, lm.config.vocab_size) and values.shape == (3, T)
        for i, r in enumerate(rows):
            ids, n = torch.tensor([r.prompt_ids + r.response_ids]), len(r.response_ids)
            out = lm(input_ids=ids, output_hidden_states=True)
            alone = response_logprobs(out.logits, ids, torch.tensor([len(r.prompt_ids)]), n, 0.7)[0][0]
            value = policy.value_head(out.hidden_states[-1]).squeeze(-1)[0, len(r.prompt_ids) - 1 : len(r.prompt_ids) - 1 + n]
            assert torch.allclose(logprobs[i, :n], alone, atol=1e-4), i
            assert torch.allclose(values[i, :n], value, atol=1e-4), i
