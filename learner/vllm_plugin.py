"""A vLLM general plugin (entry point `vllm.general_plugins` in pyproject.toml), which vLLM loads in
each of its processes: on CPU, the readers of the shared-memory queue between an engine core and its
worker wait on the queue's socket instead of spinning for a second after every read (vLLM's
`SpinCondition`, `busy_loop_s=1`; its CPU backend reserves a core for that, "TODO: make scheduler
proc sleep when idle"). On a GPU host the spin costs a host core nobody misses; on a CPU host it is a
core taken from the model: measured here, the engine core of a generating engine burnt 41 s of CPU
in 43 s beside its worker, and a serving engine under `make demo`'s chat load about half a core the
learner trains on. The writer already wakes a waiting reader through the socket after each write,
so nothing is lost; a step waits a socket poll (tens of microseconds) instead.

Hand-written because vLLM has no setting for it; a vLLM without this class keeps its own waiting."""

from __future__ import annotations


def idle_waits() -> None:
    try:
        from vllm.distributed.device_communicators import shm_broadcast
        from vllm.platforms import current_platform
    except ImportError:
        return
    init = getattr(getattr(shm_broadcast, "SpinCondition", None), "__init__", None)
    if init is None or not current_platform.is_cpu() or getattr(init, "idle_waits", False):
        return

    def waits_on_its_socket(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.busy_loop_s = 0  # read by wait(): 0 means poll the notify socket at once

    waits_on_its_socket.idle_waits = True
    shm_broadcast.SpinCondition.__init__ = waits_on_its_socket
