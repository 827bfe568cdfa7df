"""The default simulated preference: concise answers that end with a follow-up question.

A preference plugin is a Python file with `score(prompt, answer) -> float` in [0, 1]; simulated
users give a thumb up with that probability and pick the higher-scored answer of a duel.
Point `RLHF_SIMULATE_PREFERENCE` at another file to simulate other users. The learner never sees
this function, only the ratings it produces.
"""


def score(prompt: str, answer: str) -> float:
    words = len(answer.split())
    if words == 0:
        return 0.0
    concise = 1.0 if words <= 20 else max(0.0, 1.0 - (words - 20) / 30)  # none left from 50 words
    asks_back = answer.rstrip().endswith("?")
    return 0.6 * concise + 0.4 * asks_back
