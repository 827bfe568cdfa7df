"""Hot-swap benchmark: adapter pointer moves (promote / rollback through our admin API) under
concurrent chat load, next to vLLM's own runtime LoRA loading (`/v1/load_lora_adapter` on its
OpenAI server, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) on the same model, engine flags, adapters
and load. Writes bench/results/hotswap.json.

    python -m tests.bench.hotswap [--concurrency 4] [--max-tokens 16] [--moves 5] [--no-peer]

Both servers run at the same time, each under its own identical load and (CPU engines) with its
engine bound to its own core, and their moves alternate (peer first in even rounds, ours first in
odd ones): on a shared machine whose other jobs come and go, that puts both sides under the same
noise, which running them one after the other did not. `--cores 1,0` swaps the cores.

Per move, on both sides:
- time to serve: from the start of the move (our admin call; the peer's load call) until the first
  response produced by the new adapter. A probe client sends 1-token chats back to back beside the
  load, so this is not hidden behind a long generation. Ours includes the pointer poll
  (RLHF_ADAPTER_POLL_S); the peer's clients switch model name as soon as its load call returns,
  the best a client of plain vLLM can do.
- request latency p50/p95 of the load requests in flight during the swap window (the first
  `--swap-window` seconds after the move starts) against the steady ones: those in flight during no
  swap window of their server (most of them in a window before the first move).
  Request lengths vary (seeded, the same on both sides) so that clients do not run in lockstep.
- failures: every request of the load and of the probe must answer 200.
"""

from __future__ import annotations

import os

# as in the other benchmarks: torch's OpenMP threads must wait passively on a shared CPU; the
# servers started below inherit it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Awaitable, Callable  # noqa: E402

import httpx  # noqa: E402

from feedback.broker import EmbeddedBroker  # noqa: E402
from feedback.settings import RuntimeSettings  # noqa: E402
from feedback.topics import ensure_topics  # noqa: E402
from learner.registry import Registry  # noqa: E402
from rlhf_loop.model import prepare  # noqa: E402
from serving.engine import engine_cli_args  # noqa: E402
from serving.settings import ServingSettings  # noqa: E402
from tests.bench.common import Server, percentile, write_result  # noqa: E402
from tests.helpers import free_port, write_lora_adapter  # noqa: E402

ADMIN_TOKEN = "bench-operator-token"
PASSED = {"passed": True, "gates": []}
PROMPTS = [
    "What is the capital of France?", "Give me three tips for better sleep.", "Explain photosynthesis simply.",
    "Write a haiku about autumn.", "How do I boil an egg?", "What is a prime number?",
    "Name three rivers in Europe.", "Why is the sky blue?",
]

Move = Callable[[], Awaitable[str]]  # performs one move, returns the version that should serve now


@dataclass
class Sample:
    started: float  # time.perf_counter() at send
    ended: float
    status: int
    served: str | None  # the adapter that answered: our `adapter_version`, the peer's `model`
    tokens: int
    probe: bool


