"""Masks personal data and secrets in text that is logged for training: prompts, answers, `stop`
sequences and feedback comments (`RLHF_REDACT`)."""

from __future__ import annotations

import re

# Order matters: whole blocks and URLs first, keys before phone numbers (a key can contain digit runs),
# dates are kept out of the phone pattern.
_PATTERNS = [
    ("[PRIVATE KEY]", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
                                 re.DOTALL)),
    # a password in a URL: scheme://user:password@host keeps the user and host
    (r"\1[PASSWORD]@", re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", re.IGNORECASE)),
    # key=value secrets: Azure connection strings (AccountKey=...), password=..., secret: ...
    (r"\1[KEY]", re.compile(r"\b((?:AccountKey|SharedAccessKey|password|passwd|pwd|secret|api[_-]?key|token)\s*[=:]\s*)"
                            r"(?!\[)[^\s;,'\"]{6,}", re.IGNORECASE)),
    ("[EMAIL]", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    # provider-style keys: OpenAI/Stripe (sk-, pk-, rk-), GitHub (ghp_, gho_, github_pat_), Slack (xox?-),
    # AWS access key ids (AKIA/ASIA), Google API keys (AIza)
    ("[KEY]", re.compile(r"\b(?:sk|pk|rk|ghp|gho|github_pat|xox[abpr]|AKIA|ASIA|AIza)[-_A-Za-z0-9]{12,}\b")),
    # long opaque tokens mixing letters and digits (an AWS secret key is 40 of base64)
    ("[KEY]", re.compile(r"(?<![\w/+])(?=[A-Za-z0-9_\-/+]*\d)(?=[A-Za-z0-9_\-/+]*[A-Za-z])[A-Za-z0-9_\-/+]{32,}={0,2}(?![\w/+])")),
    ("[PHONE]", re.compile(r"(?<![\w])(?!\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d))(?!\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}(?![\d-]))"
                           r"\+?\d[\d\s().-]{7,}\d(?![\w])")),
]


def redact(text: str) -> str:
    for replacement, pattern in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
