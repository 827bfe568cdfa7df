"""Degeneration of one whole answer, read as text: loops, runs of hashtags or symbols, list items
without content, and answers that never end. Light (no torch): the gates use it on sampled answers,
the promotion policy on the canary's live answers.

Each check is a flag per answer, so a candidate is compared with the incumbent answer by answer
(the share of flagged answers), not by an average that one long loop hides in.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# a list line: "- x", "* x", "• x", "1. x", "2) x"; its content is what follows the marker
_LIST_ITEM = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+(.*)$|^\s*(?:[-*•+]|\d{1,3}[.)])\s*$")
_HASHTAG = re.compile(r"(?<![\w#])#[A-Za-z]\w*")
# four or more symbols in a row ("****", "####", "!!!!", "$$$$"); dashes, equals, underscores, pipes
# and dots are left out: markdown rules, tables and ellipses use them
_SYMBOL_RUN = re.compile(r"[^\w\s\-=_|.]{4,}")


@dataclass(frozen=True)
class Degeneration:
    loop: bool  # a line repeated 3+ times, or a word 4-gram 4+ times
    symbols: bool  # 3+ hashtags, or 2+ runs of 4+ symbols
    empty_items: bool  # 2+ list items with no letter or digit in them
    unfinished: bool  # cut by the length limit: never ended

    @property
    def degenerate(self) -> bool:
        """Broken text, whatever its length (an unfinished answer alone is counted apart)."""
        return self.loop or self.symbols or self.empty_items

    @property
    def faults(self) -> list[str]:
        return [name for name in ("loop", "symbols", "empty_items", "unfinished") if getattr(self, name)]


def longest_repeat(text: str, n: int = 4) -> int:
    """How often the most frequent word n-gram occurs (lower-cased, punctuation kept)."""
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def repeated_line(text: str) -> int:
    """How often the most frequent non-trivial line occurs."""
    lines = Counter(line.strip().lower() for line in text.splitlines() if len(line.strip()) > 1)
    return max(lines.values(), default=0)


def degeneration(text: str, finish_reason: str | None) -> Degeneration:
    items = [m.group(1) or "" for line in text.splitlines() if (m := _LIST_ITEM.match(line))]
    return Degeneration(
        loop=repeated_line(text) >= 3 or longest_repeat(text) >= 4,
        symbols=len(_HASHTAG.findall(text)) >= 3 or len(_SYMBOL_RUN.findall(text)) >= 2,
        empty_items=sum(not re.search(r"[^\W_]", item) for item in items) >= 2,
        unfinished=finish_reason == "length",
    )


def shares(flags: list[Degeneration]) -> dict[str, float]:
    """Share of answers with each fault, and with any that makes text degenerate."""
    n = max(1, len(flags))
    return {"degenerate": sum(f.degenerate for f in flags) / n,
            **{name: sum(getattr(f, name) for f in flags) / n for name in ("loop", "symbols", "empty_items", "unfinished")}}
