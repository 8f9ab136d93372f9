"""Structured (channel) pruning with :class:`DCWPImportance` through Torch-Pruning, with guards.

``prune_channels`` is the safe one-call path: it refuses the models Torch-Pruning cannot trace,
un-freezes weights while the dependency graph is built, protects the layer that produces the
output (whatever its type), checks that the output shape is unchanged and that something was
actually removed, supports iterative schedules and attention models (torchvision ViT), and
returns the pruning history needed to rebuild the model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .._atomic import write_json
from .._validation import check_fraction
from ..errors import InputError
from ..scores import MaskScores, Normalizer
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
    "TARGET_SEARCH_STEPS",
    "check_structured_support",
    "count_macs_params",
    "load_pruning_history",
    "logits_module",
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
    pruning_ratio: Optional[float] = None  # the ratio used (the one found, with ``target_macs_ratio``)

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
            "pruning_ratio": self.pruning_ratio,
            "channels": self.channels,
        }


def count_macs_params(model: nn.Module, example_inputs: Tensor) -> tuple[int, int]:
    """MACs and parameter count (Torch-Pruning's counter, which does not see unstructured zeros)."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """All parameters trainable and the model in eval mode while Torch-Pruning traces (frozen
    weights are invisible to it; train mode would update BatchNorm statistics with the example).

    Flags and the mode are restored; flags by name, as Torch-Pruning replaces the Parameters it prunes.
    """
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    model.requires_grad_(True)
    model.eval()  # tracing must not move BatchNorm statistics (nor fail on a batch of one)
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


def logits_module(model: nn.Module, example_inputs: Tensor) -> nn.Module:
    """The layer that produces the model's output: the weighted layer nearest to it in the autograd graph.

    A final ``nn.Linear`` for most classifiers, SqueezeNet's final ``nn.Conv2d``, a ViT's head. Its
    output channels are the classes, so structured pruning must never remove them.
    """
    owner = {
        id(p): m
        for m in model.modules()
        for p in m.parameters(recurse=False)
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention))
    }
    with _traceable(model):
        out = model(example_inputs)
    out = out if isinstance(out, Tensor) else next(t for t in tp.utils.flatten_as_list(out) if isinstance(t, Tensor))
    frontier, seen = [out.grad_fn], set()
    while frontier:  # breadth first: the nearest weighted layer wins
        nxt = []
        for fn in frontier:
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            variable = getattr(fn, "variable", None)
            if variable is not None and id(variable) in owner:
                return owner[id(variable)]
            nxt += [f for f, _ in fn.next_functions]
        frontier = nxt
    raise RuntimeError("no conv / linear layer produces the model's output; pass ignored_layers explicitly")


def _fix_static_sizes(model: nn.Module) -> None:
    """Sizes a model stores outside its layers, updated after channels were removed (torchvision ViT)."""
    for m in model.modules():
        if type(m).__name__ == "VisionTransformer" and hasattr(m, "conv_proj") and hasattr(m, "hidden_dim"):
            m.hidden_dim = m.conv_proj.out_channels


def _default_round_to(model: nn.Module) -> Optional[int]:
    """Attention keeps its embedding divisible by its head count: round channels to the largest count."""
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    return max(heads) if heads else None


#: Bisection steps of the ``target_macs_ratio`` search: the ratio found is within ``pruning_ratio / 2**10`` of
#: the smallest one that reaches the target, and always reaches it.
TARGET_SEARCH_STEPS = 10


def prune_channels(
    model: nn.Module,
    scores: Union[MaskScores, Dict[str, Tensor]],
    example_inputs: Tensor,
    pruning_ratio: float = 0.5,
    *,
    target_macs_ratio: Optional[float] = None,
    global_pruning: bool = False,
    ignored_layers: Optional[Sequence[nn.Module]] = None,
    round_to: Optional[int] = None,
    iterative_steps: int = 1,
    hard: bool = False,
    min_keep: int = 1,
    normalizer: Optional[Normalizer] = None,
) -> StructuredResult:
    """Remove channels of ``model`` in place, ranked by :class:`DCWPImportance`.

    Args:
        model: a plain model (no prune hooks or parametrizations).
        scores: DCWP scores (logits in :class:`MaskScores`, or FQN-keyed keep-probabilities).
        example_inputs: a batch that ``model`` accepts, used for tracing and MACs.
        pruning_ratio: fraction of channels to remove (Torch-Pruning's ``pruning_ratio``); with
            ``target_macs_ratio``, the largest ratio the search may use.
        target_macs_ratio: prune to at least this MACs reduction (2.0: half the MACs) instead of a fixed
            ratio: the smallest pruning ratio in ``(0, pruning_ratio]`` that reaches it is found by
            bisection on copies of ``model`` (:data:`TARGET_SEARCH_STEPS` trial prunings), then applied.
            How many MACs a channel ratio removes depends on the architecture and, with global
            pruning, on the scores; this states the reduction instead. ``result.pruning_ratio`` is the
            ratio found.
        global_pruning: rank channels within each layer (False, the default: every layer loses the same
            share) or across layers (True). DCWP's keep fraction of a channel falls with its layer's fan-in,
            so one ranking across layers keeps a network's first layers and cuts its last ones (on the
            CMNIST CNN it cost 0.9-3.9 points against the per-layer ranking; README, Results).
        ignored_layers: layers never pruned. The layer that produces the output (found in the
            autograd graph: a final ``nn.Linear``, SqueezeNet's ``nn.Conv2d``, ...) is always added.
        round_to: keep channel counts multiples of this (e.g. 8 for tensor cores); default: the head
            count of the model's attention layers, if any (their embedding must stay divisible by it).
        iterative_steps: reach ``pruning_ratio`` in this many steps; the scores follow the removed
            channels between steps.
        hard, min_keep, normalizer: see :class:`DCWPImportance` (``normalizer="mean"`` ranks each channel
            against its own layer before the global ranking compares layers; global ranking only).

    Returns:
        A :class:`StructuredResult`; ``result.history`` rebuilds the model (``load_pruning_history``).

    Raises:
        UnsupportedModelError: the architecture is in ``UNSUPPORTED_ARCHITECTURES``.
        RuntimeError: nothing was pruned, or the output shape changed.
        ValueError: a ratio out of range, ``target_macs_ratio`` not reached at ``pruning_ratio``, or a
            ``normalizer`` without ``global_pruning`` (it cannot change a ranking within one layer).
    """
    check_fraction(pruning_ratio, "pruning_ratio")
    if pruning_ratio >= 1.0:
        raise InputError(f"pruning_ratio must be < 1 (1.0 would remove every channel), got {pruning_ratio}")
    if iterative_steps < 1:
        raise InputError(f"iterative_steps must be >= 1, got {iterative_steps}")
    if target_macs_ratio is not None and not target_macs_ratio > 1.0:
        raise InputError(f"target_macs_ratio must be > 1 (2.0 = half the MACs), got {target_macs_ratio}")
    if normalizer is not None and not global_pruning:
        raise InputError(
            f"normalizer={normalizer!r} divides each layer's importances before one ranking across "
            "layers; with per-layer ranking (global_pruning=False) it changes nothing: pass "
            "global_pruning=True, or drop the normalizer"
        )
    check_structured_support(model)
    ignored = list(ignored_layers or [])
    head = logits_module(model, example_inputs)
    if head not in ignored:
        ignored.append(head)
    options = dict(
        global_pruning=global_pruning,
        round_to=round_to,
        iterative_steps=iterative_steps,
        hard=hard,
        min_keep=min_keep,
        normalizer=normalizer,
    )
    if target_macs_ratio is not None:
        pruning_ratio = _search_ratio(model, scores, example_inputs, ignored, pruning_ratio, target_macs_ratio, options)
    return _prune_at(model, scores, example_inputs, ignored, pruning_ratio, **options)


def _search_ratio(
    model: nn.Module,
    scores: Union[MaskScores, Dict[str, Tensor]],
    example_inputs: Tensor,
    ignored: List[nn.Module],
    upper: float,
    target: float,
    options: Dict[str, Any],
) -> float:
    """The smallest ratio in ``(0, upper]`` whose pruning reaches ``target`` MACs reduction (on copies).

    Bisection: the MACs reduction grows with the ratio (a larger ratio removes a superset of channels,
    up to ``round_to`` and per-layer limits); the ratio returned is one that was tried and reached it.
    """

    ignored_names = _names_of(model, ignored)

    def reached(ratio: float) -> float:
        trial = copy.deepcopy(model)
        modules = dict(trial.named_modules())
        try:
            result = _prune_at(trial, scores, example_inputs, [modules[n] for n in ignored_names], ratio, **options)
        except _NothingPruned:
            if ratio == upper:  # not a small ratio: nothing is scored
                raise
            return 1.0  # a ratio too small for one channel
        return result.macs_ratio

    top = reached(upper)
    if top < target:
        raise InputError(
            f"target_macs_ratio {target} is not reached at pruning_ratio {upper} (MACs {top:.3f}x "
            "fewer there); raise pruning_ratio (the search's upper bound) or lower the target"
        )
    lo, hi = 0.0, upper
    for _ in range(TARGET_SEARCH_STEPS):
        mid = (lo + hi) / 2
        if reached(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


class _NothingPruned(RuntimeError):
    """Structured pruning removed no channel."""


def _names_of(model: nn.Module, modules: Sequence[nn.Module]) -> List[str]:
    name_of = {id(m): n for n, m in model.named_modules()}
    return [name_of[id(m)] for m in modules if id(m) in name_of]


def _prune_at(
    model: nn.Module,
    scores: Union[MaskScores, Dict[str, Tensor]],
    example_inputs: Tensor,
    ignored: List[nn.Module],
    pruning_ratio: float,
    *,
    global_pruning: bool,
    round_to: Optional[int],
    iterative_steps: int,
    hard: bool,
    min_keep: int,
    normalizer: Optional[Normalizer],
) -> StructuredResult:
    with _traceable(model):
        with torch.no_grad():
            shape_before = _output_shape(model, example_inputs)
        importance = DCWPImportance(scores, model=model, hard=hard, min_keep=min_keep, normalizer=normalizer)
        before_channels = _channels(model)
        macs0, params0 = count_macs_params(model, example_inputs)
        pruner = tp.pruner.BasePruner(
            model,
            example_inputs,
            importance=importance,
            pruning_ratio=pruning_ratio,
            global_pruning=global_pruning,
            ignored_layers=ignored,
            round_to=round_to if round_to is not None else _default_round_to(model),
            iterative_steps=iterative_steps,
        )
        for _ in range(iterative_steps):
            importance.step(pruner)  # pruner.step() on Torch-Pruning's public interactive API
            _fix_static_sizes(model)
        history = [list(h) for h in pruner.pruning_history()]
        with torch.no_grad():
            shape_after = _output_shape(model, example_inputs)
    if shape_after != shape_before:
        raise RuntimeError(
            f"structured pruning changed the output shape {shape_before} -> {shape_after}: a layer that "
            "produces the output was pruned; pass it in ignored_layers"
        )
    if importance.groups_scored == 0 or not history:
        raise _NothingPruned(
            "structured pruning removed nothing: no dependency group had DCWP scores "
            "(are the scored layers all ignored, or the ratio too small for one channel?)"
        )
    macs1, params1 = count_macs_params(model, example_inputs)
    after = _channels(model)
    changed = {k: [v, after[k]] for k, v in before_channels.items() if k in after and after[k] != v}
    return StructuredResult(macs0, macs1, params0, params1, changed, history, pruning_ratio)


def _output_shape(model: nn.Module, example_inputs: Tensor) -> tuple:
    was_training = model.training
    out = model.eval()(example_inputs)
    model.train(was_training)
    return tuple(out.shape) if isinstance(out, Tensor) else tuple(tuple(t.shape) for t in tp.utils.flatten_as_list(out))


def load_pruning_history(model: nn.Module, history: Sequence[Sequence[Any]], example_inputs: Tensor) -> nn.Module:
    """Replay a pruning history on a freshly built (unpruned) ``model``; load the weights afterwards."""
    with _traceable(model):
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        dg.load_pruning_history([[name, bool(is_out), list(idxs)] for name, is_out, idxs in history])
    _fix_static_sizes(model)
    return model


def save_history(path: Union[str, os.PathLike], history: Sequence[Sequence[Any]]) -> None:
    """Write the pruning history as JSON (plain names and indices; loading runs no code)."""
    data = [[str(n), bool(o), [int(i) for i in idxs]] for n, o, idxs in history]
    write_json(path, data, indent=None)


def read_history(path: Union[str, os.PathLike]) -> List[List[Any]]:
    with open(path) as f:
        return json.load(f)
