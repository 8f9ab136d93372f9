"""Stage 1: train f_D (cross-entropy) and the biased auxiliary f_B jointly on the same batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..errors import InputError
from ..options import Options, choices, option
from .engine import Engine, OptimizerName, Runtime, unpack
from .objectives import gce_loss
from .passes import per_sample
from .selection import BestOnValid, EvaluateFn

__all__ = [
    "BIASED_LOSSES",
    "BiasedLoss",
    "BiasedTrainConfig",
    "biased_loss",
    "probability_of_label",
    "snapshot_key",
    "train_biased_model",
]

#: f_B's loss: ``gce`` (LfF / DCWP), ``ce``, or ``confident_ce`` (CE on samples with p(y|x) > eta,
#: the ensemble mining method's filter).
BiasedLoss = Literal["gce", "ce", "confident_ce"]
BIASED_LOSSES = choices(BiasedLoss)


@dataclass(frozen=True)
class BiasedTrainConfig(Options):
    """Stage 1: f_D (CE) and the biased f_B, trained jointly on the same batches.

    The ``biased_*`` fields override f_B's schedule (the CMNIST protocol mines with an SGD f_B
    while f_D is trained with Adam); None means "same as f_D".
    """

    iterations: int = option(10000, ge=0)
    optimizer: OptimizerName = "adam"
    lr: float = option(1e-3, gt=0)
    weight_decay: float = option(0.0, ge=0)
    lr_decay_step: int = option(10000, gt=0)
    lr_gamma: float = option(0.5, gt=0)
    loss: BiasedLoss = "gce"  # f_B loss; confident_ce is the ensemble method's eta filter
    q: float = option(0.7, gt=0, le=1)
    eta: float = option(0.05, ge=0)
    biased_iterations: Optional[int] = option(None, ge=0)
    biased_optimizer: Optional[OptimizerName] = None
    biased_lr: Optional[float] = option(None, gt=0)
    biased_weight_decay: Optional[float] = option(None, ge=0)
    biased_lr_decay_step: Optional[int] = option(None, gt=0)
    biased_lr_gamma: Optional[float] = option(None, gt=0)
    biased_length: Optional[float] = option(
        None,
        flag="--fb-length",
        gt=0,
        means="a multiple of f_B's iterations",
        help="f_B trained this many times its schedule's iterations (its learning-rate decay step unchanged). "
        "Default: the variant's (plus 2, else 1).",
    )
    # f_D's weights kept at these fractions of its schedule (0: its initialisation), for rewinding before stage 4
    snapshots: Tuple[float, ...] = (0.0, 0.05, 0.1, 0.25)

    def snapshot_iterations(self) -> Dict[str, int]:
        """``{"0.1": iteration}`` of :attr:`snapshots` on f_D's schedule (the state after that many updates)."""
        return {snapshot_key(f): int(round(f * self.iterations)) for f in self.snapshots}

    def schedule(self, net: str) -> Tuple[int, str, float, float, int, float]:
        """``(iterations, optimizer, lr, weight_decay, lr_decay_step, lr_gamma)`` of ``net`` (``d`` or ``b``)."""

        def pick(f: str) -> Any:
            own = getattr(self, "biased_" + f) if net == "b" else None
            return own if own is not None else getattr(self, f)

        out = [pick(f) for f in ("iterations", "optimizer", "lr", "weight_decay", "lr_decay_step", "lr_gamma")]
        if net == "b" and self.biased_length is not None:  # None here: 1 (the run layer resolves the variant's)
            out[0] = int(round(out[0] * self.biased_length))
        return tuple(out)  # type: ignore[return-value]


def snapshot_key(fraction: float) -> str:
    """The name of f_D's stage-1 snapshot at ``fraction`` of its schedule (``0.1`` -> ``"0.1"``)."""
    return f"{float(fraction):g}"


def biased_loss(logits: Tensor, y: Tensor, cfg: BiasedTrainConfig) -> Tensor:
    """f_B's loss as ``cfg.loss`` names it."""
    if cfg.loss == "gce":
        return gce_loss(logits, y, cfg.q)
    if cfg.loss == "ce":
        return F.cross_entropy(logits, y)
    if cfg.loss != "confident_ce":
        raise InputError(f"biased.loss must be one of {BIASED_LOSSES}, got {cfg.loss!r}")
    confident = torch.softmax(logits.detach().float(), 1).gather(1, y.view(-1, 1)).squeeze(1) > cfg.eta
    if not bool(confident.any()):  # the official code returns NaN here
        return logits.sum() * 0.0
    return F.cross_entropy(logits[confident], y[confident])


def probability_of_label(model: nn.Module, loader: DataLoader, n: int, runtime: Runtime) -> Tensor:
    """``p(y_n | x_n)`` for every sample (positions 0..n-1 of the loader's dataset, sharded across ranks)."""
    return per_sample(
        model, loader, n, lambda logits, y: torch.softmax(logits, 1).gather(1, y.view(-1, 1)).squeeze(1), runtime
    )


