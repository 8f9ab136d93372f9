"""Group accuracies over (class, bias) groups: ``bias_group_accuracy`` and ``BiasGroupAccuracy``.

Reported keys (empty groups are *missing* (None), never counted as 0):

- ``accuracy``: pooled sample accuracy (the CMNIST / CIFAR10-C metric on an unbiased test set);
- ``aligned``: mean accuracy of the diagonal groups (class == bias);
- ``conflicting``: mean accuracy of the off-diagonal groups (DCWP's BFFHQ metric);
- ``conflicting_pooled``: sample accuracy over all bias-conflicting samples (DisEnt's metric);
- ``unbiased``: mean accuracy over all groups (LfF's metric);
- ``worst_group``: the lowest group accuracy;
- ``group_accuracy`` / ``group_counts``: the C x C matrices (row = class, column = bias).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from .errors import InputError

__all__ = ["BiasGroupAccuracy", "bias_group_accuracy"]


def _update(correct: Tensor, total: Tensor, preds: Tensor, labels: Tensor, biases: Tensor, c: int) -> None:
    if preds.ndim == 2:
        preds = preds.argmax(1)
    labels, biases = labels.long().view(-1).cpu(), biases.long().view(-1).cpu()
    preds = preds.view(-1).cpu()
    if not (preds.shape == labels.shape == biases.shape):
        raise InputError(
            f"preds, labels and biases must have one entry per sample, got {preds.shape}, "
            f"{labels.shape}, {biases.shape}"
        )
    for name, t in (("labels", labels), ("biases", biases)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= c):
            raise InputError(f"{name} must lie in 0..{c - 1} for num_classes={c}, got {int(t.min())}..{int(t.max())}")
    group = labels * c + biases
    total.view(-1).index_add_(0, group, torch.ones_like(group))
    correct.view(-1).index_add_(0, group, (preds == labels).long())


def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _compute(correct: Tensor, total: Tensor) -> Dict[str, Any]:
    c = correct.shape[0]
    acc = [[(int(correct[i, j]) / int(total[i, j])) if int(total[i, j]) else None for j in range(c)] for i in range(c)]
    present = [(i, j) for i in range(c) for j in range(c) if acc[i][j] is not None]
    diag = [acc[i][j] for i, j in present if i == j]
    off = [acc[i][j] for i, j in present if i != j]
    off_mask = ~torch.eye(c, dtype=torch.bool)
    n_off = int(total[off_mask].sum())
    n = int(total.sum())
    return {
        "accuracy": int(correct.sum()) / n if n else None,
        "aligned": _mean(diag),  # type: ignore[arg-type]
        "conflicting": _mean(off),  # type: ignore[arg-type]
        "conflicting_pooled": int(correct[off_mask].sum()) / n_off if n_off else None,
        "unbiased": _mean([acc[i][j] for i, j in present]),  # type: ignore[misc]
        "worst_group": min((acc[i][j] for i, j in present), default=None),  # type: ignore[type-var]
        "group_accuracy": acc,
        "group_counts": total.tolist(),
        "num_samples": n,
    }


def bias_group_accuracy(preds: Tensor, labels: Tensor, biases: Tensor, num_classes: int) -> Dict[str, Any]:
    """All group metrics for one batch of predictions (class indices or logits).

    Example:
        >>> import torch
        >>> m = bias_group_accuracy(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]),
        ...                         torch.tensor([0, 1, 1, 0]), num_classes=2)
        >>> m["accuracy"], m["aligned"], m["conflicting"]
        (0.75, 1.0, 0.5)
    """
    correct = torch.zeros(num_classes, num_classes, dtype=torch.long)
    total = torch.zeros_like(correct)
    _update(correct, total, preds, labels, biases, num_classes)
    return _compute(correct, total)


class BiasGroupAccuracy:
    """Accumulating (class, bias) group accuracy; counts merge across processes by summation.

    Args:
        num_classes: C; labels and biases take values in 0..C-1.
    """

    higher_is_better = True

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise InputError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.correct = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.total = torch.zeros_like(self.correct)

    def update(self, preds: Tensor, labels: Tensor, biases: Tensor) -> None:
        """Add a batch: ``preds`` are logits (N x C) or class indices (N)."""
        _update(self.correct, self.total, preds, labels, biases, self.num_classes)

    def compute(self) -> Dict[str, Any]:
        return _compute(self.correct, self.total)

    def reset(self) -> None:
        self.correct.zero_()
        self.total.zero_()

    def merge(self, other: "BiasGroupAccuracy") -> None:
        """Add another accumulator's counts (same ``num_classes``)."""
        if other.num_classes != self.num_classes:
            raise InputError(f"cannot merge {other.num_classes}-class counts into {self.num_classes}-class counts")
        self.correct += other.correct
        self.total += other.total

    def sync(self) -> None:
        """Sum the counts over all processes of the default group (no-op outside distributed runs)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            both = torch.stack([self.correct, self.total]).to(device)
            dist.all_reduce(both)
            self.correct, self.total = both[0].cpu(), both[1].cpu()

    def state_dict(self) -> Dict[str, Tensor]:
        return {"correct": self.correct.clone(), "total": self.total.clone()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.correct = state["correct"].clone()
        self.total = state["total"].clone()
