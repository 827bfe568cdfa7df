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


def engine_cli_args(settings: ServingSettings) -> list[str]:
    """The `vllm serve` flags for these settings (also used to start the peer in benchmarks)."""
    return [
        "--model", str(settings.model_dir),
        "--served-model-name", settings.served_model_name,
        "--max-model-len", str(settings.max_model_len),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--dtype", settings.dtype,
        "--enable-lora",
        "--max-loras", str(settings.max_loras),
        "--max-lora-rank", str(settings.max_lora_rank),
        "--disable-uvicorn-access-log",
    ]


def engine_args(settings: ServingSettings) -> Namespace:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(engine_cli_args(settings))
    validate_parsed_serve_args(args)
    return args


@asynccontextmanager
async def running_engine(settings: ServingSettings, state: State) -> AsyncIterator[None]:
    """Start the engine and put vLLM's handlers (`openai_serving_chat`, ...) on `state`."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client

    args = engine_args(settings)
    async with build_async_engine_client(args) as engine_client:
        supported_tasks = await engine_client.get_supported_tasks()
        await init_app_state(engine_client, state, args, supported_tasks)
        yield
