"""Bad settings stop start-up with one line; the README's settings table is the generated one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_loop.config import readme_with_table

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlhf_loop.cli", *args], env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["up", "--port", "-1"], {}, "RLHF_PORT: Input should be greater than or equal to 1"),
        (["up"], {"RLHF_PORT": "-5"}, "RLHF_PORT: Input should be greater than or equal to 1"),
        (["up"], {"RLHF_PORT": "eighty"}, "RLHF_PORT: Input should be a valid integer"),
        (["up"], {"RLHF_MODEL": "/nonexistent/model"}, "RLHF_MODEL: /nonexistent/model is not a directory"),
        (["up"], {"RLHF_GPU_MEMORY_UTILIZATION": "1.5"}, "RLHF_GPU_MEMORY_UTILIZATION"),
        (["up"], {"RLHF_ADMIN_TOKEN": "short"}, "RLHF_ADMIN_TOKEN must be at least 16 characters"),
    ],
)
def test_bad_setting_stops_startup_with_one_line(args: list[str], env: dict[str, str], expected: str, tmp_path: Path) -> None:
    result = run_cli(*args, env={"RLHF_HOME": str(tmp_path), **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlhf-loop: invalid setting ")
    assert expected in lines[0]
    assert not (tmp_path / "models").exists()  # nothing was started or prepared


def test_model_directory_without_config_is_rejected(tmp_path: Path) -> None:
    result = run_cli("up", env={"RLHF_MODEL": str(tmp_path)})
    assert result.returncode == 2
    assert "no readable config.json" in result.stderr.strip()


def test_busy_chat_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    prepared_model = tmp_path / "model"  # refused before any model is read: a directory with a config will do
    prepared_model.mkdir()
    (prepared_model / "config.json").write_text("{}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", "--port", str(port), env={"RLHF_MODEL": str(prepared_model), "RLHF_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == f"rlhf-loop: port {port} is already in use: pass --port with a free port (or set RLHF_PORT)"


def test_readme_settings_table_is_generated_from_the_settings_classes() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme == readme_with_table(readme), "README table is stale: run `make docs`"
    assert "`RLHF_PORT` | `8000`" in readme


def test_adapters_commands_move_the_pointer_refuse_failed_gates_and_audit(tmp_path: Path) -> None:
    import getpass
    import socket

    from learner.registry import Registry

    me = f"{getpass.getuser()}@{socket.gethostname()}"  # the default --actor
    env = {"RLHF_HOME": str(tmp_path)}
    registry = Registry(tmp_path / "registry")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry.publish(adapter, {"parent": None}, {"passed": True, "gates": []})
    fluency = {"name": "fluency", "passed": False, "figures": {"base_loglik_per_token": -4.2, "incumbent": -2.5},
               "threshold": {"tolerance": 0.5}, "reason": "the base model reads the candidate's answers at -4.20 nats/token"}
    registry.publish(adapter, {"parent": "v0001"}, {"passed": False, "failed": ["fluency"], "gates": [fluency]})

    done = run_cli("adapters", "promote", "v0001", "--reason", "gates passed", "--actor", "alice", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["active"] == "v0001"
    refused = run_cli("adapters", "canary", "v0002", "--share", "0.2", "--reason", "try", env=env)
    assert refused.returncode == 1 and "v0002 has failed gates" in refused.stderr
    assert registry.read_pointer().canary is None
    forced = run_cli("adapters", "canary", "v0002", "--share", "0.2", "--reason", "override", "--force", env=env)
    assert forced.returncode == 0 and registry.read_pointer().canary == "v0002"
    assert run_cli("adapters", "reject", "v0002", "--reason", "rude", env=env).returncode == 0
    listed = json.loads(run_cli("adapters", "list", "--json", env=env).stdout)
    assert [(v["version"], v["role"]) for v in listed["data"]] == [("v0001", "active"), ("v0002", "rejected")]
    assert "v0001" in run_cli("adapters", "list", env=env).stdout  # the table
    shown = json.loads(run_cli("adapters", "show", "v0002", env=env).stdout)
    assert shown["lineage"]["parent"] == "v0001" and shown["gate_report"]["gates"] == [fluency]
    assert run_cli("adapters", "show", "v0042", env=env).returncode == 1
    assert run_cli("adapters", "promote", "v0001", env=env).returncode == 2  # --reason is required
    assert [(a["action"], a["actor"], a["forced"]) for a in registry.audit()] == [
        ("promote", "alice", False), ("canary", me, True), ("reject", me, False)]
