"""Stage 4: retrain the surviving weights of the pruned network (the mask stays fixed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Literal, Optional, Sequence

from torch import Tensor, nn

from ..errors import InputError
from ..models import FeatureTap
from ..options import Options, choices
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

    iterations: int = 1000
    optimizer: OptimizerName = "adam"
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_decay_step: int = 10000
    lr_gamma: float = 0.1
    lambda_con: Optional[float] = None  # None: the variant's (official 0.05 = LAMBDA_CON; plus 0.2)
    temperature: float = 0.07
    upweight: float = 80.0  # lambda_up
    positives: Optional[Positives] = None  # None: decided by the variant (as mask.positives)
    eval_every: int = 100
    select: Optional[Selection] = None  # None: decided by the variant (official: last, clean: best_valid)
    rewind: Optional[Rewind] = None  # None: decided by the variant (official / clean: none); see training.rewind
    logit_correction: float = 0.0  # eta: CE on z + eta * log_softmax(z_B) with the stage-1 f_B frozen (0: off)
    rewind_point: Optional[float] = None  # rewind = "stage1": the fraction of f_D's schedule (one of
    # biased.snapshots); None: the variant's (0, f_D's initialisation)


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
