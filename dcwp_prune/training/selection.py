"""Best-on-valid selection: evaluate a model during training, keep the history and the iterate best on valid.

Shared by every stage and method that trains (DCWP's stage 4, f_D in stage 1, the benchmark baselines),
so a method that selects on valid is compared with baselines that were allowed to as well. The
selection reads the ``valid`` split only; ``test`` is recorded beside it, never used to choose.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Dict, List, Optional

from torch import nn

__all__ = ["BestOnValid", "best_summary"]

EvaluateFn = Callable[[nn.Module], Dict[str, Dict[str, Any]]]


def best_summary(record: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``{"valid", "test", "iteration"}`` of an evaluation record (a tracker's ``best``), or None."""
    if record is None:
        return None
    return {"valid": record["valid"], "test": record["test"], "iteration": record["iteration"]}


class BestOnValid:
    """Evaluate ``model`` when called (``tracker(iteration)``); remember the iterate best on valid.

    Args:
        model: the model being trained (evaluated in eval mode, its training mode restored).
        evaluate_fn: ``model -> {"valid": metrics, "test": metrics}``.
        metric: the valid metric to maximise (``accuracy``, ``unbiased``, ``worst_group`` ...).
        keep_state: keep a copy of the best iterate's ``state_dict`` (``best_state``); False keeps metrics only.
        log: called with ``{"stage": stage + "_eval", "iteration", "valid", "test"}`` at each evaluation.
        stage: the name in those records.

    Ties keep the earlier iterate. Track ``state()`` / ``load()`` in an engine so a resumed run keeps its history.
    """

    def __init__(
        self,
        model: nn.Module,
        evaluate_fn: EvaluateFn,
        metric: str = "accuracy",
        *,
        keep_state: bool = True,
        log: Optional[Callable[[Dict[str, Any]], None]] = None,
        stage: str = "",
    ) -> None:
        self.model, self.evaluate_fn, self.metric, self.keep_state = model, evaluate_fn, metric, keep_state
        self.log, self.stage = log, stage
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None
        self.best_state: Optional[Dict[str, Any]] = None

    def __call__(self, iteration: int) -> Dict[str, Any]:
        result = self.evaluate_fn(self.model)
        record = {"iteration": int(iteration), **result}
        self.history.append(record)
        if self.log is not None:
            self.log({"stage": f"{self.stage}_eval", **record})
        score = (result.get("valid") or {}).get(self.metric)
        if score is not None and (self.best is None or score > self.best["valid"][self.metric]):
            self.best = record
            if self.keep_state:
                self.best_state = copy.deepcopy(self.model.state_dict())
        return record

    def state(self) -> Dict[str, Any]:
        """``{"history", "best", "best_state"}`` (what a checkpoint keeps)."""
        return {"history": self.history, "best": self.best, "best_state": self.best_state}

    def load(self, state: Dict[str, Any]) -> None:
        self.history = list(state.get("history") or [])
        self.best = state.get("best")
        self.best_state = state.get("best_state")

    def warn_if_constant(self) -> None:
        """Warn when the selection metric never changed: the best-on-valid iterate is then simply the first."""
        scores = [(r.get("valid") or {}).get(self.metric) for r in self.history]
        if len(scores) > 1 and None not in scores and len(set(scores)) == 1:
            warnings.warn(
                f"the selection metric {self.metric!r} on valid was {scores[0]:.4g} at every one of "
                f"{len(scores)} evaluations, so the best-on-valid iterate is simply the first; select on "
                "another metric (register_dataset(..., select_metric='unbiased'))",
                RuntimeWarning,
                stacklevel=3,
            )

    def summary(self) -> Optional[Dict[str, Any]]:
        """``{"valid", "test", "iteration"}`` of the best iterate, or None before any evaluation."""
        return best_summary(self.best)
