"""Stage 5: group-aware evaluation with :class:`BiasGroupAccuracy`, exact across processes."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from ._runtime import Runtime, unpack
from .distributed import all_reduce_sum
from .metrics import BiasGroupAccuracy

__all__ = ["ShardSampler", "evaluate", "per_sample"]


class ShardSampler(Sampler[int]):
    """Positions ``rank, rank + world, ...``: every sample exactly once over all ranks, no padding."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, runtime: Runtime | None = None) -> Dict[str, Any]:
    """Group metrics of ``model`` on ``loader`` (batches carry labels and bias labels).

    In a distributed run each rank evaluates its shard and the counts are summed, so the result
    equals a single-process evaluation exactly.
    """
    runtime = runtime or Runtime()
    metric = BiasGroupAccuracy(num_classes)
    was_training = model.training
    model.eval()
    for batch in loader:
        x, y, b, _ = unpack(batch)
        if b is None:
            raise ValueError("evaluation batches need bias labels: (images, labels, biases[, ids])")
        with runtime.autocast():
            logits = model(x.to(runtime.device, non_blocking=True))
        metric.update(logits.float().cpu(), y, b)
    model.train(was_training)
    metric.sync()
    return metric.compute()


@torch.no_grad()
def per_sample(model: nn.Module, loader: DataLoader, n: int, value: Callable[[Tensor, Tensor], Tensor],
               runtime: Runtime | None = None) -> Tensor:
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
        idx = torch.as_tensor(positions[offset:offset + len(v)])
        out[idx] = v
        seen[idx] = 1
        offset += len(v)
    model.train(was_training)
    return all_reduce_sum(out, runtime.env) / all_reduce_sum(seen, runtime.env).clamp_min(1)
