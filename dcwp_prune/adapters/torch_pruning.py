"""Torch-Pruning adapter: :class:`DCWPImportance`, channel importance from DCWP weight scores.

The importance of a channel is the fraction of its coupled weights that DCWP keeps: for every
conv / linear layer in a dependency group, the keep-probabilities of the weights that the channel
removes (output rows, input columns, grouped / depthwise / transposed conventions, flatten
expansions) are summed and divided by their count.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function as F

from ..scores import MaskScores, resolve_tensor

__all__ = [
    "DCWPImportance",
    "DCWPScoreShapeError",
    "UNSUPPORTED_ARCHITECTURES",
    "UnsupportedModelError",
    "check_structured_support",
]

_OUT_FNS = (F.prune_conv_out_channels, F.prune_linear_out_channels)
_IN_FNS = (F.prune_conv_in_channels, F.prune_linear_in_channels)
_DW_FNS = (F.prune_depthwise_conv_out_channels, F.prune_depthwise_conv_in_channels)
_BONUS = 2.0  # keep-fractions lie in [0, 1]; +2 puts the protected channels above every other one
# Torch-Pruning's global cut prunes every channel with ``imp <= threshold``, so exact ties over-prune.
# A float64 offset far below any meaningful score difference makes all channels distinct; ties are
# then broken by (group order, channel position), earlier first, like a stable sort.
_TIE_STEP = 2.0**-40


#: Module class name -> why Torch-Pruning (1.6) cannot prune it structurally.
UNSUPPORTED_ARCHITECTURES: Dict[str, str] = {
    "ShuffleNetV2": "its functional channel shuffle (view/transpose) is not traceable as a channel mapping",
    "SwinTransformer": "patch merging and shifted-window attention need custom Torch-Pruning pruners",
    "MaxVit": "its relative-position attention blocks need custom Torch-Pruning pruners",
    "VisionTransformer": "torchvision's ViT reads static head/hidden sizes; not supported by dcwp-prune yet",
    "RAFT": "optical-flow correlation volumes are not channel-prunable",
}


class UnsupportedModelError(ValueError):
    """The architecture cannot be pruned structurally (see ``UNSUPPORTED_ARCHITECTURES``)."""


def check_structured_support(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` naming the reason if ``model`` is in the unsupported list."""
    for module in model.modules():
        reason = UNSUPPORTED_ARCHITECTURES.get(type(module).__name__)
        if reason:
            raise UnsupportedModelError(
                f"structured pruning does not support {type(module).__name__}: {reason}. "
                f"Use unstructured pruning (DCWPMethod) for this model; unsupported: "
                f"{', '.join(sorted(UNSUPPORTED_ARCHITECTURES))}"
            )


class DCWPScoreShapeError(ValueError):
    """A score tensor no longer matches its layer's weight (usually: iterative pruning)."""


def _conv_rows(layer: nn.Module, p: Tensor, out: bool) -> Tensor:
    """Per-channel rows of ``p`` (shaped like a conv weight) along the pruned dimension, exactly."""
    g = layer.groups
    if not layer.transposed:  # weight: (out, in/g, *k)
        if out or g == 1:
            return p.flatten(1) if out else p.transpose(0, 1).flatten(1)
        cout_g = p.shape[0] // g
        q = p.reshape(g, cout_g, p.shape[1], -1).permute(0, 2, 1, 3)  # (g, in/g, out/g, k)
        return q.reshape(g * p.shape[1], -1)
    # transposed weight: (in, out/g, *k)
    if not out or g == 1:
        return p.flatten(1) if not out else p.transpose(0, 1).flatten(1)
    cin_g = p.shape[0] // g
    q = p.reshape(g, cin_g, p.shape[1], -1).permute(0, 2, 1, 3)  # (g, out/g, in/g, k)
    return q.reshape(g * p.shape[1], -1)


