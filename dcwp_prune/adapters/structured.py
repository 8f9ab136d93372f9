"""Structured (channel) pruning with :class:`DCWPImportance` through Torch-Pruning, with guards.

``prune_channels`` is the safe one-call path: it refuses the models Torch-Pruning cannot trace,
un-freezes weights while the dependency graph is built, ignores the classifier, checks that
something was actually removed, and returns the pruning history needed to rebuild the model.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .._atomic import write_json
from .._validation import check_fraction
from ..scores import MaskScores
from .torch_pruning import (
    UNSUPPORTED_ARCHITECTURES,
    DCWPImportance,
    UnsupportedModelError,
    check_structured_support,
)

__all__ = [
    "UNSUPPORTED_ARCHITECTURES",
    "UnsupportedModelError",
    "StructuredResult",
    "check_structured_support",
    "count_macs_params",
    "load_pruning_history",
    "prune_channels",
]


@dataclass
class StructuredResult:
    """What ``prune_channels`` did: MACs / params before and after, channels per layer, history."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channels: Dict[str, List[int]] = field(default_factory=dict)  # layer -> [before, after]
    history: List[Any] = field(default_factory=list)

    @property
    def macs_ratio(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    @property
    def params_ratio(self) -> float:
        return self.params_before / max(self.params_after, 1)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_ratio": self.macs_ratio,
            "params_ratio": self.params_ratio,
            "channels": self.channels,
        }


def count_macs_params(model: nn.Module, example_inputs: Tensor) -> tuple[int, int]:
    """MACs and parameter count (Torch-Pruning's counter, which does not see unstructured zeros)."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """All parameters trainable while Torch-Pruning traces (frozen ones are invisible to it).

    Flags are restored by name: Torch-Pruning replaces the Parameters it prunes.
    """
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    model.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, True))
        model.train(was_training)


def _channels(model: nn.Module) -> Dict[str, int]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out


def prune_channels(
    model: nn.Module,
    scores: Union[MaskScores, Dict[str, Tensor]],
    example_inputs: Tensor,
    pruning_ratio: float = 0.5,
    *,
    global_pruning: bool = True,
    ignored_layers: Optional[Sequence[nn.Module]] = None,
    round_to: Optional[int] = None,
    hard: bool = False,
    min_keep: int = 1,
) -> StructuredResult:
    """Remove channels of ``model`` in place, ranked by :class:`DCWPImportance`.

    Args:
        model: a plain model (no prune hooks or parametrizations).
        scores: DCWP scores (logits in :class:`MaskScores`, or FQN-keyed keep-probabilities).
        example_inputs: a batch that ``model`` accepts, used for tracing and MACs.
        pruning_ratio: fraction of channels to remove (Torch-Pruning's ``pruning_ratio``).
        global_pruning: rank channels across layers (True) or within each layer.
        ignored_layers: layers never pruned; default: the final ``nn.Linear`` (the classifier).
        round_to: keep channel counts multiples of this (e.g. 8 for tensor cores).
        hard, min_keep: see :class:`DCWPImportance`.

    Returns:
        A :class:`StructuredResult`; ``result.history`` rebuilds the model (``load_pruning_history``).

    Raises:
        UnsupportedModelError: the architecture is in ``UNSUPPORTED_ARCHITECTURES``.
        RuntimeError: nothing was pruned.
    """
    check_fraction(pruning_ratio, "pruning_ratio")
    if pruning_ratio >= 1.0:
        raise ValueError(f"pruning_ratio must be < 1 (1.0 would remove every channel), got {pruning_ratio}")
    check_structured_support(model)
    if ignored_layers is None:
        ignored_layers = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]  # the classifier
    with _traceable(model):
        importance = DCWPImportance(scores, model=model, hard=hard, min_keep=min_keep)
        before_channels = _channels(model)
        macs0, params0 = count_macs_params(model, example_inputs)
        pruner = tp.pruner.BasePruner(
            model, example_inputs, importance=importance, pruning_ratio=pruning_ratio,
            global_pruning=global_pruning, ignored_layers=list(ignored_layers), round_to=round_to,
            iterative_steps=1,
        )
        pruner.step()
        history = [list(h) for h in pruner.pruning_history()]
    if importance.groups_scored == 0 or not history:
        raise RuntimeError(
            "structured pruning removed nothing: no dependency group had DCWP scores "
            "(are the scored layers all ignored, or the ratio too small for one channel?)"
        )
    macs1, params1 = count_macs_params(model, example_inputs)
    after = _channels(model)
    changed = {k: [v, after[k]] for k, v in before_channels.items() if k in after and after[k] != v}
    return StructuredResult(macs0, macs1, params0, params1, changed, history)


def load_pruning_history(model: nn.Module, history: Sequence[Sequence[Any]], example_inputs: Tensor) -> nn.Module:
    """Replay a pruning history on a freshly built (unpruned) ``model``; load the weights afterwards."""
    with _traceable(model):
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        dg.load_pruning_history([[name, bool(is_out), list(idxs)] for name, is_out, idxs in history])
    return model


def save_history(path: Union[str, os.PathLike], history: Sequence[Sequence[Any]]) -> None:
    """Write the pruning history as JSON (plain names and indices; loading runs no code)."""
    data = [[str(n), bool(o), [int(i) for i in idxs]] for n, o, idxs in history]
    write_json(path, data, indent=None)


def read_history(path: Union[str, os.PathLike]) -> List[List[Any]]:
    with open(path) as f:
        return json.load(f)
