"""Loss terms of DCWP: GCE for the biased model, the supervised contrastive term, the sparsity penalty."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..models import FeatureTap
from ..options import choices
from .engine import Runtime, unpack

__all__ = [
    "LAMBDA_CON",
    "POSITIVES",
    "GCELoss",
    "Positives",
    "add_sparsity_grad_",
    "gce_loss",
    "sparsity_penalty",
    "supcon_loss",
    "task_loss",
]

#: The contrastive weight of the official code (stages 3 and 4), used where a config leaves it unset.
LAMBDA_CON = 0.05

#: Which pairs the contrastive term pulls together: ``official`` (the executed, asymmetric rule of the
#: official code: anchor and positive of the same class, the positive mined) or ``symmetric``.
Positives = Literal["official", "symmetric"]
POSITIVES = choices(Positives)


def gce_loss(
    logits: Tensor, targets: Tensor, q: float = 0.7, form: Literal["official", "textbook"] = "official"
) -> Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018), mean over the batch.

    ``official`` (LfF's and DCWP's code): ``CE * q * p_y^q`` with ``p_y`` detached; its gradient is
    ``q`` times the gradient of the ``textbook`` form ``(1 - p_y^q) / q``.

    Example:
        >>> import torch
        >>> logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> p = torch.softmax(logits, 1)[0, 0]
        >>> float(gce_loss(logits, y, form="textbook")) == float((1 - p ** 0.7) / 0.7)
        True
    """
    if not 0 < q <= 1:
        raise InputError(f"GCE q must be in (0, 1], got {q}")
    p_y = torch.softmax(logits, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    if form == "official":
        weight = p_y.detach().pow(q) * q
        return (F.cross_entropy(logits, targets, reduction="none") * weight).mean()
    if form == "textbook":
        return ((1 - p_y.clamp_min(1e-12).pow(q)) / q).mean()
    raise InputError(f"form must be 'official' or 'textbook', got {form!r}")


class GCELoss(nn.Module):
    """Module form of :func:`gce_loss`."""

    def __init__(self, q: float = 0.7, form: Literal["official", "textbook"] = "official") -> None:
        super().__init__()
        self.q, self.form = q, form

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return gce_loss(logits, targets, self.q, self.form)


def supcon_loss(
    features: Tensor,
    labels: Tensor,
    flags: Tensor,
    temperature: float = 0.07,
    positives: Positives = "official",
) -> Tensor:
    """DCWP's debiased supervised contrastive loss on L2-normalised features (one view).

    Positives of anchor ``i``: same-class samples ``j != i`` with ``flags[j]`` (``official``, the
    executed mask of the reference code) or with ``flags[i] or flags[j]`` (``symmetric``, the
    intended one). The denominator runs over all ``j != i``. Anchors without a positive are
    dropped; with none left the loss is 0 (connected to the graph) instead of NaN.
    """
    if positives not in POSITIVES:
        raise InputError(f"positives must be one of {POSITIVES}, got {positives!r}")
    z = F.normalize(features.float(), dim=1)
    n = z.shape[0]
    sim = z @ z.t() / temperature
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    same = labels.view(-1, 1) == labels.view(1, -1)
    b = flags.bool().view(1, -1)
    pos = same & not_self & (b if positives == "official" else (b | b.t()))
    log_denominator = torch.logsumexp(sim.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
    log_prob = sim - log_denominator
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        return sim.sum() * 0.0
    mean_log_prob = (log_prob * pos).sum(1)[has] / n_pos[has]
    return -mean_log_prob.mean()


def sparsity_penalty(logits: Iterable[Tensor]) -> Tensor:
    """DCWP's sparsity term: the plain sum of all mask logits (linear, unbounded below)."""
    return torch.stack([t.sum() for t in logits]).sum()


@torch.no_grad()
def add_sparsity_grad_(logits: Iterable[Tensor], lambda_sparse: float) -> None:
    """Add the gradient of ``lambda_sparse * sparsity_penalty(logits)`` (the constant ``lambda_sparse``)
    to each ``.grad`` in place: the same update as back-propagating the term, without an expand per tensor.
    """
    for p in logits:
        if p.grad is None:
            p.grad = torch.full_like(p, lambda_sparse)
        else:
            p.grad.add_(lambda_sparse)


def task_loss(
    model: nn.Module,
    tap: FeatureTap,
    batch: Any,
    flags_of: Callable[[Sequence[str]], Tensor],
    lambda_con: float,
    temperature: float,
    positives: str,
    runtime: Runtime,
    bias_model: Optional[nn.Module] = None,
    eta: float = 0.0,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Forward one batch; return the loss and its logged parts (``ce``, ``con``).

    With ``bias_model`` and ``eta > 0`` the cross-entropy is taken on the bias-corrected logits
    ``z + eta * log_softmax(z_B)`` (Logit Correction's idea, ``z_B`` from the frozen biased model): a sample
    the biased model already explains costs little, one it gets wrong costs more. Prediction uses ``z`` alone.
    """
    x, y, _, ids = unpack(batch)
    x, y = x.to(runtime.device, non_blocking=True), y.to(runtime.device, non_blocking=True)
    with tap, runtime.autocast():
        logits = model(x)
    logits = logits.float()
    if bias_model is not None and eta > 0:
        with torch.no_grad(), runtime.autocast():
            prior = F.log_softmax(bias_model(x).float(), dim=1)
        logits = logits + eta * prior
    loss = F.cross_entropy(logits, y)
    logs = {"ce": loss.detach()}
    if lambda_con > 0:
        if ids is None:
            raise InputError("the contrastive term needs sample ids in every batch: (images, labels, biases, ids)")
        con = supcon_loss(tap.features, y, flags_of(ids).to(runtime.device), temperature, positives)  # type: ignore[arg-type]
        loss = loss + lambda_con * con
        logs["con"] = con.detach()
    return loss, logs
