"""The admin API: what operators do to adapters, over HTTP, behind an operator bearer token.

The same actions as `rlhf-loop adapters ...` (both call `learner.registry.Registry`); the handlers are
plain functions, so FastAPI runs their registry I/O (files, an object store) in its thread pool, off
the event loop. Every action is written to the registry's audit log and counted in
`rlhf_admin_actions_total`; serving then follows the pointer like any other move.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from learner.registry import Registry, RegistryError, UnknownVersion
from feedback.errors import Refused
from serving.deps import RegistryDep
from serving.metrics import ADMIN_ACTIONS


class AdminAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, description="Why: written to the audit log.")
    force: bool = Field(default=False, description="Serve a version whose gates failed or that was rejected (audited).")
    expected_revision: int | None = Field(
        default=None, ge=0, description="Apply only if the pointer is still at this revision (409 otherwise); "
                                        "omitted: applied to the pointer as it is now.")


class CanaryAction(AdminAction):
    share: float = Field(gt=0.0, le=1.0, description="Share of users routed to the canary, sticky per user.")


def operator(request: Request) -> str:
    """The acting operator: 401 without a bearer token, 403 with any token but the operator's."""
    settings = request.app.state.settings
    expected = settings.admin_token.get_secret_value() if settings.admin_token else None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        ADMIN_ACTIONS.labels("auth", "unauthenticated").inc()
        raise Refused(401, "the admin API needs `Authorization: Bearer <operator token>`",
                      headers={"WWW-Authenticate": "Bearer"})
    if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        ADMIN_ACTIONS.labels("auth", "forbidden").inc()
        raise Refused(403, "this token may not use the admin API" if expected else
                      "the admin API is off: set RLHF_ADMIN_TOKEN to turn it on")
    header = settings.user_header  # optional here: the bearer token is what authorizes an operator
    user = request.headers.get(header) if header else None
    return f"operator:{user}" if user else "operator:admin-api"


Operator = Annotated[str, Depends(operator)]
router = APIRouter(prefix="/admin/v1", tags=["admin"])


def _act(registry: Registry, action: str, do) -> JSONResponse:
    try:
        pointer = do(registry)
    except UnknownVersion as error:
        ADMIN_ACTIONS.labels(action, "refused").inc()
        raise Refused(404, str(error)) from None
    except RegistryError as error:
        ADMIN_ACTIONS.labels(action, "refused").inc()
        raise Refused(409, str(error), type_="ConflictError") from None
    ADMIN_ACTIONS.labels(action, "done").inc()
    return JSONResponse({"pointer": pointer.model_dump(mode="json")})


@router.get("/adapters")
def list_adapters(registry: RegistryDep, _: Operator) -> dict[str, Any]:
    """Every version with its role and gate status, and the pointer."""
    return {"pointer": registry.read_pointer().model_dump(mode="json"),
            "data": [registry.summary(v) for v in registry.versions()]}


@router.get("/adapters/{version}")
def show_adapter(version: str, registry: RegistryDep, _: Operator) -> JSONResponse:
    """One version: its lineage, gate report and role."""
    try:
        return JSONResponse({**registry.meta(version), **registry.summary(version)})
    except UnknownVersion as error:
        raise Refused(404, str(error)) from None


@router.get("/adapters/{version}/diff/{other}")
def diff_adapters(version: str, other: str, registry: RegistryDep, _: Operator) -> JSONResponse:
    """What differs between two versions (lineage, gate figures, weight distance)."""
    try:
        return JSONResponse(registry.diff(version, other))
    except UnknownVersion as error:
        raise Refused(404, str(error)) from None


@router.post("/adapters/{version}/promote")
def promote(version: str, body: AdminAction, registry: RegistryDep, actor: Operator) -> JSONResponse:
    """Make a version active for everyone (409 if its gates failed, unless `force`)."""
    return _act(registry, "promote", lambda r: r.promote(version, actor=actor, reason=body.reason, force=body.force,
                                                         expected=body.expected_revision))


@router.post("/adapters/{version}/canary")
def canary(version: str, body: CanaryAction, registry: RegistryDep, actor: Operator) -> JSONResponse:
    """Serve a version to `share` of users beside the active one."""
    return _act(registry, "canary", lambda r: r.canary(version, body.share, actor=actor, reason=body.reason,
                                                       force=body.force, expected=body.expected_revision))


@router.post("/adapters/{version}/reject")
def reject(version: str, body: AdminAction, registry: RegistryDep, actor: Operator) -> JSONResponse:
    """Turn a version down: it leaves the canary and needs `force` to serve again."""
    return _act(registry, "reject", lambda r: r.reject(version, actor=actor, reason=body.reason,
                                                                 expected=body.expected_revision))


@router.post("/rollback")
def rollback(body: AdminAction, registry: RegistryDep, actor: Operator) -> JSONResponse:
    """End the canary if one runs, else make the previous version active again."""
    return _act(registry, "rollback", lambda r: r.rollback(actor=actor, reason=body.reason,
                                                              expected=body.expected_revision))


@router.get("/stats")
def stats(registry: RegistryDep, _: Operator) -> dict[str, Any]:
    """Live thumb-up and duel win rates per adapter and feedback volume per minute (from the learner)."""
    return registry.read_stats()


@router.get("/audit")
def audit(registry: RegistryDep, _: Operator) -> dict[str, Any]:
    """The audit log, oldest first."""
    return {"data": registry.audit()}


def install_admin(app) -> None:
    app.include_router(router)
