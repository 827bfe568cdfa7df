"""Feedback tokens: proof that a user was served a response, checkable by any replica.

A token is itsdangerous' URL-safe timed serializer over the JSON claims (HMAC-SHA256, a salt of its
own, the signing time inside): it names the response, the adapter version that produced it, the user
(if known), whether the interaction may be stored for training, and the prompt's hash. No shared
state: any replica holding the key verifies it. The well-kept library rather than a JWT: one
algorithm, no header to negotiate (no algorithm confusion), its own expired-signature exception, and
key rotation: tokens are signed with the current key and verified with it or any previous one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedback.service import ExpiredToken, InvalidToken

SALT = "rlhf-loop.feedback-token"


class TokenError(InvalidToken):
    """The token is forged, tampered with or malformed; the message says which."""


class TokenExpired(TokenError, ExpiredToken):
    """The token was genuine but is older than RLHF_FEEDBACK_TOKEN_TTL_S."""


class FeedbackClaims(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    response_id: str = Field(alias="rid")
    conversation_id: str = Field(alias="c")
    adapter_version: str | None = Field(alias="av")
    user_id: str | None = Field(alias="u")
    store: bool = Field(alias="st", description="False: the user opted out of training (`store: false`).")
    prompt_hash: str = Field(alias="ph", description="Hash of the prompt: a pairwise choice needs two equal ones.")
    duel_id: str | None = Field(default=None, alias="d")


class TokenSigner:
    """Signs with `key`; verifies with `key` or any of `previous_keys` (rotation: keep the old key here
    for one token lifetime after switching)."""

    def __init__(self, key: bytes, ttl_s: int, *, previous_keys: Sequence[bytes] = ()) -> None:
        self.ttl_s = ttl_s
        # itsdangerous signs with the last key of the list and accepts a signature by any of them
        self._serializer = URLSafeTimedSerializer([*previous_keys, key], salt=SALT,
                                                  signer_kwargs={"digest_method": hashlib.sha256})

    def sign(self, **claims: object) -> str:
        return self._serializer.dumps(FeedbackClaims.model_validate(claims).model_dump(by_alias=True))

    def verify(self, token: str) -> FeedbackClaims:
        try:
            data = self._serializer.loads(token, max_age=self.ttl_s)
        except SignatureExpired:
            raise TokenExpired("feedback token expired") from None
        except BadSignature:  # anything not signed by a key of ours
            raise TokenError("malformed feedback token" if token.count(".") < 2
                             else "invalid feedback token signature (forged or tampered)") from None
        try:
            return FeedbackClaims.model_validate(data)
        except ValidationError:
            raise TokenError("malformed feedback token") from None


def prompt_hash(messages: list[dict]) -> str:
    """Stable hash of a prompt's messages (role + content), for pairing answers to one prompt."""
    canonical = json.dumps([[m.get("role"), m.get("content")] for m in messages], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
