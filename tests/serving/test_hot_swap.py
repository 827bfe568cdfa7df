"""Adapter hot-swap under load on the real engine: no request fails, new requests move over,
a corrupt adapter never replaces a working one."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from learner.registry import Pointer, Registry
from tests.helpers import ADMIN_TOKEN, ServingServer

pytestmark = pytest.mark.slow

PROMPT = {"model": "rlhf-loop", "messages": [{"role": "user", "content": "Tell me about rivers."}], "max_tokens": 12}


def served_version(serving: ServingServer) -> str | None:
    reply = httpx.post(f"{serving.base_url}/v1/chat/completions", json={**PROMPT, "max_tokens": 1}, timeout=60)
    reply.raise_for_status()
    return reply.json()["adapter_version"]


def wait_until_served(serving: ServingServer, version: str | None, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if served_version(serving) == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{version} not served within {timeout_s}s")


def metric(serving: ServingServer, name: str) -> float:
    text = httpx.get(f"{serving.base_url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


PASSED = {"passed": True, "gates": []}


def admin(serving: ServingServer, path: str, body: dict) -> dict:
    reply = httpx.post(f"{serving.base_url}/admin/v1{path}", json=body, timeout=30,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reply.status_code == 200, reply.text
    return reply.json()["pointer"]


def under_load(serving: ServingServer, move, requests: int = 8, timeout_s: float = 60.0) -> list[dict]:
    """`requests` concurrent chats; `move()` runs while they are in flight, then 1-token probes, one at a
    time 0.1 s apart, until one is answered by the new version, and for 1 s after. Every request must
    succeed, and once a probe got the new version no later one gets the old (a request is routed when it
    arrives, so a probe's version says what serving routed to at its send time). How long the switch
    takes is measured by `make bench` (tests/bench/hotswap.py), not asserted here."""
    async def run() -> list[dict]:
        async with httpx.AsyncClient(timeout=300) as client:
            async def one(body: dict) -> dict:
                response = await client.post(f"{serving.base_url}/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                return response.json()

            chats = [asyncio.create_task(one({**PROMPT, "user": f"u{i}"})) for i in range(requests)]
            await asyncio.sleep(0.5)  # requests are in flight on the old version
            wanted = (await asyncio.to_thread(move))["wanted"]
            moved = time.monotonic()
            # one probe in flight at a time: an open-loop stream outruns a 2-core engine and queues for minutes
            versions: list[tuple[float, str | None]] = []
            new_seen: float | None = None
            while time.monotonic() - moved < timeout_s and (new_seen is None or time.monotonic() - new_seen < 1.0):
                sent = time.monotonic() - moved
                versions.append((sent, (await one({**PROMPT, "max_tokens": 1}))["adapter_version"]))
                if new_seen is None and versions[-1][1] == wanted:
                    new_seen = time.monotonic()
                await asyncio.sleep(0.1)
            switched = next((i for i, (_, version) in enumerate(versions) if version == wanted), None)
            assert switched is not None, f"{wanted} never served within {timeout_s}s of the move: {versions}"
            assert all(version == wanted for _, version in versions[switched:]), versions  # no flapping back
            return await asyncio.gather(*chats)

    replies = asyncio.run(run())
    assert len(replies) == requests and all(r["choices"][0]["message"]["content"] is not None for r in replies)
    return replies


def loads_of(serving: ServingServer, version: str) -> int:
    """How often serving loaded `version` into the engine (its structured log)."""
    return sum(1 for line in serving.log_path.read_text().splitlines()
               if '"adapters.loaded"' in line and f'"version": "{version}"' in line)


def test_promote_then_rollback_through_the_admin_api_under_load_fails_none(
    serving: ServingServer, lora_adapters: list[Path]
) -> None:
    registry = Registry(serving.home / "registry")
    first = registry.publish(lora_adapters[0], {"parent": None, "note": "test"}, PASSED)
    admin(serving, f"/adapters/{first}/promote", {"reason": "first adapter"})
    wait_until_served(serving, first, timeout_s=30)
    second = registry.publish(lora_adapters[1], {"parent": first, "note": "test"}, PASSED)

    def promote() -> dict:
        return {"wanted": admin(serving, f"/adapters/{second}/promote", {"reason": "swap under load"})["active"]}

    replies = under_load(serving, promote)
    assert {r["adapter_version"] for r in replies} <= {first, second}

    # roll back under load: the previous version serves again (it stayed loaded: no load on the way)
    def rollback() -> dict:
        return {"wanted": admin(serving, "/rollback", {"reason": "rollback under load"})["active"]}

    loads_before = loads_of(serving, first)
    replies = under_load(serving, rollback)
    assert {r["adapter_version"] for r in replies} <= {first, second}
    assert loads_of(serving, first) == loads_before, "the rollback target was loaded again"
    assert [(a["action"], a["version"]) for a in registry.audit()[-3:]] == [
        ("promote", first), ("promote", second), ("rollback", second)]
    assert registry.read_pointer().active == first


def test_corrupt_adapter_fails_to_load_and_the_old_one_keeps_serving(
    serving: ServingServer, lora_adapters: list[Path], tmp_path: Path
) -> None:
    registry = Registry(serving.home / "registry")
    good = registry.publish(lora_adapters[0], {"note": "good"})
    registry.move_pointer(Pointer(active=good), actor="test", reason="good adapter")
    wait_until_served(serving, good, timeout_s=30)

    broken = tmp_path / "broken"
    shutil.copytree(lora_adapters[1], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"this is not a safetensors file")
    bad = registry.publish(broken, {"note": "corrupt"})
    failures_before = metric(serving, "rlhf_serving_adapter_load_failures_total")
    registry.move_pointer(Pointer(active=bad, previous=good), actor="test", reason="corrupt adapter")

    deadline = time.monotonic() + 30
    while metric(serving, "rlhf_serving_adapter_load_failures_total") <= failures_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(serving, "rlhf_serving_adapter_load_failures_total") >= failures_before + 1
    assert all(served_version(serving) == good for _ in range(3))
    assert f'rlhf_serving_adapter_info{{role="active",version="{good}"}} 1.0' in httpx.get(f"{serving.base_url}/metrics").text
    # the load is retried, and past RLHF_ADAPTER_STALE_S (3 s here) the replica says it is not following
    deadline = time.monotonic() + 30
    while (ready := httpx.get(f"{serving.base_url}/readyz")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready.status_code == 503 and "not followed" in ready.json()["problems"][0], ready.text
    assert metric(serving, "rlhf_serving_adapter_load_failures_total") >= failures_before + 2  # tried again
    assert metric(serving, "rlhf_serving_pointer_lag_seconds") > 3
    registry.move_pointer(Pointer(active=None), actor="test", reason="back to base")
    wait_until_served(serving, None, timeout_s=5)
    assert httpx.get(f"{serving.base_url}/readyz").status_code == 200  # following again
