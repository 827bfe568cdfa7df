"""`python -m serving`: the chat API on its own, as in its own container."""

from __future__ import annotations

import sys

import uvicorn

from feedback.logs import configure_logging
from serving.app import create_app
from serving.engine import EngineStarter, start_vllm
from serving.settings import ServingSettings


def main(engine: EngineStarter = start_vllm) -> int:
    settings = ServingSettings()
    configure_logging("serving")
    app = create_app(settings, engine)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    return 1 if app.state.engine_failed else 0


if __name__ == "__main__":
    sys.exit(main())
