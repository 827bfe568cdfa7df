"""The promotion policy: a canary becomes active on live evidence, or is rolled back on it.

Written by hand because it is the product's core decision, and small: two proportions and a
margin. Evidence is the feedback stored since the canary started (its `canary` audit line):

- rollback: once the canary has `rollback_min_feedback` thumbs, if the 95% lower bound of its
  thumb-down rate is above the active version's rate + `rollback_margin` (a spike), the canary is
  rejected (which also takes it out of serving). Without a rate of the active side, no spike is called.
- promote: once it has `promotion_min_feedback` thumbs, if it is not worse than the active version
  with significance (non-inferiority: the 95% lower bound of the thumb-up rate difference is above
  -`promotion_margin`) and it does not lose its duels (below).
- duels: where `promotion_min_duels` duels between the two exist, a canary whose duel win rate (ties
  half) has a 95% upper bound below 0.5 - `promotion_margin` is rejected.
- content: the canary's live answers are re-read as the gates read sampled ones. Once it has served
  `canary_content_min_answers`, a canary whose share of degenerate answers (loops, symbol runs, empty
  list items; learner/degeneration.py) or of answers that never end within the user's max_tokens
  exceeds the active version's by the gate tolerances is rejected when the excess is significant (95%
  lower bound of the difference, Newcombe's interval, above the tolerance) or its window of
  `canary_content_answers` is full; until then it waits, never promoted; before a promotion, the base model
  also reads its answers (fluency) against the active version's, and a canary beyond the fluency
  tolerance is rejected.
- otherwise: wait for more feedback.

A training cycle's candidate that passed its gates starts as canary (`start_canary`); a newer one
replaces a canary the learner started (`canary_supersede`), never one an operator started. The next
cycle waits for a running canary's decision (`awaited_canary`, at most `canary_hold_s`), so it builds
on what the decision leaves active.

The active side is measured on the same window when it has thumbs there. When it has none (with few
users a hash split can put every one of them on the canary), it is measured on its own thumbs from
before the canary started: the same adapter's record, not a concurrent one, and the reason says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable, Literal

import structlog

from feedback.events import InteractionEvent, PairwiseEvent, latest_thumbs
from learner.degeneration import degeneration, shares
from learner.stats import difference_interval, wilson
from learner.registry import Conflict, Registry
from learner.settings import LearnerSettings

log = structlog.get_logger(__name__)

# with no active-side thumbs since the canary started, its record of this long before stands in (bounded:
# the whole history would be read every check)
BASELINE_WINDOW = timedelta(days=7)
ACTOR = "canary-policy"
LEARNER = "learner"  # the actor of canaries a training cycle starts


@dataclass
class LiveStats:
    thumbs: int = 0
    down: int = 0
    duels: int = 0
    duel_wins: float = 0.0  # ties count half

    def add_thumb(self, rating: str) -> None:
        self.thumbs += 1
        self.down += rating == "down"

    def add_duel(self, choice: str, side: Literal["a", "b"]) -> None:
        """One duel this version fought as `side`: a win counts 1, a tie half."""
        self.duels += 1
        self.duel_wins += 1.0 if choice == side else 0.5 if choice == "tie" else 0.0

    @property
    def up_rate(self) -> float:
        return (self.thumbs - self.down) / self.thumbs if self.thumbs else 0.0

    @property
    def down_rate(self) -> float:
        return self.down / self.thumbs if self.thumbs else 0.0


@dataclass
class Decision:
    action: Literal["promote", "rollback", "wait"]
    reason: str
    canary: dict
    active: dict


def per_version(events: Iterable) -> dict[str | None, LiveStats]:
    """Per version (None: the base model): thumbs, latest per user and response; and duels between two
    different versions (`both_bad` orders nothing and is left out)."""
    events = list(events)
    stats: dict[str | None, LiveStats] = {}
    for thumb in latest_thumbs(events):
        stats.setdefault(thumb.adapter_version, LiveStats()).add_thumb(thumb.rating)
    for duel in events:
        if (not isinstance(duel, PairwiseEvent) or duel.choice == "both_bad"
                or duel.adapter_version_a == duel.adapter_version_b):
            continue
        for side, version in (("a", duel.adapter_version_a), ("b", duel.adapter_version_b)):
            stats.setdefault(version, LiveStats()).add_duel(duel.choice, side)
    return stats


def live_stats(events: Iterable, canary: str, active: str | None) -> tuple[LiveStats, LiveStats]:
    """The canary's and the active version's thumbs, and the canary's duels against the active version."""
    events = list(events)
    between = [e for e in events if not isinstance(e, PairwiseEvent)
               or {e.adapter_version_a, e.adapter_version_b} == {canary, active}]
    stats = per_version(between)
    return stats.get(canary, LiveStats()), replace(stats.get(active, LiveStats()), duels=0, duel_wins=0.0)


