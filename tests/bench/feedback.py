"""Feedback ingestion benchmark: thumbs through our API (token check, rate limits, the fsynced
outbox, then Kafka) from 32 concurrent connections of `wrk` (a C load generator, one thread, so the
client takes little of the two cores), next to kafka-python's raw producer rate (acks=all,
idempotent) on the same embedded broker in the same run. Writes bench/results/feedback.json.

    python -m tests.bench.feedback [--seconds 20] [--concurrency 32]

The server is the real `python -m serving` with its vLLM engine started (idle while we measure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from kafka import KafkaProducer

from feedback.broker import EmbeddedBroker
from feedback.events import ThumbEvent
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from rlhf_loop.model import prepare
from serving.settings import ServingSettings
from serving.tokens import TokenSigner, prompt_hash
from tests.bench.common import Server, write_result
from tests.helpers import free_port

SCRIPT = Path(__file__).with_suffix(".lua")


def wrk(base_url: str, tokens: Path, seconds: int, concurrency: int) -> dict:
    """One wrk run; its totals and latency percentiles (microseconds)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SCRIPT),
                          base_url, "--", str(tokens)], check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


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
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server", default="serving", help="the module to run (tests.stand_in_serving: no vLLM)")
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
        count = 6000 * args.seconds  # more than the run can use: every request rates a response of its own
        tokens = home / "tokens.txt"
        tokens.write_text("\n".join(signer.sign(rid=f"r-{i}", c=f"c-{i % 64}", av=None, u=f"u-{i % 1000}", st=True,
                                                ph=prompt_hash([{"role": "user", "content": "x"}]))
                                    for i in range(count)) + "\n")
        server = Server([sys.executable, "-m", args.server], env, home / "serving.log")
        url = f"http://127.0.0.1:{port}"
        try:
            server.wait_answering(f"{url}/readyz")  # the engine idle, not starting, while we measure
            wrk(url, tokens, 3, args.concurrency)  # warm-up
            run = wrk(url, tokens, args.seconds, args.concurrency)
            started = time.perf_counter()
            while outbox_backlog(url) > 0:
                time.sleep(0.05)
            drain_s = time.perf_counter() - started
            accepted_total = sum(float(line.split()[-1]) for line in httpx.get(f"{url}/metrics").text.splitlines()
                                 if line.startswith("rlhf_feedback_accepted_total{"))
        finally:
            server.stop()
        sample = ThumbEvent(conversation_id="c-1", response_id="r-1", adapter_version=None, user_id="u-1", rating="up")
        raw = raw_producer_rate(broker.bootstrap_servers, "bench-raw", [sample.to_wire()] * 20000)

    wall = run["duration_us"] / 1e6
    accepted = run["requests"] - run["non_2xx"] - run["socket_errors"] - run["timeouts"]
    ours = {
        "server": args.server, "seconds": wall, "requests": run["requests"], "failures": run["requests"] - accepted,
        "concurrency": args.concurrency, "load_generator": "wrk -t1 (C, one thread)",
        "accepted_per_s": accepted / wall, "latency_p50_s": run["p50_us"] / 1e6, "latency_p90_s": run["p90_us"] / 1e6,
        "latency_p99_s": run["p99_us"] / 1e6, "latency_max_s": run["max_us"] / 1e6,
        "backlog_drain_after_last_202_s": drain_s, "delivered_per_s": accepted / (wall + drain_s),
        "accepted_total_in_metrics": accepted_total,
    }
    path = write_result("feedback", {
        "ours": ours, "peer": {"kafka_python_raw_producer_events_per_s": raw, "acks": "all", "idempotent": True},
        "ratio_delivered_over_raw_producer": ours["delivered_per_s"] / raw,
        "target": {"accepted_per_s": 2000, "latency_p99_s": 0.05},
        "note": "ours includes HTTP, token verification, rate limits, an fsynced outbox append per batch (group "
                "commit) before each 202, and delivery; the raw producer is the client library's ceiling on the "
                "same broker",
    })
    print(f"feedback API: {ours['accepted_per_s']:.0f} accepted/s (p50 {ours['latency_p50_s'] * 1000:.1f} ms, "
          f"p99 {ours['latency_p99_s'] * 1000:.1f} ms), {ours['delivered_per_s']:.0f} delivered/s")
    print(f"kafka-python raw producer: {raw:.0f} events/s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
