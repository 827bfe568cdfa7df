"""Our refusals: one exception type for every request we understand and do not serve. Serving renders
it (serving/errors.py) as the OpenAI error object, {"error": {message, type, param, code}}, with a
Retry-After header when the client may retry later."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, status: int, message: str, *, type_: str | None = None, param: str | None = None,
                 retry_after_s: float = 0.0, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param
        self.retry_after_s, self.headers = retry_after_s, headers or {}
