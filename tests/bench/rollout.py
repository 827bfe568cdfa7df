"""Rollout benchmark: PPO rollouts from our VLLMRollouts (the LoRA as a vLLM LoRARequest) against
transformers `generate()` on a PEFT model with the same LoRA (what TRL's PPOTrainer uses), on the
same chat prompts, sampling settings and token budget, fp32 on CPU, in the same run. Writes
bench/results/rollout.json.

    python -m tests.bench.rollout [--prompts 16] [--max-tokens 48] [--rounds 3]

Both sides sample (temperature 1, no top-k/top-p) and stop at end of turn; the unit is output
tokens per second, counting each response up to and including its EOS. `generate()` keeps a
finished row in the batch until the longest one ends; vLLM does not, and that is part of what is
measured. Before timing, greedy decoding on a few prompts checks that both apply the adapter alike.
"""

from __future__ import annotations

import os

# torch's OpenMP threads spin while they wait; on a shared CPU (other jobs on the same cores) that
# made a forward + backward 6x slower here. Passive waiting must be chosen before torch loads its
# OpenMP runtime; the child processes (the TRL peer, vLLM's workers) inherit it. Recorded in the JSON.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from rich.progress import Progress, TimeElapsedColumn  # noqa: E402

from feedback.settings import RuntimeSettings  # noqa: E402
from learner.rollout import VLLMRollouts  # noqa: E402
from rlhf_loop.model import prepare  # noqa: E402
from tests.bench.common import write_result  # noqa: E402
from tests.helpers import write_lora_adapter  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "Give me three tips for better sleep.", "Explain photosynthesis simply.",
    "Write a haiku about autumn.", "How do I boil an egg?", "What is a prime number?",
    "Name three rivers in Europe.", "Why is the sky blue?", "In one short sentence, what are owls?",
    "Tell me about jazz.", "How do bees make honey?", "What is a glacier?", "Describe a chess opening.",
    "Why do kites fly?", "What is coral made of?", "How does a map projection work?",
]


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


class HFGenerate:
    """transformers `generate()` on base + PEFT LoRA, one left-padded batch per call."""

    def __init__(self, model: Path, adapter: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(base, adapter).eval()

    @torch.no_grad()
    def generate(self, prompts: list[list[dict]], *, max_tokens: int, temperature: float, seed: int) -> list[list[int]]:
        """Response token ids per prompt, cut after the first EOS (kept)."""
        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
        out = self.model.generate(**batch, max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling)
        eos = self.tokenizer.eos_token_id
        responses = []
        for row in out[:, batch["input_ids"].shape[1] :].tolist():  # (B, T) generated part, EOS-padded
            responses.append(row[: row.index(eos) + 1] if eos in row else row)
        return responses


def timed_rounds(generate, label: str, rounds: int) -> dict:
    """One untimed warm-up call, then `rounds` timed calls (different seeds)."""
    tokens, seconds, per_round = 0, 0.0, []
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn()) as progress:
        bar = progress.add_task(f"{label}: warm-up", total=rounds + 1)
        generate(seed=1000)
        progress.advance(bar)
        for i in range(rounds):
            progress.update(bar, description=f"{label}: round {i + 1}/{rounds}")
            started = time.perf_counter()
            lengths = generate(seed=i)
            elapsed = time.perf_counter() - started
            tokens, seconds = tokens + sum(lengths), seconds + elapsed
            per_round.append({"s": elapsed, "output_tokens": sum(lengths), "max_len": max(lengths)})
            progress.advance(bar)
    return {"output_tokens": tokens, "seconds": seconds, "output_tokens_per_s": tokens / seconds,
            "mean_response_tokens": tokens / (rounds * len(lengths)), "rounds": per_round}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="Prompts per batch (at most 16).")
    parser.add_argument("--max-tokens", type=int, default=48, help="Longest response.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="Timed batches per side, after one warm-up batch.")
    parser.add_argument("--kv-cache-mib", type=int, default=128, help="KV cache of the vLLM engine, in MiB.")
    parser.add_argument("--check-prompts", type=int, default=4, help="Prompts of the greedy same-adapter check.")
    args = parser.parse_args()

    base = RuntimeSettings()
    model = base.model or prepare(base.model_dir)
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-rollout-"))
    adapter = write_lora_adapter(model, work / "adapter", seed=1)  # random r=8 LoRA on q_proj, v_proj
    prompts = [chat(q) for q in QUESTIONS[: args.prompts]]
    load = {"start": os.getloadavg()}

    # transformers first, before vLLM starts, so the engine neither holds memory nor sets threads meanwhile
    hf = HFGenerate(model, adapter)
    hf_greedy = hf.generate(prompts[: args.check_prompts], max_tokens=16, temperature=0.0, seed=0)
    hf_result = timed_rounds(lambda seed: [len(r) for r in hf.generate(prompts, max_tokens=args.max_tokens,
                                                                       temperature=args.temperature, seed=seed)],
                             "transformers generate", args.rounds)
    hf_result["torch_threads"] = torch.get_num_threads()
    del hf
    load["before_vllm"] = os.getloadavg()

    started = time.perf_counter()
    rollouts = VLLMRollouts(model, max_model_len=512, lora_rank=8, kv_cache_mib=args.kv_cache_mib)
    engine_start_s = time.perf_counter() - started
    run = lambda p, **kw: rollouts.generate(p, adapter=adapter, **kw)  # noqa: E731
    vllm_greedy = [r.response_ids for r in run(prompts[: args.check_prompts], max_tokens=16, temperature=0.0, seed=0)]
    ours = timed_rounds(lambda seed: [len(r.response_ids) for r in run(prompts, max_tokens=args.max_tokens,
                                                                       temperature=args.temperature, seed=seed)],
                        "ours (vLLM)", args.rounds)
    ours["engine_start_s"] = engine_start_s
    rollouts.llm.llm_engine.engine_core.shutdown()
    load["end"] = os.getloadavg()

    # greedy fp32 decoding of the same adapter: identical tokens unless the adapter is applied differently
    agree = [a == b for a, b in zip(hf_greedy, vllm_greedy)]
    ratio = ours["output_tokens_per_s"] / hf_result["output_tokens_per_s"]
    path = write_result("rollout", {
        "model": str(model),
        "settings": {"prompts": len(prompts), "max_tokens": args.max_tokens, "temperature": args.temperature,
                     "top_k": None, "top_p": 1.0, "rounds": args.rounds, "dtype": "float32", "device": "cpu",
                     "adapter": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"], "init": "random"},
                     "vllm_kv_cache_mib": args.kv_cache_mib},
        "peer": {"name": "transformers generate() on PeftModel, batched, left padding", **hf_result},
        "ours": {"name": "learner.rollout.VLLMRollouts with a LoRARequest", **ours},
        "throughput_ratio_ours_over_peer": ratio,
        "ratio_definition": "our output tokens/s / transformers output tokens/s; > 1: ours faster",
        "greedy_check": {"prompts": len(agree), "identical_16_token_prefixes": sum(agree)},
        "load_average_1_5_15": load,
        "omp_env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
    })
    print(f"transformers generate: {hf_result['output_tokens_per_s']:.1f} tok/s; "
          f"ours (vLLM): {ours['output_tokens_per_s']:.1f} tok/s; ratio {ratio:.2f}")
    print(f"greedy check: {sum(agree)}/{len(agree)} identical; -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
