from serving.redaction import redact


def test_personal_data_and_keys_are_masked_and_ordinary_text_is_not() -> None:
    text = ("write to john.doe@example.com or call +1 (555) 123-4567; my key is sk-abcdef1234567890XYZ "
            "and the token a3f9b2c1d4e5f60718293a4b5c6d7e8f9. In 2024, pi was 3.14 and 42 stayed 42.")
    masked = redact(text)
    for secret in ("john.doe@example.com", "555", "sk-abcdef", "a3f9b2c1"):
        assert secret not in masked
    assert masked.count("[EMAIL]") == 1 and masked.count("[PHONE]") == 1 and masked.count("[KEY]") == 2
    assert "In 2024, pi was 3.14 and 42 stayed 42." in masked
