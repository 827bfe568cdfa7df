"""Our vLLM plugin (serving/vllm_plugins.py): registered for vLLM to load, and once loaded vLLM's CPU
LoRA path computes what vLLM's own ops compute, with a token without an adapter getting no LoRA term.
(The real engines of the chat, hot-swap and learner tests generate through it.)"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import pytest
import torch

pytestmark = pytest.mark.slow  # imports vLLM


def test_vllm_loads_the_grouped_lora_ops_and_they_compute_what_vllms_do() -> None:
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu
    from vllm.platforms import current_platform
    from vllm.plugins import load_general_plugins

    from serving import vllm_plugins as ours

    if not current_platform.is_cpu():
        pytest.skip("off CPU vLLM applies LoRA with its own kernels; the plugin leaves them alone")
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("rlhf_loop_grouped_cpu_lora") == "serving.vllm_plugins:grouped_cpu_lora"
    load_general_plugins()  # what vLLM does in its engine core and worker processes
    assert punica_cpu.bgmv_shrink is ours.bgmv_shrink and lora_ops.bgmv_expand is ours.bgmv_expand
    vllms = importlib.reload(lora_ops)  # vLLM's own functions, for comparison
    try:
        torch.manual_seed(0)
        a, b = torch.randn(3, 1, 8, 64), torch.randn(3, 1, 96, 8)  # 3 adapter slots, rank 8, 64 -> 96
        x, h = torch.randn(10, 64), torch.randn(10, 8)
        for indices in (torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 0, 1]), torch.full((10,), 2)):
            mine, theirs = torch.zeros(10, 8), torch.zeros(10, 8)
            ours.bgmv_shrink(x, a, mine, indices, 0.5)
            vllms.bgmv_shrink(x, a, theirs, indices, 0.5)
            assert torch.allclose(mine, theirs, atol=1e-5)
            for add in (True, False):
                start = torch.randn(10, 200)
                mine, theirs = start.clone(), start.clone()
                ours.bgmv_expand_slice(h, b, mine, indices, 20, 96, add)
                vllms.bgmv_expand_slice(h, b, theirs, indices, 20, 96, add)
                assert torch.allclose(mine, theirs, atol=1e-5)
                mine, theirs = start[:, :96].clone(), start[:, :96].clone()
                ours.bgmv_expand(h, b, mine, indices, add)
                vllms.bgmv_expand(h, b, theirs, indices, add)
                assert torch.allclose(mine, theirs, atol=1e-5)
        # a token without an adapter (-1, beside tokens of adapter 1) gets nothing added
        start = torch.randn(4, 96)
        out = start.clone()
        ours.bgmv_expand(h[:4], b, out, torch.tensor([-1, 1, -1, 1]), True)
        assert torch.equal(out[[0, 2]], start[[0, 2]]) and not torch.allclose(out[[1, 3]], start[[1, 3]])
    finally:
        importlib.reload(lora_ops)
        ours.grouped_cpu_lora()  # back to ours for the rest of the session


def test_on_cpu_vllm_compiles_without_its_aot_path_unless_the_operator_says(monkeypatch) -> None:
    from vllm import envs
    from vllm.platforms import current_platform

    from serving import vllm_plugins as ours

    if not current_platform.is_cpu():
        pytest.skip("the plugin leaves compilation alone off CPU")
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("rlhf_loop_cpu_compile_cache") == "serving.vllm_plugins:cpu_compile_cache"
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)
    ours.cpu_compile_cache()
    assert not envs.VLLM_USE_AOT_COMPILE  # vLLM's own default with this torch is on
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")
    ours.cpu_compile_cache()
    assert envs.VLLM_USE_AOT_COMPILE
