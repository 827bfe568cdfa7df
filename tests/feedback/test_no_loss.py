"""No accepted feedback is lost: 1,000 events through a broker outage, a fresh (empty) broker
and a SIGKILL of the server; every event that got a 202 ends up in Kafka. The server is the real
serving process on the stand-in engine (feedback needs no generation)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from feedback.broker import EmbeddedBroker
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from serving.settings import ServingSettings
from serving.tokens import TokenSigner, prompt_hash
from tests.helpers import ServingServer, free_port, read_topic, service_env

TOTAL, CONCURRENCY = 1000, 32
STAND_IN = "tests.stand_in_serving"


def fresh_broker(port: int) -> EmbeddedBroker:
    broker = EmbeddedBroker(port).start()
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=",".join(broker.bootstrap_servers)))
    return broker


async def send(base_url: str, signer: TokenSigner, numbers: range, accepted: dict[int, str],
               kill_after: int | None = None, kill=None) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=30) as client:
        async def one(i: int) -> None:
            token = signer.sign(rid=f"r-{i}", c=f"conv-{i % 50}", av=None, u=f"user-{i % 97}", st=True,
                                ph=prompt_hash([{"role": "user", "content": str(i)}]))
            async with gate:
                try:
                    response = await client.post(f"{base_url}/v1/feedback", json={"feedback_token": token, "rating": "up"})
                except httpx.TransportError:
                    return  # the server died under this request: it was never acknowledged
            if response.status_code == 202:
                accepted[i] = response.json()["id"]
                if kill_after is not None and len(accepted) >= kill_after and kill is not None:
                    kill()

        await asyncio.gather(*(one(i) for i in numbers))


def test_every_accepted_event_survives_outage_fresh_broker_and_sigkill(tmp_path: Path) -> None:
    port, broker_port = free_port(), free_port()
    broker = fresh_broker(broker_port)
    env = service_env(tmp_path, None, broker, RLHF_PORT=str(port),
                      RLHF_FEEDBACK_PER_CLIENT_PER_MINUTE="1000000", RLHF_FEEDBACK_BURST="100000")
    signer = TokenSigner(ServingSettings(home=tmp_path).token_key(), 3600)
    server = ServingServer(env, port, tmp_path / "serving-1.log", module=STAND_IN)
    accepted: dict[int, str] = {}
    try:
        server.wait_ready()
        # 1. broker up
        asyncio.run(send(server.base_url, signer, range(0, 250), accepted))
        # 2. broker down: accepted into the outbox only
        broker.stop()
        asyncio.run(send(server.base_url, signer, range(250, 500), accepted))
        # 3. a fresh, empty broker on the same port; the server is SIGKILLed mid-stream
        broker = fresh_broker(broker_port)
        killed = []

        def kill() -> None:
            if not killed:
                killed.append(True)
                os.killpg(server.process.pid, signal.SIGKILL)

        asyncio.run(send(server.base_url, signer, range(500, 750), accepted, kill_after=600, kill=kill))
        server.process.wait(30)
        assert killed and server.process.returncode == -signal.SIGKILL
        # 4. the server comes back on the same outbox and takes the rest
        server = ServingServer(env, port, tmp_path / "serving-2.log", module=STAND_IN)
        server.wait_ready()
        asyncio.run(send(server.base_url, signer, range(750, TOTAL), accepted))

        assert 600 <= len(accepted) < TOTAL  # some requests died with the first server
        expected = set(accepted.values())
        records = read_topic(broker, "rlhf.feedback", lambda rs: expected <= {r["event_id"] for r in rs}, timeout_s=120)
        delivered = {r["event_id"] for r in records}
        missing = expected - delivered
        assert not missing, f"{len(missing)} accepted events never reached Kafka"
        # deduplicated by event id (as every consumer does), each accepted event is there exactly once
        by_id = {r["event_id"]: r for r in records}
        assert sorted(int(by_id[e]["response_id"][2:]) for e in expected) == sorted(accepted)
    finally:
        server.stop()
        broker.stop()
