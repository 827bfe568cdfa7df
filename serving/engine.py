"""The engine serving runs on: the small interface the HTTP layer uses, and vLLM behind it.

We rely on vLLM for the whole OpenAI chat surface (sampling, streaming, usage, errors) and
add only what is ours on top. The engine runs the same flags `vllm serve` would get, so the
peer benchmark compares like with like. `create_app` receives an `EngineStarter`; tests where
generation is not under test give it a stand-in (tests/helpers.py), the rest run vLLM.
"""

from __future__ import annotations

from argparse import Namespace
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, AsyncIterator, Callable, Protocol

from fastapi import Request
from starlette.datastructures import State

from learner.registry import LORA_TARGET_MODULES
from serving.settings import ServingSettings


class AdapterLoadError(Exception):
    """The engine could not load an adapter (a missing or corrupt file, an unsupported rank)."""


class Engine(Protocol):
    """What serving needs of an inference engine."""

    async def chat(self, body: Any, request: Request) -> Any:
        """An OpenAI chat completion for `body` (its `model` names the base model or a loaded adapter):
        vLLM's ChatCompletionResponse, an async iterator of SSE lines when streamed, or its ErrorResponse."""

    async def models(self) -> dict[str, Any]:
        """The OpenAI model list (the base model and every loaded adapter)."""

    async def load_adapter(self, name: str, path: str) -> int:
        """Load a LoRA adapter under `name`; its engine id. Raises AdapterLoadError."""

    async def unload_adapter(self, name: str, engine_id: int) -> None:
        """Forget the adapter and free its slot."""


# starts an engine for these settings (it may put what its own error handlers need on the app's state)
EngineStarter = Callable[[ServingSettings, State], AbstractAsyncContextManager[Engine]]


# On CPU a share of RAM (gpu_memory_utilization) is measured against the NUMA node's total less what
# the engine process already holds, so it breaks on a small or busy node; a size in bytes does not.
CPU_KV_CACHE_BYTES = 1 << 30


def kv_cache_bytes(settings: ServingSettings) -> int | None:
    """The KV cache size to ask vLLM for; None leaves it to gpu_memory_utilization (GPUs)."""
    if settings.kv_cache_memory is not None:
        return int(settings.kv_cache_memory)
    from vllm.platforms import current_platform

    return CPU_KV_CACHE_BYTES if current_platform.is_cpu() else None


def native_bfloat16() -> bool:
    """Whether this machine computes bfloat16 natively: a GPU that has it, or a CPU with oneDNN's bfloat16 (AVX-512,
    AMX). vLLM's CPU platform offers bfloat16 on every x86 CPU; on an AVX2-only one it is emulated (docs/results.md)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def engine_dtype(settings: ServingSettings) -> str:
    """The dtype to ask vLLM for: the setting, with auto resolved by `native_bfloat16`."""
    if settings.dtype != "auto":
        return settings.dtype
    return "bfloat16" if native_bfloat16() else "float32"


def engine_cli_args(settings: ServingSettings) -> list[str]:
    """The `vllm serve` flags for these settings (also used to start the peer in benchmarks)."""
    kv_bytes = kv_cache_bytes(settings)
    return [
        "--model", str(settings.model_dir),
        "--served-model-name", settings.served_model_name,
        "--max-model-len", str(settings.max_model_len),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--dtype", engine_dtype(settings),
        "--enable-lora",
        "--max-loras", str(settings.max_loras),
        # one more held in memory than run in a batch: the rollback target stays loaded (serving.adapters)
        "--max-cpu-loras", str(settings.max_loras + 1),
        "--max-lora-rank", str(settings.max_lora_rank),
        "--lora-target-modules", *LORA_TARGET_MODULES,  # what our adapters adapt (learner/registry.py)
        "--disable-uvicorn-access-log",
        *(["--kv-cache-memory-bytes", str(kv_bytes)] if kv_bytes is not None else []),
    ]


def engine_args(settings: ServingSettings) -> Namespace:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(engine_cli_args(settings))
    validate_parsed_serve_args(args)
    return args


class VLLMEngine:
    """vLLM's OpenAI handlers as an `Engine`."""

    def __init__(self, state: State) -> None:
        self._chat = state.openai_serving_chat
        self._models = state.openai_serving_models
        self._client = state.engine_client

    async def chat(self, body: Any, request: Request) -> Any:
        from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

        try:
            return await self._chat.create_chat_completion(body, request)
        except (ValueError, TypeError, OverflowError, NotImplementedError) as error:
            # vLLM raises these for requests it cannot serve (its api_server maps them to 4xx); mapped here,
            # at the call into vLLM, so the same error raised by our own code stays a logged 500
            return create_error_response(error)

    async def models(self) -> dict[str, Any]:
        return (await self._models.show_available_models()).model_dump()

    async def load_adapter(self, name: str, path: str) -> int:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        try:
            result = await self._models.load_lora_adapter(LoadLoRAAdapterRequest(lora_name=name, lora_path=path))
        except Exception as error:  # noqa: BLE001 - vLLM raising instead of answering an ErrorResponse
            raise AdapterLoadError(repr(error)) from error
        if isinstance(result, ErrorResponse):
            raise AdapterLoadError(result.error.message)
        return self._models.lora_requests[name].lora_int_id

    async def unload_adapter(self, name: str, engine_id: int) -> None:
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        await self._client.remove_lora(engine_id)  # vLLM's unload forgets the name only


@asynccontextmanager
async def start_vllm(settings: ServingSettings, state: State) -> AsyncIterator[Engine]:
    """Start vLLM in-process; its handlers (`openai_serving_chat`, ...) go on `state`, where vLLM's own
    error handlers look for them.

    As vLLM's `build_async_engine_client_from_engine_args`, except that the engine is built in a
    worker thread: starting the engine core takes tens of seconds, and on the event loop it would
    stall /healthz meanwhile. vLLM supports building `AsyncLLM` outside a loop (its output handler
    starts with the first request).
    """
    import asyncio

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    args = engine_args(settings)
    options = AsyncEngineArgs.from_cli_args(args)

    def build() -> tuple[AsyncLLM, float]:
        config = options.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        client = AsyncLLM.from_vllm_config(
            vllm_config=config, usage_context=UsageContext.OPENAI_API_SERVER,
            enable_log_requests=options.enable_log_requests, aggregate_engine_logging=options.aggregate_engine_logging,
            disable_log_stats=options.disable_log_stats,
        )
        return client, config.shutdown_timeout

    engine_client, shutdown_timeout = await asyncio.to_thread(build)
    try:
        await engine_client.reset_mm_cache()
        supported_tasks = await engine_client.get_supported_tasks()
        await init_app_state(engine_client, state, args, supported_tasks)
        yield VLLMEngine(state)
    finally:
        engine_client.shutdown(timeout=shutdown_timeout)
