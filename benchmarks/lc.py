"""Logit Correction (LC; Liu et al., ICLR 2023) on the training engine, as its official code runs it on
Colored MNIST (``benchmarks/peers/lc.md`` has the reading, with file and line references).

Per step, on a batch ``(x, y)``:

1. f_B (trained jointly, GCE ``q = 0.7``, Adam at a tenth of the target's learning rate) predicts the
   pseudo bias ``b = argmax f_B(x)`` from this step alone (softmax temperature 1);
2. ``M`` (classes x classes) keeps, per (label y, pseudo bias b), an EMA (0.995) of f_B's probability of
   the true class, updated sample by sample (a cell's first visit stores the value);
3. group mixup: each sample is mixed with a random same-class sample that f_B gets wrong (a random
   same-class sample when the batch has none), ``x = lam x_i + (1 - lam) x_j`` with one
   ``lam ~ U(0, 0.5)`` per batch, and the priors ``M[:, b]`` are mixed the same way;
4. the target f_D is trained with cross-entropy on its corrected logits ``z(x_mix) + log(prior_mix + 1e-4)``
   (``eta = 1``); it predicts with ``z`` alone.

What differs from the official code, and why: both networks are the harness's backbone (LfF's MLP or
DCWP's CNN, not DisEnt's 2352-100-100-16 MLP with its second division by 255), so every row compares the
same network; the schedule is the group's f_D schedule and batch (not 300 epochs; the batch, 256, is
the same on Colored MNIST), the seed is the cell's (not 222), and the kept model is the last iterate
(the official code has no selection on Colored MNIST and picks on the test split elsewhere).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcwp_prune.training.engine import Engine, Runtime, unpack
from dcwp_prune.training.objectives import gce_loss

__all__ = ["LC_DEFAULTS", "CorrectionMatrix", "corrected_logits", "group_mixup", "train_lc"]

#: The official code's Colored MNIST defaults (train.py): GCE q, f_B's lr factor, EMA of M, prior offset, eta.
LC_DEFAULTS = {
    "q": 0.7,
    "lambda_b": 1.0,
    "lr_b_factor": 0.1,
    "ema": 0.995,
    "offset": 1e-4,
    "eta": 1.0,
    "tau": 1.0,
    "lr": 1e-3,
    "weight_decay": 0.0,
}


class CorrectionMatrix:
    """``M[y, b]``: a running EMA of f_B's probability of the true class y over samples with pseudo bias b."""

    def __init__(self, num_classes: int, alpha: float = LC_DEFAULTS["ema"]) -> None:
        self.alpha = alpha
        self._value = [[0.0] * num_classes for _ in range(num_classes)]  # plain floats: a per-sample loop
        self._visited = [[False] * num_classes for _ in range(num_classes)]

    def update(self, y: Tensor, b: Tensor, p_true: Tensor) -> None:
        """Sample by sample, in batch order (the official ``mv`` rule): a first visit stores ``p``, later ones
        move the cell by ``(1 - alpha)``."""
        a, value, visited = self.alpha, self._value, self._visited
        for yi, bi, pi in zip(y.tolist(), b.tolist(), p_true.tolist()):
            if visited[yi][bi]:
                value[yi][bi] = a * value[yi][bi] + (1 - a) * pi
            else:
                value[yi][bi] = pi
                visited[yi][bi] = True

    @property
    def value(self) -> Tensor:
        return torch.tensor(self._value, dtype=torch.float32)

    @property
    def visited(self) -> Tensor:
        return torch.tensor(self._visited, dtype=torch.bool)

    def prior(self, b: Tensor) -> Tensor:
        """The per-sample prior vector over classes, ``M[:, b_i]`` (not normalised: the Colored MNIST branch)."""
        return self.value[:, b].T

    def state_dict(self) -> Dict[str, Tensor]:
        return {"value": torch.tensor(self._value, dtype=torch.float64), "visited": self.visited}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self._value, self._visited = state["value"].double().tolist(), state["visited"].tolist()


