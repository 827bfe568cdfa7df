"""Prometheus metrics of the chat API (vLLM's engine metrics share the same registry)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

REQUESTS = Counter("rlhf_serving_requests_total", "HTTP requests by route and status.", ["route", "status"])
LATENCY = Histogram(
    "rlhf_serving_request_seconds", "HTTP request latency until the response starts (streams: first byte).", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ENGINE_READY = Gauge("rlhf_serving_engine_ready", "1 once the vLLM engine answers requests.")


class RequestMetrics:
    """ASGI middleware: counts each request by its route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = scope.get("route")
                LATENCY.labels(getattr(route, "path", "unmatched")).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            REQUESTS.labels(getattr(route, "path", "unmatched"), str(status["code"])).inc()

ADMIN_ACTIONS = Counter(
    "rlhf_admin_actions_total", "Admin API calls by action and outcome (done, refused, unauthenticated, forbidden).",
    ["action", "outcome"],
)
