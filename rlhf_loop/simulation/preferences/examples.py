"""Content: users who like a concrete example in the answer ("for example", "for instance", "e.g.",
"such as", "imagine"), the more concrete (a number or a name after it) the better."""

import re

MARKERS = re.compile(r"\b(for example|for instance|e\.g\.|such as|imagine|say you)\b", re.IGNORECASE)
CONCRETE = re.compile(r"\d|\b[A-Z][a-z]+\b")


def score(prompt: str, answer: str) -> float:
    found = list(MARKERS.finditer(answer))
    if not found:
        return 0.05 if answer.strip() else 0.0
    after = answer[found[0].end(): found[0].end() + 80]
    return 0.75 + (0.25 if CONCRETE.search(after) else 0.0)