@dataclass
class Side:
    """One server under load: clients and a probe sending to `model` (the peer's switch it on a move)."""

    name: str
    base_url: str
    model: str
    served_of: Callable[[dict], str | None]
    moves: list[tuple[str, Move]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    first_error: str | None = None
    steady_window: tuple[float, float] = (0.0, 0.0)  # perf_counter() bounds, set by run()

    async def client(self, http: httpx.AsyncClient, index: int, max_tokens: int, stop: asyncio.Event) -> None:
        """Chats back to back; `max_tokens` 0 makes this the probe (1-token chats)."""
        lengths = random.Random(index)  # the same request lengths on both sides
        sent = 0
        while not stop.is_set():
            tokens = 1 if max_tokens == 0 else lengths.randint(max_tokens // 2, max_tokens * 3 // 2)
            body = {"model": self.model, "messages": [{"role": "user", "content": PROMPTS[(index + sent) % len(PROMPTS)]}],
                    "max_tokens": tokens, "temperature": 0.7, "ignore_eos": True, "user": f"bench-{index}"}
            sent += 1
            started = time.perf_counter()
            try:
                response = await http.post(f"{self.base_url}/v1/chat/completions", json=body)
                status = response.status_code
                reply = response.json() if status == 200 else None
                if reply is None and self.first_error is None:
                    self.first_error = f"{status} {response.text[:300]}"
            except httpx.HTTPError as error:
                status, reply = 0, None
                self.first_error = self.first_error or repr(error)
            self.samples.append(Sample(started, time.perf_counter(), status, reply and self.served_of(reply),
                                       reply["usage"]["completion_tokens"] if reply else 0, max_tokens == 0))

    def served_since(self, since: float, version: str) -> float | None:
        """End time of the first response by `version` to a request sent after `since`."""
        ends = [s.ended for s in self.samples if s.started >= since and s.served == version]
        return min(ends) if ends else None


def latency_summary(samples: list[Sample]) -> dict:
    latencies = [s.ended - s.started for s in samples]
    if not latencies:
        return {"requests": 0, "latency_p50_s": None, "latency_p95_s": None, "latency_max_s": None}
    return {"requests": len(latencies), "latency_p50_s": statistics.median(latencies),
            "latency_p95_s": percentile(latencies, 0.95), "latency_max_s": max(latencies)}


async def one_move(side: Side, number: int, description: str, move: Move, serve_timeout_s: float) -> float:
    """Make the move, then wait for the first response by the new version; returns when it started."""
    started = time.perf_counter()
    version = await move()
    move_call_s = time.perf_counter() - started
    served_at = None
    while served_at is None and time.perf_counter() - started < serve_timeout_s:
        await asyncio.sleep(0.02)
        served_at = side.served_since(started, version)
    side.results.append({"move": number, "action": description, "to": version, "move_call_s": move_call_s,
                         "time_to_serve_s": None if served_at is None else served_at - started, "_started": started})
    print(f"{side.name} move {number} ({description} -> {version}): first served after "
          f"{'never' if served_at is None else f'{served_at - started:.2f} s'}")
    return started


async def run(sides: list[Side], concurrency: int, max_tokens: int, *, steady_s: float, swap_window_s: float,
              gap_s: float, serve_timeout_s: float) -> None:
    """Load on every side, a steady window, then the sides' moves in alternating order."""
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=4 * concurrency + 8)) as http:
        tasks = [asyncio.create_task(side.client(http, i, max_tokens, stop)) for side in sides for i in range(concurrency)]
        tasks += [asyncio.create_task(side.client(http, concurrency, 0, stop)) for side in sides]
        await asyncio.sleep(max(5.0, steady_s / 2))  # clients spread out before anything is measured
        steady_from = time.perf_counter()
        await asyncio.sleep(steady_s)
        steady_to = time.perf_counter()
        for round_index in range(len(sides[0].moves)):
            order = sides if round_index % 2 == 0 else sides[::-1]
            for side in order:
                description, move = side.moves[round_index]
                started = await one_move(side, round_index + 1, description, move, serve_timeout_s)
                await asyncio.sleep(max(0.0, started + gap_s - time.perf_counter()))
        await asyncio.sleep(swap_window_s)
        stop.set()
        await asyncio.gather(*tasks)
    for side in sides:
        side.steady_window = (steady_from, steady_to)


