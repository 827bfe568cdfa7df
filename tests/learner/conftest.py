"""Learner fixtures: one small reward model trained on a hidden synthetic rule, per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from learner.config import LORA_TARGET_MODULES
from learner.dataset import FeedbackData, Pair, Pointwise
from learner.reward_model import RefreshReport, RewardConfig, refresh

TOPICS = ["rivers", "volcanoes", "bread", "chess", "owls", "jazz", "glaciers", "tea", "bridges", "comets",
          "tulips", "robots", "deserts", "violins", "bees", "maps", "castles", "coral", "lanterns", "kites"]
OPENERS = ["{t} are fascinating.", "People have loved {t} for ages.", "There is a lot to say about {t}.",
           "{t} come in many kinds.", "Here is a short note on {t}."]
FOLLOW_UPS = ["Would you like to know more?", "Shall I go on?", "Want an example?", "Which part interests you?"]
ENDINGS = ["That is all.", "I hope this helps.", "Enjoy.", "End of answer."]

RULE_CONFIG = RewardConfig(epochs=2, batch_size=8, max_length=48, heldout_fraction=0.25, pointwise_weight=0.5)


def synthetic(seed: int, count: int) -> tuple[list[Pair], list[Pointwise]]:
    """The hidden rule: an answer that ends with a follow-up question is preferred."""
    rng = random.Random(seed)
    pairs, thumbs = [], []
    for i in range(count):
        topic = rng.choice(TOPICS)
        prompt = (("user", f"Tell me about {topic}. ({i})"),)
        body = rng.choice(OPENERS).format(t=topic.capitalize())
        good, bad = f"{body} {rng.choice(FOLLOW_UPS)}", f"{body} {rng.choice(ENDINGS)}"
        pairs.append(Pair(prompt, good, bad, f"user-{i % 7}"))
        if i % 2 == 0:  # fewer thumbs than pairs, as in real traffic
            thumbs.append(Pointwise(prompt, good if i % 4 else bad, 1.0 if i % 4 else 0.0, f"user-{i % 7}"))
    return pairs, thumbs


@pytest.fixture(scope="session")
def rule_reward_model(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RefreshReport, list[Pair]]:
    """(reward-model root, its first refresh report, the pairs it saw)."""
    pairs, thumbs = synthetic(seed=0, count=120)
    root = tmp_path_factory.mktemp("reward-models")
    return root, refresh(prepared_model, root, FeedbackData(pointwise=thumbs, pairs=pairs), RULE_CONFIG), pairs


@pytest.fixture(scope="session")
def rollouts(prepared_model: Path):
    """One vLLM rollout engine for the learner tests (PPO, gates), with LoRA, started once and shut
    down at the end of the session (not at interpreter exit, after pytest has closed its streams)."""
    from learner.rollout import VLLMRollouts

    engine = VLLMRollouts(prepared_model, max_model_len=512, lora_rank=8, kv_cache_mib=128)
    yield engine
    engine.llm.llm_engine.engine_core.shutdown()


def sft_adapter(model_dir: Path, out: Path, examples: list[tuple[str, str]], *, steps: int, learning_rate: float,
                seed: int = 0) -> Path:
    """A LoRA fine-tuned to give `examples`' answers (loss on answer tokens only): test candidates
    with a known character (rude, repetitive, polite)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGET_MODULES))
    rows = []
    for prompt, answer in examples:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in rows])[:, None]).long()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out)
    return out
