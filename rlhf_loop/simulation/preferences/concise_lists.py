"""A mix of two: users who like a short list (structure, as `lists`) that is also concise overall
(at most 40 words, none left from 80): neither half alone gets above one half."""

from pathlib import Path
import importlib.util

_spec = importlib.util.spec_from_file_location("rlhf_preference_lists", Path(__file__).with_name("lists.py"))
_lists = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_lists)


def score(prompt: str, answer: str) -> float:
    words = len(answer.split())
    concise = 0.0 if words == 0 else 1.0 if words <= 40 else max(0.0, 1.0 - (words - 40) / 40)
    return round(0.5 * _lists.score(prompt, answer) + 0.5 * concise, 4)
