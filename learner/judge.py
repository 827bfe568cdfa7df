"""A judge model for the judge gate (RLAIF, after Bai et al. 2022 "Constitutional AI" and Zheng et al.
2023 "Judging LLM-as-a-judge"): a local instruction model served by vLLM compares the candidate's and
the incumbent's answers to the same request for helpfulness and coherence.

Each pair is judged in both orders (position bias, Zheng et al. §3.3) with greedy decoding constrained
to `A`, `B` or `tie`; a prompt's score is the mean of its two verdicts from the candidate's side
(1 win, 0.5 tie, 0 loss).
"""

from __future__ import annotations

from pathlib import Path

VERDICT = r"A|B|tie"
INSTRUCTION = (
    "You compare two answers to the same request. Judge which answer is more helpful, correct and coherent: "
    "an answer that repeats itself, rambles, writes nonsense or states wrong facts is worse. "
    "Reply with exactly one of: A, B, tie.\n\nRequest:\n{request}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nBetter answer:"
)


class Judge:
    def __init__(self, llm) -> None:
        self.llm = llm

    @classmethod
    def from_model(cls, model: Path, *, kv_cache_bytes: int, max_model_len: int = 4096) -> Judge:
        from learner.rollout import local_llm

        llm = local_llm(model, kv_cache_memory_bytes=kv_cache_bytes, max_model_len=max_model_len,
                        enable_prefix_caching=False)
        return cls(llm)

    def verdicts(self, requests: list[str], a: list[str], b: list[str]) -> list[str]:
        """'A', 'B' or 'tie' for each (request, answer a, answer b)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        messages = [[{"role": "user", "content": INSTRUCTION.format(request=r, a=x, b=y)}] for r, x, y in zip(requests, a, b)]
        params = SamplingParams(temperature=0.0, max_tokens=4, structured_outputs=StructuredOutputsParams(regex=VERDICT))
        return [o.outputs[0].text.strip() for o in self.llm.chat(messages, params, use_tqdm=False)]

    def wins(self, requests: list[str], candidate: list[str], incumbent: list[str]) -> list[float]:
        """Per request, the candidate's score over both orders: 1 won both, 0.5 even, 0 lost both."""
        first = self.verdicts(requests, candidate, incumbent)  # candidate is A
        second = self.verdicts(requests, incumbent, candidate)  # candidate is B
        points = {"A": (1.0, 0.0), "B": (0.0, 1.0), "tie": (0.5, 0.5)}
        return [(points[x][0] + points[y][1]) / 2 for x, y in zip(first, second)]
