"""Statistics shared by the gates, the promotion policy and the simulation: light (scipy, no torch),
so the always-on learner loop can decide without importing the training stack."""

from __future__ import annotations

import math


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (Wilson 1927); ties count as half a success."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(x1: float, n1: int, x2: float, n2: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of p1 - p2 for two independent proportions: Newcombe's hybrid score interval (Newcombe 1998,
    method 10), built from each side's Wilson interval; unlike Wald's it keeps its coverage at a few dozen
    answers and at shares near 0 or 1."""
    p1, p2 = (x1 / n1 if n1 else 0.0), (x2 / n2 if n2 else 0.0)
    (l1, u1), (l2, u2) = wilson(x1, n1, z), wilson(x2, n2, z)
    return (p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def welch_greater(after: list[float], before: list[float]) -> float:
    """p-value of mean(after) > mean(before), Welch's unequal-variance t-test."""
    from scipy.stats import ttest_ind

    if len(after) < 2 or len(before) < 2:
        return 1.0
    p = float(ttest_ind(after, before, equal_var=False, alternative="greater").pvalue)
    return p if math.isfinite(p) else 1.0


def welch_interval(after: list[float], before: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of mean(after) - mean(before), Welch's; None with fewer than two of either."""
    from scipy.stats import ttest_ind

    if len(after) < 2 or len(before) < 2:
        return None
    low, high = ttest_ind(after, before, equal_var=False).confidence_interval(confidence)
    return (float(low), float(high)) if math.isfinite(low) and math.isfinite(high) else None


def mcnemar_worse(candidate: list[bool], incumbent: list[bool]) -> float:
    """One-sided exact McNemar p-value that `candidate` gets fewer of the same items right.

    Only discordant items count: b = right by the incumbent alone, c = right by the candidate alone;
    under H0 (no worse) b ~ Binomial(b + c, 1/2), so p = P(X >= b) (McNemar 1947, exact form)."""
    from scipy.stats import binomtest

    b = sum(i and not c for c, i in zip(candidate, incumbent))
    c = sum(c and not i for c, i in zip(candidate, incumbent))
    return float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
