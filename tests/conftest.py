"""Session fixtures: the heavy real things (broker, prepared model, serving) start once."""

from __future__ import annotations

import ctypes
import gc
import os
import platform

# torch's OpenMP threads (libgomp) busy-wait by default; with engines, trainers and tests side by side on
# two cores that made one training step several times slower. A short spin before sleeping does as well
# as not spinning (OMP_WAIT_POLICY=PASSIVE) beside another process, and is as fast as the default alone
# (docs/results.md). Set before torch loads; children inherit it.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

from feedback.broker import EmbeddedBroker  # noqa: E402
from feedback.settings import RuntimeSettings  # noqa: E402
from feedback.topics import ensure_topics  # noqa: E402
from rlhf_loop.model import prepare  # noqa: E402
from tests.helpers import ADMIN_TOKEN, ServingServer, free_port, run_directory, service_env, write_lora_adapter  # noqa: E402


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu) on a free loopback port."""
    with EmbeddedBroker(free_port()) as running:
        yield running


@pytest.fixture(scope="session")
def prepared_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model, prepared from its GGUF into a fresh directory by the real code path (once per
    run: pytest-xdist's workers share their run's directory, and `prepare` lets one of them write it)."""
    return prepare(run_directory(tmp_path_factory) / "models" / "SmolLM2-135M-Instruct")


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


@pytest.fixture(scope="session")
def lora_adapters(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two distinct real adapters, written once per session."""
    root = tmp_path_factory.mktemp("adapters")
    return [write_lora_adapter(prepared_model, root / f"adapter-{seed}", seed=seed) for seed in (1, 2)]


# Under pytest-xdist (`make test`: two workers), the tests that share one engine run on one worker, so
# each engine starts once per run (--dist loadgroup). The learner's tests are the longest queue (~22 min of
# one worker, while the other ran out of work at ~14): the gates' tests are a group of their own, with a
# rollout engine of their own (one more engine start, ~30 s), so that both workers can take a half; the
# rule's reward model trains once for both (tests/learner/conftest.py). The HTTP layer's stand-in server (its
# start imports vLLM's protocol: ~13 s of a core) is a group too, so that it also starts once. First match wins:
# a gates test also asks for the rollout engine, and the feedback API tests name the stand-in `serving`.
ENGINE_GROUPS = {"gate_env": "learner-gates", "rollouts": "learner-engine", "http_serving": "http-serving",
                 "serving": "serving-engine"}


def engine_group(item: pytest.Item | None) -> str | None:
    if item is None:
        return None
    return next((group for name, group in ENGINE_GROUPS.items() if name in item.fixturenames), None)


@pytest.hookimpl(tryfirst=True)  # before the xdist worker's own hook, which reads the marks (tests/test_conftest.py)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = engine_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


# The session's engines (a vLLM process pair holds 1.5-2.5 GB here) stop once this process has run the last test of
# their group, not at the end of the session: otherwise a worker that goes on to the end-to-end test's own two
# engines keeps one idle beside them (docs/results.md: 23.9 of 24 GB, a thrash). Under xdist a group arrives as one
# block of tests; in one process, collection order, so the engine stays while any later test still asks for it.
ENGINE_FIXTURES = ("serving", "http_serving", "rollouts")


def group_done(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether this process has just run the last test of `item`'s engine group."""
    group = engine_group(item)
    if group is None or engine_group(nextitem) == group:
        return False
    if hasattr(item.config, "workerinput"):  # an xdist worker (not the environment variable, which children inherit)
        return True
    later = item.session.items[item.session.items.index(item) + 1:]
    return not any(engine_group(other) == group for other in later)


@pytest.hookimpl(trylast=True)  # after the item's own teardown
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if group_done(item, nextitem):
        for name in ENGINE_FIXTURES:
            # the definition this item used (the last of its overrides; a test module's own `serving` over the
            # stand-in must not stop the session's engine): its dependents (gate_env, ...) first; a later ask restarts it
            for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ())[-1:]:
                fixturedef.finish(item._request)
    if item.get_closest_marker("slow") is not None:
        release_freed_memory()


GLIBC = ctypes.CDLL("libc.so.6") if platform.libc_ver()[0] == "glibc" else None


def release_freed_memory() -> None:
    """Hand the heap a finished test freed back to the system. glibc keeps it (a trainer's 3.4 GB stayed 3.4 GB after
    `del` and gc here; `malloc_trim(0)` brought it to 0.6), so a worker that trained held gigabytes through every
    later test while the other worker's engines needed them (docs/results.md)."""
    gc.collect()
    if GLIBC is not None:
        GLIBC.malloc_trim(0)
