"""The preference suite: simulated users who like different kinds of things (`make demo PREFERENCE=<name>`).

Each member is a plugin in the bundled one's shape, a Python file with `score(prompt, answer) -> [0, 1]`,
and may name the prompt set its users ask (`PROMPTS`, a file beside it). They differ in kind, not only
in degree: length (`concise_question`, the bundled default), structure (`lists`), tone (`polite`),
content (`examples`), correctness against answer keys that no style satisfies (`facts`), and a mix of
two (`concise_lists`). The learner never sees any of this: it sees ratings only.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SUITE: dict[str, Path] = {
    "concise_question": HERE.parent / "concise_question.py",
    "lists": HERE / "lists.py",
    "polite": HERE / "polite.py",
    "examples": HERE / "examples.py",
    "facts": HERE / "facts.py",
    "concise_lists": HERE / "concise_lists.py",
}


def resolve(preference: str | Path) -> Path:
    """A suite member by name, or a plugin file by path."""
    if str(preference) in SUITE:
        return SUITE[str(preference)]
    path = Path(preference)
    if not path.is_file():
        raise ValueError(f"{preference} is neither a preference of the suite ({', '.join(SUITE)}) nor a Python file")
    return path
