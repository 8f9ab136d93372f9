"""Stage 4: retrain the surviving weights of the pruned network (the mask stays fixed)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from torch import Tensor, nn

from ._runtime import Runtime, run_loop
from ._step import task_loss
from .biased import make_optimizer, make_scheduler
from .config import FinetuneConfig
from .distributed import wrap_ddp
from .models import FeatureTap

__all__ = ["finetune"]


def finetune(
    model: nn.Module, batches: Iterator[Any], flags_of: Callable[[Sequence[str]], Tensor], cfg: FinetuneConfig,
    runtime: Optional[Runtime] = None, *, positives: str = "official",
    evaluate_fn: Optional[Callable[[nn.Module], Dict[str, Dict[str, Any]]]] = None, select_metric: str = "accuracy",
    resume: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Fine-tune a pruned ``model`` (``torch.nn.utils.prune`` masks, or a physically smaller model).

    Loss: ``CE + lambda_con * SupCon``; batches should upweight mined samples by lambda_up. Pruned
    weights stay zero: the ``weight_mask`` buffers are not trained and zero their gradient.

    Args:
        evaluate_fn: called every ``cfg.eval_every`` iterations with the model; returns
            ``{"valid": metrics, "test": metrics}``. The best iterate is chosen on ``valid`` by
            ``select_metric``, never on test.

    Returns:
        ``{"history": [...], "best": {"iteration", "valid", "test"} | None, "best_state": state_dict | None}``.
    """
    runtime = runtime or Runtime()
    dev = runtime.device
    model.train()
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay)
    sched = make_scheduler(opt, cfg.lr_decay_step, cfg.lr_gamma)
    state: Dict[str, Any] = {"history": [], "best": None, "best_state": None}
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        state = {"history": list(resume["history"]), "best": resume["best"], "best_state": resume["best_state"]}
        start = int(resume["iteration"])
    ddp = runtime.maybe_compile(wrap_ddp(model, runtime.env, dev))
    tap = FeatureTap(model)

    def step(it: int) -> Dict[str, Tensor]:
        loss, logs = task_loss(ddp, tap, next(batches), flags_of, cfg.lambda_con, cfg.temperature, positives, runtime)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        logs["loss"] = loss.detach()
        return logs

    def on_eval(it: int) -> None:
        if evaluate_fn is None:
            return
        result = evaluate_fn(model)
        record = {"iteration": it, **result}
        state["history"].append(record)
        runtime.log({"stage": "finetune_eval", **record})
        score = (result.get("valid") or {}).get(select_metric)
        best = state["best"]
        if score is not None and (best is None or score > best["valid"][select_metric]):
            state["best"] = record
            state["best_state"] = copy.deepcopy(model.state_dict())

    def snapshot() -> Dict[str, Any]:
        return {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), **state}

    run_loop("finetune", cfg.iterations, start, step, runtime, snapshot, on_eval, cfg.eval_every)
    return state
