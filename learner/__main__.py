"""`python -m learner`: the learner on its own, as in its own container.

Today it keeps the durable copy of the stream that training reads; the reward model, PPO and
the schedule build on it.
"""

from __future__ import annotations

import signal
import sys
import threading

import structlog
from prometheus_client import start_http_server

from feedback.logs import configure_logging
from learner.ingest import EventStore, ingest_once, make_consumer
from learner.settings import LearnerSettings

log = structlog.get_logger("learner")


def main() -> int:
    settings = LearnerSettings()
    configure_logging("learner")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if settings.learner_metrics_port:
        start_http_server(settings.learner_metrics_port, addr="127.0.0.1")
    store = EventStore(settings.dataset_path)
    consumer = make_consumer(settings)
    log.info("learner.started", dataset=str(settings.dataset_path), stored=store.count(), group=settings.consumer_group)
    try:
        while not stop.is_set():
            ingest_once(consumer, store, settings.ingest_poll_ms)
    finally:
        consumer.close()
        store.close()
        log.info("learner.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
