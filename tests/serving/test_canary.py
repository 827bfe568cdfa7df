"""Canary routing: the configured share of users, each user always on the same side."""

from __future__ import annotations

import pytest

from serving.adapters import AdapterRouter, LoadedAdapter, PinningDisabled, UnknownAdapter


def router_with(active: str, canary: str | None, share: float, *, allow_pinning: bool = False) -> AdapterRouter:
    router = AdapterRouter(registry=None, engine=None, base_model_name="m",
                           allow_pinning=allow_pinning, poll_s=1.0)
    router.loaded = {v: LoadedAdapter(v, f"m@{v}", i + 1) for i, v in enumerate(filter(None, (active, canary)))}
    router.active = router.loaded[active]
    router.canary = router.loaded.get(canary) if canary else None
    router.canary_share = share
    return router


def test_canary_share_holds_over_a_thousand_users_and_is_sticky() -> None:
    router = router_with("v0001", "v0002", 0.2)
    users = [f"user-{i}" for i in range(1000)]
    first = {u: router.lease(u, "m").adapter_version for u in users}
    share = sum(v == "v0002" for v in first.values()) / len(users)
    assert 0.16 <= share <= 0.24  # binomial sd is 0.0126: three of them either side
    assert all(router.lease(u, None).adapter_version == first[u] for u in users)  # sticky


def test_no_canary_means_everyone_on_active() -> None:
    router = router_with("v0001", None, 0.5)
    assert {router.lease(f"u{i}", "m").adapter_version for i in range(200)} == {"v0001"}


def test_leases_count_in_flight_requests_until_released() -> None:
    router = router_with("v0001", None, 0.0)
    leases = [router.lease("u", "m") for _ in range(3)]
    assert router.active.inflight == 3 and not router.active.drained.is_set()
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert router.active.inflight == 0 and router.active.drained.is_set()


def test_pinning_is_refused_unless_allowed_and_must_name_a_loaded_version() -> None:
    with pytest.raises(PinningDisabled):
        router_with("v0001", None, 0.0).lease("u", "m@v0001")
    allowed = router_with("v0001", "v0002", 0.0, allow_pinning=True)
    assert allowed.lease("u", "m@v0002").adapter_version == "v0002"
    with pytest.raises(UnknownAdapter, match="not loaded"):
        allowed.lease("u", "m@v0009")
    with pytest.raises(UnknownAdapter, match="does not exist"):
        allowed.lease("u", "other-model")
