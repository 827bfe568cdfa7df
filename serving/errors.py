"""Every error leaves serving in the OpenAI error shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from feedback.errors import Refused
from feedback.ratelimit import retry_after_header

log = structlog.get_logger(__name__)


class Unauthenticated(Refused):
    """A request without the user the auth proxy must vouch for (RLHF_USER_HEADER): 401."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, type_="AuthenticationError")


def error_response(status: int, message: str, *, type_: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, headers=headers,
        content={
            "error": {
                "message": message,
                "type": type_ or _error_type(status),
                "param": param,
                "code": status,
            }
        },
    )


def _error_type(status: int) -> str:
    """OpenAI's error type names: the status phrase in CamelCase, ending in Error (NotFoundError, InternalServerError)."""
    name = HTTPStatus(status).phrase.replace(" ", "")
    return name if name.endswith("Error") else name + "Error"


def _describe(error: dict) -> tuple[str, str | None]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if error.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}", None
    return (f"{param}: {error['msg']}" if param else error["msg"]), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message, param = _describe(errors[0]) if errors else ("invalid request", None)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        return error_response(400, message, type_="BadRequestError", param=param)

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        """Every refusal of ours (feedback, admin, chat routing, auth): one shape, Retry-After when it applies."""
        headers = dict(exc.headers)
        if exc.retry_after_s > 0:
            headers["Retry-After"] = retry_after_header(exc.retry_after_s)
        return error_response(exc.status, exc.message, type_=exc.type, param=exc.param, headers=headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    # vLLM's own mapping of its exceptions (VLLMValidationError -> 400, ...); the plain ValueErrors vLLM raises
    # are mapped where we call it (serving/engine.py), so ours are 500s below
    from vllm.entrypoints.serve.exception_handling.handlers.vllm_error import vllm_error_handler
    from vllm.exceptions import VLLMError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    app.exception_handler(VLLMError)(vllm_error_handler)

    # vLLM's handler for these expects its own launcher's state; ours: a failed generation is a logged 500,
    # a dead engine makes this replica unready and ends the process (its supervisor or Kubernetes restarts it)
    @app.exception_handler(EngineGenerateError)
    async def _generation_failed(request: Request, exc: EngineGenerateError) -> JSONResponse:
        log.error("engine.generate_failed", path=request.url.path, error=repr(exc))
        return error_response(500, "the model engine failed on this request; the server logged the details")

    @app.exception_handler(EngineDeadError)
    async def _engine_dead(request: Request, exc: EngineDeadError) -> JSONResponse:
        log.error("engine.dead", path=request.url.path, error=repr(exc))
        request.app.state.ready = False
        request.app.state.engine_failed = True  # the process exits non-zero
        request.app.state.on_engine_dead()
        return error_response(503, "the model engine stopped; this replica is restarting, retry shortly",
                              type_="ServiceUnavailableError", headers={"Retry-After": "30"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unhandled", path=request.url.path)
        return error_response(500, "internal error; the server logged the details")
