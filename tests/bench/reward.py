"""Reward-model benchmark: our `learner.reward_model.train` against TRL's `RewardTrainer` (trl 1.16)
on the same base model, preference pairs, held-out split, LoRA, dtype, batch size, epochs, learning
rate and max length, one after the other in the same process. Writes bench/results/reward.json.

    python -m tests.bench.reward [--pairs 96] [--epochs 1] [--batch-size 8] [--max-length 64]

- Data: `synthetic()` pairs from the learner tests (hidden rule: an answer ending in a follow-up
  question is preferred), pairs only, as RewardTrainer trains Bradley-Terry on chosen/rejected;
  ours gets no thumbs and `pointwise_weight=0`. Both split with our `heldout()`.
- TRL is set to do what ours does: fp32 on CPU, plain `torch.optim.AdamW` (weight decay 0.01, its
  torch default), constant learning rate, no gradient clipping, no gradient checkpointing, the
  conversation through the tokenizer's chat template (the token ids are checked to be ours).
- Timed: training only. Not model loading, and not TRL's dataset tokenisation, which it does in
  `__init__` (reported apart as `prepare_s`); ours tokenises inside its loop, so that is in its time.
  samples/s = training pairs x epochs / wall seconds. `loadavg_1m` (before, after) tells whether
  other work shared the CPU, which moves the ratio; `cpu_s` (this process's CPU time while
  training) moves less with it.
- Held-out accuracy: the share of held-out pairs whose chosen answer scores above the rejected
  one; ours through `accuracy()`, TRL's model through TRL's own tokenisation and collator.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from feedback.settings import RuntimeSettings
from learner.dataset import Pair, as_messages
from learner.reward_model import RewardModel, accuracy, heldout, train
from rlhf_loop.model import prepare
from tests.bench.common import write_result
from tests.helpers import RULE_CONFIG, synthetic


def conversation(pair: Pair, response: str) -> list[dict[str, str]]:
    return as_messages(pair.prompt) + [{"role": "assistant", "content": response}]


def token_ids(tokenizer, pairs: list[Pair]) -> tuple[list[list[int]], list[list[int]]]:
    """Chosen and rejected ids the way ours builds them: chat template as text, then tokenise."""
    def ids(response_of) -> list[list[int]]:
        texts = [tokenizer.apply_chat_template(conversation(p, response_of(p)), tokenize=False) for p in pairs]
        return tokenizer(texts)["input_ids"]
    return ids(lambda p: p.chosen), ids(lambda p: p.rejected)


def run_ours(model_dir: Path, config, train_pairs: list[Pair], test_pairs: list[Pair]) -> tuple[dict, dict]:
    reward_model = RewardModel.create(model_dir, config)
    lora = reward_model.model.peft_config["default"]
    trainable = sum(p.numel() for p in reward_model.model.parameters() if p.requires_grad)
    untrained = accuracy(reward_model, test_pairs, [])["pair_accuracy"]  # the bar training must clear
    load_before, started, cpu_started = os.getloadavg()[0], time.perf_counter(), time.process_time()
    history = train(reward_model, train_pairs, [], config)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    result = {
        "train_s": seconds, "samples_per_s": len(train_pairs) * config.epochs / seconds,
        "heldout_accuracy": accuracy(reward_model, test_pairs, [])["pair_accuracy"],
        "untrained_heldout_accuracy": untrained,
        "steps": len(history), "train_loss_mean": sum(row["loss/bt"] for row in history) / len(history),
        "trainable_params": trainable, "cpu_s": cpu_s, "loadavg_1m": [load_before, os.getloadavg()[0]],
    }
    lora_used = {"task_type": str(lora.task_type), "r": lora.r, "lora_alpha": lora.lora_alpha,
                 "lora_dropout": lora.lora_dropout, "target_modules": sorted(lora.target_modules),
                 "modules_to_save": sorted(set(lora.modules_to_save or []))}
    del reward_model
    gc.collect()
    return result, lora_used


def run_trl(model_dir: Path, config, lora: dict, train_pairs: list[Pair], test_pairs: list[Pair],
            expected_ids: tuple[list[list[int]], list[list[int]]]) -> dict:
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig as TRLRewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    def dataset(pairs: list[Pair]) -> Dataset:  # conversational, implicit prompt
        rows = [{"chosen": conversation(p, p.chosen), "rejected": conversation(p, p.rejected)} for p in pairs]
        return Dataset.from_list(rows)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"  # what DataCollatorForPreference does anyway
    args = TRLRewardConfig(
        output_dir=tempfile.mkdtemp(prefix="rlhf-bench-trl-"), report_to="none", save_strategy="no",
        eval_strategy="no", use_cpu=True, bf16=False, fp16=False, model_init_kwargs={"dtype": "float32"},
        per_device_train_batch_size=config.batch_size, num_train_epochs=config.epochs,
        learning_rate=config.learning_rate, max_length=config.max_length, seed=config.seed,
        # what ours does: torch AdamW with its default weight decay, constant lr, no clipping/checkpointing
        optim="adamw_torch", weight_decay=0.01, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=0.0, gradient_checkpointing=False, dataloader_pin_memory=False, logging_steps=10,
    )
    peft_config = LoraConfig(task_type="SEQ_CLS", r=lora["r"], lora_alpha=lora["lora_alpha"],
                             lora_dropout=lora["lora_dropout"], target_modules=lora["target_modules"],
                             modules_to_save=list(lora["modules_to_save"]))  # PEFT extends it in place
    started = time.perf_counter()
    trainer = RewardTrainer(model=str(model_dir), args=args, train_dataset=dataset(train_pairs),
                            processing_class=tokenizer, peft_config=peft_config)
    prepare_s = time.perf_counter() - started
    # apples to apples: TRL drops nothing and feeds the model exactly our token ids
    if len(trainer.train_dataset) != len(train_pairs):
        raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {len(train_pairs)} training pairs")
    if (list(trainer.train_dataset["chosen_ids"]), list(trainer.train_dataset["rejected_ids"])) != expected_ids:
        raise RuntimeError("TRL tokenised the conversations differently from ours")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    load_before, started, cpu_started = os.getloadavg()[0], time.perf_counter(), time.process_time()
    output = trainer.train()
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started

    # score held-out pairs the way TRL feeds its model: chat template ids, its collator, right padding
    def ids(pair: Pair, response: str) -> list[int]:
        return tokenizer.apply_chat_template(conversation(pair, response), tokenize=True, return_dict=True)["input_ids"]

    model = trainer.model.eval()
    collate = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)
    wins = []
    with torch.no_grad():
        for start in range(0, len(test_pairs), 16):
            batch = collate([{"chosen_ids": ids(p, p.chosen), "rejected_ids": ids(p, p.rejected)}
                             for p in test_pairs[start : start + 16]])
            chosen, rejected = model(**batch).logits[:, 0].chunk(2)  # (b,), (b,)
            wins.append(chosen > rejected)
    result = {
        "version": trl.__version__, "train_s": seconds, "samples_per_s": len(train_pairs) * config.epochs / seconds,
        "heldout_accuracy": torch.cat(wins).float().mean().item(), "steps": output.global_step,
        "train_loss_mean": output.training_loss, "trainable_params": trainable, "prepare_s": prepare_s,
        "cpu_s": cpu_s, "loadavg_1m": [load_before, os.getloadavg()[0]],
    }
    shutil.rmtree(args.output_dir)  # empty: nothing is saved
    del trainer, model
    gc.collect()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=96, help="synthetic pairs in all, before the held-out split")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per conversation; no pair may exceed it")
    args = parser.parse_args()

    base = RuntimeSettings()
    model_dir = base.model or prepare(base.model_dir)
    config = RULE_CONFIG.model_copy(update={"epochs": args.epochs, "batch_size": args.batch_size,
                                         "max_length": args.max_length, "pointwise_weight": 0.0})
    pairs, _ = synthetic(seed=0, count=args.pairs)
    train_pairs = [p for p in pairs if not heldout(p, config.heldout_fraction)]
    test_pairs = [p for p in pairs if heldout(p, config.heldout_fraction)]

    expected_ids = token_ids(AutoTokenizer.from_pretrained(model_dir), train_pairs)
    longest = max(len(ids) for side in expected_ids for ids in side)
    if longest > config.max_length:  # ours would left-truncate these, TRL would drop them
        parser.error(f"the longest conversation has {longest} tokens: use --max-length {longest} or more")

    print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held out; ours first, then TRL")
    ours, lora = run_ours(model_dir, config, train_pairs, test_pairs)
    peer = run_trl(model_dir, config, lora, train_pairs, test_pairs, expected_ids)

    ratio = ours["samples_per_s"] / peer["samples_per_s"]
    delta = ours["heldout_accuracy"] - peer["heldout_accuracy"]
    path = write_result("reward", {
        "model": str(model_dir),
        "data": {"generator": "tests.learner.conftest.synthetic(seed=0)", "pairs": len(pairs),
                 "train_pairs": len(train_pairs), "heldout_pairs": len(test_pairs),
                 "heldout_fraction": config.heldout_fraction, "longest_tokens": longest},
        "config": {"batch_size": config.batch_size, "epochs": config.epochs, "learning_rate": config.learning_rate,
                   "max_length": config.max_length, "seed": config.seed, "dtype": "float32", "lora": lora,
                   "optimizer": "torch.optim.AdamW, weight_decay 0.01, constant lr, no clipping",
                   "torch_threads": torch.get_num_threads(), "order": ["ours", "trl"]},
        "ours": ours, "trl": peer,
        "samples_per_s_ratio_ours_over_trl": ratio, "accuracy_delta": delta,
    })
    for name, side in (("rlhf-loop", ours), (f"trl {peer['version']}", peer)):
        print(f"{name}: {side['samples_per_s']:.2f} pairs/s ({side['train_s']:.1f}s training), "
              f"held-out accuracy {side['heldout_accuracy']:.3f}")
    print(f"ratio ours/trl {ratio:.3f}, accuracy delta {delta:+.3f} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
