"""How users sample: the answer lengths and temperatures they ask for, read from logged interactions.

Gates and rollouts sample at these, so a candidate is judged (and trained) on the answers people
read: an adapter that is fine for 48 tokens and loops after 100 is seen doing so wherever users ask
for 256. On an empty log the lengths fall back to `default_max_tokens` (at least 256 by default).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from feedback.events import InteractionEvent

OPENAI_DEFAULT_TEMPERATURE = 1.0  # what a request that sets no temperature gets
# the lowest temperature gates and rollouts sample at: greedy users (0) give no samples that differ to learn
# from, and log-probs read at temperature 0 are not defined
MIN_TEMPERATURE = 0.3


@dataclass(frozen=True)
class SamplingProfile:
    lengths: tuple[int, ...]  # max_tokens to sample at: the recent p50 and p95 (one value where they agree)
    temperature: float  # the median temperature users asked for, at least MIN_TEMPERATURE
    interactions: int  # how many logged interactions it was read from

    @property
    def longest(self) -> int:
        return self.lengths[-1]


def _quantile(values: list[int], q: float) -> int:
    """The nearest-rank quantile (a length someone actually asked for)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def sampling_profile(interactions: list[InteractionEvent], *, default_max_tokens: int, ceiling: int) -> SamplingProfile:
    """p50 and p95 of the max_tokens of `interactions` (a request without one counts as
    `default_max_tokens`), each at most `ceiling`; the median temperature (OpenAI's 1.0 where unset), at
    least MIN_TEMPERATURE."""
    if not interactions:
        return SamplingProfile((min(default_max_tokens, ceiling),), OPENAI_DEFAULT_TEMPERATURE, 0)
    asked = [i.sampling.get("max_completion_tokens") or i.sampling.get("max_tokens") or default_max_tokens
             for i in interactions]
    lengths = tuple(sorted({min(ceiling, _quantile(asked, 0.5)), min(ceiling, _quantile(asked, 0.95))}))
    temperatures = [i.sampling["temperature"] if i.sampling.get("temperature") is not None else OPENAI_DEFAULT_TEMPERATURE
                    for i in interactions]
    return SamplingProfile(lengths, max(MIN_TEMPERATURE, float(statistics.median(temperatures))), len(interactions))
