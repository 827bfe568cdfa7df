"""The serving FastAPI app: OpenAI-compatible chat on an in-process vLLM engine.

`create_app` builds the services once and keeps them on `app.state`; the routes (serving/routes.py,
serving/admin.py) reach them only through the dependencies of serving/deps.py. The engine starts in
the background so `/healthz` answers at once and `/readyz` says when chat can be served.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from contextlib import AsyncExitStack, asynccontextmanager
from typing import AsyncIterator

import structlog
from fastapi import FastAPI

from feedback.producer import DurableProducer
from feedback.redaction import redact
from feedback.ratelimit import RateLimiter
from feedback.service import FeedbackService
from learner.registry import Registry
from serving.adapters import AdapterRouter
from serving.admin import install_admin
from serving.chat import ChatService
from serving import routes
from serving.engine import EngineStarter, start_vllm
from serving.errors import install_error_handlers
from serving.limits import BodyLimit
from serving.metrics import ENGINE_READY, RequestMetrics
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
    app.state.on_engine_dead = lambda: os.kill(os.getpid(), signal.SIGTERM)  # graceful stop; restarted from outside
    app.state.token_signer = TokenSigner(settings.token_key(), settings.feedback_token_ttl_s,
                                         previous_keys=settings.previous_token_keys())
    app.state.registry = Registry.from_settings(settings)

    app.include_router(routes.router)
    install_admin(app)
    install_ui(app)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_request_bytes))
    app.add_middleware(RequestMetrics)
    install_error_handlers(app)

    return app
