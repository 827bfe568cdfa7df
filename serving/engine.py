"""The vLLM engine in-process, with vLLM's own OpenAI handlers built on our app's state.

We rely on vLLM for the whole OpenAI chat surface (sampling, streaming, usage, errors) and
add only what is ours on top. The engine runs the same flags `vllm serve` would get, so the
peer benchmark compares like with like.
"""

from __future__ import annotations

from argparse import Namespace
from contextlib import asynccontextmanager
from typing import AsyncIterator

from starlette.datastructures import State

from serving.settings import ServingSettings


# On CPU a share of RAM (gpu_memory_utilization) is measured against the NUMA node's total less what
# the engine process already holds, so it breaks on a small or busy node; a size in bytes does not.
CPU_KV_CACHE_BYTES = 1 << 30


def kv_cache_bytes(settings: ServingSettings) -> int | None:
    """The KV cache size to ask vLLM for; None leaves it to gpu_memory_utilization (GPUs)."""
    if settings.kv_cache_memory is not None:
        return int(settings.kv_cache_memory)
    from vllm.platforms import current_platform

    return CPU_KV_CACHE_BYTES if current_platform.is_cpu() else None


def engine_cli_args(settings: ServingSettings) -> list[str]:
    """The `vllm serve` flags for these settings (also used to start the peer in benchmarks)."""
    kv_bytes = kv_cache_bytes(settings)
    return [
        "--model", str(settings.model_dir),
        "--served-model-name", settings.served_model_name,
        "--max-model-len", str(settings.max_model_len),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--dtype", settings.dtype,
        "--enable-lora",
        "--max-loras", str(settings.max_loras),
        # one more held in memory than run in a batch: the rollback target stays loaded (serving.adapters)
        "--max-cpu-loras", str(settings.max_loras + 1),
        "--max-lora-rank", str(settings.max_lora_rank),
        "--disable-uvicorn-access-log",
        *(["--kv-cache-memory-bytes", str(kv_bytes)] if kv_bytes is not None else []),
    ]


def engine_args(settings: ServingSettings) -> Namespace:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(engine_cli_args(settings))
    validate_parsed_serve_args(args)
    return args


@asynccontextmanager
async def running_engine(settings: ServingSettings, state: State) -> AsyncIterator[None]:
    """Start the engine and put vLLM's handlers (`openai_serving_chat`, ...) on `state`.

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
        yield
    finally:
        engine_client.shutdown(timeout=shutdown_timeout)
