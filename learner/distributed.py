"""The one place training code meets torch.distributed: who this process is, and the collectives the
PPO and reward-model loops share. Under `torchrun` a process group is up (gloo on CPU, nccl on GPU);
without it every function is the one-process identity."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, how many processes train together); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's shard concatenated along dim 0, in rank order."""
    _, world = rank_and_world()
    if world == 1:
        return tensor
    shards = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(shards, tensor.contiguous())
    return torch.cat(shards)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (what one process on the whole batch would log)."""
    _, world = rank_and_world()
    if world == 1 or not values:
        return values
    total = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(total)
    return {key: total[i].item() / world for i, key in enumerate(values)}
