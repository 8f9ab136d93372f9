"""Sharded no-grad passes that give one value per training sample (mining, ensemble scores)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .distributed import all_reduce_sum
from .engine import Runtime, unpack

__all__ = ["per_sample"]


@torch.no_grad()
def per_sample(
    model: nn.Module,
    loader: DataLoader,
    n: int,
    value: Callable[[Tensor, Tensor], Tensor],
    runtime: Runtime | None = None,
) -> Tensor:
    """``value(logits, labels)`` for every sample, as a float64 vector over dataset positions 0..n-1.

    The loader's sampler says which positions it visits (a :class:`ShardSampler` per rank); the
    per-rank vectors are summed, so every rank gets the full vector.
    """
    runtime = runtime or Runtime()
    was_training = model.training
    model.eval()
    out = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.float64)
    positions = list(iter(loader.sampler)) if loader.sampler is not None else list(range(n))
    offset = 0
    for batch in loader:
        x, y, _, _ = unpack(batch)
        with runtime.autocast():
            logits = model(x.to(runtime.device, non_blocking=True))
        v = value(logits.float().cpu(), y.cpu()).double()
        idx = torch.as_tensor(positions[offset : offset + len(v)])
        out[idx] = v
        seen[idx] = 1
        offset += len(v)
    model.train(was_training)
    return all_reduce_sum(out, runtime.env) / all_reduce_sum(seen, runtime.env).clamp_min(1)
