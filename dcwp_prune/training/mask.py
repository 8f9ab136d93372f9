"""Stage 3: learn the mask logits on the frozen f_D (weights, biases and BN affine stay fixed)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..models import FeatureTap
from ..options import Options, option
from ..scores import MaskScores
from .engine import Engine, Runtime
from .masking import GumbelVariant, attach_masks, detach_masks, unmasked_state_dict
from .objectives import LAMBDA_CON, Positives, add_sparsity_grad_, sparsity_penalty, task_loss

__all__ = ["MaskLearnConfig", "kept_fraction", "learn_mask_scores", "resolve_mask_options"]


@dataclass(frozen=True)
class MaskLearnConfig(Options):
    """Stage 3: mask logits learned on the frozen f_D."""

    iterations: int = option(2000, ge=0)
    lr: float = option(1e-2, gt=0)
    lambda_sparse: float = option(1e-8, ge=0)
    lambda_con: Optional[float] = option(None, ge=0)  # None: the variant's (official 0.05 = LAMBDA_CON; plus 0.2)
    temperature: float = option(0.07, gt=0)
    upweight: Optional[float] = option(None, gt=0)  # None: 80 (official) or lambda_up (clean)
    init: float = 1.5
    gumbel_temperature: float = option(1.0, gt=0)
    gumbel: Optional[GumbelVariant] = None  # None: decided by the variant
    positives: Optional[Positives] = None
    freeze_bn: bool = False
    eval_every: int = option(500, gt=0)
    include: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()


def resolve_mask_options(cfg: MaskLearnConfig) -> Tuple[str, str]:
    """``(gumbel, positives)`` as ``cfg`` asks; ``None`` means the official code's behaviour."""
    return cfg.gumbel or "official", cfg.positives or "official"


def kept_fraction(scores: MaskScores, warn: bool = True) -> Dict[str, float]:
    """Kept fraction (``logit >= 0``) per layer and ``"total"``; warns when a layer is fully pruned."""
    per_layer = {k: 1.0 - v for k, v in scores.sparsity(per_layer=True).items()}  # type: ignore[union-attr]
    dead = [k for k, v in per_layer.items() if v == 0.0]
    if dead and warn:
        warnings.warn(f"dead layer(s): every weight of {', '.join(dead)} is pruned; lower lambda_sparse", stacklevel=2)
    return {"total": 1.0 - float(scores.sparsity()), **per_layer}  # type: ignore[arg-type]


def learn_mask_scores(
    model: nn.Module,
    batches: Iterator[Any],
    flags_of: Callable[[Sequence[str]], Tensor],
    cfg: MaskLearnConfig,
    runtime: Optional[Runtime] = None,
    *,
    scores: Optional[MaskScores] = None,
    resume: Optional[Dict[str, Any]] = None,
    on_eval: Optional[Callable[[int, MaskScores], Optional[Dict[str, Any]]]] = None,
) -> MaskScores:
    """Learn DCWP mask logits on a trained ``model`` (its weights are not changed).

    Loss per step: ``CE + lambda_sparse * sum(logits) + lambda_con * SupCon(z, y, mined)``, with a fresh
    straight-through Gumbel-sigmoid mask per forward pass. Only the logits are optimised (Adam).
    As in the official code the network stays in train mode, so BN running statistics follow the
    masked network (``cfg.freeze_bn`` keeps them fixed instead).

    Args:
        model: the trained f_D (plain modules).
        batches: endless iterator of batches sampled with mined samples upweighted.
        flags_of: sample ids -> mined bias-conflicting flags (bool tensor).
        cfg: schedule, loss weights and the variant options, all read from here: ``cfg.gumbel``
            (``official``: sigmoid(logit) enters the Gumbel-sigmoid; ``clean``: the raw logit) and
            ``cfg.positives`` (contrastive positives, ``official`` or ``symmetric``); None = official.
        scores: logits to continue from (default: ``init`` for every conv / linear weight).
        on_eval: called with (iteration, scores) every ``cfg.eval_every`` iterations, masks deterministic;
            what it returns joins the one ``mask_eval`` record of that iteration (with ``kept``).

    Returns:
        The learned :class:`MaskScores`; ``model`` is returned to plain modules.
    """
    runtime = runtime or Runtime()
    gumbel, positives = resolve_mask_options(cfg)
    if scores is None:
        scores = MaskScores.from_model(model, include=cfg.include or None, exclude=cfg.exclude or None, init=cfg.init)
    scores.to(runtime.device)
    engine = Engine("mask", runtime, cfg.iterations, eval_every=cfg.eval_every)
    engine.track("model", get=lambda: unmasked_state_dict(model), set=model.load_state_dict)
    engine.track("scores", scores)
    engine.add_optimizer(
        "", torch.optim.Adam(scores.parameters(), lr=cfg.lr)
    )  # torch's default betas, as the official code
    engine.resume(resume)  # before the masks are attached: the model takes plain keys
    attach_masks(model, scores, mode="sample", variant=gumbel, temperature=cfg.gumbel_temperature)  # type: ignore[arg-type]
    model.train()
    if cfg.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    forward = engine.prepare(model, compile=False)  # the masked stage runs eager
    tap = FeatureTap(model)

    def sparsity_grad() -> None:
        add_sparsity_grad_(scores.parameters(), cfg.lambda_sparse)  # the linear term's gradient, in place

    def step(it: int) -> Dict[str, Tensor]:
        loss, logs = task_loss(
            forward,
            tap,
            next(batches),
            flags_of,
            LAMBDA_CON if cfg.lambda_con is None else cfg.lambda_con,
            cfg.temperature,
            positives,
            runtime,
        )
        with torch.no_grad():
            penalty = sparsity_penalty(scores.parameters())
        logs["loss"] = engine.update(loss, before_step=sparsity_grad) + cfg.lambda_sparse * penalty
        return logs

    def evaluate_now(it: int) -> None:
        record: Dict[str, Any] = {"stage": "mask_eval", "iteration": it, "kept": kept_fraction(scores)}
        if on_eval is not None:
            record.update(on_eval(it, scores) or {})
        runtime.log(record)

    try:
        engine.run(step, evaluate_now)
    finally:
        detach_masks(model)
    return scores
