"""Stage 5: group-aware evaluation with :class:`BiasGroupAccuracy`, exact across processes."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import InputError
from ..metrics import BiasGroupAccuracy
from .engine import Runtime, unpack

__all__ = ["evaluate"]


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
            raise InputError("evaluation batches need bias labels: (images, labels, biases[, ids])")
        with runtime.autocast():
            logits = model(x.to(runtime.device, non_blocking=True))
        metric.update(logits.float().cpu(), y, b)
    model.train(was_training)
    metric.sync()
    return metric.compute()
