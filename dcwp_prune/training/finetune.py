"""Stage 4: retrain the surviving weights of the pruned network (the mask stays fixed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Literal, Optional, Sequence

from torch import Tensor, nn

from ..errors import InputError
from ..models import FeatureTap
from ..options import Options, choices, option
from .engine import Engine, OptimizerName, Runtime
from .objectives import LAMBDA_CON, Positives, task_loss
from .rewind import Rewind
from .selection import BestOnValid

__all__ = ["SELECTIONS", "FinetuneConfig", "Selection", "finetune"]

#: Which fine-tuning iterate a run keeps: the ``last`` one, or the ``best_valid`` one (best on the valid split).
Selection = Literal["last", "best_valid"]
SELECTIONS = choices(Selection)


@dataclass(frozen=True)
class FinetuneConfig(Options):
    """Stage 4: the surviving weights are retrained with the mask fixed."""

    iterations: int = option(1000, ge=0)
    optimizer: OptimizerName = "adam"
    lr: float = option(5e-4, gt=0)
    weight_decay: float = option(0.0, ge=0)
    lr_decay_step: int = option(10000, gt=0)
    lr_gamma: float = option(0.1, gt=0)
    lambda_con: Optional[float] = option(None, ge=0)  # None: the variant's (official 0.05 = LAMBDA_CON; plus 0.2)
    temperature: float = option(0.07, gt=0)
    upweight: float = option(80.0, gt=0)  # lambda_up
    positives: Optional[Positives] = None  # None: decided by the variant (as mask.positives)
    eval_every: int = option(100, gt=0)
    select: Optional[Selection] = option(
        None,
        flag="--select",
        help="The fine-tuning iterate the run keeps: the last one, or the best on the valid split (default: the "
        "variant's, official last, clean and plus best_valid).",
    )
    rewind: Optional[Rewind] = option(
        None,
        flag="--rewind",
        help="Before fine-tuning, reset the surviving weights (the mask stays): none, stage1 (f_D's stage-1 "
        "snapshot at --rewind-point), fresh (a new initialisation), auto (fine-tune both the trained and the "
        "stage-1-rewound subnetwork, keep the better on valid). Default: the variant's (plus auto, else none).",
    )
    logit_correction: float = option(
        0.0,
        flag="--logit-correction",
        ge=0,
        help="Fine-tuning: cross-entropy on z + ETA * log_softmax(z_B), the stage-1 biased model frozen (Logit "
        "Correction's idea; 0: off, the default).",
    )
    rewind_point: Optional[float] = option(
        None,
        flag="--rewind-point",
        ge=0,
        le=1,
        means="a fraction of f_D's schedule",
        help="--rewind stage1 / auto: the fraction of f_D's schedule to rewind to (0: its initialisation; one of "
        "[biased] snapshots, default 0, 0.05, 0.1, 0.25).",
    )


def finetune(
    model: nn.Module,
    batches: Iterator[Any],
    flags_of: Callable[[Sequence[str]], Tensor],
    cfg: FinetuneConfig,
    runtime: Optional[Runtime] = None,
    *,
    evaluate_fn: Optional[Callable[[nn.Module], Dict[str, Dict[str, Any]]]] = None,
    select_metric: str = "accuracy",
    resume: Optional[Dict[str, Any]] = None,
    bias_model: Optional[nn.Module] = None,
    name: str = "finetune",
) -> Dict[str, Any]:
    """Fine-tune a pruned ``model`` (``torch.nn.utils.prune`` masks, or a physically smaller model).

    Loss: ``CE + lambda_con * SupCon`` (positives: ``cfg.positives``, None = official); batches should
    upweight mined samples by lambda_up. Pruned weights stay zero: the ``weight_mask`` buffers are
    not trained and zero their gradient.

    Args:
        evaluate_fn: called every ``cfg.eval_every`` iterations with the model; returns
            ``{"valid": metrics, "test": metrics}``. The best iterate is chosen on ``valid`` by
            ``select_metric``, never on test.
        bias_model: the frozen biased model f_B, needed when ``cfg.logit_correction > 0`` (the cross-entropy
            is then taken on ``z + eta * log_softmax(z_B)``; the model predicts with ``z`` alone).
        name: the stage name in logs and progress checkpoints (``retrain``: DCWP+'s rewound arm).

    Returns:
        ``{"history": [...], "best": {"iteration", "valid", "test"} | None, "best_state": state_dict | None}``.
    """
    runtime = runtime or Runtime()
    if cfg.logit_correction > 0 and bias_model is None:
        raise InputError(
            f"finetune.logit_correction = {cfg.logit_correction:g} corrects the logits with the biased model's: "
            "pass bias_model= (the stage-1 f_B), or set logit_correction to 0"
        )
    if bias_model is not None:
        bias_model.eval().requires_grad_(False)
    model.train()
    engine = Engine(name, runtime, cfg.iterations, eval_every=cfg.eval_every)
    engine.track("model", model)
    engine.optimizer(
        "",
        model.parameters(),
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        decay_step=cfg.lr_decay_step,
        gamma=cfg.lr_gamma,
    )
    tracker = BestOnValid(model, evaluate_fn, select_metric, log=runtime.log, stage=name) if evaluate_fn else None
    if tracker is not None:
        for key in ("history", "best", "best_state"):  # the checkpoint keys of earlier releases
            engine.track(
                key,
                get=lambda key=key: tracker.state()[key],  # type: ignore[union-attr]
                set=lambda v, key=key: tracker.load({**tracker.state(), key: v}),
            )  # type: ignore[union-attr]
    engine.resume(resume)
    forward = engine.prepare(model)
    tap = FeatureTap(model)
    positives = cfg.positives or "official"

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
            bias_model=bias_model,
            eta=cfg.logit_correction,
        )
        logs["loss"] = engine.update(loss)
        return logs

    engine.run(step, tracker)
    if tracker is None:
        return {"history": [], "best": None, "best_state": None}
    tracker.warn_if_constant()
    return tracker.state()
