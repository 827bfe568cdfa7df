"""Serving follows the registry or says it cannot: the pointer watcher survives any error, retries a
version that failed to load, and reports how long it has not been following. The engine is
stood in for here (loads succeed or fail on command); the real engine's hot swap is tested in
test_hot_swap.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from learner.registry import Pointer, Registry
from serving.adapters import AdapterRouter
from tests.helpers import StandInEngine


class FlakyRegistry(Registry):
    """A registry whose pointer read raises (any error, not only a RegistryError) while `down`."""

    down = False

    def read_pointer(self) -> Pointer:
        if self.down:
            raise RuntimeError("object store: 503 Slow Down")
        return super().read_pointer()


def publish(registry: Registry, tmp_path: Path, name: str) -> str:
    adapter = tmp_path / name
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    return registry.publish(adapter, {}, {"passed": True, "gates": [], "failed": []})


def test_the_watcher_survives_errors_retries_failed_loads_and_reports_its_lag(tmp_path: Path) -> None:
    async def scenario() -> None:
        registry = FlakyRegistry(tmp_path / "registry")
        first, second = publish(registry, tmp_path, "a"), publish(registry, tmp_path, "b")
        engine = StandInEngine()
        router = AdapterRouter(registry, engine, "m", allow_pinning=False, poll_s=0.02)
        registry.promote(first, actor="test", reason="start")
        watcher = asyncio.create_task(router.watch())

        async def until(condition, timeout_s: float = 10) -> None:
            deadline = time.monotonic() + timeout_s
            while not condition():
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.02)

        await until(lambda: router.version_of(router.active) == first)
        await until(lambda: router.lag_s() == 0.0)  # the first load imports vLLM's protocol: seconds

        registry.down = True  # the store fails for a while: the watcher keeps going, the lag grows
        await asyncio.sleep(1.5)
        assert not watcher.done() and router.lag_s() > 1.0
        registry.down = False
        engine.broken.add(second)  # the next move names a version that cannot load (yet)
        registry.promote(second, actor="test", reason="next")
        await until(lambda: engine.attempts.count(second) >= 2)  # tried again, not given up on
        assert router.version_of(router.active) == first and router.behind_since is not None and router.lag_s() > 0
        engine.broken.clear()
        await until(lambda: router.version_of(router.active) == second)
        assert router.lag_s() == 0.0 and not watcher.done()

        registry.rollback(actor="test", reason="back")  # and it follows the next move, a rollback
        await until(lambda: router.version_of(router.active) == first)
        watcher.cancel()
    asyncio.run(scenario())
