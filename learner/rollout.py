"""Rollouts: generation by vLLM with the policy's current LoRA (not `generate()` of transformers).

Each PPO step saves the LoRA being trained into a new step directory; `VLLMRollouts` gives every
adapter directory (and every rewrite of one) its own LoRA id, because vLLM keeps serving the weights
it first loaded under an id, even for a new path: a reused id means stale weights.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from learner.registry import LORA_TARGET_MODULES


@dataclass(frozen=True)
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    finish_reason: str | None = None  # "stop" (ended) or "length" (cut by max_tokens)


def local_llm(model: Path, **engine_args):
    """A vLLM engine in this process for the learner (rollouts, gates' judge and guard), on this
    process's cores. vLLM-CPU's default binding keeps one core for its scheduler, which spins while
    the worker computes: on two cores its worker then generates on one thread (measured here: 3 x 16
    answers of 128 tokens in 43 s, 31 s on both). Where the operator (or `rlhf-loop up`) bound the
    engine, that binding stands; GPU builds ignore the variable."""
    import torch
    from vllm import LLM

    threads = torch.get_num_threads()
    bind = "VLLM_CPU_OMP_THREADS_BIND"
    unbound = bind not in os.environ
    if unbound:
        os.environ[bind] = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    try:
        llm = LLM(model=str(model), **engine_args)
    finally:
        if unbound:
            os.environ.pop(bind, None)  # our children (tests' servers, `up`'s split) see what they saw before
    torch.set_num_threads(threads)  # vLLM drops this process's torch threads to 1 "for serving"; we train and score here
    return llm


class VLLMRollouts:
    def __init__(self, model: Path, *, max_model_len: int, lora_rank: int, kv_cache_mib: int, seed: int = 0) -> None:
        self._ids: dict[tuple[str, int], int] = {}
        self._answers: OrderedDict[tuple, list[Rollout]] = OrderedDict()  # newest last; see generate(cache=True)
        # a KV cache size, not a share of RAM: the share is measured against the NUMA node less what the
        # engine holds, and fails on a small or busy node; rollouts need room for one batch only
        self.llm = local_llm(
            model, enable_lora=True, max_lora_rank=max(8, lora_rank), max_loras=1,
            max_model_len=max_model_len, kv_cache_memory_bytes=kv_cache_mib << 20, seed=seed, dtype="float32",
            enable_prefix_caching=False, lora_target_modules=LORA_TARGET_MODULES,
        )

    def lora_id(self, adapter: Path) -> int:
        """The same id for the same adapter files, a new one for anything else."""
        key = (str(adapter.resolve()), (adapter / "adapter_model.safetensors").stat().st_mtime_ns)
        return self._ids.setdefault(key, len(self._ids) + 1)

    def generate(self, prompts: list[list[dict]], *, adapter: Path | None, max_tokens: int, temperature: float,
                 seed: int, cache: bool = False) -> list[Rollout]:
        """One answer per prompt. `cache`: reuse the answers of an identical earlier call (same adapter
        files, prompts and sampling), as the gates do for an incumbent that every candidate meets."""
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        lora = None
        if adapter is not None:
            lora_id = self.lora_id(adapter)
            lora = LoRARequest(f"policy-{lora_id}", lora_id, str(adapter))
        key = (lora.lora_int_id if lora else 0, json.dumps(prompts), max_tokens, temperature, seed)
        if cache and key in self._answers:
            self._answers.move_to_end(key)
            return self._answers[key]
        # a seed per request (seed + its index): the same prompt asked twice gets two samples, not one twice
        params = [SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed + i) for i in range(len(prompts))]
        outputs = self.llm.chat(prompts, params, lora_request=lora, use_tqdm=False)
        answers = [Rollout(list(o.prompt_token_ids), list(o.outputs[0].token_ids), o.outputs[0].text,
                           o.outputs[0].finish_reason) for o in outputs]
        if cache:
            self._answers[key] = answers
            while len(self._answers) > 16:  # a few incumbents' gate answers
                self._answers.popitem(last=False)
        return answers
