"""Our vLLM plugin (learner/vllm_plugin.py): registered for vLLM to load, and once loaded the
shared-memory queue's readers wait on their socket instead of spinning for a second after each read."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # imports vLLM


def test_vllm_loads_our_plugin_and_queue_readers_then_wait_instead_of_spinning(tmp_path: Path) -> None:
    import zmq
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
    from vllm.plugins import load_general_plugins

    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("rlhf_loop_idle_waits") == "learner.vllm_plugin:idle_waits"
    load_general_plugins()  # what vLLM does in its engine core and worker processes
    context = zmq.Context()
    try:
        address = f"ipc://{tmp_path}/notify"
        writer = SpinCondition(is_reader=False, context=context, notify_address=address)
        reader = SpinCondition(is_reader=True, context=context, notify_address=address)
        assert reader.busy_loop_s == 0  # vLLM's own: 1 s of sched_yield() after every read
        from learner.vllm_plugin import idle_waits

        idle_waits()  # loading it again (vLLM may, in each process) does not wrap it twice
        assert getattr(SpinCondition.__init__, "idle_waits", False) and writer.busy_loop_s == 0
    finally:
        context.destroy(linger=0)  # closes the sockets the two made