def latest_thumb_stats(events: Iterable, version: str | None) -> LiveStats:
    """Thumbs (latest per user and response) on one version (None: the base model)."""
    return per_version(e for e in events if not isinstance(e, PairwiseEvent)).get(version, LiveStats())


def dashboard_stats(events: Iterable, now: datetime) -> dict:
    """What the operator dashboard plots: thumb-up rate and duel win rate per adapter ("base" for
    none; duels count only between different versions, ties half) and rated events per minute."""
    events = list(events)
    adapters = {version or "base": stats for version, stats in per_version(events).items()}
    volume: dict[str, dict] = {}
    for event in events:
        minute = event.occurred_at.replace(second=0, microsecond=0).isoformat()
        kind = "pairwise" if isinstance(event, PairwiseEvent) else "thumbs"
        volume.setdefault(minute, {"at": minute, "thumbs": 0, "pairwise": 0})[kind] += 1
    return {"updated_at": now.isoformat(), "volume": [volume[k] for k in sorted(volume)], "adapters": [
        {"version": version, "thumbs": s.thumbs, "up_rate": s.up_rate, "duels": s.duels,
         "duel_win_rate": s.duel_wins / s.duels if s.duels else None} for version, s in sorted(adapters.items())]}


def difference_lower_bound(a: LiveStats, b: LiveStats, z: float = 1.96) -> float:
    """95% lower bound of up_rate(a) - up_rate(b) (Wald, on two independent proportions)."""
    if not a.thumbs or not b.thumbs:
        return -1.0
    se = math.sqrt(a.up_rate * (1 - a.up_rate) / a.thumbs + b.up_rate * (1 - b.up_rate) / b.thumbs)
    return a.up_rate - b.up_rate - z * max(se, 1e-9)


def decide(canary: LiveStats, active: LiveStats, settings: LearnerSettings) -> Decision:
    figures = {"canary": asdict(canary) | {"down_rate": canary.down_rate, "up_rate": canary.up_rate},
               "active": asdict(active) | {"down_rate": active.down_rate, "up_rate": active.up_rate}}
    if canary.thumbs >= settings.rollback_min_feedback and active.thumbs:  # a spike needs a rate to compare with
        low = wilson(canary.down, canary.thumbs)[0]
        if low > active.down_rate + settings.rollback_margin:
            return Decision("rollback", f"thumb-down spike: canary {canary.down_rate:.0%} (95% lower bound {low:.0%}) vs "
                                        f"active {active.down_rate:.0%} + margin {settings.rollback_margin:.0%}", **figures)
    if canary.duels >= settings.promotion_min_duels:
        # a guard, not a second proof: showing a 0.5 win rate non-inferior within 0.05 takes ~400 duels
        high = wilson(canary.duel_wins, canary.duels)[1]
        if high < 0.5 - settings.promotion_margin:
            return Decision("rollback", f"loses its duels: win rate upper bound {high:.2f} < "
                                        f"{0.5 - settings.promotion_margin:.2f} on {canary.duels} duels", **figures)
    if canary.thumbs < settings.promotion_min_feedback:
        return Decision("wait", f"{canary.thumbs} of {settings.promotion_min_feedback} thumbs on the canary", **figures)
    bound = difference_lower_bound(canary, active)
    if bound <= -settings.promotion_margin:
        return Decision("wait", f"thumb-up rate not shown non-inferior: lower bound of the difference {bound:+.3f} "
                                f"<= -{settings.promotion_margin}", **figures)
    return Decision("promote", f"non-inferior on {canary.thumbs} thumbs (difference lower bound {bound:+.3f}) "
                               f"and {canary.duels} duels", **figures)


