"""From the stored stream to training data: join feedback to the interactions it rates.

- Thumbs: latest wins per (user, response). A thumb becomes a pointwise example (up = 1, down = 0);
  where one prompt has both an up and a down answer, they also form a preference pair.
- Pairwise: `a`/`b` become a (chosen, rejected) pair; `tie` and `both_bad` carry no order and are
  not used for the Bradley-Terry loss.
- Feedback whose interaction has not arrived yet waits (it stays in the store and joins on a later
  build); after `max_wait_s` without it, it is dropped and counted.
- Corrections (a user's better answer to a response): latest wins per (user, response), like thumbs.
  Each becomes a demonstration (prompt, correction) for supervised fine-tuning and a pair (the
  correction over the served answer) for every learner that reads pairs.
- Per-user cap: at most `max_per_user` examples of each kind per user (their newest), so one user
  flooding ratings cannot dominate a refresh; anonymous feedback is one pool under the same cap.
- Pairs crossed from thumbs on one prompt: the newest `CROSSED_PER_SIDE` ups with the newest as many
  downs, so N opposite thumbs on one prompt give at most 64 pairs, not N²/4.
- A cycle reads the feedback of its window (RLHF_DATASET_WINDOW_DAYS; unset: all stored) and only the
  interactions that feedback rates, by index: a million stored events build in seconds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from feedback.events import FEEDBACK_KINDS, CorrectionEvent, InteractionEvent, PairwiseEvent, ThumbEvent, latest_corrections, latest_thumbs
from learner.store import EventStore


CROSSED_PER_SIDE = 8  # thumbs of each side crossed into pairs per prompt: at most 8 x 8 pairs


@dataclass(frozen=True)
class Pointwise:
    prompt: tuple[tuple[str, str], ...]  # ((role, content), ...)
    response: str
    label: float  # 1.0 thumb up, 0.0 thumb down
    user_id: str | None


@dataclass(frozen=True)
class Pair:
    prompt: tuple[tuple[str, str], ...]
    chosen: str
    rejected: str
    user_id: str | None


@dataclass(frozen=True)
class Demonstration:
    prompt: tuple[tuple[str, str], ...]
    answer: str  # a user's correction: the answer they would rather have received
    user_id: str | None


@dataclass
class FeedbackData:
    pointwise: list[Pointwise] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    demonstrations: list[Demonstration] = field(default_factory=list)
    prompts: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    waiting: int = 0  # feedback whose interaction has not arrived (yet)
    dropped: int = 0  # ...and never did, within max_wait_s
    capped: int = 0  # examples left out by the per-user cap
    newest_event_at: datetime | None = None


def _prompt(interaction: InteractionEvent) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], m["content"]) for m in interaction.messages)


def _cap(examples: list, max_per_user: int, data: FeedbackData) -> list:
    """Keep each user's newest `max_per_user` (examples arrive oldest first)."""
    by_user: dict[str | None, list] = defaultdict(list)
    for example in examples:
        by_user[example.user_id].append(example)
    kept = []
    for user, items in by_user.items():
        keep = items[-max_per_user:]
        data.capped += len(items) - len(keep)
        kept.extend(keep)
    return kept


PROMPT_POOL = 5000  # distinct recent prompts PPO may draw from: the newest interactions' prompts


def build(store: EventStore, *, max_per_user: int, max_wait_s: float, now: datetime | None = None,
          window_s: float | None = None) -> FeedbackData:
    """The training data of one cycle: feedback of the last `window_s` (None: all stored), joined by
    index lookups to the interactions it rates (however old), and the prompts of the newest
    interactions. Nothing else of the store is read, so a cycle's cost follows its window."""
    now = now or datetime.now(timezone.utc)
    feedback: list[ThumbEvent | PairwiseEvent | CorrectionEvent] = store.events(
        FEEDBACK_KINDS, now - timedelta(seconds=window_s) if window_s else None)
    interactions: dict[str, InteractionEvent] = store.interactions(
        rid for event in feedback
        for rid in ((event.response_id_a, event.response_id_b) if isinstance(event, PairwiseEvent) else (event.response_id,)))
    prompts = {tuple((m["role"], m["content"]) for m in row["messages"])
               for row in store.newest_payloads("interaction", PROMPT_POOL)}
    return assemble(feedback, interactions, prompts, max_per_user=max_per_user, max_wait_s=max_wait_s, now=now,
                    newest_event_at=store.newest_at())


def assemble(feedback: list[ThumbEvent | PairwiseEvent | CorrectionEvent], interactions: dict[str, InteractionEvent], prompts: set,
             *, max_per_user: int, max_wait_s: float, now: datetime, newest_event_at: datetime | None) -> FeedbackData:
    """Training data from feedback (oldest first) and the interactions it may rate, by response id."""
    data = FeedbackData(newest_event_at=newest_event_at)
    horizon = now - timedelta(seconds=max_wait_s)

    def joined(response_id: str, event) -> InteractionEvent | None:
        found = interactions.get(response_id)
        if found is None:
            if event.occurred_at < horizon:
                data.dropped += 1
            else:
                data.waiting += 1
        return found

    pointwise: list[Pointwise] = []
    by_prompt: dict[tuple, dict[str, list[Pointwise]]] = defaultdict(lambda: {"up": [], "down": []})
    for thumb in latest_thumbs(feedback):
        interaction = joined(thumb.response_id, thumb)
        if interaction is None:
            continue
        example = Pointwise(_prompt(interaction), interaction.response, 1.0 if thumb.rating == "up" else 0.0, thumb.user_id)
        pointwise.append(example)
        by_prompt[example.prompt][thumb.rating].append(example)
    pairs: list[Pair] = []
    for event in feedback:
        if isinstance(event, PairwiseEvent) and event.choice in ("a", "b"):
            a, b = joined(event.response_id_a, event), joined(event.response_id_b, event)
            if a is None or b is None:
                continue
            chosen, rejected = (a, b) if event.choice == "a" else (b, a)
            pairs.append(Pair(_prompt(a), chosen.response, rejected.response, event.user_id))
    demonstrations: list[Demonstration] = []
    for correction in latest_corrections(feedback):
        interaction = joined(correction.response_id, correction)
        if interaction is None:
            continue
        demonstrations.append(Demonstration(_prompt(interaction), correction.correction, correction.user_id))
        if correction.correction.strip() != interaction.response.strip():
            pairs.append(Pair(_prompt(interaction), correction.correction, interaction.response, correction.user_id))
    for prompt, sides in by_prompt.items():  # thumbs up and down on one prompt: a pair too
        for up in sides["up"][-CROSSED_PER_SIDE:]:
            for down in sides["down"][-CROSSED_PER_SIDE:]:
                pairs.append(Pair(prompt, up.response, down.response, up.user_id))
    data.pointwise = _cap(pointwise, max_per_user, data)
    data.pairs = _cap(pairs, max_per_user, data)
    data.demonstrations = _cap(demonstrations, max_per_user, data)
    data.prompts = sorted(prompts)
    return data


def as_messages(prompt: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in prompt]


def load_prompt_file(path) -> list[tuple[tuple[str, str], ...]]:
    """A JSON Lines file of {"prompt": "..."} or {"messages": [...]} rows."""
    prompts = []
    with open(path) as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                messages = row["messages"] if "messages" in row else [{"role": "user", "content": row["prompt"]}]
                prompts.append(tuple((m["role"], m["content"]) for m in messages))
    return prompts
