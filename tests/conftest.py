"""Session fixtures: the heavy real things (broker, prepared model, serving) start once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from feedback.broker import EmbeddedBroker
from rlhf_loop.model import prepare


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu) on a free loopback port."""
    with EmbeddedBroker(free_port()) as running:
        yield running


@pytest.fixture(scope="session")
def prepared_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model, prepared from its GGUF into a fresh directory by the real code path."""
    return prepare(tmp_path_factory.mktemp("models") / "SmolLM2-135M-Instruct")


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")


class ServingServer:
    """`python -m serving` in a subprocess, like vLLM's RemoteOpenAIServer."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving"], env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        wait_for(f"{self.base_url}/readyz", self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


def service_env(home: Path, model: Path, broker: EmbeddedBroker, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RLHF_HOME=str(home),
        RLHF_MODEL=str(model),
        RLHF_KAFKA_BOOTSTRAP_SERVERS=",".join(broker.bootstrap_servers),
        **extra,
    )
    return env


@pytest.fixture(scope="session")
def serving(prepared_model: Path, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingServer]:
    """The real serving process on the prepared model, ready to chat."""
    home = tmp_path_factory.mktemp("serving-home")
    port = free_port()
    server = ServingServer(service_env(home, prepared_model, broker, RLHF_PORT=str(port)), port, home / "serving.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
