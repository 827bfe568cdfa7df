"""Feedback ingestion benchmark: thumbs through our API (durable outbox, then Kafka) at 32
concurrent clients, next to kafka-python's raw producer rate (acks=all, idempotent) on the same
embedded broker in the same run. Writes bench/results/feedback.json.

    python -m tests.bench.feedback [--events 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from kafka import KafkaProducer
from rich.progress import Progress

from feedback.broker import EmbeddedBroker
from feedback.events import ThumbEvent
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from rlhf_loop.model import prepare
from serving.settings import ServingSettings
from serving.tokens import TokenSigner, prompt_hash
from tests.bench.common import Server, percentile, write_result
from tests.conftest import free_port


async def post_all(base_url: str, tokens: list[str], concurrency: int) -> tuple[float, list[float], int]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures = 0
    with Progress(transient=True) as progress:
        bar = progress.add_task("feedback API", total=len(tokens))
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(token: str) -> None:
                nonlocal failures
                async with gate:
                    started = time.perf_counter()
                    response = await client.post(f"{base_url}/v1/feedback", json={"feedback_token": token, "rating": "up"})
                    latencies.append(time.perf_counter() - started)
                    failures += response.status_code != 202
                    progress.advance(bar)

            started = time.perf_counter()
            await asyncio.gather(*(one(t) for t in tokens))
            return time.perf_counter() - started, latencies, failures


def outbox_backlog(base_url: str) -> float:
    metrics = httpx.get(f"{base_url}/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in metrics if line.startswith("rlhf_outbox_backlog_records{"))


def raw_producer_rate(bootstrap: list[str], topic: str, values: list[bytes]) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    started = time.perf_counter()
    for value in values:
        producer.send(topic, key=b"bench", value=value)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(values) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="rlhf-bench-feedback-"))
    base = RuntimeSettings()
    model = base.model or prepare(base.model_dir)
    with EmbeddedBroker(free_port()) as broker:
        bootstrap = ",".join(broker.bootstrap_servers)
        ensure_topics(RuntimeSettings(kafka_bootstrap_servers=bootstrap))
        port = free_port()
        env = {**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL": str(model), "RLHF_PORT": str(port),
               "RLHF_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RLHF_FEEDBACK_PER_CLIENT_PER_MINUTE": "100000000",
               "RLHF_FEEDBACK_BURST": "100000000"}
        signer = TokenSigner(ServingSettings(home=home).token_key(), 3600)
        tokens = [signer.sign(rid=f"r-{i}", c=f"c-{i % 64}", av=None, u=f"u-{i}", st=True,
                              ph=prompt_hash([{"role": "user", "content": "x"}])) for i in range(args.events)]
        server = Server([sys.executable, "-m", "serving"], env, home / "serving.log")
        try:
            server.wait_ready(f"http://127.0.0.1:{port}/readyz")  # the engine idle, not starting, while we measure
            asyncio.run(post_all(f"http://127.0.0.1:{port}", tokens[:100], args.concurrency))  # warm-up
            wall, latencies, failures = asyncio.run(post_all(f"http://127.0.0.1:{port}", tokens[100:], args.concurrency))
            started = time.perf_counter()
            while outbox_backlog(f"http://127.0.0.1:{port}") > 0:
                time.sleep(0.05)
            drain_s = time.perf_counter() - started
        finally:
            server.stop()
        sample = ThumbEvent(conversation_id="c-1", response_id="r-1", adapter_version=None, user_id="u-1", rating="up")
        raw = raw_producer_rate(broker.bootstrap_servers, "bench-raw", [sample.to_wire()] * len(latencies))

    accepted = len(latencies) - failures
    ours = {
        "events": len(latencies), "failures": failures, "concurrency": args.concurrency,
        "accepted_per_s": accepted / wall, "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": percentile(latencies, 0.99), "backlog_drain_after_last_202_s": drain_s,
        "delivered_per_s": accepted / (wall + drain_s),
    }
    path = write_result("feedback", {
        "ours": ours, "peer": {"kafka_python_raw_producer_events_per_s": raw, "acks": "all", "idempotent": True},
        "ratio_delivered_over_raw_producer": ours["delivered_per_s"] / raw,
        "note": "ours includes HTTP, token verification, an fsynced outbox append per batch and delivery; "
                "the raw producer is the ceiling of the client library on the same broker",
    })
    print(f"feedback API: {ours['accepted_per_s']:.0f} accepted/s (p50 {ours['latency_p50_s'] * 1000:.1f} ms, "
          f"p99 {ours['latency_p99_s'] * 1000:.1f} ms), {ours['delivered_per_s']:.0f} delivered/s")
    print(f"kafka-python raw producer: {raw:.0f} events/s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
