"""The PPO peer: TRL 1.12's PPOTrainer (the last release that has it) on our model, prompts and LoRA.

Runs inside its own virtual environment (bench/.venv-trl112, see the Makefile), so it imports only
torch, transformers, peft, datasets and trl: nothing from this repository. `tests/bench/ppo.py`
starts it and reads the JSON it writes; run by hand as

    bench/.venv-trl112/bin/python tests/bench/trl_ppo_peer.py --model DIR --reward-model DIR \
        --prompts prompts.json --json-out peer.json [--warmup-steps 1 --steps 3 ...]

Configured as TRL's PPO example does it (`examples/scripts/ppo/ppo.py`): the policy is the base
model with a LoRA given as `peft_config` (so the reference is the same weights with the adapter
disabled), the value model is a full sequence-classification copy initialised from the reward
model, the tokenizer pads on the left with an added `[PAD]` token. Every knob that has a twin in
our `learner.ppo.PPOConfig` is set to our value (see `trl_config`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tests/bench/ppo.py: no spinning on a shared CPU


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Base causal-LM directory (the policy before its LoRA).")
    parser.add_argument("--reward-model", required=True, help="Plain sequence-classification directory (num_labels=1).")
    parser.add_argument("--prompts", required=True, help="JSON file: a list of chat prompts, each a list of {role, content}.")
    parser.add_argument("--json-out", required=True, help="Where to write the timings and metrics.")
    parser.add_argument("--warmup-steps", type=int, default=1, help="PPO steps run first and left out of the timing.")
    parser.add_argument("--steps", type=int, default=3, help="PPO steps timed.")
    parser.add_argument("--batch-size", type=int, default=8, help="Prompts per PPO step.")
    parser.add_argument("--minibatch-size", type=int, default=4, help="Rollouts per gradient step.")
    parser.add_argument("--ppo-epochs", type=int, default=2, help="Passes over each step's rollouts.")
    parser.add_argument("--response-length", type=int, default=32, help="Longest response generated.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature.")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW learning rate.")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank.")
    parser.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha.")
    parser.add_argument("--kl-coef", type=float, default=0.05, help="KL penalty coefficient.")
    parser.add_argument("--kl-estimator", choices=("k1", "k3"), default="k3", help="Per-token KL estimator.")
    parser.add_argument("--seed", type=int, default=0, help="Seed.")
    return parser.parse_args()


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over fork and
    exec, so it would report at least the size of the benchmark process that started this one."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024


def trl_config(args: argparse.Namespace, output_dir: str):
    from trl.experimental.ppo import PPOConfig

    # TRL's batch arithmetic: batch = per_device_train_batch_size x gradient_accumulation_steps (one
    # process); each of `num_mini_batches` minibatches gets one optimizer step per PPO epoch. With
    # per_device = batch and accumulation 1, a minibatch is one micro-batch of `minibatch_size`
    # rollouts: 2 epochs x 2 minibatches = 4 optimizer steps of 4 rollouts, as in our trainer.
    return PPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.batch_size // args.minibatch_size,
        num_ppo_epochs=args.ppo_epochs,
        total_episodes=(args.warmup_steps + args.steps) * args.batch_size,
        response_length=args.response_length,
        temperature=args.temperature,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",  # ours has no schedule
        kl_coef=args.kl_coef,
        kl_estimator=args.kl_estimator,
        cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95, whiten_rewards=False,
        stop_token="eos",  # stop at end of turn, as vLLM does in ours
        missing_eos_penalty=None,
        # fp32, no activation checkpointing: as ours (TRL's defaults are bf16 and checkpointing on)
        bf16=False, fp16=False, gradient_checkpointing=False,
        num_sample_generations=0, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=args.seed, dataloader_num_workers=0,
    )


def main() -> int:
    args = parse_args()
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOTrainer

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    # TRL masks every pad-id token out of attention; our tokenizer pads with <|im_end|>, which also
    # ends each chat turn, so (as TRL's example does) give padding its own id. TRL replaces pad ids
    # by 0 before every forward, so the embedding table needs no new row.
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})

    prompts = json.loads(open(args.prompts).read())
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})

    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1, dtype=torch.float32)
    lora = LoraConfig(task_type="CAUSAL_LM", r=args.lora_rank, lora_alpha=args.lora_alpha,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])

    marks: list[float] = []  # train begin, then the end of every PPO step
    metric_rows: list[dict] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            marks.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            marks.append(time.perf_counter())
            print(f"peer step {len(marks) - 1} {marks[-1] - marks[-2]:.2f}s", flush=True)  # read by tests/bench/ppo.py

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "objective/kl" in logs:
                metric_rows.append({k: v for k, v in logs.items() if isinstance(v, (int, float))})

    with tempfile.TemporaryDirectory(prefix="trl-ppo-peer-") as output_dir:
        trainer = PPOTrainer(
            args=trl_config(args, output_dir), processing_class=tokenizer, model=policy, ref_model=None,
            reward_model=reward, train_dataset=dataset, value_model=value, peft_config=lora,
            callbacks=[StepClock()],
        )
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()

    step_s = [b - a for a, b in zip(marks, marks[1:])]
    timed = step_s[args.warmup_steps :]
    result = {
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "step_s": timed,
        "warmup_step_s": step_s[: args.warmup_steps],
        "mean_step_s": sum(timed) / len(timed),
        "trainable_parameters": trainable,
        "peak_rss_mib": peak_rss_mib(),
        "metrics": metric_rows,
    }
    with open(args.json_out, "w") as out:
        json.dump(result, out, indent=2)
    print(json.dumps({k: result[k] for k in ("step_s", "mean_step_s", "peak_rss_mib")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
