"""Session fixtures: the heavy real things (broker, prepared model, serving) start once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from feedback.broker import EmbeddedBroker
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from rlhf_loop.model import prepare

# torch's OpenMP threads busy-wait by default; with engines, trainers and tests side by side on two
# cores that made one training step several times slower. Set before torch loads; children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


ADMIN_TOKEN = "test-operator-token"


class ServingServer:
    """`python -m serving` in a subprocess, like vLLM's RemoteOpenAIServer."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, module: str = "serving") -> None:
        self.home = Path(env["RLHF_HOME"])
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Wait for /readyz, probing /healthz meanwhile as a Kubernetes liveness probe would (2 s
        timeout): `live_probes` counts its answers before ready, `most_missed_in_a_row` its longest
        run of misses after the first answer (Kubernetes restarts a pod at 3 by default)."""
        self.live_probes = self.most_missed_in_a_row = missed = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serving exited with {self.process.returncode}; see {self.log_path}")
            alive, ready = self._probe("/healthz"), self._probe("/readyz")
            self.live_probes += alive
            missed = 0 if alive else missed + (self.live_probes > 0)
            self.most_missed_in_a_row = max(self.most_missed_in_a_row, missed)
            if alive and ready:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.base_url}/readyz not ready after {timeout_s}s")

    def _probe(self, path: str) -> bool:
        try:
            return httpx.get(f"{self.base_url}{path}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


def read_topic(broker: EmbeddedBroker, topic: str, until: Callable[[list[dict]], bool], timeout_s: float = 30.0) -> list[dict]:
    """Every record of `topic` from the start (manual assignment: no group join), as JSON,
    polling until `until(records)` holds or the time is up."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(json.loads(record.value) for record in batch)
            if until(records):
                break
        return records
    finally:
        consumer.close()


def service_env(home: Path, model: Path | None, broker: EmbeddedBroker, **extra: str) -> dict[str, str]:
    """The environment of a service process; `model` None for the stand-in engine, which needs none."""
    env = dict(os.environ)
    env.update(RLHF_HOME=str(home), RLHF_KAFKA_BOOTSTRAP_SERVERS=",".join(broker.bootstrap_servers), **extra)
    if model is not None:
        env["RLHF_MODEL"] = str(model)
    return env


@pytest.fixture(scope="session")
def serving(prepared_model: Path, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingServer]:
    """The real serving process on the prepared model, ready to chat."""
    home = tmp_path_factory.mktemp("serving-home")
    port = free_port()
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=",".join(broker.bootstrap_servers)))
    # no RLHF_USER_HEADER: users come from the `user` field (and the browser tests have no auth proxy);
    # the header's rules are tested in-process in tests/serving/test_users.py
    env = service_env(home, prepared_model, broker, RLHF_PORT=str(port), RLHF_ADMIN_TOKEN=ADMIN_TOKEN,
                      RLHF_KV_CACHE_MEMORY="512MiB", RLHF_ADAPTER_STALE_S="3")
    server = ServingServer(env, port, home / "serving.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def http_serving(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingServer]:
    """The serving process on the stand-in engine (tests/stand_in_serving.py): the whole HTTP layer,
    feedback and outbox included, in a second, for tests where generation is not under test."""
    home = tmp_path_factory.mktemp("http-serving-home")
    port = free_port()
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=",".join(broker.bootstrap_servers)))
    env = service_env(home, None, broker, RLHF_PORT=str(port), RLHF_ADMIN_TOKEN=ADMIN_TOKEN)
    server = ServingServer(env, port, home / "serving.log", module="tests.stand_in_serving")
    try:
        server.wait_ready(60)
        yield server
    finally:
        server.stop()


def write_lora_adapter(model_dir: Path, out: Path, *, seed: int, rank: int = 8) -> Path:
    """A real PEFT LoRA for the model with random (non-zero) weights, so it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_adapters(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two distinct real adapters, written once per session."""
    root = tmp_path_factory.mktemp("adapters")
    return [write_lora_adapter(prepared_model, root / f"adapter-{seed}", seed=seed) for seed in (1, 2)]
