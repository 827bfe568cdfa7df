"""Simulated users: they chat through the public API and rate answers by a preference plugin.

Each of `RLHF_SIMULATE_USERS` users loops: pick a prompt from the prompt set, ask for a duel
(`RLHF_SIMULATE_DUEL_SHARE` of the time) or a plain answer, rate it (a thumb on
`RLHF_SIMULATE_RATE_SHARE` of answers, up with probability `score(prompt, answer)`; a duel goes to
the higher score), then think for an exponential while. They use only the public API and the
feedback tokens, as a person would; nothing of the learner knows the preference.

The simulation also says whether the loop worked: it compares the preference score of answers
served before the first promotion with the first `RLHF_SIMULATE_TEST_ANSWERS` answers of the
promoted adapter after it (one-sided Welch t-test, run once on that sample fixed in advance: testing
again as answers arrive and stopping at the first p < 0.05 would inflate the false-positive rate),
exposes both in `/metrics`, writes its report (RLHF_HOME/simulation.json) and prints it when it stops.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
import structlog
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field

from learner.registry import Registry
from learner.stats import welch_greater, welch_interval
from rlhf_loop.simulation.preferences import resolve
from feedback.settings import RuntimeSettings

log = structlog.get_logger("simulation")

HERE = Path(__file__).parent
SCORE = Histogram("rlhf_simulated_preference_score", "Preference score of answers served to simulated users.",
                  ["adapter"], buckets=[i / 10 for i in range(1, 11)])
RATINGS = Counter("rlhf_simulated_ratings_total", "Ratings given by simulated users.", ["kind"])
ERRORS = Counter("rlhf_simulated_errors_total", "Failed requests of simulated users.", ["route"])
GAIN = Gauge("rlhf_simulated_preference_gain", "Mean preference score after the first promotion minus before.")
P_VALUE = Gauge("rlhf_simulated_preference_p_value", "One-sided Welch t-test p-value of the gain (1 until measured).")
P_VALUE.set(1.0)


class SimulationSettings(RuntimeSettings):
    """Env prefix `RLHF_`; the simulated users are clients of serving's public API (RLHF_SIMULATE_URL)."""

    simulate_users: int = Field(default=0, ge=0, description="Simulated users chatting and rating (`up --simulate-users`).")
    simulate_url: str = Field(default="http://127.0.0.1:8000", description="Serving's API as the simulated users reach "
                                                                        "it (`up` sets its own serving's).")
    simulate_model: str = Field(default="rlhf-loop", description="The model simulated users ask for (`up` sets its "
                                                                 "serving's RLHF_SERVED_MODEL_NAME).")
    simulate_preference: str = Field(
        default="concise_question", description="What simulated users like: a preference of the suite (concise_question, "
                                                "lists, polite, examples, facts, concise_lists) or a Python file with "
                                                "score(prompt, answer) -> [0, 1].")
    simulate_prompts: Path | None = Field(
        default=None, description="Prompt set of simulated users (JSON Lines of {\"prompt\": ...}); default: the "
                                  "preference's own (its PROMPTS), else the bundled set.")
    simulate_think_s: float = Field(default=8.0, ge=0, description="Mean pause of a simulated user between turns "
                                                                   "(reading the answer, typing the next question).")
    simulate_rate_share: float = Field(default=0.8, ge=0, le=1, description="Share of plain answers a simulated user rates.")
    simulate_duel_share: float = Field(default=0.25, ge=0, le=1, description="Share of turns a simulated user asks for a duel.")
    simulate_max_tokens: int = Field(default=48, ge=1, description="max_tokens of simulated users' requests.")
    simulate_temperature: float = Field(default=0.7, ge=0, description="Sampling temperature simulated users ask for.")
    simulate_test_answers: int = Field(
        default=80, ge=2, description="Answers of the promoted adapter the gain is tested on: one test on the first "
                                      "this many after the promotion, a sample size fixed in advance.")
    simulate_until_tested: bool = Field(
        default=False, description="Stop once the gain is tested (simulate_test_answers answers of the promoted "
                                   "adapter), or after simulate_max_minutes.")
    simulate_max_minutes: float = Field(default=30, gt=0, description="Longest simulation with simulate_until_tested.")
    simulate_minutes: float | None = Field(
        default=None, gt=0, description="Run the simulation this long, then stop everything (a run of the continual "
                                        "loop: `make demo MINUTES=`); unset: until stopped.")
    simulate_seed: int = Field(default=0, ge=0, description="Seed of the simulated users' choices (what they ask, "
                                                          "rate and when): runs of a bench differ by it.")
    simulate_metrics_port: int = Field(default=0, ge=0, le=65535, description="Port of the simulation's /metrics; 0: off.")
    simulate_metrics_host: str = Field(default="127.0.0.1", description="Address the simulation's /metrics listens on.")
    simulate_report: Path | None = Field(default=None, description="Where the simulation writes its report; default RLHF_HOME/simulation.json.")


