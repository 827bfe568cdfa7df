"""The serving FastAPI app: OpenAI-compatible chat on an in-process vLLM engine.

Routes are thin; the services they call are built once, when the engine is up, and kept on
`app.state`. The engine starts in the background so `/healthz` answers at once and `/readyz`
says when chat can be served.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from contextlib import AsyncExitStack, asynccontextmanager
from typing import AsyncIterator

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedback.errors import Refused
from feedback.producer import DurableProducer
from feedback.redaction import redact
from feedback.ratelimit import RateLimiter
from feedback.routes import router as feedback_router
from feedback.service import FeedbackService
from learner.registry import Registry
from serving.adapters import AdapterRouter
from serving.admin import install_admin
from serving.chat import ChatService
from serving.engine import EngineStarter, start_vllm
from serving.errors import Unauthenticated, install_error_handlers
from serving.limits import BodyLimit
from serving.metrics import ENGINE_READY, RequestMetrics
from serving.protocol import ChatRequest, DuelResponse
from serving.settings import ServingSettings
from serving.tokens import TokenSigner
from serving.ui import install_ui

log = structlog.get_logger(__name__)


async def _engine_task(app: FastAPI, settings: ServingSettings, start_engine: EngineStarter, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(settings.engine_start_timeout_s):
                engine = await stack.enter_async_context(start_engine(settings, app.state))
            router = AdapterRouter(app.state.registry, engine, settings.served_model_name,
                                   allow_pinning=settings.allow_adapter_pinning, poll_s=settings.adapter_poll_s)
            # serve the active adapter from the first request
            await router.apply(await asyncio.to_thread(router.registry.read_pointer))
        except BaseException as error:  # the engine is this process's reason to live: exit, the supervisor restarts us
            log.error("engine.failed", error=repr(error), model=str(settings.model_dir))
            app.state.engine_failed = True
            os.kill(os.getpid(), signal.SIGTERM)
            return
        watcher = asyncio.create_task(router.watch())
        app.state.engine = engine
        app.state.chat = ChatService(
            engine, router, app.state.token_signer, app.state.producer,
            settings.interactions_topic, settings.redact,
        )
        app.state.router = router
        # the engine, the model and the libraries are millions of long-lived objects: out of the collector's
        # sight, a full collection walks only what requests allocate (pauses of ~0.4 s under load otherwise)
        gc.freeze()
        app.state.ready = True
        ENGINE_READY.set(1)
        log.info("engine.ready", model=str(settings.model_dir), served_model_name=settings.served_model_name)
        try:
            await stop.wait()
        finally:
            app.state.ready = False
            ENGINE_READY.set(0)
            watcher.cancel()


def create_app(settings: ServingSettings, engine: EngineStarter = start_vllm) -> FastAPI:
    """The serving app on `engine` (vLLM unless a test gives a stand-in), started in the lifespan."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.producer = DurableProducer(settings.bootstrap_servers, settings.interaction_outbox_dir,
                                             client_config=settings.kafka_client()).start()
        app.state.feedback = FeedbackService(
            app.state.token_signer.verify, app.state.producer, settings.feedback_topic,
            per_user=RateLimiter(settings.feedback_per_user_per_minute, settings.feedback_burst),
            per_client=RateLimiter(settings.feedback_per_client_per_minute, settings.feedback_burst * 5),
            scrub=redact if settings.redact else (lambda text: text),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(_engine_task(app, settings, engine, stop))
        try:
            yield
        finally:
            stop.set()
            await task
            await asyncio.to_thread(app.state.producer.close)  # what is not delivered waits on disk

    app = FastAPI(title="rlhf-loop serving", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.ready = False
    app.state.engine_failed = False
    app.state.token_signer = TokenSigner(settings.token_key(), settings.feedback_token_ttl_s,
                                         previous_keys=settings.previous_token_keys())
    app.state.registry = Registry.from_settings(settings)
    app.state.admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app.state.user_header = settings.user_header

    def authenticated_user(request: Request) -> str | None:
        """With RLHF_USER_HEADER set, the user the auth proxy vouches for; a request without it is refused
        (it did not come through the proxy), never attributed to the `user` a client wrote itself."""
        if not settings.user_header:
            return None
        user = request.headers.get(settings.user_header)
        if not user:
            raise Unauthenticated(f"this server takes its users from the {settings.user_header} header of its auth "
                                  f"proxy, and this request has none")
        return user
    app.state.authenticated_user = authenticated_user
    app.include_router(feedback_router)
    install_admin(app)
    install_ui(app)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_request_bytes))
    app.add_middleware(RequestMetrics)
    install_error_handlers(app)

    def not_ready() -> Refused:
        return Refused(503, "the model engine is still starting; retry shortly (see /readyz)",
                       type_="ServiceUnavailableError", retry_after_s=5)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 once the engine serves chat; 503 before, when the outbox's threads are down,
        or when this replica has not followed the registry pointer for RLHF_ADAPTER_STALE_S."""
        if not request.app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        router, outbox = request.app.state.router, request.app.state.producer.health()
        lag = router.lag_s()
        problems = ([f"the registry pointer is not followed for {lag:.0f}s (see adapters.* logs)"]
                    if lag > settings.adapter_stale_s else [])
        problems += [f"the outbox {thread} thread is not running" for thread in ("writer", "sender") if not outbox[thread]]
        return JSONResponse({
            "status": "not ready" if problems else "ready", "problems": problems, "model": settings.served_model_name,
            "active_adapter": router.version_of(router.active), "canary_adapter": router.version_of(router.canary),
            "pointer_lag_s": round(lag, 1), "outbox": outbox,
        }, status_code=503 if problems else 200)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of the API, the adapters, the outbox and the engine."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        """The served model (plus loaded adapter versions where pinning is allowed), OpenAI format."""
        if not request.app.state.ready:
            raise not_ready()
        payload = await request.app.state.engine.models()
        if not settings.allow_adapter_pinning:
            payload["data"] = [m for m in payload["data"] if m["id"] == settings.served_model_name]
        return JSONResponse(payload)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        """OpenAI chat completions, plain or streamed (SSE ending in `data: [DONE]`).

        Each reply carries `feedback`: per choice, a response id and a signed feedback token
        (streams: in the last chunk before `[DONE]`), and the `adapter_version` that answered.
        """
        request.app.state.authenticated_user(request)  # 401 first: who may ask does not depend on the engine
        if not request.app.state.ready:
            raise not_ready()
        return await request.app.state.chat.complete(body, request)

    @app.post("/v1/chat/duels", response_model=DuelResponse)
    async def chat_duel(body: ChatRequest, request: Request) -> Response:
        """Two answers to one prompt from two policies (active vs canary, else two samples)."""
        request.app.state.authenticated_user(request)
        if not request.app.state.ready:
            raise not_ready()
        return await request.app.state.chat.duel(body, request)

    return app