def _rows(layer: nn.Module, fn: object, p: Tensor) -> Optional[Tensor]:
    if fn in _DW_FNS:
        return p.flatten(1)
    if fn not in _OUT_FNS and fn not in _IN_FNS:
        return None  # BN, LN, ...: DCWP scores only conv / linear weights
    out = fn in _OUT_FNS
    if isinstance(layer, nn.Linear):
        return p if out else p.t()
    return _conv_rows(layer, p, out)


def _channel_groups(group: object) -> int:
    """The channel grouping Torch-Pruning averages over (grouped conv, GroupNorm)."""
    ch = 1
    for item in group.items:  # type: ignore[attr-defined]
        layer = item.dep.layer
        if isinstance(layer, nn.modules.conv._ConvNd) and 1 < layer.groups != layer.out_channels:
            ch = max(ch, layer.groups)
        elif isinstance(layer, nn.GroupNorm):
            ch = max(ch, layer.num_groups)
    return ch


class DCWPImportance(tp.importance.Importance):
    """Channel importance = fraction of the coupled weights that DCWP keeps (Park et al., CVPR 2023).

    Args:
        scores: :class:`MaskScores` (logits), or a dict of weight-shaped tensors keyed by tensor
            FQN (``"layer1.0.conv1.weight"``, needs ``model``) or by module.
        model: resolves FQN keys; defaults to the model the :class:`MaskScores` were built on.
        scores_are_logits: whether dict values are logits; default: True for :class:`MaskScores`,
            False (keep-probabilities in [0, 1]) for dicts.
        hard: use the binary keep mask (``p >= threshold``) instead of probabilities.
        threshold: the keep threshold for ``hard``.
        min_keep: channels per group protected from pruning (Torch-Pruning silently skips a
            group whose channels all fall below the global cut; this keeps every layer alive).

    The scores are resolved to module objects once, here, so the model must be unpruned and
    trainable now: frozen weights (``requires_grad=False``) make Torch-Pruning's autograd tracing
    find no layer and silently prune nothing, so they are refused.

    Example:
        >>> import torch, torch_pruning as tp
        >>> from torch import nn
        >>> from dcwp_prune import DCWPImportance, MaskScores
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> scores = MaskScores.from_model(net)
        >>> with torch.no_grad():
        ...     scores["0.weight"][:4] = -3.0  # DCWP drops the first 4 filters
        >>> pruner = tp.pruner.BasePruner(net, torch.randn(1, 3, 8, 8), importance=DCWPImportance(scores),
        ...                               pruning_ratio=0.5, ignored_layers=[net[2]])
        >>> pruner.step()
        >>> net[0].out_channels
        4
    """

    def __init__(
        self,
        scores: Union[MaskScores, Mapping[str, Tensor], Mapping[nn.Module, Tensor]],
        *,
        model: Optional[nn.Module] = None,
        scores_are_logits: Optional[bool] = None,
        hard: bool = False,
        threshold: float = 0.5,
        min_keep: int = 1,
    ) -> None:
        if min_keep < 0:
            raise ValueError(f"min_keep must be >= 0, got {min_keep}")
        self.hard = hard
        self.threshold = float(threshold)
        self.min_keep = int(min_keep)
        self.groups_scored = 0
        self._tick = 0
        self._keep: Dict[nn.Module, Tensor] = {}
        self._names: Dict[nn.Module, str] = {}
        bound = model if model is not None else (scores.model if isinstance(scores, MaskScores) else None)
        if bound is not None:
            check_structured_support(bound)
        for name, module, value, logits in self._resolve(scores, model, scores_are_logits):
            weight = getattr(module, "weight", None)
            if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(value.shape):
                shape = tuple(weight.shape) if isinstance(weight, Tensor) else None
                raise DCWPScoreShapeError(f"scores for {name!r} have shape {tuple(value.shape)}, the weight {shape}")
            self._check_module(name, module)
            p = torch.sigmoid(value.detach().float()) if logits else value.detach().float()
            if not logits and (p.min() < 0 or p.max() > 1):
                raise ValueError(
                    f"scores for {name!r} are outside [0, 1]; pass scores_are_logits=True for raw logits"
                )
            self._keep[module] = (p >= self.threshold).float() if hard else p
            self._names[module] = name

    @staticmethod
    def _resolve(
        scores: object, model: Optional[nn.Module], scores_are_logits: Optional[bool]
    ) -> list[Tuple[str, nn.Module, Tensor, bool]]:
        if isinstance(scores, MaskScores):
            model = model if model is not None else scores.model
            logits = True if scores_are_logits is None else scores_are_logits
            values: Mapping = {k: p.detach() for k, p in scores.items()}
        elif isinstance(scores, Mapping):
            logits = bool(scores_are_logits)
            values = scores
        else:
            raise TypeError(f"scores must be MaskScores or a dict of tensors, got {type(scores).__name__}")
        if not values:
            raise ValueError("DCWPImportance got no scores")
        out = []
        for key, value in values.items():
            if isinstance(key, nn.Module):
                out.append((type(key).__name__, key, value, logits))
                continue
            if model is None:
                raise ValueError("scores keyed by FQN need the model: DCWPImportance(scores, model=model)")
            module, tensor_name = resolve_tensor(model, key)
            if tensor_name != "weight":
                raise ValueError(f"DCWPImportance scores weights only, got {key!r}")
            out.append((key, module, value, logits))
        return out

    @staticmethod
    def _check_module(name: str, module: nn.Module) -> None:
        if hasattr(module, "weight_orig") or hasattr(module, "parametrizations"):
            raise RuntimeError(
                f"{name!r} still carries a torch.nn.utils.prune hook or a parametrization; Torch-Pruning "
                "replaces weight Parameters and would break it. Call prune.remove / detach_masks first"
            )
        if not module.weight.requires_grad:
            raise RuntimeError(
                f"{name!r} has a frozen weight (requires_grad=False): Torch-Pruning traces the model with "
                "autograd and would find no layer, pruning nothing. Call model.requires_grad_(True) first"
            )

    @torch.no_grad()
    def __call__(self, group: object, **kwargs: object) -> Optional[Tensor]:
        items = group.items  # type: ignore[attr-defined]
        root = items[0].root_idxs if items[0].root_idxs is not None else items[0].idxs
        pos = {r: i for i, r in enumerate(root)}
        n = len(items[0].idxs)
        num = torch.zeros(n, dtype=torch.float64)
        den = torch.zeros(n, dtype=torch.float64)
        for item in items:
            layer, fn, idxs, ridx = item.dep.layer, item.dep.pruning_fn, item.idxs, item.root_idxs
            keep = self._keep.get(layer)
            if keep is None or ridx is None or any(r is None or r not in pos for r in ridx):
                continue
            if tuple(keep.shape) != tuple(layer.weight.shape):
                raise DCWPScoreShapeError(
                    f"scores for {self._names[layer]!r} have shape {tuple(keep.shape)} but the weight is now "
                    f"{tuple(layer.weight.shape)}: DCWPImportance supports one-shot pruning (iterative_steps=1)"
                )
            rows = _rows(layer, fn, keep)
            if rows is None:
                continue
            rows = rows[torch.as_tensor(idxs, dtype=torch.long, device=rows.device)].double().cpu()
            where = torch.as_tensor([pos[r] for r in ridx], dtype=torch.long)
            num.index_add_(0, where, rows.sum(1))
            den.index_add_(0, where, torch.full((len(idxs),), float(rows.shape[1]), dtype=torch.float64))
        if not bool((den > 0).any()):
            return None
        imp = torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))
        imp += (self._tick + torch.arange(n, dtype=torch.float64)) * _TIE_STEP
        self._tick += n
        self._protect(imp, _channel_groups(group))
        self.groups_scored += 1
        return imp

    def _protect(self, imp: Tensor, ch_groups: int) -> None:
        """Add a bonus to the ``min_keep`` best channels (per offset within each channel group)."""
        if not self.min_keep:
            return
        ch_groups = ch_groups if imp.numel() % ch_groups == 0 else 1
        view = imp.view(ch_groups, -1)
        k = min(self.min_keep, view.shape[1])
        best = torch.argsort(view.mean(0), descending=True, stable=True)[:k]
        view[:, best] += _BONUS