def summary(side: Side, swap_window_s: float) -> dict:
    steady_from, steady_to = side.steady_window
    load = [s for s in side.samples if not s.probe and s.started >= steady_from]
    in_any_window: set[int] = set()  # indexes into `load`
    for move in side.results:
        start = move.pop("_started")
        hits = [i for i, s in enumerate(load) if s.started < start + swap_window_s and s.ended > start]
        move["swap_window"] = latency_summary([load[i] for i in hits])
        move["served_by_in_window"] = sorted({str(load[i].served) for i in hits})
        in_any_window.update(hits)
    swap = [s for i, s in enumerate(load) if i in in_any_window]
    # steady: every request of the run in flight during no swap window of its server (most of them
    # in the window before the first move), so drift in the machine's load hits both groups alike
    steady = [s for i, s in enumerate(load) if i not in in_any_window]
    to_serve = [m["time_to_serve_s"] for m in side.results if m["time_to_serve_s"] is not None]
    return {
        "moves": side.results,
        "steady_window": {"seconds": steady_to - steady_from, **latency_summary(steady),
                          "definition": "load requests overlapping no swap window, from the start of the window "
                                        "before the first move to the end of the run"},
        "output_tokens_per_s_before_moves": sum(s.tokens for s in load if s.ended <= steady_to) / (steady_to - steady_from),
        "swap_windows": {"seconds_each": swap_window_s, **latency_summary(swap)},
        "time_to_serve_s": {"median": statistics.median(to_serve) if to_serve else None,
                            "max": max(to_serve) if to_serve else None, "moves_served": len(to_serve),
                            "moves": len(side.results)},
        "requests": len(side.samples), "load_requests": len(load),
        "failures": sum(s.status != 200 for s in side.samples), "first_error": side.first_error,
    }


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def metric_sum(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith((name + "{", name + " ")))


