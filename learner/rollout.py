"""Rollouts: generation by vLLM with the policy's current LoRA (not `generate()` of transformers).

Each PPO step saves the LoRA being trained into a new step directory and hands vLLM a new
adapter name and id, so vLLM never serves stale weights from its adapter or prefix cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]
    text: str


class VLLMRollouts:
    def __init__(self, model: Path, *, max_model_len: int, lora_rank: int, memory_share: float, seed: int = 0) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=str(model), enable_lora=True, max_lora_rank=max(8, lora_rank), max_loras=1,
            max_model_len=max_model_len, gpu_memory_utilization=memory_share, seed=seed, dtype="float32",
            enable_prefix_caching=False,
        )

    def generate(self, prompts: list[list[dict]], *, adapter: Path | None, adapter_id: int, max_tokens: int,
                 temperature: float, seed: int) -> list[Rollout]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        lora = LoRARequest(f"policy-{adapter_id}", adapter_id, str(adapter)) if adapter is not None else None
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
        outputs = self.llm.chat(prompts, params, lora_request=lora, use_tqdm=False)
        return [Rollout(list(o.prompt_token_ids), list(o.outputs[0].token_ids), o.outputs[0].text) for o in outputs]
