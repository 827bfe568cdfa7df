"""Structure: users who like an answer laid out as a short list (three to six items, one per line,
`- `, `* ` or `1.`), each item brief. Prose, however good, scores low."""

import re

ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")


def score(prompt: str, answer: str) -> float:
    lines = [line for line in answer.splitlines() if line.strip()]
    items = [line for line in lines if ITEM.match(line)]
    if not items:
        return 0.0
    count = 1.0 if 3 <= len(items) <= 6 else 0.5 if len(items) in (2, 7, 8) else 0.2
    brief = sum(len(item.split()) <= 15 for item in items) / len(items)
    mostly_list = len(items) / len(lines)
    return round(0.5 * count + 0.25 * brief + 0.25 * mostly_list, 4)
