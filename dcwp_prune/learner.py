"""Stage 3: learn the mask logits on the frozen f_D (weights, biases and BN affine stay fixed)."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ._runtime import Runtime, run_loop
from ._step import task_loss
from .config import MaskLearnConfig
from .distributed import wrap_ddp
from .masking import attach_masks, detach_masks, unmasked_state_dict
from .models import FeatureTap
from .objectives import add_sparsity_grad_, sparsity_penalty
from .scores import MaskScores

__all__ = ["kept_fraction", "learn_mask_scores", "resolve_mask_options"]


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
    model: nn.Module, batches: Iterator[Any], flags_of: Callable[[Sequence[str]], Tensor], cfg: MaskLearnConfig,
    runtime: Optional[Runtime] = None, *, scores: Optional[MaskScores] = None, resume: Optional[Dict[str, Any]] = None,
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
    dev = runtime.device
    gumbel, positives = resolve_mask_options(cfg)
    if scores is None:
        scores = MaskScores.from_model(model, include=cfg.include or None, exclude=cfg.exclude or None, init=cfg.init)
    scores.to(dev)
    opt = torch.optim.Adam(scores.parameters(), lr=cfg.lr)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        scores.load_state_dict(resume["scores"])
        opt.load_state_dict(resume["opt"])
        start = int(resume["iteration"])
    attach_masks(model, scores, mode="sample", variant=gumbel, temperature=cfg.gumbel_temperature)  # type: ignore[arg-type]
    model.train()
    if cfg.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    ddp = wrap_ddp(model, runtime.env, dev)
    tap = FeatureTap(model)

    def step(it: int) -> Dict[str, Tensor]:
        loss, logs = task_loss(ddp, tap, next(batches), flags_of, cfg.lambda_con, cfg.temperature, positives, runtime)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        add_sparsity_grad_(scores.parameters(), cfg.lambda_sparse)  # the linear term's gradient, in place
        with torch.no_grad():
            penalty = sparsity_penalty(scores.parameters())
        opt.step()
        logs["loss"] = loss.detach() + cfg.lambda_sparse * penalty
        return logs

    def snapshot() -> Dict[str, Any]:
        return {"model": unmasked_state_dict(model), "scores": scores.state_dict(), "opt": opt.state_dict()}

    def evaluate_now(it: int) -> None:
        record: Dict[str, Any] = {"stage": "mask_eval", "iteration": it, "kept": kept_fraction(scores)}
        if on_eval is not None:
            record.update(on_eval(it, scores) or {})
        runtime.log(record)

    try:
        run_loop("mask", cfg.iterations, start, step, runtime, snapshot, evaluate_now, cfg.eval_every)
    finally:
        detach_masks(model)
    return scores
