"""DeNetDM (Debiasing by Network Depth Modulation; Sreelatha et al., NeurIPS 2024) on the training engine, as
its official code runs it on Colored MNIST (``benchmarks/peers/denetdm.md`` has the reading, with file and
line references). No bias labels are used.

- Stage 1, a product of experts: a deep and a shallow branch whose features are summed into one shared
  linear head, trained with plain cross-entropy (Adam, lr 1e-3, weight decay 1e-3). The deep branch
  learns the bias (it is the bias expert by construction), the shallow one the rest.
- Stage 2: a fresh target branch trained next to the frozen deep branch through the head (initialised
  from stage 1's and trained), cross-entropy on ``head(target(x) + deep(x))``, plus distillation from
  the stage-1 shallow branch with its head (soft-target cross-entropy at T = 2, times T^2, weights 1
  and 1; Adam, lr 1e-3, no weight decay). The model kept is the target with the head alone.

How the branches map onto the harness's backbones (the official code has an MLP only, with target and
deep branch at 4 hidden layers and the shallow one at 2): the target is the backbone itself (its layers
before ``fc``, and ``fc`` as the shared head), the deep branch is the same architecture, the shallow
branch two layers shallower with the same feature width: LfF's MLP (3 hidden layers) -> one hidden layer
of 100; DCWP's CNN (3 convolutions, global pooling, 256 features) -> one convolution (k4 s2, 256
channels, BN, ReLU) and global pooling. What else differs from the official code, and why: the
schedule of each stage is the group's f_D schedule and batch (not 100 epochs at batch 64), the frozen
deep branch is kept in eval mode (the CNN's BatchNorm statistics stay frozen too; the official MLP has
none), the seed is the cell's (the official one is random), and each stage keeps its last iterate (the
official code keeps the epoch best on the test split in both stages).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcwp_prune.training.engine import Engine, Runtime, unpack

__all__ = [
    "DENETDM_DEFAULTS",
    "Experts",
    "body_of",
    "distillation_loss",
    "shallow_branch",
    "train_experts",
    "train_target",
]

#: The official Colored MNIST settings (config.py): learning rates, weight decays, temperature, loss weights.
DENETDM_DEFAULTS = {
    "lr": 1e-3,
    "weight_decay_1": 1e-3,
    "weight_decay_2": 0.0,
    "temperature": 2.0,
    "w_poe": 1.0,
    "w_dist": 1.0,
}


def body_of(model: nn.Module) -> Tuple[nn.Module, nn.Linear]:
    """``(body, head)``: ``model`` with its classifier ``fc`` replaced by the identity, and that classifier."""
    head = model.fc
    if not isinstance(head, nn.Linear):
        raise ValueError(f"DeNetDM needs a backbone with an nn.Linear `fc` head, got {type(model).__name__}")
    model.fc = nn.Identity()
    return model, head


def shallow_branch(arch: str, features: int) -> nn.Module:
    """The branch two layers shallower than ``arch`` with the same feature width (see the module's docstring)."""
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, features), nn.ReLU(inplace=True))
    if arch == "cnn":
        return nn.Sequential(
            nn.Conv2d(3, features, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    raise ValueError(f"DeNetDM's shallow branch is defined for the Colored MNIST backbones mlp and cnn, got {arch!r}")


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """The official soft-target cross-entropy ``-sum softmax(t / T) log_softmax(s / T) / B * T^2``."""
    soft = torch.softmax(teacher / temperature, dim=1)
    return -(soft * F.log_softmax(student / temperature, dim=1)).sum(1).mean() * temperature**2


class Experts(nn.Module):
    """Stage 1: ``head(shallow(x) + deep(x))``; ``teacher(x) = head(shallow(x))`` is stage 2's distillation target."""

    def __init__(self, shallow: nn.Module, deep: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.shallow, self.deep, self.head = shallow, deep, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.shallow(x) + self.deep(x))

    def teacher(self, x: Tensor) -> Tensor:
        return self.head(self.shallow(x))


def train_experts(make_model: Any, arch: str, batches: Any, iterations: int, runtime: Runtime) -> Experts:
    """Stage 1: the deep branch (``make_model()``'s body), the shallow branch and the shared head (``make_model()``'s
    ``fc``), trained as a product of experts with plain cross-entropy."""
    d, dev = DENETDM_DEFAULTS, runtime.device
    deep, head = body_of(make_model())
    experts = Experts(shallow_branch(arch, head.in_features), deep, head).to(dev)
    engine = Engine("denetdm-1", runtime, iterations)
    engine.track("experts", experts)
    engine.optimizer("", experts.parameters(), "adam", d["lr"], d["weight_decay_1"])
    forward = engine.prepare(experts)
    experts.train()

    def step(it: int) -> Dict[str, Tensor]:
        x, y, _, _ = unpack(next(batches))
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with runtime.autocast():
            logits = forward(x).float()
        return {"loss": engine.update(F.cross_entropy(logits, y))}

    engine.run(step)
    experts.eval()
    for p in experts.parameters():
        p.requires_grad_(False)
    return experts


def train_target(
    experts: Experts,
    make_model: Any,
    batches: Any,
    iterations: int,
    runtime: Runtime,
    *,
    selector: Optional[Callable[[nn.Module], Callable[[int], Any]]] = None,
    eval_every: int = 0,
) -> nn.Module:
    """Stage 2: a fresh ``make_model()`` body beside the frozen deep branch, through a copy of the stage-1 head that
    trains, plus distillation from ``experts.teacher``. Returns the target with that head as its ``fc``.

    ``selector(model)``: an evaluation callback made for the predicting model (the body, then the head), called
    every ``eval_every`` steps (a :class:`~dcwp_prune.training.selection.BestOnValid`)."""
    d, dev = DENETDM_DEFAULTS, runtime.device
    target, _ = body_of(make_model())
    target, head = target.to(dev), copy.deepcopy(experts.head).requires_grad_(True)
    engine = Engine("denetdm-2", runtime, iterations, eval_every=eval_every)
    engine.track("target", target)
    engine.track("head", head)
    on_eval = selector(nn.Sequential(target, head)) if selector is not None else None
    engine.optimizer("", list(target.parameters()) + list(head.parameters()), "adam", d["lr"], d["weight_decay_2"])
    target.train()

    def step(it: int) -> Dict[str, Tensor]:
        x, y, _, _ = unpack(next(batches))
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.no_grad(), runtime.autocast():
            bias_features = experts.deep(x).float()
            teacher = experts.teacher(x).float()
        with runtime.autocast():
            features = target(x).float()
        poe = F.cross_entropy(head(features + bias_features), y)
        dist = distillation_loss(head(features), teacher, d["temperature"])
        return {
            "loss": engine.update(d["w_poe"] * poe + d["w_dist"] * dist),
            "poe": poe.detach(),
            "dist": dist.detach(),
        }

    engine.run(step, on_eval)
    target.fc = head  # the kept model: the target with the head alone, the backbone's own architecture
    return target
