"""Feedback tokens: proof that a user was served a response, checkable by any replica.

A token is `base64url(JSON claims) + "." + base64url(HMAC-SHA256(key, claims))`. It names the
response, the adapter version that produced it, the user (if known), whether the interaction
may be stored for training, and when it expires. No shared state: any replica holding the key
verifies it. Hand-written (15 lines of hmac) rather than a JWT library: we need one algorithm,
no headers to negotiate, and so no algorithm-confusion surface.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedback.service import InvalidToken


class TokenError(InvalidToken):
    """The token is forged, tampered with, malformed or expired; the message says which."""


class FeedbackClaims(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    response_id: str = Field(alias="rid")
    conversation_id: str = Field(alias="c")
    adapter_version: str | None = Field(alias="av")
    user_id: str | None = Field(alias="u")
    store: bool = Field(alias="st", description="False: the user opted out of training (`store: false`).")
    prompt_hash: str = Field(alias="ph", description="Hash of the prompt: a pairwise choice needs two equal ones.")
    duel_id: str | None = Field(default=None, alias="d")
    expires_at: int = Field(alias="exp")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: bytes, ttl_s: int) -> None:
        self.key, self.ttl_s = key, ttl_s

    def sign(self, **claims: object) -> str:
        body = FeedbackClaims.model_validate({**claims, "exp": int(time.time()) + self.ttl_s})
        payload = _b64(body.model_dump_json(by_alias=True).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def verify(self, token: str, *, now: float | None = None) -> FeedbackClaims:
        payload, dot, signature = token.partition(".")
        if not dot or not payload or not signature:
            raise TokenError("malformed feedback token")
        try:
            given = _unb64(signature)
        except ValueError:
            raise TokenError("malformed feedback token") from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise TokenError("invalid feedback token signature (forged or tampered)")
        try:
            claims = FeedbackClaims.model_validate(json.loads(_unb64(payload)))
        except (ValueError, ValidationError):
            raise TokenError("malformed feedback token") from None
        if claims.expires_at < (time.time() if now is None else now):
            raise TokenError("feedback token expired")
        return claims

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).digest()


def prompt_hash(messages: list[dict]) -> str:
    """Stable hash of a prompt's messages (role + content), for pairing answers to one prompt."""
    canonical = json.dumps([[m.get("role"), m.get("content")] for m in messages], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
