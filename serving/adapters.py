"""Adapter hot-swap and canary routing, driven by the registry pointer.

Every registry version is loaded into vLLM under its own LoRA name and id, beside the one it
replaces (never reloaded in place: vLLM would reuse stale prefix-cache blocks). New requests move
to it with one assignment; requests already running hold a lease on the adapter they started
with, and an adapter is unloaded only once its leases drain. The pointer's `previous` version stays
loaded while it is, so a rollback is a routing change with no load on the way. A version that fails
to load leaves the current one serving, shows up in metrics and logs, and is tried again (backoff up
to a minute). The watcher survives every error; `lag_s()` says how long this replica has not been
following the pointer, and `/readyz` fails past RLHF_ADAPTER_STALE_S.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter, Gauge, Histogram

from learner.registry import Pointer, Registry, RegistryError
from serving.engine import AdapterLoadError, Engine

log = structlog.get_logger(__name__)

ADAPTER_INFO = Gauge("rlhf_serving_adapter_info", "1 for the version serving in each role.", ["role", "version"])
CANARY_SHARE = Gauge("rlhf_serving_canary_share", "Share of users routed to the canary adapter.")
SWAPS = Counter("rlhf_serving_adapter_swaps_total", "Pointer moves applied (new adapters routed to).")
SWAP_SECONDS = Histogram(
    "rlhf_serving_adapter_swap_seconds", "From seeing a pointer move to routing requests to it (load included).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
POINTER_AGE = Gauge("rlhf_serving_pointer_age_seconds", "Seconds since serving last read the registry pointer.")
FOLLOW_LAG = Gauge("rlhf_serving_pointer_lag_seconds",
                   "Seconds this replica has not served what the pointer names (unreadable pointer or failed load); 0 in step.")
LOAD_FAILURES = Counter("rlhf_serving_adapter_load_failures_total", "Adapter versions that failed to load.", ["version"])
INFLIGHT = Gauge("rlhf_serving_adapter_inflight", "Requests running on each loaded adapter.", ["version"])

BASE = "base"  # the role-less name used for "no adapter" in metrics


class UnknownAdapter(LookupError):
    pass


class PinningDisabled(PermissionError):
    pass


@dataclass
class LoadedAdapter:
    version: str
    lora_name: str
    lora_int_id: int
    inflight: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Lease:
    """One request's hold on the adapter it runs on; `model` is what vLLM is asked for."""

    model: str
    adapter_version: str | None
    _adapter: LoadedAdapter | None
    _released: bool = False

    def release(self) -> None:
        if self._released or self._adapter is None:
            return
        self._released = True
        self._adapter.inflight -= 1
        INFLIGHT.labels(self._adapter.version).set(self._adapter.inflight)
        if self._adapter.inflight == 0:
            self._adapter.drained.set()