def corrected_logits(
    logits: Tensor, prior: Tensor, eta: float = LC_DEFAULTS["eta"], offset: float = LC_DEFAULTS["offset"]
) -> Tensor:
    """LC's training logits: ``z + log(prior ** eta + offset)`` (the model predicts with ``z`` alone)."""
    return logits + torch.log(prior.clamp_min(0) ** eta + offset)


def group_mixup(
    x: Tensor, y: Tensor, b: Tensor, prior: Tensor, lam: float, gen: torch.Generator
) -> Tuple[Tensor, Tensor]:
    """Each sample mixed with a random same-class sample that f_B misclassifies (``b != y``; drawn with
    replacement), or with a random same-class sample when the batch has none of that class:
    ``lam * own + (1 - lam) * partner`` for the images and the priors. Returns ``(x_mix, prior_mix)``."""
    partner = torch.empty_like(y)
    for k in torch.unique(y).tolist():
        members = torch.nonzero(y == k).flatten()
        minority = members[b[members] != k]
        pool = minority if len(minority) else members
        partner[members] = pool[torch.randint(len(pool), (len(members),), generator=gen)]
    x_mix = lam * x + (1 - lam) * x[partner.to(x.device)]
    prior_mix = lam * prior + (1 - lam) * prior[partner]
    return x_mix, prior_mix


def train_lc(
    model_d: nn.Module,
    model_b: nn.Module,
    batches: Any,
    num_classes: int,
    iterations: int,
    runtime: Runtime,
    seed: int,
    lr: float = LC_DEFAULTS["lr"],
    *,
    on_eval: Optional[Callable[[int], Any]] = None,
    eval_every: int = 0,
) -> CorrectionMatrix:
    """Train f_D (``model_d``) with LC and f_B (``model_b``) with GCE, jointly, for ``iterations`` steps;
    ``on_eval(iteration)`` every ``eval_every`` steps (a :class:`~dcwp_prune.training.selection.BestOnValid`)."""
    d = LC_DEFAULTS
    engine = Engine("lc", runtime, iterations, eval_every=eval_every)
    matrix = CorrectionMatrix(num_classes, d["ema"])
    gen = torch.Generator().manual_seed(seed)
    forwards = {}
    for key, model, model_lr in (("d", model_d, lr), ("b", model_b, lr * d["lr_b_factor"])):
        model.train()
        engine.track(f"model_{key}", model)
        engine.optimizer(key, model.parameters(), "adam", model_lr, d["weight_decay"])
        forwards[key] = engine.prepare(model)
    engine.track("correction", matrix)
    engine.track("mixup_rng", get=gen.get_state, set=gen.set_state)
    dev = runtime.device

    def step(it: int) -> Dict[str, Tensor]:
        x, y, _, _ = unpack(next(batches))
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with runtime.autocast():
            logits_b = forwards["b"](x).float()
        p = torch.softmax(logits_b.detach() / d["tau"], dim=1).cpu()
        b = p.argmax(1)
        y_cpu = y.cpu()
        matrix.update(y_cpu, b, p.gather(1, y_cpu.view(-1, 1)).squeeze(1))
        lam = float(torch.rand((), generator=gen)) * 0.5  # U(0, 0.5): the partner weighs at least half
        x_mix, prior_mix = group_mixup(x, y_cpu, b, matrix.prior(b), lam, gen)
        with runtime.autocast():
            logits_d = forwards["d"](x_mix).float()
        loss_d = F.cross_entropy(corrected_logits(logits_d, prior_mix.to(dev)), y)
        return {
            "loss_d": engine.update(loss_d, "d"),
            "loss_b": engine.update(d["lambda_b"] * gce_loss(logits_b, y, d["q"]), "b"),
        }

    engine.run(step, on_eval)
    return matrix