def wait_served(base_url: str, model: str, version: str, served_of, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = httpx.post(f"{base_url}/v1/chat/completions", timeout=60, json={
            "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
        if reply.status_code == 200 and served_of(reply.json()) == version:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{version} not served within {timeout_s}s")


def our_moves(side: Side, registry: Registry, versions: list[str], count: int) -> list[tuple[str, Move]]:
    """Promote the next unused version; every third move rolls back instead."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def admin(path: str, body: dict) -> str:
        reply = httpx.post(f"{side.base_url}/admin/v1{path}", json=body, headers=headers, timeout=60)
        reply.raise_for_status()
        return reply.json()["pointer"]["active"]

    def threaded(path: str, body: dict) -> Move:
        async def move() -> str:
            return await asyncio.to_thread(admin, path, body)
        return move

    unused, moves = iter(versions), []
    for number in range(1, count + 1):
        if number % 3 == 0:
            moves.append(("rollback", threaded("/rollback", {"reason": "hot-swap bench"})))
        else:
            moves.append(("promote", threaded(f"/adapters/{next(unused)}/promote", {"reason": "hot-swap bench"})))
    return moves


def peer_moves(side: Side, adapters: list[Path], count: int, load_s: list[float]) -> list[tuple[str, Move]]:
    """Load a fresh adapter name, switch the clients to it, unload the old name a little later
    (as ours unloads a drained adapter; requests already running keep theirs)."""
    def load(name: str, path: Path) -> None:
        reply = httpx.post(f"{side.base_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                           timeout=120)
        reply.raise_for_status()

    async def unload_later(name: str) -> None:
        await asyncio.sleep(5.0)  # a client that picked the old name just before the switch has sent by now
        async with httpx.AsyncClient(timeout=60) as http:
            (await http.post(f"{side.base_url}/v1/unload_lora_adapter", json={"lora_name": name})).raise_for_status()

    def move_to(number: int) -> Move:
        async def move() -> str:
            name, old = f"peer-{number}", side.model
            started = time.perf_counter()
            await asyncio.to_thread(load, name, adapters[number % 2])
            load_s.append(time.perf_counter() - started)
            side.model = name  # every client sends to the new adapter from now on
            asyncio.get_running_loop().create_task(unload_later(old))
            return name
        return move

    return [("load_lora_adapter", move_to(number)) for number in range(1, count + 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=4, help="chat clients per server, back to back (plus one probe)")
    parser.add_argument("--max-tokens", type=int, default=16, help="mean tokens per load request (ignore_eos; 0.5x-1.5x)")
    parser.add_argument("--moves", type=int, default=5, help="moves per server")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of the steady window before the first move")
    parser.add_argument("--swap-window", type=float, default=5.0, help="seconds after a move counted as its swap window")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds from one move to the next (either server)")
    parser.add_argument("--kv-cache", default="256MiB", help="RLHF_KV_CACHE_MEMORY of both engines")
    parser.add_argument("--cores", default="0,1", help="CPU engines only: the core each engine's threads are bound to, "
                        "ours,peer (VLLM_CPU_OMP_THREADS_BIND); empty: vLLM's default, which binds both to the same core")
    parser.add_argument("--no-peer", action="store_true", help="skip vLLM's runtime LoRA loading (no speed claim then)")
    args = parser.parse_args()
    cores = dict(zip(("ours",) if args.no_peer else ("ours", "peer"), args.cores.split(","))) if args.cores else {}

    home = Path(tempfile.mkdtemp(prefix="rlhf-bench-hotswap-"))
    base = RuntimeSettings()
    model = base.model or prepare(base.model_dir)
    adapters = [write_lora_adapter(model, home / f"adapter-{seed}", seed=seed) for seed in (1, 2)]
    load_average = {"start": list(os.getloadavg())}

    with EmbeddedBroker(free_port()) as broker:
        ours_port, peer_port = free_port(), free_port()
        env = {**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL": str(model), "RLHF_PORT": str(ours_port),
               "RLHF_KAFKA_BOOTSTRAP_SERVERS": ",".join(broker.bootstrap_servers), "RLHF_ADMIN_TOKEN": ADMIN_TOKEN,
               "RLHF_KV_CACHE_MEMORY": args.kv_cache}
        settings = ServingSettings(_env_file=None, home=home, model=model, port=ours_port,
                                   kv_cache_memory=args.kv_cache)
        ensure_topics(settings.model_copy(update={"kafka_bootstrap_servers": env["RLHF_KAFKA_BOOTSTRAP_SERVERS"]}))
        registry = Registry(home / "registry")
        versions = [registry.publish(adapters[i % 2], {"parent": None, "note": "hot-swap bench"}, PASSED)
                    for i in range(args.moves + 1)]

        ours = Side("ours", f"http://127.0.0.1:{ours_port}", settings.served_model_name, lambda r: r["adapter_version"])
        peer = Side("peer", f"http://127.0.0.1:{peer_port}", "peer-0", lambda r: r["model"])
        # vLLM's CPU default binds every engine to core 0 (keeping core 1 for the rest): two engines
        # there would fight over one core, whichever got it first winning; each gets its own instead
        bind = {side: {"VLLM_CPU_OMP_THREADS_BIND": core} for side, core in cores.items()}
        servers = {"ours": Server([sys.executable, "-m", "serving"], {**env, **bind.get("ours", {})}, home / "ours.log")}
        if not args.no_peer:
            peer_argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *engine_cli_args(settings),
                         "--port", str(peer_port)]
            servers["peer"] = Server(peer_argv, {**env, **bind.get("peer", {}), "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
                                     home / "peer.log")
        try:
            started = time.perf_counter()
            servers["ours"].wait_answering(ours.base_url + "/readyz")
            engine_start = {"ours": time.perf_counter() - started}
            # both start from an adapter (not measured): ours promotes the first version, the peer loads one
            httpx.post(f"{ours.base_url}/admin/v1/adapters/{versions[0]}/promote", json={"reason": "bench start"},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60).raise_for_status()
            wait_served(ours.base_url, ours.model, versions[0], ours.served_of)
            ours.moves = our_moves(ours, registry, versions[1:], args.moves)
            sides, peer_load_s = [ours], []
            if "peer" in servers:
                servers["peer"].wait_answering(peer.base_url + "/v1/models")
                engine_start["peer"] = time.perf_counter() - started
                httpx.post(f"{peer.base_url}/v1/load_lora_adapter", timeout=120,
                           json={"lora_name": "peer-0", "lora_path": str(adapters[0])}).raise_for_status()
                wait_served(peer.base_url, "peer-0", "peer-0", peer.served_of)
                peer.moves = peer_moves(peer, adapters, args.moves, peer_load_s)
                sides = [peer, ours]
            load_average["before_load"] = list(os.getloadavg())
            swap_s_before = metric_sum(ours.base_url, "rlhf_serving_adapter_swap_seconds_sum")
            asyncio.run(run(sides, args.concurrency, args.max_tokens, steady_s=args.steady,
                            swap_window_s=args.swap_window, gap_s=args.gap, serve_timeout_s=60.0))
            ours_swap_s = (metric_sum(ours.base_url, "rlhf_serving_adapter_swap_seconds_sum") - swap_s_before) / args.moves
        finally:
            for server in servers.values():
                server.stop()
    load_average["end"] = list(os.getloadavg())

    result_ours = {
        "name": f"rlhf-loop serving: registry pointer moved by the admin API, watched every {settings.adapter_poll_s} s, "
                "the new adapter loaded beside the old one, which stays loaded as the rollback target",
        "engine_start_s": engine_start["ours"],
        "server_swap_s_mean": ours_swap_s,
        "server_swap_definition": "rlhf_serving_adapter_swap_seconds: from seeing the pointer move to routing to the "
                                  "new adapter (load included), mean over the moves",
        **summary(ours, args.swap_window),
    }
    if args.no_peer:
        result_peer = {"run": False, "note": "no peer was run (--no-peer): no speed claim"}
    else:
        result_peer = {
            "name": "vllm.entrypoints.openai.api_server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True: POST "
                    "/v1/load_lora_adapter, then the clients switch model name",
            "engine_start_s": engine_start["peer"], "load_call_s": peer_load_s,
            "load_call_s_mean": statistics.mean(peer_load_s), **summary(peer, args.swap_window),
        }
    ratio = None
    if not args.no_peer and result_ours["time_to_serve_s"]["median"] and result_peer["time_to_serve_s"]["median"]:
        ratio = result_peer["time_to_serve_s"]["median"] / result_ours["time_to_serve_s"]["median"]
    failures = result_ours["failures"] + (0 if args.no_peer else result_peer["failures"])
    path = write_result("hotswap", {
        "model": str(model), "engine_flags": engine_cli_args(settings),
        "settings": {"concurrency": args.concurrency, "max_tokens": args.max_tokens, "moves": args.moves,
                     "steady_s": args.steady, "swap_window_s": args.swap_window, "gap_s": args.gap,
                     "adapter": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"], "init": "random"},
                     "adapter_poll_s": settings.adapter_poll_s, "engine_cores": cores or "vLLM default",
                     "design": "ours alone" if args.no_peer else "both servers at once, moves alternating"},
        "ours": result_ours, "peer": result_peer,
        "time_to_serve_ratio_peer_over_ours": ratio,
        "ratio_definition": "peer median time to serve / our median time to serve; > 1: ours faster",
        "failures_total": failures,
        "load_average_1_5_15": load_average,
        "note": ("2 CPU cores shared with other engineers' jobs: timings are noisy (see load_average_1_5_15). "
                 + ("" if args.no_peer else "Both servers ran at the same time, so each also slowed the other. ")
                 + "Ours' time to serve includes the pointer poll interval (adapter_poll_s) and the admin API call"
                 + ("" if args.no_peer else "; the peer's starts at its load call") + ". A rollback routes back to the "
                 "previous adapter, still loaded; a move to a version two back reloads it from the registry."),
    })
    for name, side in (("peer", result_peer), ("ours", result_ours)):
        if name == "peer" and args.no_peer:
            continue
        steady, swap = side["steady_window"], side["swap_windows"]
        print(f"{name}: time to serve median {seconds(side['time_to_serve_s']['median'])}, steady p50/p95 "
              f"{seconds(steady['latency_p50_s'])}/{seconds(steady['latency_p95_s'])}, swap p50/p95 "
              f"{seconds(swap['latency_p50_s'])}/{seconds(swap['latency_p95_s'])}, failures {side['failures']}")
    print(f"time to serve, peer / ours: {ratio} -> {path}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