def user_bucket(user_id: str) -> float:
    """A user's fixed position in [0, 1): the same user always lands on the same side."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class AdapterRouter:
    def __init__(self, registry: Registry, engine: Engine | None, base_model_name: str,
                 *, allow_pinning: bool, poll_s: float) -> None:
        self.registry = registry
        self.engine = engine
        self.base_model_name = base_model_name
        self.allow_pinning = allow_pinning
        self.poll_s = poll_s
        self.loaded: dict[str, LoadedAdapter] = {}
        self.active: LoadedAdapter | None = None
        self.canary: LoadedAdapter | None = None
        self.canary_share = 0.0
        self._applied: Pointer | None = None
        self._lock = asyncio.Lock()
        self.read_at = time.monotonic()  # the last successful pointer read
        self.behind_since: float | None = None  # since when a version the pointer names failed to load
        self._retry_at = 0.0
        self._retry_s = poll_s
        POINTER_AGE.set_function(lambda: time.monotonic() - self.read_at)
        FOLLOW_LAG.set_function(self.lag_s)

    def lag_s(self) -> float:
        """How long this replica has not been following the pointer: since the last successful read, or
        since a version it names first failed to load, whichever is longer; ~0 in step."""
        unread = time.monotonic() - self.read_at
        unread = unread if unread > 2 * self.poll_s + 1 else 0.0  # a poll in progress is no lag
        return max(unread, 0.0 if self.behind_since is None else time.monotonic() - self.behind_since)

    def lora_name(self, version: str) -> str:
        return f"{self.base_model_name}@{version}"

    # -- routing (hot path: no awaits, so a swap is seen whole or not at all) -------------------
    def lease(self, user_id: str | None, requested_model: str | None) -> Lease:
        return self._lease_adapter(self._pick(user_id, requested_model))

    def lease_pair(self) -> tuple[Lease, Lease]:
        """Two policies for a duel: active vs canary, or the active one twice (two samples)."""
        return self._lease_adapter(self.active), self._lease_adapter(self.canary or self.active)

    def _lease_adapter(self, adapter: LoadedAdapter | None) -> Lease:
        if adapter is None:
            return Lease(self.base_model_name, None, None)
        adapter.inflight += 1
        adapter.drained.clear()
        INFLIGHT.labels(adapter.version).set(adapter.inflight)
        return Lease(adapter.lora_name, adapter.version, adapter)

    def _pick(self, user_id: str | None, requested_model: str | None) -> LoadedAdapter | None:
        if requested_model and requested_model != self.base_model_name:
            prefix = f"{self.base_model_name}@"
            if not requested_model.startswith(prefix):
                raise UnknownAdapter(f"the model `{requested_model}` does not exist; use `{self.base_model_name}`")
            if not self.allow_pinning:
                raise PinningDisabled(
                    f"pinning an adapter (`{requested_model}`) is disabled on this server; use `{self.base_model_name}`"
                )
            version = requested_model.removeprefix(prefix)
            if version not in self.loaded:
                raise UnknownAdapter(f"adapter `{requested_model}` is not loaded; loaded: {sorted(self.loaded) or 'none'}")
            return self.loaded[version]
        if self.canary is not None:
            bucket = user_bucket(user_id) if user_id else random.random()
            if bucket < self.canary_share:
                return self.canary
        return self.active

    # -- swapping --------------------------------------------------------------------------------
    async def watch(self) -> None:
        """Poll the pointer and apply each move, retrying versions that failed to load; runs for the
        life of the server, whatever a read or a load raises."""
        failures = 0
        while True:
            try:
                pointer = await asyncio.to_thread(self.registry.read_pointer)  # file or object-store I/O
                self.read_at = time.monotonic()
                retry = self.behind_since is not None and time.monotonic() >= self._retry_at
                failures = 0
                if pointer != self._applied or retry:
                    await self.apply(pointer)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a pointer mid-copy, a store away, a bug: keep watching
                failures += 1
                if failures == 1 or failures % 100 == 0:  # not one line per poll through an outage
                    log.warning("adapters.watch_failed", error=repr(error), failures=failures)
            await asyncio.sleep(self.poll_s)

    async def apply(self, pointer: Pointer) -> None:
        async with self._lock:
            started = time.perf_counter()
            wanted = {"active": pointer.active, "canary": pointer.canary}
            routed: dict[str, LoadedAdapter | None] = {}
            for role, version in wanted.items():
                routed[role] = None if version is None else await self._ensure_loaded(version)
            failed = [version for role, version in wanted.items() if version is not None and routed[role] is None]
            self._note_failures(failed)
            if pointer.active is not None and routed["active"] is None:
                routed["active"] = self.active  # keep serving what works
            self.active, self.canary = routed["active"], routed["canary"]
            self.canary_share = pointer.canary_share if self.canary is not None else 0.0
            if self._applied is not None:  # the first read at start-up is no move
                SWAPS.inc()
                SWAP_SECONDS.observe(time.perf_counter() - started)
            self._applied = pointer
            self._publish_metrics()
            log.info("adapters.routed", active=self.version_of(self.active), canary=self.version_of(self.canary),
                     canary_share=self.canary_share, seconds=round(time.perf_counter() - started, 3))
            for adapter in list(self.loaded.values()):
                if not self._kept(adapter):
                    asyncio.create_task(self._retire(adapter))

    def _note_failures(self, failed: list[str]) -> None:
        """Versions that did not load are tried again, with a backoff doubling up to a minute."""
        now = time.monotonic()
        if not failed:
            self.behind_since, self._retry_s = None, self.poll_s
            return
        self.behind_since = self.behind_since or now
        self._retry_at = now + self._retry_s
        self._retry_s = min(self._retry_s * 2, 60.0)
        log.warning("adapters.behind", failed=failed, retry_in_s=round(self._retry_at - now, 1))

    def _kept(self, adapter: LoadedAdapter) -> bool:
        """Routed to (active or canary), or the rollback target of the applied pointer."""
        return (adapter is self.active or adapter is self.canary
                or (self._applied is not None and self._applied.previous == adapter.version))

    async def _ensure_loaded(self, version: str) -> LoadedAdapter | None:
        if version in self.loaded:
            return self.loaded[version]
        started = time.perf_counter()
        try:
            path = await asyncio.to_thread(self.registry.version_path, version)
            engine_id = await self.engine.load_adapter(self.lora_name(version), str(path))
        except (RegistryError, OSError, ValueError, AdapterLoadError) as error:
            LOAD_FAILURES.labels(version).inc()
            log.error("adapters.load_failed", version=version, error=str(error))
            return None
        adapter = LoadedAdapter(version, self.lora_name(version), engine_id)
        adapter.drained.set()
        self.loaded[version] = adapter
        log.info("adapters.loaded", version=version, seconds=round(time.perf_counter() - started, 3))
        return adapter

    async def _retire(self, adapter: LoadedAdapter) -> None:
        """Unload an adapter no role points at, once its in-flight requests have finished."""
        await adapter.drained.wait()
        if self._kept(adapter) or self.loaded.get(adapter.version) is not adapter:
            return  # wanted again meanwhile, or already retired
        del self.loaded[adapter.version]
        await self.engine.unload_adapter(adapter.lora_name, adapter.lora_int_id)
        INFLIGHT.remove(adapter.version)
        log.info("adapters.unloaded", version=adapter.version)

    @staticmethod
    def version_of(adapter: LoadedAdapter | None) -> str | None:
        return adapter.version if adapter else None

    def _publish_metrics(self) -> None:
        ADAPTER_INFO.clear()
        ADAPTER_INFO.labels("active", self.version_of(self.active) or BASE).set(1)
        if self.canary is not None:
            ADAPTER_INFO.labels("canary", self.canary.version).set(1)
        CANARY_SHARE.set(self.canary_share)
