"""vLLM general plugins (entry point `vllm.general_plugins` in pyproject.toml), which vLLM loads in each
of its processes: the serving engine's and the learner's.

`grouped_cpu_lora`: on CPU, vLLM applies LoRA with PyTorch ops (`vllm.lora.ops.torch_ops`) that copy
the LoRA matrix of every token's adapter (`lora_weights[token_indices]`, one (out x rank) copy per
token and layer) before an einsum. Measured here on the bundled model: 66 greedy answers of 16 tokens
took 14.5 s with an adapter against 6.0 s without. Tokens of one adapter share one matrix, so this
does one matmul per adapter present in the batch instead; a token without an adapter (index -1) gets
no LoRA term (vLLM's GPU kernels skip it; the CPU op indexed the last slot with it). The same sums,
in another order. Hand-written because vLLM's CPU backend has no other LoRA path; a vLLM whose ops
module lacks these functions keeps its own.

`cpu_compile_cache`: on CPU, vLLM 0.32 saves its ahead-of-time compiled model but cannot load it back
("'function' object has no attribute 'finalize_loading'", then "Compiling model again"), so every engine
start compiled anew: 108-124 s of an engine's start on an AVX2 machine here. Without AOT compilation vLLM
uses its torch.compile cache, which loads: 37 s, the same tokens per second (docs/results.md). An operator's
own VLLM_USE_AOT_COMPILE stands."""

from __future__ import annotations

import os

import torch


def _lora_product(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """(tokens, out): each token's input times its adapter's (out, in) matrix; zero for index -1."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)  # (adapters, 1, out, in)
    inputs = inputs.to(dtype)
    adapters = torch.unique(indices).tolist()
    if len(adapters) == 1 and adapters[0] >= 0:  # the common case: one adapter for the whole batch
        return inputs @ weights[adapters[0]].to(dtype).T
    out = inputs.new_zeros(inputs.shape[0], weights.shape[1])
    for adapter in adapters:
        if adapter >= 0:
            rows = indices == adapter
            out[rows] = inputs[rows] @ weights[adapter].to(dtype).T
    return out


def _store(target: torch.Tensor, values: torch.Tensor, add: bool) -> None:
    """Write `values` into `target` (a view of vLLM's output tensor), or add them to it."""
    if add:
        target += values
    else:
        target.copy_(values)


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0) -> None:
    outputs = _lora_product(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True) -> None:
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    _store(output_tensor[:, :common], outputs[:limit, :common], add_inputs)


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True) -> None:
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    _store(output_tensor[:, slice_offset : slice_offset + slice_size], outputs, add_inputs)


REPLACED = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


def cpu_compile_cache() -> None:
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")


def grouped_cpu_lora() -> None:
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
        from vllm.platforms import current_platform
    except ImportError:
        return
    if not current_platform.is_cpu() or not all(hasattr(lora_ops, name) for name in REPLACED):
        return
    # lora_ops' sgmv_* (prefill) call its bgmv_* by name; punica_cpu imported the bgmv_* (decode) by name
    for module in (lora_ops, torch_ops, punica_cpu):
        for name, function in REPLACED.items():
            if hasattr(module, name):
                setattr(module, name, function)
