"""Feedback tokens: any replica with the key verifies them; tampering, forgery and expiry fail; a
rotated key keeps the tokens it signed valid while it is listed as a previous key."""

from __future__ import annotations

import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from feedback.service import ExpiredToken
from serving.tokens import SALT, TokenError, TokenSigner, prompt_hash

CLAIMS = dict(rid="chatcmpl-1:0", c="conv-1", av="v0003", u="alice", st=True, ph=prompt_hash([{"role": "user", "content": "hi"}]))


def test_another_replica_with_the_key_verifies_the_claims() -> None:
    token = TokenSigner(b"shared-key", ttl_s=60).sign(**CLAIMS)
    claims = TokenSigner(b"shared-key", ttl_s=60).verify(token)
    assert (claims.response_id, claims.adapter_version, claims.user_id, claims.store) == ("chatcmpl-1:0", "v0003", "alice", True)


def test_tampered_claims_are_rejected() -> None:
    signer = TokenSigner(b"k", ttl_s=60)
    token = signer.sign(**CLAIMS)
    payload, stamp, signature = token.rsplit(".", 2)
    serializer = URLSafeTimedSerializer(b"unused", salt=SALT)
    claims = serializer.load_payload(payload.encode())
    assert claims["u"] == "alice"
    forged = serializer.dump_payload({**claims, "u": "mallory"}).decode()
    with pytest.raises(TokenError, match="forged or tampered"):
        signer.verify(f"{forged}.{stamp}.{signature}")


def test_a_token_signed_with_another_key_is_rejected() -> None:
    with pytest.raises(TokenError, match="signature"):
        TokenSigner(b"k", ttl_s=60).verify(TokenSigner(b"other", ttl_s=60).sign(**CLAIMS))


def test_expired_token_is_rejected(monkeypatch) -> None:
    signer = TokenSigner(b"k", ttl_s=60)
    token = signer.sign(**CLAIMS)
    now = time.time()
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: now + 59)
    assert signer.verify(token)
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: now + 62)
    with pytest.raises(ExpiredToken, match="expired"):
        signer.verify(token)


def test_a_rotated_key_still_verifies_its_tokens_while_listed_as_previous() -> None:
    old = TokenSigner(b"old-key", ttl_s=60).sign(**CLAIMS)
    rotated = TokenSigner(b"new-key", ttl_s=60, previous_keys=[b"old-key"])
    assert rotated.verify(old).user_id == "alice"
    fresh = rotated.sign(**CLAIMS)
    assert TokenSigner(b"new-key", ttl_s=60).verify(fresh).user_id == "alice"  # signed with the new key
    with pytest.raises(TokenError, match="signature"):
        TokenSigner(b"new-key", ttl_s=60).verify(old)  # the old key dropped: its tokens are refused


@pytest.mark.parametrize("garbage", ["", "abc", "abc.", ".abc", "!!!.???", "e30.e30"])
def test_malformed_tokens_are_rejected(garbage: str) -> None:
    with pytest.raises(TokenError):
        TokenSigner(b"k", ttl_s=60).verify(garbage)


def test_prompt_hash_ignores_nothing_that_matters() -> None:
    a = [{"role": "user", "content": "hi"}]
    assert prompt_hash(a) == prompt_hash([{"role": "user", "content": "hi"}])
    assert prompt_hash(a) != prompt_hash([{"role": "user", "content": "hi!"}])
    assert prompt_hash(a) != prompt_hash([{"role": "system", "content": "hi"}])