# the base model's log-likelihood per token of each answer of two sides (canary, active), read with one model load
Fluency = Callable[[list[InteractionEvent], list[InteractionEvent]], tuple[list[float], list[float]]]


def content_verdict(canary: list[InteractionEvent], active: list[InteractionEvent], settings: LearnerSettings,
                    fluency: Fluency | None = None) -> tuple[Literal["rollback", "wait"], str] | None:
    """Whether the canary's live answers are worse than the active version's: ("rollback", why) when they are, ("wait",
    why) while a share is over its tolerance on too few answers to say, None when they are not (or too few to read).
    `fluency` (the base model's reading) runs only when given."""
    if len(canary) < settings.canary_content_min_answers or not active:
        return None
    flags = [[degeneration(i.response, i.finish_reason) for i in side] for side in (canary, active)]
    found, before = shares(flags[0]), shares(flags[1])
    waiting = None
    for name, tolerance, what in (("degenerate", settings.gate_degenerate_tolerance, "degenerates live"),
                                  ("unfinished", settings.gate_unfinished_tolerance, "never ends live")):
        if found[name] <= before[name] + tolerance:
            continue
        low = difference_interval(found[name] * len(canary), len(canary), before[name] * len(active), len(active))[0]
        detail = (f" (loops {found['loop']:.0%}, symbols {found['symbols']:.0%}, empty items {found['empty_items']:.0%})"
                  if name == "degenerate" else " cut at the user's max_tokens")
        reason = (f"{what}: {found[name]:.0%} of {len(canary)} answers{detail} vs active {before[name]:.0%} of "
                  f"{len(active)} + {tolerance:.0%}; 95% lower bound of the difference {low:.0%}")
        # over the tolerance: rejected once that is significant, or once the window is full (the rule at its most
        # evidence); before, a few unlucky answers must not throw away a cycle, and the canary waits (never promoted)
        if low > tolerance or len(canary) >= settings.canary_content_answers:
            return "rollback", reason
        waiting = waiting or ("wait", f"{reason}: waiting for {settings.canary_content_answers} answers")
    if waiting is not None:
        return waiting
    if fluency is not None:
        mine, theirs = fluency(canary, active)
        if mine and theirs and sum(mine) / len(mine) < sum(theirs) / len(theirs) - settings.gate_fluency_tolerance:
            return "rollback", (f"not fluent live: the base model reads its answers at {sum(mine) / len(mine):.2f} "
                                f"nats/token vs the active version's {sum(theirs) / len(theirs):.2f} - "
                                f"{settings.gate_fluency_tolerance}")
    return None


def live_answers(answers: Callable[[datetime | None, datetime | None], list], started: datetime | None, version: str | None,
                 limit: int) -> list[InteractionEvent]:
    """The newest `limit` answers `version` served since `started`; for a version with none since (every
    user on the canary), those from before."""
    def of(events: list) -> list[InteractionEvent]:
        return [i for i in events if i.adapter_version == version and i.duel_id is None][-limit:]
    since = of(answers(started, None))
    return since if since or started is None else of(answers(started - timedelta(days=1), started))


def canary_start(registry: Registry, canary: str) -> dict | None:
    """The audit line that started the running canary `canary` (who, when), if any."""
    starts = [row for row in registry.audit() if row["action"] == "canary" and row["version"] == canary]
    return starts[-1] if starts else None


def canary_started_at(registry: Registry, canary: str) -> datetime | None:
    start = canary_start(registry, canary)
    return datetime.fromisoformat(start["at"]) if start else None


