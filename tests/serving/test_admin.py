"""The admin API on the real app (no engine needed): operator token required, user tokens
refused, every action audited and counted, refusals move nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from learner.registry import Registry
from serving.app import create_app
from serving.settings import ServingSettings

TOKEN = "operator-secret-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(tmp_path: Path, adapter_dir: Path) -> tuple[TestClient, Registry]:
    settings = ServingSettings(_env_file=None, home=tmp_path, admin_token=TOKEN, user_header="X-Forwarded-User")
    registry = Registry(settings.registry_url)
    registry.publish(adapter_dir, {"parent": None}, {"passed": True, "gates": []})
    registry.publish(adapter_dir, {"parent": "v0001"},
                     {"passed": False, "gates": [{"name": "safety", "passed": False, "reason": "toxicity 0.4 > 0.1"}]})
    return TestClient(create_app(settings)), registry  # no `with`: the engine is not started


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    path = tmp_path / "adapter"
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    return path


def metric(client: TestClient, line_start: str) -> float:
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(line_start)]
    return float(lines[0].split()[-1]) if lines else 0.0


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Bearer"}, 401),
    ({"Authorization": "Bearer some-users-api-key"}, 403),
    ({"Authorization": f"Basic {TOKEN}"}, 401),
])
def test_without_the_operator_token_nothing_moves(admin, headers: dict, status: int) -> None:
    client, registry = admin
    for method, path, body in [("get", "/admin/v1/adapters", None), ("get", "/admin/v1/stats", None),
                               ("post", "/admin/v1/adapters/v0001/promote", {"reason": "x"}),
                               ("post", "/admin/v1/rollback", {"reason": "x"})]:
        reply = client.request(method, path, json=body, headers=headers)
        assert reply.status_code == status, reply.text
        assert reply.json()["error"]["code"] == status
    assert registry.read_pointer().active is None and registry.audit() == []


def test_operator_promotes_is_refused_a_failed_candidate_unless_forced_and_rolls_back(admin) -> None:
    client, registry = admin
    done_before = metric(client, 'rlhf_admin_actions_total{action="promote",outcome="done"}')
    reply = client.post("/admin/v1/adapters/v0001/promote", json={"reason": "gates passed"},
                        headers={**OPERATOR, "X-Forwarded-User": "alice"})
    assert reply.status_code == 200 and reply.json()["pointer"]["active"] == "v0001"

    refused = client.post("/admin/v1/adapters/v0002/canary", json={"reason": "try", "share": 0.1}, headers=OPERATOR)
    assert refused.status_code == 409 and "failed gates" in refused.json()["error"]["message"]
    assert registry.read_pointer().canary is None
    assert client.post("/admin/v1/adapters/v0009/promote", json={"reason": "x"}, headers=OPERATOR).status_code == 404
    assert client.post("/admin/v1/adapters/v0002/canary", json={"reason": "x", "share": 2}, headers=OPERATOR).status_code == 400

    forced = client.post("/admin/v1/adapters/v0002/canary", json={"reason": "known false positive", "share": 0.1,
                                                                  "force": True}, headers=OPERATOR)
    assert forced.status_code == 200 and forced.json()["pointer"]["canary"] == "v0002"
    assert client.post("/admin/v1/rollback", json={"reason": "canary off"}, headers=OPERATOR).json()["pointer"]["canary"] is None

    listed = client.get("/admin/v1/adapters", headers=OPERATOR).json()
    assert [(v["version"], v["role"], v["gates"]) for v in listed["data"]] == [("v0001", "active", "passed"), ("v0002", "", "failed")]
    shown = client.get("/admin/v1/adapters/v0002", headers=OPERATOR).json()
    assert shown["gate_report"]["gates"][0]["reason"] == "toxicity 0.4 > 0.1"
    diff = client.get("/admin/v1/adapters/v0001/diff/v0002", headers=OPERATOR).json()
    assert diff["changed"]["lineage.parent"] == [None, "v0001"] and diff["changed"]["gate_report.passed"] == [True, False]

    audit = client.get("/admin/v1/audit", headers=OPERATOR).json()["data"]
    assert [(a["action"], a["actor"], a["forced"]) for a in audit] == [
        ("promote", "operator:alice", False), ("canary", "operator:admin-api", True), ("rollback", "operator:admin-api", False)]
    assert metric(client, 'rlhf_admin_actions_total{action="promote",outcome="done"}') == done_before + 1
    assert metric(client, 'rlhf_admin_actions_total{action="canary",outcome="refused"}') >= 1


def test_stats_are_what_the_learner_last_wrote(admin) -> None:
    client, registry = admin
    assert client.get("/admin/v1/stats", headers=OPERATOR).json() == {"updated_at": None, "adapters": [], "volume": []}
    written = {"updated_at": "2026-11-23T10:00:00+00:00", "volume": [{"at": "2026-11-23T09:59:00+00:00", "thumbs": 3, "pairwise": 1}],
               "adapters": [{"version": "base", "thumbs": 3, "up_rate": 2 / 3, "duels": 1, "duel_win_rate": 0.0}]}
    registry.write_stats(written)
    assert client.get("/admin/v1/stats", headers=OPERATOR).json() == written
