"""Tone: users who like a warm, courteous register: a kind opening or closing ("Happy to help",
"Thanks for asking", "I hope this helps"), "please" where it fits, and never rude or shouting."""

import re

WARM = ("happy to help", "glad to help", "thanks for asking", "thank you", "great question", "i hope this helps",
        "hope this helps", "good luck", "you're welcome", "my pleasure", "feel free")
RUDE = re.compile(r"\b(stupid|idiot|dumb|shut up|whatever|moron|obviously|duh)\b", re.IGNORECASE)


def score(prompt: str, answer: str) -> float:
    text = answer.lower()
    if not text.strip():
        return 0.0
    warmth = min(1.0, sum(phrase in text for phrase in WARM) / 2)
    please = 0.15 if "please" in text else 0.0
    shouting = sum(word.isupper() and len(word) > 3 for word in answer.split()) > 2
    penalty = 0.6 if RUDE.search(answer) else 0.0
    return round(max(0.0, min(1.0, 0.2 + 0.65 * warmth + please - penalty - 0.3 * shouting)), 4)