def awaited_canary(registry: Registry, settings: LearnerSettings, now: datetime) -> str | None:
    """The running canary the next cycle waits for, if any: a cycle started meanwhile would warm-start
    from the version the canary may replace, and, on one machine, take the cores that serve the
    canary's users their answers (its evidence). It waits at most `canary_hold_s` from the canary's start."""
    canary = registry.read_pointer().canary
    started = canary_started_at(registry, canary) if canary is not None else None
    if started is None or (now - started).total_seconds() >= settings.canary_hold_s:
        return None
    return canary


def start_canary(registry: Registry, candidate: str, settings: LearnerSettings) -> bool:
    """Serve a candidate that passed its gates as canary, if the slot is free or (canary_supersede)
    held by an older canary the learner started: a newer candidate, trained on more feedback from
    the same active version, restarts the live comparison instead of queueing behind it."""
    if settings.canary_share <= 0:
        return False
    pointer = registry.read_pointer()
    running = pointer.canary
    reason = "passed its gates"
    if running is not None:
        start = canary_start(registry, running)
        if not settings.canary_supersede or start is None or start["actor"] != LEARNER:
            log.info("canary.slot_taken", candidate=candidate, canary=running)
            return False
        reason += f"; supersedes canary {running}"
    try:
        registry.canary(candidate, settings.canary_share, actor=LEARNER, reason=reason, expected=pointer.revision)
    except Conflict as error:  # an operator moved the pointer meanwhile: theirs stands
        log.info("canary.not_started", candidate=candidate, why=str(error))
        return False
    log.info("canary.started", version=candidate, share=settings.canary_share, superseded=running)
    return True


def check(registry: Registry, feedback: Callable[[datetime | None, datetime | None], list], settings: LearnerSettings,
          answers: Callable[[datetime | None, datetime | None], list] | None = None,
          fluency: Fluency | None = None) -> Decision | None:
    """Apply the policy to the running canary (if any) on `feedback(since=canary start, until=None)`
    and, when given, the served `answers` (interactions) of both sides (fluency read before a promotion)."""
    pointer = registry.read_pointer()
    if pointer.canary is None:
        return None
    started = canary_started_at(registry, pointer.canary)
    canary, active = live_stats(feedback(started, None), pointer.canary, pointer.active)
    before_canary = active.thumbs == 0 and started is not None
    if before_canary:  # no user on the active side rated since the canary started
        active = latest_thumb_stats(feedback(started - BASELINE_WINDOW, started), pointer.active)
    decision = decide(canary, active, settings)
    if before_canary:
        decision.reason += " (active side: its thumbs before the canary started; none since)"
    if answers is not None and decision.action != "rollback":
        sides = [live_answers(answers, started, v, settings.canary_content_answers) for v in (pointer.canary, pointer.active)]
        verdict = content_verdict(*sides, settings, fluency if decision.action == "promote" else None)
        if verdict is not None and (verdict[0] == "rollback" or decision.action == "promote"):
            decision.action, decision.reason = verdict
        elif decision.action == "promote" and len(sides[0]) < settings.canary_content_min_answers:
            decision.action = "wait"
            decision.reason = f"{len(sides[0])} of {settings.canary_content_min_answers} answers for the content check"
    try:  # only on the pointer decided on: an operator's move meanwhile (a rollback, say) wins
        if decision.action == "promote":
            registry.promote(pointer.canary, actor=ACTOR, reason=decision.reason, expected=pointer.revision)
        elif decision.action == "rollback":
            registry.reject(pointer.canary, actor=ACTOR, reason=decision.reason, expected=pointer.revision)
    except Conflict as error:
        log.info("canary.decision_dropped", version=pointer.canary, action=decision.action, why=str(error))
        decision.action, decision.reason = "wait", f"not applied: {error}"
        return decision
    if decision.action != "wait":
        log.info("canary.decided", version=pointer.canary, action=decision.action, reason=decision.reason)
    return decision
