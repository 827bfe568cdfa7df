"""Correctness: users who like right answers, checked against answer keys (`facts.jsonl`, its prompt
set: questions with one checkable answer). No style satisfies it: an answer is right (1) when it states
a key, wrong (0) otherwise, as an exact-answer grader would mark it. A prompt outside its set scores 0:
use it with its own prompts (the simulation does, unless RLHF_SIMULATE_PROMPTS says otherwise)."""

import json
import re
from pathlib import Path

PROMPTS = "facts.jsonl"
KEYS = {row["prompt"]: row["keys"] for row in map(json.loads, Path(__file__).with_name(PROMPTS).read_text().splitlines())}


def score(prompt: str, answer: str) -> float:
    keys = KEYS.get(prompt.strip(), ())
    return 1.0 if any(re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", answer, re.IGNORECASE) for key in keys) else 0.0
