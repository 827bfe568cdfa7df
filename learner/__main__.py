"""`python -m learner`: the learner on its own, as in its own container.

It keeps the durable copy of the stream that training reads, starts a training cycle (in its own
process) when the schedule says so, and applies the promotion policy to the running canary.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import structlog
from prometheus_client import start_http_server

from feedback.broker import die_with_parent
from feedback.logs import configure_logging
from feedback.settings import load_settings
from learner import promotion
from learner.config import due
from learner.ingest import ingest_once, make_consumer
from learner.store import EventStore
from learner.registry import Registry, RegistryError
from learner.settings import LearnerSettings

log = structlog.get_logger("learner")


def base_fluency(settings: LearnerSettings) -> promotion.Fluency:
    """The base model's reading of served answers, loaded (torch and all) only when a canary is up for promotion."""
    def read(canary: list, active: list) -> tuple[list[float], list[float]]:
        from learner.gates import Likelihoods

        model = Likelihoods(settings.model_dir)
        mine, theirs = (model.per_token(model.rollouts([i.messages for i in side], [i.response for i in side]))
                        for side in (canary, active))
        return mine, theirs
    return read


def newest_is_active(registry: Registry) -> bool:
    """The last cycle helped: the newest candidate it published is the active adapter."""
    versions = registry.versions()
    return bool(versions) and registry.read_pointer().active == versions[-1]


def main() -> int:
    settings = load_settings(LearnerSettings)  # hyperparameters included: refused at start, not in a cycle
    configure_logging("learner")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if settings.learner_metrics_port:
        start_http_server(settings.learner_metrics_port, addr=settings.learner_metrics_host)
    store = EventStore(settings.dataset_path)
    consumer = make_consumer(settings)
    log.info("learner.started", dataset=str(settings.dataset_path), stored=store.count(), group=settings.consumer_group)
    registry = Registry.from_settings(settings)
    fluency = base_fluency(settings)
    feedback_at_last_cycle, last_cycle_at = store.feedback_count(), time.monotonic()
    last_promotion_check = time.monotonic()
    last_expiry = -math.inf
    cycle: subprocess.Popen | None = None
    awaited = logged_hold = None  # the running canary a due cycle waits for
    hold_stale = True  # the registry may have moved since `awaited` was read
    try:
        while not stop.is_set():
            ingest_once(consumer, store, settings.ingest_poll_ms)
            if cycle is not None and cycle.poll() is not None:
                log.info("cycle.finished", returncode=cycle.returncode)
                cycle, hold_stale = None, True  # it may have started a canary
            if settings.dataset_retention_days and time.monotonic() - last_expiry >= 3600:
                last_expiry = time.monotonic()
                expired = store.expire(datetime.now(timezone.utc) - timedelta(days=settings.dataset_retention_days))
                log.info("dataset.expired", events=expired, retention_days=settings.dataset_retention_days)
            # expired or forgotten events leave the count: new feedback is counted from what remains
            stored = store.feedback_count()
            feedback_at_last_cycle = min(feedback_at_last_cycle, stored)
            new_feedback = stored - feedback_at_last_cycle
            # the registry is read only when the lower count after a promotion could start a cycle now
            helped = (cycle is None and new_feedback >= settings.min_new_feedback_after_promotion
                      and newest_is_active(registry))
            if cycle is None and due(new_feedback, time.monotonic() - last_cycle_at, settings, helped=helped):
                # a running canary is waited for (read after a cycle or a promotion check, not every poll:
                # the registry may be an object store)
                if hold_stale:
                    hold_stale = False
                    awaited = promotion.awaited_canary(registry, settings, datetime.now(timezone.utc))
                    if awaited is not None and awaited != logged_hold:
                        log.info("cycle.waits_for_canary", canary=awaited, new_feedback=new_feedback)
                    logged_hold = awaited
                if awaited is None:
                    # a cycle runs in its own process: ingest (and the consumer group heartbeat) go on meanwhile
                    # it dies with us: a killed learner's restart must not find an orphan still training
                    cycle = subprocess.Popen([sys.executable, "-m", "learner.cycle"], preexec_fn=die_with_parent)
                    feedback_at_last_cycle, last_cycle_at = feedback_at_last_cycle + new_feedback, time.monotonic()
                    log.info("cycle.started", new_feedback=new_feedback, pid=cycle.pid)
            if time.monotonic() - last_promotion_check >= settings.promotion_check_s:
                last_promotion_check, hold_stale = time.monotonic(), True  # it may decide the canary; operators move it too
                try:
                    promotion.check(registry, lambda since, until: store.events(("thumb", "pairwise"), since, until), settings,
                                    lambda since, until: store.events(("interaction",), since, until), fluency)
                except RegistryError as error:  # an operator moved the pointer meanwhile: decide again next time
                    log.warning("canary.check_refused", error=str(error))
                now = datetime.now(timezone.utc)
                recent = store.events(("thumb", "pairwise"), now - timedelta(hours=24))
                registry.write_stats(promotion.dashboard_stats(recent, now))
    finally:
        if cycle is not None and cycle.poll() is None:
            cycle.terminate()
        consumer.close()
        store.close()
        log.info("learner.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