def load_preference(preference: str | Path) -> Callable[[str, str], float]:
    """`score` of a suite preference (by name) or of a plugin file."""
    return _load_plugin(preference).score


def _load_plugin(preference: str | Path):
    path = resolve(preference)
    spec = importlib.util.spec_from_file_location("rlhf_preference", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "score", None)):
        raise ValueError(f"{path} defines no score(prompt, answer) function")
    return module


def prompt_set(preference: str | Path, prompts: Path | None) -> list[str]:
    """The prompts simulated users ask: `prompts` if given, else the preference's own set (its PROMPTS,
    a file beside it), else the bundled set."""
    if prompts is None:
        plugin = _load_plugin(preference)
        own = getattr(plugin, "PROMPTS", None)
        prompts = resolve(preference).with_name(own) if own else HERE / "prompts.jsonl"
    return [json.loads(line)["prompt"] for line in prompts.read_text().splitlines() if line.strip()]


@dataclass
class Served:
    at: float  # seconds since the simulation started, when the answer arrived
    adapter: str | None
    score: float


@dataclass
class Simulation:
    settings: SimulationSettings
    score: Callable[[str, str], float]
    prompts: list[str]
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    served: list[Served] = field(default_factory=list)
    first_feedback_s: float | None = None
    ratings: int = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, prompt: str, answer: dict[str, Any]) -> float:
        text = answer["choices"][0]["message"]["content"] or ""
        value = min(1.0, max(0.0, float(self.score(prompt, text))))
        self.served.append(Served(self.now(), answer.get("adapter_version"), value))
        SCORE.labels(answer.get("adapter_version") or "base").observe(value)
        return value

    # -- one user ------------------------------------------------------------------------------------
    async def user(self, client: httpx.AsyncClient, name: str, rng: random.Random, stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            prompt = rng.choice(self.prompts)
            body = {"model": s.simulate_model, "messages": [{"role": "user", "content": prompt}], "user": name,
                    "max_tokens": s.simulate_max_tokens, "temperature": s.simulate_temperature}
            try:
                if rng.random() < s.simulate_duel_share:
                    await self.duel(client, prompt, body)
                else:
                    await self.chat(client, prompt, body, rng)
            except httpx.HTTPError as error:  # serving restarting or overloaded: try again later
                ERRORS.labels("chat").inc()
                log.warning("simulation.request_failed", user=name, error=repr(error))
                await asyncio.sleep(2.0)
            pause = rng.expovariate(1 / s.simulate_think_s) if s.simulate_think_s else 0.0
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass

    async def chat(self, client: httpx.AsyncClient, prompt: str, body: dict, rng: random.Random) -> None:
        reply = (await client.post("/v1/chat/completions", json=body)).raise_for_status().json()
        value = self.note(prompt, reply)
        if rng.random() < self.settings.simulate_rate_share:
            rating = "up" if rng.random() < value else "down"
            await self.rate(client, "/v1/feedback", {"feedback_token": reply["feedback"][0]["feedback_token"], "rating": rating}, "thumb")

    async def duel(self, client: httpx.AsyncClient, prompt: str, body: dict) -> None:
        reply = (await client.post("/v1/chat/duels", json=body)).raise_for_status().json()
        a, b = (self.note(prompt, answer) for answer in reply["answers"])
        choice = "both_bad" if max(a, b) < 0.2 else "tie" if abs(a - b) < 0.1 else "a" if a > b else "b"
        await self.rate(client, "/v1/feedback/pairwise", {
            "feedback_token_a": reply["answers"][0]["feedback"][0]["feedback_token"],
            "feedback_token_b": reply["answers"][1]["feedback"][0]["feedback_token"], "choice": choice}, "pairwise")

    async def rate(self, client: httpx.AsyncClient, path: str, body: dict, kind: str) -> None:
        reply = await client.post(path, json=body)
        if reply.status_code != 202:
            ERRORS.labels(kind).inc()
            log.warning("simulation.rating_refused", status=reply.status_code, body=reply.text[:300])
            return
        RATINGS.labels(kind).inc()
        self.ratings += 1
        if self.first_feedback_s is None:
            self.first_feedback_s = self.now()

    # -- did the loop work? -----------------------------------------------------------------------------
    def scores(self, adapter: str | None, start: float, end: float = math.inf) -> list[float]:
        """Scores of what `adapter` (None: the base model) served from `start` until `end`, in order."""
        return [s.score for s in sorted(self.served, key=lambda s: s.at) if start <= s.at < end and s.adapter == adapter]

    def promotions(self, audit: list[dict], since_start: Callable[[str], float]) -> list[dict[str, Any]]:
        """Each promotion of the run against the version it replaced: the promoted version's first
        `simulate_test_answers` answers after it (a sample size fixed in advance, one test each) against
        what the replaced version served while it was active before it (an operator's rollback in between
        is not followed)."""
        n = self.settings.simulate_test_answers
        rows, active, active_since = [], None, 0.0  # the base model serves until the first promotion
        for row in _promotes(audit):
            at = since_start(row["at"])
            before = self.scores(active, active_since, at)
            after = self.scores(row["version"], at)[:n]
            p_value = welch_greater(after, before) if len(after) == n and len(before) > 1 else None
            rows.append({"version": row["version"], "replaced": active or "base", "at_s": at,
                         "answers": len(after), "mean_score": statistics.fmean(after) if after else None,
                         "replaced_answers": len(before), "replaced_mean_score": statistics.fmean(before) if before else None,
                         "gain": statistics.fmean(after) - statistics.fmean(before) if after and before else None,
                         "p_value": p_value, "better": p_value is not None and p_value < 0.05})
            active, active_since = row["version"], at
        return rows

    def vs_base(self, audit: list[dict], since_start: Callable[[str], float]) -> dict[str, Any] | None:
        """The run's last promoted version against the base model (the issue's target): its first
        `simulate_test_answers` answers after its promotion against every answer the base model served
        before the first promotion; one test, on samples fixed in advance. None before a promotion."""
        promotes = _promotes(audit)
        if not promotes:
            return None
        last = promotes[-1]
        base = self.scores(None, 0.0, since_start(promotes[0]["at"]))
        after = self.scores(last["version"], since_start(last["at"]))[: self.settings.simulate_test_answers]
        tested = len(after) == self.settings.simulate_test_answers and len(base) > 1
        base_mean = statistics.fmean(base) if base else None
        return {"version": last["version"], "answers": len(after), "mean_score": statistics.fmean(after) if after else None,
                "base_answers": len(base), "base_mean_score": base_mean,
                "gain": statistics.fmean(after) - base_mean if after and base else None,
                "ci95": welch_interval(after, base) if tested else None,
                "p_value": welch_greater(after, base) if tested else None,
                # the bar: +0.15, or half the headroom above the base model where that is smaller
                "target_gain": min(0.15, (1 - base_mean) / 2) if base_mean is not None else None}

    def trajectory(self, minutes: float = 1.0) -> list[dict[str, Any]]:
        """The served score over the run: the mean of each minute's answers, and who served them."""
        buckets: dict[int, list[Served]] = {}
        for s in self.served:
            buckets.setdefault(int(s.at // (minutes * 60)), []).append(s)
        return [{"minute": i * minutes, "answers": len(xs), "mean_score": statistics.fmean(x.score for x in xs),
                 "adapters": sorted({x.adapter or "base" for x in xs})} for i, xs in sorted(buckets.items())]

    def report(self, registry: Registry) -> dict[str, Any]:
        """Timeline from the first rating to an active adapter, and the score before vs after it."""
        def since_start(iso: str) -> float:
            return (datetime.fromisoformat(iso) - self.started_at).total_seconds()

        audit = registry.audit()
        promoted = next((row for row in audit if row["action"] == "promote" and row["version"]), None)
        canary = next((row for row in audit if row["action"] == "canary"), None)
        candidates = [registry.meta(v) for v in registry.versions()]
        events = [{"t_s": 0.0, "event": "simulation started"}]
        if self.first_feedback_s is not None:
            events.append({"t_s": self.first_feedback_s, "event": "first rating"})
        events += [{"t_s": since_start(m["created_at"]), "event": f"{m['version']} published "
                    f"({'gates passed' if (m.get('gate_report') or {}).get('passed') else 'gates failed'})"} for m in candidates]
        events += [{"t_s": since_start(row["at"]), "event": f"{row['action']} {row['version']} by {row['actor']}"}
                   for row in audit]
        events.sort(key=lambda e: e["t_s"])

        promoted_s = since_start(promoted["at"]) if promoted else None
        # before: what the incumbent served until the promotion; after: the promoted adapter's first
        # `simulate_test_answers` answers after it. One test on samples fixed in advance, so its p-value
        # holds (stopping at the first of repeated looks with p < 0.05 would not).
        served = sorted(self.served, key=lambda s: s.at)
        before = [s.score for s in served if promoted_s is None or (s.at < promoted_s and s.adapter != promoted["version"])]
        after = [s.score for s in served if promoted and s.at >= promoted_s and s.adapter == promoted["version"]]
        after = after[: self.settings.simulate_test_answers]
        p_value = welch_greater(after, before) if len(after) == self.settings.simulate_test_answers else None
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else None  # noqa: E731
        gain = mean(after) - mean(before) if after and before else None

        def relative(row: dict | None) -> float | None:
            if row is None or self.first_feedback_s is None:
                return None
            return since_start(row["at"]) - self.first_feedback_s

        return {
            "promotions": self.promotions(audit, since_start), "vs_base": self.vs_base(audit, since_start),
            "trajectory": self.trajectory(), "seed": self.settings.simulate_seed,
            "started_at": self.started_at.isoformat(), "users": self.settings.simulate_users,
            "preference": str(self.settings.simulate_preference or "concise_question (bundled)"), "elapsed_s": self.now(), "ratings": self.ratings,
            "answers": len(self.served),
            "answers_by_adapter": {k: sum(1 for s in self.served if (s.adapter or "base") == k)
                                   for k in sorted({s.adapter or "base" for s in self.served})},
            "feedback_to_candidate_s": (since_start(candidates[0]["created_at"]) - self.first_feedback_s
                                        if candidates and self.first_feedback_s is not None else None),
            "feedback_to_canary_s": relative(canary), "feedback_to_active_s": relative(promoted),
            "promoted": promoted["version"] if promoted else None,
            "before": {"answers": len(before), "mean_score": mean(before), "sd": sd(before)},
            "after": {"answers": len(after), "mean_score": mean(after), "sd": sd(after)},
            "gain": gain, "p_value": p_value, "significant": p_value is not None and p_value < 0.05,
            "test": f"one-sided Welch t-test, once, on the promoted adapter's first {self.settings.simulate_test_answers} "
                    "answers after its promotion against the incumbent's before it",
            "events": events,
        }


def _promotes(audit: list[dict]) -> list[dict]:
    """The registry's promotions of a version (not rollbacks to the base model), oldest first."""
    return sorted((r for r in audit if r["action"] == "promote" and r["version"]), key=lambda r: r["at"])


def summary(report: dict[str, Any]) -> str:
    lines = [f"simulated users: {report['users']}, answers {report['answers']}, ratings {report['ratings']}, "
             f"{report['elapsed_s'] / 60:.1f} min"]
    lines += [f"  {e['t_s'] / 60:5.1f} min  {e['event']}" for e in report["events"]]
    before, after = report["before"], report["after"]
    if report["promoted"] is None:
        lines.append("no adapter was promoted yet: the preference score could not be compared")
    else:
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(f"preference score before promotion {fmt(before['mean_score'])} ({before['answers']} answers), "
                     f"after ({report['promoted']}) {fmt(after['mean_score'])} ({after['answers']} answers)")
        lines.append("p-value: the promoted adapter has not served the tested number of answers yet" if report["p_value"] is None else
                     f"gain {report['gain']:+.3f}, p = {report['p_value']:.2g} "
                     f"({'significant' if report['significant'] else 'not significant'} at 0.05, {report['test']})")
    for row in report.get("promotions", [])[1:]:  # the first is the lines above
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(f"{row['version']} over {row['replaced']}: {fmt(row['mean_score'])} ({row['answers']} answers) vs "
                     f"{fmt(row['replaced_mean_score'])} ({row['replaced_answers']}), "
                     + ("not tested yet" if row["p_value"] is None else f"p = {row['p_value']:.2g}"))
    final = report.get("vs_base")
    if final and len(report.get("promotions", [])) > 1:
        lines.append(f"{final['version']} over the base model: gain "
                     + ("not tested yet" if final["p_value"] is None else f"{final['gain']:+.3f}, p = {final['p_value']:.2g}"))
    return "\n".join(lines)


async def simulate(settings: SimulationSettings, stop: asyncio.Event) -> dict[str, Any]:
    """Run the users until `stop` (or, with simulate_until_tested, until the gain is tested)."""
    sim = Simulation(settings, load_preference(settings.simulate_preference),
                     prompt_set(settings.simulate_preference, settings.simulate_prompts))
    registry = Registry.from_settings(settings)
    report_path = settings.simulate_report or settings.home / "simulation.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(base_url=settings.simulate_url, timeout=300.0) as client:
        while not stop.is_set():  # users arrive once chat is served
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1.0)
        sim.started, sim.started_at = time.monotonic(), datetime.now(timezone.utc)
        users = [asyncio.create_task(sim.user(client, f"simulated-{i}", random.Random(settings.simulate_seed * 1000 + i), stop))
                 for i in range(settings.simulate_users)]
        log.info("simulation.started", users=settings.simulate_users, preference=str(settings.simulate_preference or "bundled"))
        deadline = sim.started + settings.simulate_max_minutes * 60
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 10.0)
                except TimeoutError:
                    pass
                for task in users:  # a user that died of a bug stops the simulation loudly, not silently
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()
                report = await asyncio.to_thread(sim.report, registry)
                write_report(report_path, report)
                if report["p_value"] is not None:
                    GAIN.set(report["gain"])
                    P_VALUE.set(report["p_value"])
                tested = report["p_value"] is not None
                if settings.simulate_until_tested and (tested or time.monotonic() > deadline):
                    stop.set()
                if settings.simulate_minutes and time.monotonic() - sim.started >= settings.simulate_minutes * 60:
                    stop.set()
        finally:
            stop.set()
            await asyncio.gather(*users, return_exceptions=True)
    report = sim.report(registry)
    write_report(report_path, report)
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Atomically: readers (the e2e test, an operator's `watch`) never see half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
