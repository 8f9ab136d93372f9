"""``torch.ao.pruning`` adapter: :class:`DCWPSparsifier`, a sparsifier whose masks are DCWP's.

``torch.ao.pruning`` keeps each mask as a ``FakeSparsity`` parametrization (``W -> mask * W``) and
asks the sparsifier for new masks on ``step()``; ``squash_mask()`` makes the zeros permanent::

    sparsifier = DCWPSparsifier(scores)          # DCWP's rule: keep logit >= 0
    sparsifier.prepare(model, config=None)       # every scored tensor (torch's default: nn.Linear only)
    sparsifier.step()
    sparsifier.squash_mask()

The mask of each tensor is computed exactly as :class:`~dcwp_prune.DCWPMethod` computes it, from the
same logits: ``threshold`` on the keep-probability, or ``sparsity_level`` (the fraction of that
tensor's lowest-scored entries to mask, ties broken by position), per config group as is usual there.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn
from torch.ao.pruning import BaseSparsifier

from .._validation import check_amount, check_fraction, check_scores_tensor, one_of
from ..errors import InputError, InputTypeError, UnknownNameError
from ..scores import MaskScores
from .torch_prune import DCWPMethod

__all__ = ["DCWPSparsifier"]


class DCWPSparsifier(BaseSparsifier):
    """A ``torch.ao.pruning`` sparsifier driven by DCWP mask logits.

    Args:
        scores: :class:`~dcwp_prune.MaskScores` or a ``{tensor_fqn: logits}`` dict (what
            ``safetensors.torch.load_file`` returns for a run's ``scores.safetensors``).
        threshold: keep entries whose keep-probability ``sigmoid(logit)`` is ``>= threshold``.
            Default when neither is given: 0.5, DCWP's ``logit >= 0`` rule.
        sparsity_level: instead, mask this fraction of each tensor's entries, the lowest-scored ones.

    Both may be overridden per group in ``prepare``'s config (``{"tensor_fqn": ..., "sparsity_level": 0.8}``).
    Every configured tensor must have a score of its shape (a missing one is an error, never a silent
    fallback); with ``config=None`` the groups are exactly the scored tensors, convolutions included.

    Example:
        >>> import torch
        >>> lin = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> sparsifier = DCWPSparsifier({"0.weight": torch.tensor([[3.0, -1.0], [0.0, -2.0]])})
        >>> sparsifier.prepare(lin, config=None)
        >>> sparsifier.step()
        >>> lin[0].parametrizations.weight[0].mask.tolist()
        [[1.0, 0.0], [1.0, 0.0]]
    """

    def __init__(
        self,
        scores: Union[MaskScores, Mapping[str, Tensor]],
        threshold: Optional[float] = None,
        sparsity_level: Optional[float] = None,
    ) -> None:
        self._check_rule(threshold, sparsity_level, "")
        if not isinstance(scores, (MaskScores, Mapping)):
            raise InputTypeError(
                f"scores must be MaskScores or a {{tensor_fqn: logits}} dict, got {type(scores).__name__}"
            )
        self.logits: Dict[str, Tensor] = {k: v.detach() for k, v in scores.items()}
        for fqn, value in self.logits.items():
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise InputTypeError(f"scores[{fqn!r}] must be a floating-point tensor of logits")
            if torch.isnan(value).any():
                raise InputError(f"scores[{fqn!r}] contains NaN")
        defaults: Dict[str, Any] = {"threshold": threshold, "sparsity_level": sparsity_level}
        super().__init__(defaults=defaults)

    @staticmethod
    def _check_rule(threshold: Optional[float], sparsity_level: Optional[float], where: str) -> None:
        one_of(threshold=threshold, sparsity_level=sparsity_level)
        if threshold is not None:
            check_fraction(threshold, f"{where}threshold")
        if sparsity_level is not None:
            if isinstance(sparsity_level, int) and not isinstance(sparsity_level, bool):
                raise InputTypeError(
                    f"Expected `{where}sparsity_level` to be a fraction in [0, 1], got {sparsity_level!r}"
                )
            check_amount(sparsity_level, f"{where}sparsity_level")

    def prepare(self, model: nn.Module, config: Optional[List[Dict[str, Any]]] = None) -> None:
        """Attach a ``FakeSparsity`` mask to every configured tensor (``config=None``: every scored one)."""
        if config is None:
            config = [{"tensor_fqn": fqn} for fqn in self.logits]
        named = dict(model.named_parameters())
        groups = []
        for group in config:
            fqn = group.get("tensor_fqn") if isinstance(group, dict) else None
            if not isinstance(fqn, str):
                raise InputError(f"every config entry needs a 'tensor_fqn', got {group!r}")
            fqn = fqn.lstrip(".")
            if fqn not in self.logits:
                raise UnknownNameError(
                    f"no DCWP score for {fqn!r}; scored tensors: {sorted(self.logits)[:8]}"
                    f"{' ...' if len(self.logits) > 8 else ''}"
                )
            if fqn not in named:
                raise UnknownNameError(f"{fqn!r} is not a parameter of the model (or it is already parametrized)")
            check_scores_tensor(fqn, self.logits[fqn].to(named[fqn].device), named[fqn])
            rule = {k: group.get(k) for k in ("threshold", "sparsity_level")}
            self._check_rule(rule["threshold"], rule["sparsity_level"], f"config[{fqn!r}].")
            # a group that sets its own rule replaces the default rule, not adds to it
            groups.append(dict(group, **rule) if any(v is not None for v in rule.values()) else dict(group))
        super().prepare(model, groups)

    def update_mask(
        self,
        module: nn.Module,
        tensor_name: str,
        tensor_fqn: str,  # type: ignore[override]
        threshold: Optional[float] = None,
        sparsity_level: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        logits = self.logits[tensor_fqn.lstrip(".")]
        mask = getattr(module.parametrizations, tensor_name)[0].mask
        if sparsity_level is not None:
            method = DCWPMethod(amount=float(sparsity_level), scores_are_logits=True)
        else:
            method = DCWPMethod(threshold=0.5 if threshold is None else threshold, scores_are_logits=True)
        keep = method.compute_mask(logits.to(mask.device), torch.ones(mask.shape, device=mask.device))
        mask.data.copy_(keep.to(mask.dtype))