def train_biased_model(
    model_b: Optional[nn.Module],
    batches: Iterator[Any],
    cfg: BiasedTrainConfig,
    runtime: Optional[Runtime] = None,
    *,
    model_d: Optional[nn.Module] = None,
    score_loader: Optional[DataLoader] = None,
    num_samples: int = 0,
    pseudo_every: int = 1,
    resume: Optional[Dict[str, Any]] = None,
    evaluate_fn: Optional[EvaluateFn] = None,
    eval_every: int = 0,
    select_metric: str = "accuracy",
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
        evaluate_fn, eval_every, select_metric: f_D evaluated every ``eval_every`` iterations of its schedule
            (:class:`~dcwp_prune.training.selection.BestOnValid`, metrics only): its best-on-valid iterate, the
            ERM baseline's selection. Evaluation does not change training.

    Returns:
        ``{"pseudo_scores": Tensor | None, "best_d": {"valid", "test", "iteration"} | None,
        "snapshots": {snapshot_key(fraction): f_D state_dict}}`` (``cfg.snapshots`` of f_D, on CPU).
    """
    runtime = runtime or Runtime()
    nets: Dict[str, Tuple[nn.Module, nn.Module, int]] = {}  # key -> (model, its training forward, iterations)
    schedules = {key: cfg.schedule(key) for key, model in (("d", model_d), ("b", model_b)) if model is not None}
    total = max((s[0] for s in schedules.values()), default=0)
    engine = Engine("biased", runtime, total)
    for key, model in (("d", model_d), ("b", model_b)):
        if key not in schedules or schedules[key][0] == 0:
            continue
        iters, optimizer, lr, weight_decay, decay_step, gamma = schedules[key]
        model.train()  # type: ignore[union-attr]
        engine.track(f"model_{key}", model)
        engine.optimizer(key, model.parameters(), optimizer, lr, weight_decay, decay_step=decay_step, gamma=gamma)  # type: ignore[union-attr]
        nets[key] = (model, engine.prepare(model), iters)  # type: ignore[arg-type]
    iters_b = nets["b"][2] if "b" in nets else 0
    ensemble = cfg.loss == "confident_ce" and "b" in nets and score_loader is not None
    pseudo = torch.zeros(num_samples, dtype=torch.float64) if ensemble else None
    passes = torch.zeros((), dtype=torch.long)
    if pseudo is not None:
        engine.track("pseudo_scores", get=lambda: pseudo, set=pseudo.copy_)
        engine.track("pseudo_passes", get=lambda: passes, set=passes.copy_)
    iters_d = nets["d"][2] if "d" in nets else 0
    tracker = None
    if evaluate_fn is not None and eval_every > 0 and "d" in nets:
        tracker = BestOnValid(
            nets["d"][0], evaluate_fn, select_metric, keep_state=False, log=runtime.log, stage="biased_d"
        )
        engine.track("eval_d", get=tracker.state, set=tracker.load, optional=True)
    at: Dict[int, List[str]] = {}  # iteration -> the snapshot names taken there (short schedules share one)
    for key, it in cfg.snapshot_iterations().items() if "d" in nets else ():
        at.setdefault(it, []).append(key)
    snapshots: Dict[str, Dict[str, Tensor]] = {}
    engine.track("snapshots_d", get=lambda: snapshots, set=snapshots.update, optional=True)
    engine.resume(resume)
    every = max(1, pseudo_every)

    def snapshot(it: int) -> None:
        missing = [key for key in at.get(it, ()) if key not in snapshots]
        if missing:
            state = {k: v.detach().clone().cpu() for k, v in nets["d"][0].state_dict().items()}
            snapshots.update({key: state for key in missing})

    dev = runtime.device

    def score_pass() -> None:
        p = probability_of_label(nets["b"][0], score_loader, num_samples, runtime)  # type: ignore[arg-type]
        pseudo.add_(1 - p)  # type: ignore[union-attr]
        passes.add_(1)

    def step(it: int) -> Dict[str, Tensor]:
        x, y, _, _ = unpack(next(batches))
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        snapshot(it)
        logs = {}
        for key, (_, forward, iters) in nets.items():
            if it >= iters:
                continue
            with runtime.autocast():
                logits = forward(x).float()
            loss = F.cross_entropy(logits, y) if key == "d" else biased_loss(logits, y, cfg)
            logs[f"loss_{key}"] = engine.update(loss, key)
        if tracker is not None and it + 1 == iters_d < engine.iterations and iters_d % eval_every:
            tracker(iters_d)  # f_D's last iterate, where f_B trains on after it
        if pseudo is not None and it < iters_b and (it + 1) % every == 0:
            score_pass()
        return logs

    def on_eval(done: int) -> None:  # every eval_every iterations of the stage and at its end, f_D's part only
        if tracker is not None and done <= iters_d:
            tracker(done)

    engine.eval_every = eval_every if tracker is not None else 0
    engine.run(step, on_eval)
    snapshot(iters_d)  # a fraction of 1.0 (or a rounding onto the last step): the trained f_D
    out: Dict[str, Any] = {
        "pseudo_scores": None,
        "best_d": tracker.summary() if tracker else None,
        "snapshots": snapshots,
    }
    if pseudo is not None:
        if int(passes) == 0:  # f_B trained for less than an epoch: score once at the end
            score_pass()
        out["pseudo_scores"] = pseudo / int(passes)
    return out
