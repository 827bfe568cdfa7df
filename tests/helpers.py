"""Helpers that tests and benchmarks share (imported, not fixtures)."""

from __future__ import annotations

from learner.settings import LearnerSettings

# the gates before issue 22 ("gates that see what users will see"): these, and of degeneration its three older checks
GATES_BEFORE_ISSUE_22 = ("weights", "kl", "win_rate", "safety", "likelihood")


def verdict_before_issue_22(report: dict, settings: LearnerSettings) -> dict:
    """What the gates of before issue 22 would have said of a report's candidate (its figures, their thresholds)."""
    gates = {g["name"]: g for g in report["gates"]}
    figures = gates["degeneration"]["figures"]
    old_degeneration = (figures["empty_rate"] <= settings.gate_max_empty_rate
                        and figures["repetition"] <= settings.gate_max_repetition
                        and figures["mean_length"] / figures["incumbent_mean_length"] <= settings.gate_max_length_ratio)
    failed = [name for name in GATES_BEFORE_ISSUE_22 if not gates[name]["passed"]] + ([] if old_degeneration else ["degeneration"])
    return {"passed": not failed, "failed": failed}


class StandInEngine:
    """An `Engine` (serving/engine.py) for tests of the HTTP layer where generation is not under test:
    it answers in the OpenAI shape, streamed or not, with words taken from the prompt, and loads
    adapters by name (`broken` versions fail). The real engine is in the chat, hot-swap and e2e tests."""

    def __init__(self) -> None:
        self.adapters: dict[str, int] = {}
        self.broken: set[str] = set()
        self.attempts: list[str] = []
        self.requests: list = []

    async def chat(self, body, request):
        from vllm.entrypoints.openai.chat_completion.protocol import (ChatCompletionResponse,
                                                                      ChatCompletionResponseChoice, ChatMessage,
                                                                      UsageInfo)
        self.requests.append(body)
        prompt = " ".join(str(m.get("content") if isinstance(m, dict) else m.content) for m in body.messages)
        limit = body.max_completion_tokens or body.max_tokens or 16
        words = (f"About {prompt}: " * 8).split()
        texts = [" ".join(words[i:i + limit]) for i in range(body.n or 1)]
        finish = "length" if len(words) > limit else "stop"
        usage = UsageInfo(prompt_tokens=len(prompt.split()), completion_tokens=sum(len(t.split()) for t in texts),
                          total_tokens=len(prompt.split()) + sum(len(t.split()) for t in texts))
        if not body.stream:
            return ChatCompletionResponse(id=f"chatcmpl-{body.request_id}", model=body.model, usage=usage, choices=[
                ChatCompletionResponseChoice(index=i, message=ChatMessage(role="assistant", content=text),
                                             finish_reason=finish) for i, text in enumerate(texts)])

        async def chunks():
            import json
            for i, text in enumerate(texts):
                for word in text.split():
                    delta = {"index": i, "delta": {"content": word + " "}, "finish_reason": None}
                    yield f"data: {json.dumps({'id': body.request_id, 'object': 'chat.completion.chunk', 'choices': [delta]})}\n\n"
                done = {"index": i, "delta": {}, "finish_reason": finish}
                yield f"data: {json.dumps({'id': body.request_id, 'object': 'chat.completion.chunk', 'choices': [done]})}\n\n"
            yield f"data: {json.dumps({'id': body.request_id, 'choices': [], 'usage': usage.model_dump()})}\n\n"
            yield "data: [DONE]\n\n"
        return chunks()

    async def models(self) -> dict:
        names = ["rlhf-loop", *self.adapters]
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "rlhf-loop"} for name in names]}

    async def load_adapter(self, name: str, path: str) -> int:
        from serving.engine import AdapterLoadError

        version = name.rsplit("@", 1)[1]
        self.attempts.append(version)
        if version in self.broken:
            raise AdapterLoadError(f"cannot load {version}")
        self.adapters[name] = len(self.adapters) + 1
        return self.adapters[name]

    async def unload_adapter(self, name: str, engine_id: int) -> None:
        self.adapters.pop(name, None)


def stand_in_engine(engine: StandInEngine | None = None):
    """An EngineStarter for `create_app` that starts `engine` (a fresh StandInEngine by default)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(settings, state):
        yield engine or StandInEngine()
    return start
