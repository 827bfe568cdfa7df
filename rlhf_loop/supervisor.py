"""`rlhf-loop up`: the whole product on one machine, supervised.

Starts the embedded broker (unless Kafka is configured), serving and learner as child processes
(each as it would run in its own container), restarts any that dies with exponential backoff,
and on Ctrl-C / SIGTERM stops them in order: serving, learner, broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx
import structlog

from feedback.broker import EmbeddedBroker, die_with_parent
from feedback.topics import ensure_topics
from rlhf_loop.simulation import SimulationSettings
from serving.settings import ServingSettings

log = structlog.get_logger("supervisor")

@dataclass
class Backoff:
    """Restart delay: 1 s, doubling to `cap_s`; reset once a child has stayed up `stable_s`."""

    base_s: float = 1.0
    cap_s: float = 30.0
    stable_s: float = 60.0
    failures: int = 0

    def next_delay(self, uptime_s: float) -> float:
        if uptime_s >= self.stable_s:
            self.failures = 0
        delay = min(self.cap_s, self.base_s * 2**self.failures)
        self.failures += 1
        return delay


@dataclass
class Child:
    """One supervised process: `start()` returns its Popen, `on_start` runs once it is up."""

    name: str
    start: Callable[[], subprocess.Popen]
    on_start: Callable[[], None] = lambda: None
    done_stops_all: bool = False  # exiting with 0 means its work is done: stop everything (not a crash)
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=Backoff)

    def launch(self) -> None:
        self.process = self.start()
        self.started_at = time.monotonic()
        self.restart_at = None
        self.on_start()

    def stop(self, timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("child.kill", child=self.name, after_s=timeout_s)
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the child's helpers (vLLM's engine core) share its group
    except ProcessLookupError:
        pass


def python_module(module: str, env: dict[str, str]) -> Callable[[], subprocess.Popen]:
    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
            preexec_fn=die_with_parent,
        )

    return start


def split_cores(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """vLLM-CPU binds every engine to the same first core by default, so serving's engine and the
    learner's rollout engine would share one core while another idles: give each half of the cores
    (only where the operator has not bound them; GPU builds ignore the variable)."""
    cores = sorted(os.sched_getaffinity(0))
    if "VLLM_CPU_OMP_THREADS_BIND" in env or len(cores) < 2:
        return {}, {}
    half = len(cores) // 2
    bind = lambda ids: {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, ids))}  # noqa: E731
    return bind(cores[:half]), bind(cores[half:])


class Supervisor:
    def __init__(self, settings: ServingSettings, simulation: SimulationSettings | None = None, *,
                 stop_timeout_s: float = 30.0) -> None:
        self.settings, self.simulation = settings, simulation
        self.stop_timeout_s = stop_timeout_s
        self.stopping = threading.Event()
        self.children: list[Child] = []
        self.broker: EmbeddedBroker | None = None
        self.announced = False

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RLHF_HOME=str(self.settings.home),
            RLHF_MODEL=str(self.settings.model_dir),
            RLHF_KAFKA_BOOTSTRAP_SERVERS=",".join(self.settings.bootstrap_servers),
            RLHF_PORT=str(self.settings.port),
            RLHF_HOST=self.settings.host,
            RLHF_LEARNER_METRICS_PORT=env.get("RLHF_LEARNER_METRICS_PORT", str(self.settings.port + 1)),
        )
        # OpenMP threads spin while waiting by default: an idle serving engine then takes the cores the
        # learner trains on (measured: several times slower training on two cores)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def build_children(self) -> None:
        if self.settings.embedded_broker:
            logs = self.settings.home / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self.broker = EmbeddedBroker(self.settings.broker_port, log_file=logs / "broker.log")

            def start_broker() -> subprocess.Popen:
                self.broker.start()
                return self.broker.process

            # a fresh embedded broker is empty: topics are made again on every (re)start
            self.children.append(Child("broker", start_broker, on_start=lambda: ensure_topics(self.settings)))
        env = self.child_env()
        serving_cores, learner_cores = split_cores(env)
        self.children.append(Child("learner", python_module("learner", {**env, **learner_cores})))
        self.children.append(Child("serving", python_module("serving", {**env, **serving_cores})))
        if self.simulation is not None:  # `up --simulate-users N`: users of this serving's API
            env = {**env, **{f"RLHF_{name.upper()}": str(value) for name, value in self.simulation.model_dump().items()
                             if name.startswith("simulate_") and value is not None},
                   "RLHF_SIMULATE_URL": f"http://{self.settings.host}:{self.settings.port}",
                   "RLHF_SIMULATE_MODEL": self.settings.served_model_name,
                   "RLHF_SIMULATE_METRICS_PORT": str(self.simulation.simulate_metrics_port or self.settings.port + 2)}
            self.children.append(Child("simulation", python_module("rlhf_loop.simulation", env), done_stops_all=True))

    def run(self) -> int:
        self.build_children()
        for child in self.children:
            child.launch()
            log.info("child.started", child=child.name, pid=child.process.pid)
        try:
            while not self.stopping.wait(0.5):
                self._tend()
                self._announce_when_ready()
        finally:
            self.shutdown()
        return 0

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            code = child.process.poll() if child.process else None
            if child.restart_at is None and code == 0 and child.done_stops_all:
                log.info("child.done", child=child.name)
                self.stopping.set()
                return
            if child.restart_at is None and code is not None:
                delay = child.backoff.next_delay(now - child.started_at)
                child.restart_at = now + delay
                log.warning("child.exited", child=child.name, returncode=code, restart_in_s=delay)
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                try:
                    child.launch()
                    log.warning("child.restarted", child=child.name, pid=child.process.pid, restarts=child.restarts)
                except Exception as error:  # a failed restart is retried with more backoff, never fatal
                    child.restart_at = now + child.backoff.next_delay(0)
                    log.error("child.restart_failed", child=child.name, error=str(error))

    def _announce_when_ready(self) -> None:
        if self.announced:
            return
        base = f"http://{self.settings.host}:{self.settings.port}"
        try:
            ready = httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return
        if ready:
            self.announced = True
            print(f"\nrlhf-loop is up. Chat: {base}/v1/chat/completions (OpenAI-compatible, model "
                  f"'{self.settings.served_model_name}'). Metrics: {base}/metrics. Ctrl-C stops everything.\n",
                  flush=True)

    def shutdown(self) -> None:
        log.info("supervisor.stopping")
        for child in reversed(self.children):  # serving, learner, then broker
            child.stop(self.stop_timeout_s)
            log.info("child.stopped", child=child.name)

    def request_stop(self, *_: object) -> None:
        self.stopping.set()
