"""Schemathesis over the whole OpenAPI document of the real server (real engine, real broker), with and
without the operator token: whatever it sends, no response is a 5xx. Bounded: a few dozen examples per
operation, and generated chat requests ask for at most 4 tokens (the engine's speed is not under test)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from learner.registry import Registry
from tests.helpers import ADMIN_TOKEN, ServingServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(serving: ServingServer):
    registry = Registry(serving.home / "registry")
    before = registry.read_pointer()
    yield schemathesis.openapi.from_url(f"{serving.base_url}/openapi.json")
    if registry.read_pointer() != before:  # put back whatever the generated admin calls moved
        registry.move_pointer(before, actor="test_schema", reason="restore after schemathesis")


def call(case, headers: dict[str, str]) -> None:
    if case.operation.path.startswith("/v1/chat") and isinstance(case.body, dict):  # at most 4 tokens, 2 choices
        for field in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(field), int):
                case.body[field] = max(1, min(case.body[field], 4))
        if case.body.get("max_tokens") is None:  # unset or null: the engine would write until max_model_len
            case.body["max_tokens"] = 4
        if isinstance(case.body.get("n"), int):
            case.body["n"] = max(1, min(case.body["n"], 2))
        case.body.pop("min_tokens", None)
    response = case.call(headers=headers, timeout=60)
    if case.operation.path == "/readyz" and response.status_code == 503:
        return  # "not ready" is that route's answer, not a failure (e.g. a version that will not load)
    assert response.status_code < 500, (case.as_curl_command(headers), response.status_code, response.text[:500])


BOUNDED = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def failures(api, headers: dict[str, str]) -> list[str]:
    """Each operation's examples (Hypothesis strategies from the schema); the first failing request of each."""
    found = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @BOUNDED
        def run(case) -> None:
            call(case, headers)
        try:
            run()
        except AssertionError as error:
            found.append(f"{operation.method.upper()} {operation.path}: {error}")
    return found


def test_no_anonymous_request_makes_the_server_fail(api) -> None:
    assert failures(api, {}) == []


def test_no_operator_request_makes_the_server_fail(api) -> None:
    assert failures(api, {"Authorization": f"Bearer {ADMIN_TOKEN}"}) == []
