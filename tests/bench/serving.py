"""Serving benchmark: our server (interaction logging on) against `vllm serve` on the same
model, engine flags, prompts and concurrency, in the same run. Writes bench/results/serving.json.

    python -m tests.bench.serving [--requests 96] [--concurrency 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from feedback.broker import EmbeddedBroker
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from rlhf_loop.model import prepare
from serving.engine import engine_cli_args
from serving.settings import ServingSettings
from tests.bench.common import Server, chat_load, write_result
from tests.helpers import free_port

PROMPTS = [
    "What is the capital of France?", "Give me three tips for better sleep.", "Explain photosynthesis simply.",
    "Write a haiku about autumn.", "How do I boil an egg?", "What is a prime number?",
    "Name three rivers in Europe.", "Why is the sky blue?",
]


def bodies(count: int, max_tokens: int, served_name: str) -> list[dict]:
    # ignore_eos: every request generates exactly max_tokens, so both servers do the same work
    return [
        {"model": served_name, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
         "max_tokens": max_tokens, "temperature": 0.7, "seed": i, "ignore_eos": True, "user": f"bench-{i}"}
        for i in range(count)
    ]


def run(server: Server, base_url: str, ready_path: str, work: list[dict], concurrency: int, label: str):
    try:
        server.wait_answering(base_url + ready_path)
        asyncio.run(chat_load(base_url, work[:concurrency], concurrency, f"{label} warm-up"))
        return asyncio.run(chat_load(base_url, work, concurrency, label))
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, choices=(1, 2), help="1: peer then ours; 2: ABBA")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    base = RuntimeSettings()
    model = base.model or prepare(base.model_dir)
    with EmbeddedBroker(free_port()) as broker:
        port = free_port()
        env = {**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL": str(model), "RLHF_PORT": str(port),
               "RLHF_KAFKA_BOOTSTRAP_SERVERS": ",".join(broker.bootstrap_servers)}
        settings = ServingSettings(_env_file=None, **{"home": home, "model": model, "port": port})
        ensure_topics(settings.model_copy(update={"kafka_bootstrap_servers": env["RLHF_KAFKA_BOOTSTRAP_SERVERS"]}))
        work = bodies(args.requests, args.max_tokens, settings.served_model_name)

        peer_argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *engine_cli_args(settings), "--port", str(port)]
        base_url = f"http://127.0.0.1:{port}"
        runs: dict[str, list] = {"peer": [], "ours": []}
        # ABBA order, so neither side always runs on a warmer machine
        for round_index, side in enumerate(["peer", "ours", "ours", "peer"][: 2 * args.rounds]):
            if side == "peer":
                server, ready = Server(peer_argv, env, home / f"peer-{round_index}.log"), "/v1/models"
            else:
                server, ready = Server([sys.executable, "-m", "serving"], env, home / f"ours-{round_index}.log"), "/readyz"
            runs[side].append(run(server, base_url, ready, work, args.concurrency, f"{side} #{round_index + 1}"))
        peer, ours = (max(runs[side], key=lambda r: r.output_tokens_per_s) for side in ("peer", "ours"))

    for name, result in (("vllm serve", peer), ("rlhf-loop", ours)):
        if result.failures:
            print(f"{name}: {result.failures} of {result.requests} requests failed, first: {result.first_error}")
    ratio = ours.output_tokens_per_s / peer.output_tokens_per_s if peer.output_tokens_per_s else 0.0
    path = write_result("serving", {
        "model": str(model), "engine_flags": engine_cli_args(settings),
        "peer": peer, "ours": ours, "all_runs": runs, "best_of": len(runs["ours"]), "interaction_logging": True,
        "throughput_ratio_ours_over_peer": ratio, "target_ratio": 0.95, "meets_target": ratio >= 0.95,
    })
    print(f"vllm serve: {peer.output_tokens_per_s:.1f} tok/s, p50 {peer.latency_p50_s:.2f}s, p99 {peer.latency_p99_s:.2f}s")
    print(f"rlhf-loop:  {ours.output_tokens_per_s:.1f} tok/s, p50 {ours.latency_p50_s:.2f}s, p99 {ours.latency_p99_s:.2f}s")
    print(f"ratio {ratio:.3f} (target 0.95) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
