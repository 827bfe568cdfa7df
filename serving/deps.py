"""What a route needs, as FastAPI dependencies: typed, from the app's state, in one place.

`create_app` puts the services on `app.state` (the chat service once the engine is up); routes declare
what they use (`chat: Chat`, `user: CurrentUser`, ...) and never read the state by name. Declared in
order, they are resolved in order: who may ask (401) is settled before whether the engine is up (503).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from feedback.errors import Refused
from feedback.producer import DurableProducer
from feedback.service import FeedbackService
from learner.registry import Registry
from serving.adapters import AdapterRouter
from serving.chat import ChatService
from serving.engine import Engine
from serving.errors import Unauthenticated
from serving.settings import ServingSettings
from serving.tokens import TokenSigner

NOT_READY_RETRY_S = 5.0


def settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def current_user(request: Request) -> str | None:
    """With RLHF_USER_HEADER set, the user the auth proxy vouches for; a request without it is refused
    (it did not come through the proxy), never attributed to the `user` a client wrote itself. None
    without the setting: clients name their users in the `user` field."""
    header = request.app.state.settings.user_header
    if not header:
        return None
    user = request.headers.get(header)
    if not user:
        raise Unauthenticated(f"this server takes its users from the {header} header of its auth proxy, "
                              f"and this request has none")
    return user


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _ready(request: Request) -> None:
    if not request.app.state.ready:
        raise Refused(503, "the model engine is still starting; retry shortly (see /readyz)",
                      type_="ServiceUnavailableError", retry_after_s=NOT_READY_RETRY_S)


def chat_service(request: Request) -> ChatService:
    _ready(request)
    return request.app.state.chat


def engine(request: Request) -> Engine:
    _ready(request)
    return request.app.state.engine


def feedback_service(request: Request) -> FeedbackService:
    return request.app.state.feedback


def registry(request: Request) -> Registry:
    return request.app.state.registry


def token_signer(request: Request) -> TokenSigner:
    return request.app.state.token_signer


def adapter_router(request: Request) -> AdapterRouter | None:
    """The adapter router once the engine is up, else None."""
    return request.app.state.router if request.app.state.ready else None


def producer(request: Request) -> DurableProducer | None:
    """The outbox's producer once the app has started, else None."""
    return getattr(request.app.state, "producer", None)


Settings = Annotated[ServingSettings, Depends(settings)]
CurrentUser = Annotated[str | None, Depends(current_user)]
ClientAddress = Annotated[str, Depends(client_address)]
Chat = Annotated[ChatService, Depends(chat_service)]
EngineDep = Annotated[Engine, Depends(engine)]
Feedback = Annotated[FeedbackService, Depends(feedback_service)]
RegistryDep = Annotated[Registry, Depends(registry)]
Router = Annotated[AdapterRouter | None, Depends(adapter_router)]
Producer = Annotated[DurableProducer | None, Depends(producer)]
