"""``torch.nn.utils.prune`` adapter: :class:`DCWPMethod` and its function twins.

The learned DCWP scores travel through torch's own ``importance_scores=`` argument as
keep-probabilities in [0, 1]::

    prune.global_unstructured(params, pruning_method=DCWPMethod,
                              importance_scores=scores.to_importance_scores(model), amount=0.9)

With no ``amount`` / ``threshold`` the DCWP rule applies: keep ``p >= 0.5`` (logit >= 0).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .._validation import check_amount, check_fraction, check_scores_tensor, n_to_prune, one_of
from ..errors import InputError, InputTypeError, UnknownNameError
from ..scores import MaskScores, resolve_tensor

__all__ = ["DCWPMethod", "dcwp_global_unstructured", "dcwp_unstructured", "pruned_sparsity", "shuffle_masks"]

ParamList = List[Tuple[nn.Module, str]]
ScoresLike = Union[MaskScores, Mapping[str, Tensor], Mapping[Tuple[nn.Module, str], Tensor]]


class DCWPMethod(prune.BasePruningMethod):
    """Unstructured pruning driven by DCWP keep-probabilities (Park et al., CVPR 2023).

    Args:
        amount: prune this many entries (int) or this fraction (float in [0, 1]) with the lowest
            scores; ties broken by position (stable sort).
        threshold: prune entries whose score is below ``threshold`` (``<=`` when ``inclusive`` is
            False). Default when neither is given: 0.5, DCWP's ``logit >= 0`` keep rule.
        scores_are_logits: the scores are raw logits; the threshold is compared in logit space.
        inclusive: keep entries exactly at the threshold (the official rule keeps ``p == 0.5``).
        check_range: refuse probability scores outside [0, 1]. Such scores almost always mean
            that torch fell back to the raw weights because ``importance_scores`` lacked a key.

    Example:
        >>> import torch
        >>> from torch.nn.utils import prune
        >>> lin = torch.nn.Linear(2, 2)
        >>> p = torch.tensor([[0.9, 0.2], [0.5, 0.4]])
        >>> _ = DCWPMethod.apply(lin, "weight", importance_scores=p)
        >>> lin.weight_mask.tolist()
        [[1.0, 0.0], [1.0, 0.0]]
    """

    PRUNING_TYPE = "unstructured"

    def __init__(
        self,
        amount: Optional[Union[int, float]] = None,
        threshold: Optional[float] = None,
        *,
        scores_are_logits: bool = False,
        inclusive: bool = True,
        check_range: bool = True,
    ) -> None:
        one_of(amount=amount, threshold=threshold)
        if amount is not None:
            check_amount(amount)
        elif threshold is None:
            threshold = 0.5
        if threshold is not None and not scores_are_logits:
            check_fraction(threshold, "threshold")
        self.amount = amount
        self.threshold = threshold
        self.scores_are_logits = scores_are_logits
        self.inclusive = inclusive
        self.check_range = check_range

    @staticmethod
    def _cut(threshold: float, scores_are_logits: bool) -> float:
        if not scores_are_logits:
            return float(threshold)
        return float(torch.logit(torch.tensor(float(threshold), dtype=torch.float64)))

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        s = t.detach().reshape(-1).float()
        if torch.isnan(s).any():
            raise InputError("DCWPMethod: importance scores contain NaN")
        if not self.scores_are_logits and self.check_range and s.numel() and (s.min() < 0 or s.max() > 1):
            raise InputError(
                f"DCWPMethod expects keep-probabilities in [0, 1], got values in [{float(s.min()):.4g}, "
                f"{float(s.max()):.4g}]. torch falls back to the raw weights when `importance_scores` lacks a "
                "key: pass a score for every parameter (MaskScores.to_importance_scores), or "
                "scores_are_logits=True for raw logits"
            )
        mask = default_mask.clone(memory_format=torch.contiguous_format)
        flat = mask.view(-1)
        if self.amount is not None:
            k = n_to_prune(self.amount, s.numel())
            if k:
                order = torch.argsort(s, stable=True)
                flat[order[:k]] = 0
        elif self.threshold is not None:
            cut = self._cut(self.threshold, self.scores_are_logits)
            drop = s < cut if self.inclusive else s <= cut
            flat[drop] = 0
        return mask.view_as(t)

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        module: nn.Module,
        name: str,
        amount: Optional[Union[int, float]] = None,
        threshold: Optional[float] = None,
        importance_scores: Optional[Tensor] = None,
        **kwargs: bool,
    ) -> "DCWPMethod":
        """Prune ``module.<name>`` with ``importance_scores`` (keep-probabilities of its shape)."""
        if importance_scores is not None:
            check_scores_tensor(f"{type(module).__name__}.{name}", importance_scores, getattr(module, name))
        return super().apply(
            module, name, amount=amount, threshold=threshold, importance_scores=importance_scores, **kwargs
        )


def dcwp_unstructured(
    module: nn.Module,
    name: str,
    scores: Tensor,
    amount: Optional[Union[int, float]] = None,
    threshold: Optional[float] = None,
    **kwargs: bool,
) -> nn.Module:
    """Per-module twin of :class:`DCWPMethod` (like ``prune.l1_unstructured``); returns ``module``."""
    DCWPMethod.apply(module, name, amount=amount, threshold=threshold, importance_scores=scores, **kwargs)
    return module


def _current_mask(module: nn.Module, name: str) -> Tensor:
    mask = getattr(module, f"{name}_mask", None)
    return mask if isinstance(mask, Tensor) else torch.ones_like(getattr(module, name))


def _params_and_scores(
    model_or_params: Union[nn.Module, Iterable[Tuple[nn.Module, str]]], scores: ScoresLike
) -> Tuple[ParamList, Dict[Tuple[nn.Module, str], Tensor]]:
    if isinstance(model_or_params, nn.Module):
        model = model_or_params
        if isinstance(scores, MaskScores):
            by_fqn: Mapping[str, Tensor] = scores.probs()
        elif all(isinstance(k, str) for k in scores):
            by_fqn = scores  # type: ignore[assignment]
        else:
            raise InputTypeError("with a model, scores must be MaskScores or a dict keyed by tensor FQN ('fc.weight')")
        pairs = {fqn: resolve_tensor(model, fqn) for fqn in by_fqn}
        params = list(pairs.values())
        keyed = {pairs[fqn]: by_fqn[fqn] for fqn in by_fqn}
        names = {pairs[fqn]: fqn for fqn in by_fqn}
    else:
        params = list(model_or_params)
        if isinstance(scores, MaskScores) or any(isinstance(k, str) for k in scores):
            raise InputTypeError("FQN-keyed scores need the model: pass the model instead of a parameter list")
        keyed = dict(scores)  # type: ignore[arg-type]
        names = {p: f"{type(p[0]).__name__}.{p[1]}" for p in params}
        missing = [names[p] for p in params if p not in keyed]
        if missing:
            raise UnknownNameError(
                f"no scores for {len(missing)} of {len(params)} parameters ({', '.join(missing[:5])}); "
                "torch would silently rank those by their raw weights"
            )
        extra = [k for k in keyed if k not in set(params)]
        if extra:
            raise UnknownNameError(f"{len(extra)} score entries name parameters not in the list, e.g. {extra[0][1]!r}")
    if not params:
        raise InputError("nothing to prune: the parameter list / scores are empty")
    for p in params:
        check_scores_tensor(names[p], keyed[p], getattr(*p))
    return params, {p: keyed[p].detach().contiguous() for p in params}


def dcwp_global_unstructured(
    model_or_params: Union[nn.Module, Iterable[Tuple[nn.Module, str]]],
    scores: ScoresLike,
    amount: Optional[Union[int, float]] = None,
    sparsity: Optional[float] = None,
    threshold: Optional[float] = None,
    **kwargs: bool,
) -> ParamList:
    """Validated ``prune.global_unstructured`` with :class:`DCWPMethod`.

    Args:
        model_or_params: a model (scores keyed by FQN, or :class:`MaskScores`) or a list of
            ``(module, name)`` pairs (scores keyed by the same pairs).
        scores: keep-probabilities in [0, 1].
        amount: as torch: entries (int) or fraction (float) *of the still-unpruned entries*.
        sparsity: target *total* fraction of zeros over the scored tensors, counting zeros from
            earlier pruning; converted to the right absolute ``amount``.
        threshold: prune entries with score below it. Default (nothing given): 0.5.

    Returns:
        The ``(module, name)`` pairs that were pruned.

    Raises:
        KeyError: a score is missing or names an unknown tensor.
        ValueError: wrong shapes / devices, NaN, or a target sparsity below the current one.
    """
    one_of(amount=amount, sparsity=sparsity, threshold=threshold)
    params, keyed = _params_and_scores(model_or_params, scores)
    if sparsity is not None:
        check_fraction(sparsity, "sparsity")
        total = sum(getattr(m, n).numel() for m, n in params)
        zeros = sum(int((_current_mask(m, n) == 0).sum()) for m, n in params)
        target = int(round(sparsity * total))
        if target < zeros:
            raise InputError(
                f"target sparsity {sparsity} ({target} zeros) is below the current sparsity "
                f"{zeros / total:.4f} ({zeros} zeros); pruning cannot restore weights"
            )
        amount = target - zeros
    extra = {"amount": amount} if amount is not None else {"threshold": threshold}
    prune.global_unstructured(params, pruning_method=DCWPMethod, importance_scores=keyed, **extra, **kwargs)
    return params


def pruned_sparsity(model: nn.Module, per_layer: bool = False) -> Union[float, Dict[str, float]]:
    """Zero fraction of the mask of every ``torch.nn.utils.prune``-pruned tensor of ``model``."""
    layers: Dict[str, Tuple[int, int]] = {}
    for mname, module in model.named_modules():
        for bname, buf in module.named_buffers(recurse=False):
            if bname.endswith("_mask"):
                fqn = f"{mname}.{bname[:-5]}" if mname else bname[:-5]
                layers[fqn] = (int((buf == 0).sum()), buf.numel())
    if per_layer:
        return {k: z / n for k, (z, n) in layers.items()}
    total = sum(n for _, n in layers.values())
    return sum(z for z, _ in layers.values()) / total if total else 0.0


def shuffle_masks(model: nn.Module, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
    """The random-mask control: every ``torch.nn.utils.prune`` mask of ``model`` re-drawn at random positions,
    keeping its number of kept entries (so each tensor's sparsity, and the total, are unchanged).

    What a learned mask adds over chance is then the difference between the two runs. Returns the
    kept fraction of each shuffled tensor (``{fqn: fraction}``), which equals the one before.
    """
    kept: Dict[str, float] = {}
    for mname, module in model.named_modules():
        for bname, buf in list(module.named_buffers(recurse=False)):
            if not bname.endswith("_mask"):
                continue
            order = torch.randperm(buf.numel(), generator=generator).to(buf.device)
            buf.copy_(buf.reshape(-1)[order].reshape(buf.shape))
            name = bname[:-5]
            if hasattr(module, name + "_orig"):  # the masked tensor, as torch's forward pre-hook recomputes it
                setattr(module, name, getattr(module, name + "_orig") * buf)
            kept[f"{mname}.{bname[:-5]}" if mname else bname[:-5]] = float(buf.float().mean())
    if not kept:
        raise InputError("shuffle_masks: the model has no torch.nn.utils.prune masks; prune it first")
    return kept
