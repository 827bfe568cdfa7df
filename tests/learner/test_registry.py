"""The registry: immutable versions, atomic pointer moves with an audit line each, operator
actions that refuse failed or rejected candidates unless forced; the same on an object store."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.registry import Pointer, Registry, RegistryError
from tests.helpers import stand_in_adapter

PASSED = {"passed": True, "gates": []}
FAILED = {"passed": False, "gates": [{"name": "kl", "passed": False, "reason": "KL 40.1 > budget 12"}]}


@pytest.fixture(params=["local", "memory"])
def registry(request, tmp_path: Path) -> Registry:
    root = str(tmp_path / "registry") if request.param == "local" else f"memory://registry-{tmp_path.name}"
    return Registry(root, cache_dir=tmp_path / "cache")


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return stand_in_adapter(tmp_path / "adapter")


def test_versions_are_numbered_immutable_and_readable_locally(registry: Registry, adapter: Path) -> None:
    first = registry.publish(adapter, {"parent": None}, PASSED)
    (adapter / "adapter_model.safetensors").write_bytes(b"other weights")
    second = registry.publish(adapter, {"parent": first}, FAILED)
    assert (first, second) == ("v0001", "v0002") and registry.versions() == ["v0001", "v0002"]
    assert (registry.version_path(first) / "adapter_model.safetensors").read_bytes() == b"weights"
    assert registry.meta(second)["lineage"] == {"parent": "v0001"} and registry.meta(second)["gate_report"] == FAILED
    with pytest.raises(RegistryError, match="unknown adapter version 'v0009'"):
        registry.meta("v0009")
    with pytest.raises(RegistryError, match="some gates only"):  # run_gates(only=...) checks, it does not vouch
        registry.publish(adapter, {"parent": second}, {**PASSED, "only": ["kl"]})
    assert registry.versions() == ["v0001", "v0002"]


def test_operator_actions_move_the_pointer_and_are_audited(registry: Registry, adapter: Path) -> None:
    good, bad, other = (registry.publish(adapter, {}, report) for report in (PASSED, FAILED, PASSED))
    registry.canary(good, 0.2, actor="alice", reason="try it")
    assert registry.read_pointer().canary == good and registry.read_pointer().canary_share == 0.2
    registry.promote(good, actor="alice", reason="canary looked fine")
    assert registry.read_pointer().model_dump(exclude={"updated_at"}) == Pointer(active=good, revision=2).model_dump(exclude={"updated_at"})

    with pytest.raises(RegistryError, match="v0002 has failed gates"):
        registry.promote(bad, actor="bob", reason="want it")
    with pytest.raises(RegistryError, match="failed gates"):
        registry.canary(bad, 0.1, actor="bob", reason="want it")
    assert registry.read_pointer().active == good  # a refused action moves nothing

    registry.promote(bad, actor="bob", reason="incident 42: known false positive", force=True)
    assert (registry.read_pointer().active, registry.read_pointer().previous) == (bad, good)
    registry.rollback(actor="bob", reason="bad after all")
    assert (registry.read_pointer().active, registry.read_pointer().previous) == (good, bad)

    registry.canary(other, 0.5, actor="carol", reason="next")
    registry.reject(other, actor="canary-policy", reason="thumb-down spike")
    pointer = registry.read_pointer()
    assert pointer.canary is None and pointer.canary_share == 0.0 and pointer.rejected == (other,)
    with pytest.raises(RegistryError, match="was rejected"):
        registry.promote(other, actor="carol", reason="retry")
    with pytest.raises(RegistryError, match="is active"):
        registry.reject(good, actor="carol", reason="no")

    audit = registry.audit()
    assert [(a["action"], a["actor"], a["version"], a["forced"]) for a in audit] == [
        ("canary", "alice", good, False), ("promote", "alice", good, False), ("promote", "bob", bad, True),
        ("rollback", "bob", bad, False), ("canary", "carol", other, False), ("reject", "canary-policy", other, False),
    ]
    assert audit[2]["reason"] == "incident 42: known false positive"
    assert audit[2]["before"]["active"] == good and audit[2]["after"]["active"] == bad
    assert registry.summary(other)["role"] == "rejected" and registry.summary(bad)["gates"] == "failed"


def test_rollback_ends_a_canary_before_touching_the_active_version(registry: Registry, adapter: Path) -> None:
    a, b = registry.publish(adapter, {}, PASSED), registry.publish(adapter, {}, PASSED)
    registry.promote(a, actor="t", reason="first")
    registry.canary(b, 0.1, actor="t", reason="try")
    registry.rollback(actor="t", reason="canary off")
    assert (registry.read_pointer().active, registry.read_pointer().canary) == (a, None)
    registry.rollback(actor="t", reason="back to base")
    assert registry.read_pointer().active is None
    with pytest.raises(RegistryError, match="canary share must be in"):
        registry.canary(b, 1.5, actor="t", reason="too much")
