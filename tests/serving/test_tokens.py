"""Feedback tokens: any replica with the key verifies them; tampering, forgery and expiry fail."""

from __future__ import annotations

import base64
import json
import time

import pytest

from serving.tokens import TokenError, TokenSigner, prompt_hash

CLAIMS = dict(rid="chatcmpl-1:0", c="conv-1", av="v0003", u="alice", st=True, ph=prompt_hash([{"role": "user", "content": "hi"}]))


def test_another_replica_with_the_key_verifies_the_claims() -> None:
    token = TokenSigner(b"shared-key", ttl_s=60).sign(**CLAIMS)
    claims = TokenSigner(b"shared-key", ttl_s=60).verify(token)
    assert (claims.response_id, claims.adapter_version, claims.user_id, claims.store) == ("chatcmpl-1:0", "v0003", "alice", True)


def test_tampered_claims_are_rejected() -> None:
    signer = TokenSigner(b"k", ttl_s=60)
    payload, signature = signer.sign(**CLAIMS).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["u"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="forged or tampered"):
        signer.verify(f"{forged}.{signature}")


def test_a_token_signed_with_another_key_is_rejected() -> None:
    with pytest.raises(TokenError, match="signature"):
        TokenSigner(b"k", ttl_s=60).verify(TokenSigner(b"other", ttl_s=60).sign(**CLAIMS))


def test_expired_token_is_rejected() -> None:
    signer = TokenSigner(b"k", ttl_s=60)
    token = signer.sign(**CLAIMS)
    assert signer.verify(token, now=time.time() + 59)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, now=time.time() + 61)


@pytest.mark.parametrize("garbage", ["", "abc", "abc.", ".abc", "!!!.???", "e30.e30"])
def test_malformed_tokens_are_rejected(garbage: str) -> None:
    with pytest.raises(TokenError):
        TokenSigner(b"k", ttl_s=60).verify(garbage)


def test_prompt_hash_ignores_nothing_that_matters() -> None:
    a = [{"role": "user", "content": "hi"}]
    assert prompt_hash(a) == prompt_hash([{"role": "user", "content": "hi"}])
    assert prompt_hash(a) != prompt_hash([{"role": "user", "content": "hi!"}])
    assert prompt_hash(a) != prompt_hash([{"role": "system", "content": "hi"}])
