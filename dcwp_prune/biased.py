"""Stage 1: train f_D (cross-entropy) and the biased auxiliary f_B jointly on the same batches."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ._runtime import Runtime, run_loop, unpack
from .config import BiasedTrainConfig
from .distributed import wrap_ddp
from .evaluation import per_sample
from .objectives import gce_loss

__all__ = ["make_optimizer", "make_scheduler", "probability_of_label", "train_biased_model"]


def make_optimizer(params: Iterable[Tensor], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with betas (0.9, 0.99) or SGD with momentum 0.9 (the official settings)."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, step: int, gamma: float) -> torch.optim.lr_scheduler.StepLR:
    """StepLR stepped every iteration."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, step), gamma=gamma)


def biased_loss(logits: Tensor, y: Tensor, cfg: BiasedTrainConfig) -> Tensor:
    if cfg.loss == "gce":
        return gce_loss(logits, y, cfg.q)
    if cfg.loss == "ce":
        return F.cross_entropy(logits, y)
    if cfg.loss != "confident_ce":
        raise ValueError(f"biased.loss must be 'gce', 'ce' or 'confident_ce', got {cfg.loss!r}")
    confident = torch.softmax(logits.detach().float(), 1).gather(1, y.view(-1, 1)).squeeze(1) > cfg.eta
    if not bool(confident.any()):  # the official code returns NaN here
        return logits.sum() * 0.0
    return F.cross_entropy(logits[confident], y[confident])


def probability_of_label(model: nn.Module, loader: DataLoader, n: int, runtime: Runtime) -> Tensor:
    """``p(y_n | x_n)`` for every sample (positions 0..n-1 of the loader's dataset, sharded across ranks)."""
    return per_sample(model, loader, n, lambda logits, y: torch.softmax(logits, 1).gather(1, y.view(-1, 1)).squeeze(1),
                      runtime)


def train_biased_model(
    model_b: Optional[nn.Module], batches: Iterator[Any], cfg: BiasedTrainConfig, runtime: Optional[Runtime] = None,
    *, model_d: Optional[nn.Module] = None, score_loader: Optional[DataLoader] = None, num_samples: int = 0,
    pseudo_every: int = 1, resume: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Train the biased model f_B (GCE by default) and, if given, f_D (CE) on the same batches.

    Args:
        model_b: the biased auxiliary model (None: train f_D only).
        batches: an endless iterator of batches (shuffled epochs).
        cfg: schedule and losses; ``biased_*`` fields give f_B its own schedule.
        model_d: the network that DCWP prunes later, trained with plain CE.
        score_loader, num_samples, pseudo_every: an evaluation loader over the training set; with
            ``cfg.loss == "confident_ce"`` (the ensemble mining method) f_B scores every sample every
            ``pseudo_every`` iterations (one epoch) and the average ``1 - p(y|x)`` over these passes
            is returned as ``pseudo_scores`` (one pass at the end if f_B trained less than an epoch).
        resume: a progress checkpoint of this stage.

    Returns:
        ``{"pseudo_scores": Tensor | None}``.
    """
    runtime = runtime or Runtime()
    dev = runtime.device
    iters_d = cfg.iterations if model_d is not None else 0
    iters_b = (cfg.biased_iterations if cfg.biased_iterations is not None else cfg.iterations) if model_b is not None else 0
    total = max(iters_d, iters_b)
    nets: Dict[str, Dict[str, Any]] = {}
    for key, model, iters, prefix in (("d", model_d, iters_d, ""), ("b", model_b, iters_b, "biased_")):
        if model is None or iters == 0:
            continue
        pick = lambda f: getattr(cfg, prefix + f) if getattr(cfg, prefix + f, None) is not None else getattr(cfg, f)  # noqa: E731
        model.train()
        opt = make_optimizer(model.parameters(), pick("optimizer"), pick("lr"), pick("weight_decay"))
        nets[key] = {"model": model, "ddp": runtime.maybe_compile(wrap_ddp(model, runtime.env, dev)), "iters": iters, "opt": opt,
                     "sched": make_scheduler(opt, pick("lr_decay_step"), pick("lr_gamma"))}
    ensemble = cfg.loss == "confident_ce" and "b" in nets and score_loader is not None
    pseudo = torch.zeros(num_samples, dtype=torch.float64) if ensemble else None
    passes = torch.zeros((), dtype=torch.long)
    every = max(1, pseudo_every)
    start = 0
    if resume is not None:
        start = int(resume["iteration"])
        for key, net in nets.items():
            net["model"].load_state_dict(resume[f"model_{key}"])
            net["opt"].load_state_dict(resume[f"opt_{key}"])
            net["sched"].load_state_dict(resume[f"sched_{key}"])
        if pseudo is not None and "pseudo_scores" in resume:
            pseudo = resume["pseudo_scores"].clone()
            passes = resume["pseudo_passes"].clone()

    def step(it: int) -> Dict[str, Tensor]:
        x, y, _, _ = unpack(next(batches))
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        logs = {}
        for key, net in nets.items():
            if it >= net["iters"]:
                continue
            with runtime.autocast():
                logits = net["ddp"](x)
            loss = F.cross_entropy(logits.float(), y) if key == "d" else biased_loss(logits.float(), y, cfg)
            net["opt"].zero_grad(set_to_none=True)
            loss.backward()
            net["opt"].step()
            net["sched"].step()
            logs[f"loss_{key}"] = loss.detach()
        if pseudo is not None and it < iters_b and (it + 1) % every == 0:
            score_pass()
        return logs

    def score_pass() -> None:
        p = probability_of_label(nets["b"]["model"], score_loader, num_samples, runtime)  # type: ignore[arg-type]
        pseudo.add_(1 - p)  # type: ignore[union-attr]
        passes.add_(1)

    def snapshot() -> Dict[str, Any]:
        state: Dict[str, Any] = {}
        for key, net in nets.items():
            state.update({f"model_{key}": net["model"].state_dict(), f"opt_{key}": net["opt"].state_dict(),
                          f"sched_{key}": net["sched"].state_dict()})
        if pseudo is not None:
            state.update(pseudo_scores=pseudo, pseudo_passes=passes)
        return state

    run_loop("biased", total, start, step, runtime, snapshot)
    if pseudo is None:
        return {"pseudo_scores": None}
    if int(passes) == 0:  # f_B trained for less than an epoch: score once at the end
        score_pass()
    return {"pseudo_scores": pseudo / int(passes)}
