from feedback.redaction import redact


def test_personal_data_and_keys_are_masked_and_ordinary_text_is_not() -> None:
    text = ("write to john.doe@example.com or call +1 (555) 123-4567; my key is sk-abcdef1234567890XYZ "
            "and the token a3f9b2c1d4e5f60718293a4b5c6d7e8f9. In 2024, pi was 3.14 and 42 stayed 42.")
    masked = redact(text)
    for secret in ("john.doe@example.com", "555", "sk-abcdef", "a3f9b2c1"):
        assert secret not in masked
    assert masked.count("[EMAIL]") == 1 and masked.count("[PHONE]") == 1 and masked.count("[KEY]") == 2
    assert "In 2024, pi was 3.14 and 42 stayed 42." in masked


def test_cloud_keys_pem_blocks_and_passwords_in_urls_are_masked_and_dates_are_not_phones() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1b2c3\nabcDEF==\n-----END RSA PRIVATE KEY-----"
    text = (f"aws AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY1 here\n{pem}\n"
            "db at postgres://admin:hunter2secret@db.internal:5432/app and "
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==;x "
            "google AIzaSyA1234567890abcdefghijklmnop, password=correct-horse-battery. "
            "Meet on 2026-12-05 or 12/05/2026 at 10:30; call 555-123-4567.")
    masked = redact(text)
    for secret in ("AKIAIOSFODNN7", "wJalrXUtnFEMI", "MIIEpAIB", "hunter2secret", "Zm9vYmFy", "AIzaSyA", "correct-horse"):
        assert secret not in masked, secret
    assert "[PRIVATE KEY]" in masked and "postgres://admin:[PASSWORD]@db.internal:5432/app" in masked
    assert "2026-12-05" in masked and "12/05/2026" in masked and masked.count("[PHONE]") == 1


def test_feedback_comments_are_redacted_before_they_are_stored() -> None:
    import asyncio
    from feedback.protocol import FeedbackCreate
    from feedback.ratelimit import RateLimiter
    from feedback.service import FeedbackService

    stored = []

    class Recording:  # the producer's contract; the real one is tested against Kafka in test_chaos/test_no_loss
        async def persist(self, topic, event) -> None:
            stored.append(event)

    class Rated:
        response_id, conversation_id, adapter_version, user_id, store, prompt_hash, duel_id = "r:0", "c", None, "u", True, "h", None

    service = FeedbackService(lambda token: Rated(), Recording(), "t", per_user=RateLimiter(60, 10),
                              per_client=RateLimiter(60, 10), scrub=redact)
    body = FeedbackCreate(feedback_token="x", rating="down", comment="wrong; mail me at jane@corp.example, key sk-live1234567890abcdef")
    asyncio.run(service.thumb(body, user=None, client="c", idempotency_key=None))
    assert stored[0].comment == "wrong; mail me at [EMAIL], key [KEY]"
