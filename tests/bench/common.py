"""Shared pieces of the benchmarks: servers in subprocesses, load generation, JSON results."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.progress import Progress

from tests.helpers import Process

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    failures: int
    wall_s: float
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    first_error: str | None = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def chat_load(base_url: str, bodies: list[dict], concurrency: int, label: str) -> LoadResult:
    """Send `bodies` to /v1/chat/completions with at most `concurrency` in flight."""
    latencies: list[float] = []
    tokens = failures = 0
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    with Progress(transient=True) as progress:
        bar = progress.add_task(label, total=len(bodies))
        async with httpx.AsyncClient(timeout=600) as client:
            async def one(body: dict) -> None:
                nonlocal tokens, failures
                async with gate:
                    started = time.perf_counter()
                    response = await client.post(f"{base_url}/v1/chat/completions", json=body)
                    latencies.append(time.perf_counter() - started)
                    if response.status_code == 200:
                        tokens += response.json()["usage"]["completion_tokens"]
                    else:
                        failures += 1
                        errors.append(f"{response.status_code} {response.text[:300]}")
                    progress.advance(bar)

            started = time.perf_counter()
            await asyncio.gather(*(one(body) for body in bodies))
            wall = time.perf_counter() - started
    return LoadResult(
        requests=len(bodies), concurrency=concurrency, failures=failures, wall_s=wall, output_tokens=tokens,
        output_tokens_per_s=tokens / wall, requests_per_s=len(bodies) / wall,
        latency_p50_s=statistics.median(latencies), latency_p99_s=percentile(latencies, 0.99),
        first_error=errors[0] if errors else None,
    )


Server = Process  # benchmarks' servers: `vllm serve`, `python -m serving`


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=lambda o: asdict(o)))
    return path
