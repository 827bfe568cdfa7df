"""The serving FastAPI app: OpenAI-compatible chat on an in-process vLLM engine.

Routes are thin: vLLM's handlers, built once when the engine is up, live on `app.state`.
The engine starts in the background so `/healthz` answers at once and `/readyz` says when
chat can be served.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import asynccontextmanager
from typing import AsyncIterator

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest, ChatCompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse

from serving.engine import running_engine
from serving.errors import error_response, install_error_handlers
from serving.metrics import ENGINE_READY, RequestMetrics
from serving.settings import ServingSettings

log = structlog.get_logger(__name__)


async def _engine_task(app: FastAPI, settings: ServingSettings, stop: asyncio.Event) -> None:
    try:
        async with asyncio.timeout(settings.engine_start_timeout_s):
            engine = running_engine(settings, app.state)
            await engine.__aenter__()
    except BaseException as error:  # the engine is this process's reason to live: exit, the supervisor restarts us
        log.error("engine.failed", error=repr(error), model=str(settings.model_dir))
        app.state.engine_failed = True
        os.kill(os.getpid(), signal.SIGTERM)
        return
    app.state.ready = True
    ENGINE_READY.set(1)
    log.info("engine.ready", model=str(settings.model_dir), served_model_name=settings.served_model_name)
    try:
        await stop.wait()
    finally:
        app.state.ready = False
        ENGINE_READY.set(0)
        await engine.__aexit__(None, None, None)


def create_app(settings: ServingSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(_engine_task(app, settings, stop))
        yield
        stop.set()
        await task

    app = FastAPI(title="rlhf-loop serving", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.ready = False
    app.state.engine_failed = False
    app.add_middleware(RequestMetrics)
    install_error_handlers(app)

    def not_ready() -> JSONResponse:
        return error_response(503, "the model engine is still starting; retry shortly (see /readyz)", type_="ServiceUnavailableError")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 once the engine serves chat, 503 before."""
        if not request.app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "model": settings.served_model_name})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of the API and the engine."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        """The served model (and its loaded adapters), OpenAI format."""
        if not request.app.state.ready:
            return not_ready()
        models = await request.app.state.openai_serving_models.show_available_models()
        return JSONResponse(models.model_dump())

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions, plain or streamed (SSE ending in `data: [DONE]`)."""
        if not request.app.state.ready:
            return not_ready()
        result = await request.app.state.openai_serving_chat.create_chat_completion(body, request)
        if isinstance(result, ErrorResponse):
            return JSONResponse(result.model_dump(), status_code=result.error.code)
        if isinstance(result, ChatCompletionResponse):
            return JSONResponse(result.model_dump())
        return StreamingResponse(result, media_type="text/event-stream")

    return app
