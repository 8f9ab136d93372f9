"""The task loss shared by mask learning and fine-tuning: CE + lambda_con * SupCon on one batch."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ._runtime import Runtime, unpack
from .models import FeatureTap
from .objectives import supcon_loss


def task_loss(model: nn.Module, tap: FeatureTap, batch: Any, flags_of: Callable[[Sequence[str]], Tensor],
              lambda_con: float, temperature: float, positives: str, runtime: Runtime) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Forward one batch; return the loss and its logged parts (``ce``, ``con``)."""
    x, y, _, ids = unpack(batch)
    x, y = x.to(runtime.device, non_blocking=True), y.to(runtime.device, non_blocking=True)
    with tap, runtime.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    logs = {"ce": loss.detach()}
    if lambda_con > 0:
        if ids is None:
            raise ValueError("the contrastive term needs sample ids in every batch: (images, labels, biases, ids)")
        con = supcon_loss(tap.features, y, flags_of(ids).to(runtime.device), temperature, positives)  # type: ignore[arg-type]
        loss = loss + lambda_con * con
        logs["con"] = con.detach()
    return loss, logs
