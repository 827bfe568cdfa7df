"""Masks personal data and secrets in text that is logged for training."""

from __future__ import annotations

import re

# Order matters: keys before phone numbers (a key can contain digit runs).
_PATTERNS = [
    ("[EMAIL]", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    # provider-style keys (sk-..., ghp_..., AKIA...) and long opaque tokens mixing letters and digits
    ("[KEY]", re.compile(r"\b(?:sk|pk|rk|ghp|gho|xox[abp]|AKIA)[-_A-Za-z0-9]{12,}\b")),
    ("[KEY]", re.compile(r"\b(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}\b")),
    ("[PHONE]", re.compile(r"(?<![\w])\+?\d[\d\s().-]{7,}\d(?![\w])")),
]


def redact(text: str) -> str:
    for replacement, pattern in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
