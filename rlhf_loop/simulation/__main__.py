"""`python -m rlhf_loop.simulation`: the simulated users on their own (`rlhf-loop up --simulate-users` starts it)."""

from __future__ import annotations

import asyncio
import signal
import sys

from prometheus_client import start_http_server

from feedback.logs import configure_logging
from feedback.settings import load_settings
from rlhf_loop.simulation import SimulationSettings, simulate, summary


async def main() -> int:
    settings = load_settings(SimulationSettings)
    configure_logging("simulation")
    if settings.simulate_metrics_port:
        start_http_server(settings.simulate_metrics_port, addr=settings.simulate_metrics_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    report = await simulate(settings, stop)
    print(summary(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
