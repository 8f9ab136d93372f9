"""Torch-Pruning adapter: :class:`DCWPImportance`, channel importance from DCWP weight scores.

The importance of a channel is the fraction of its coupled weights that DCWP keeps: for every
conv / linear layer in a dependency group, the keep-probabilities of the weights that the channel
removes (output rows, input columns, grouped / depthwise / transposed conventions, flatten
expansions) are summed and divided by their count. An ``nn.MultiheadAttention`` contributes its
``in_proj_weight`` (the q, k and v rows and the input column of an embedding channel) and its
``out_proj`` weight (row and column).

Iterative pruning: the first call hooks the dependency graph that the pruner owns, so every group it
prunes also slices the score tensors, with the same pruning function and indices on a shadow copy
of each scored layer; the next step reads scores that match the smaller layers.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union, get_args

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function as F

from ..errors import InputError, InputTypeError
from ..scores import MaskScores, Normalizer, resolve_tensor

__all__ = [
    "DCWPImportance",
    "DCWPScoreShapeError",
    "NORMALIZERS",
    "UNSUPPORTED_ARCHITECTURES",
    "UnsupportedModelError",
    "check_structured_support",
]

_OUT_FNS = (F.prune_conv_out_channels, F.prune_linear_out_channels)
_IN_FNS = (F.prune_conv_in_channels, F.prune_linear_in_channels)
_DW_FNS = (F.prune_depthwise_conv_out_channels, F.prune_depthwise_conv_in_channels)
_BONUS = 2.0  # keep-fractions lie in [0, 1]; +2 puts the protected channels above every other one
_NORMALIZED_BONUS = 1e6  # normalised importances have no fixed bound: a bonus far above any of them
#: Per-group normalisations of the channel importances before a global ranking (None: none).
NORMALIZERS: Tuple[Optional[str], ...] = (None, *get_args(Normalizer))
# Torch-Pruning's global cut prunes every channel with ``imp <= threshold``, so exact ties over-prune.
# A float64 offset far below any meaningful score difference makes all channels distinct; ties are
# then broken by (group order, channel position), earlier first, like a stable sort.
_TIE_STEP = 2.0**-40
#: The tensors of an ``nn.MultiheadAttention`` that may carry scores (only ``in_proj_weight`` ranks channels).
_MHA_TENSORS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


#: Module class name -> why Torch-Pruning (1.6) cannot prune it structurally.
UNSUPPORTED_ARCHITECTURES: Dict[str, str] = {
    "ShuffleNetV2": "its functional channel shuffle (view/transpose) is not traceable as a channel mapping",
    "SwinTransformer": "patch merging and shifted-window attention need custom Torch-Pruning pruners",
    "MaxVit": "its relative-position attention blocks need custom Torch-Pruning pruners",
    "RAFT": "optical-flow correlation volumes are not channel-prunable",
}


class UnsupportedModelError(InputError):
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


class DCWPScoreShapeError(InputError):
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
            FQN (``"layer1.0.conv1.weight"``, ``"...self_attention.in_proj_weight"``) or by module.
            A plain FQN dict (what ``safetensors.torch.load_file`` returns) needs no ``model``: the
            names are resolved in the pruner's dependency graph on the first call.
        model: resolves FQN keys now; defaults to the model the :class:`MaskScores` were built on.
        scores_are_logits: whether dict values are logits; default: True for :class:`MaskScores`,
            False (keep-probabilities in [0, 1]) for dicts.
        hard: use the binary keep mask (``p >= threshold``) instead of probabilities.
        threshold: the keep threshold for ``hard``.
        min_keep: channels per group protected from pruning (Torch-Pruning silently skips a
            group whose channels all fall below the global cut; this keeps every layer alive).
        normalizer: ``None`` (default: the kept fraction as it is), ``"mean"`` or ``"max"``: divide each
            group's channel importances by their mean / maximum before a global ranking compares groups
            (Torch-Pruning's own importances offer the same). Kept fractions differ by layer (DCWP keeps
            more of a first convolution's few weights than of a last one's); normalising ranks each
            channel against its own layer.

    The scores are resolved to module objects once (here, or on the first call without a model), so
    the model must be unpruned and trainable then: frozen weights (``requires_grad=False``) make
    Torch-Pruning's autograd tracing find no layer and silently prune nothing, so they are refused.
    Iterative pruning (``iterative_steps > 1``) is served: what a step removes is removed from the
    scores too. :meth:`step` drives a pruner on Torch-Pruning's public API; a bare ``pruner.step()`` works.

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
        normalizer: Optional[Normalizer] = None,
    ) -> None:
        if min_keep < 0:
            raise InputError(f"min_keep must be >= 0, got {min_keep}")
        if normalizer not in NORMALIZERS:
            raise InputError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.normalizer = normalizer
        self.hard = hard
        self.threshold = float(threshold)
        self.min_keep = int(min_keep)
        self.groups_scored = 0
        self._tick = 0
        self._keep: Dict[Tuple[nn.Module, str], Tensor] = {}  # (module, tensor name) -> keep-probabilities
        self._names: Dict[Tuple[nn.Module, str], str] = {}
        self._fqns: Dict[Tuple[nn.Module, str], str] = {}  # the parameter name of scores keyed by name
        self._shadows: Dict[nn.Module, nn.Module] = {}  # scored layer -> a shallow copy whose tensors are its scores
        self._layers: set = set()  # the layers whose pruning slices scores
        self._owner: Any = None  # the pruner (step) or dependency graph (a bare pruner.step()) the scores follow
        entries, logits = self._entries(scores, scores_are_logits)
        bound = model if model is not None else (scores.model if isinstance(scores, MaskScores) else None)
        # FQN keys without a model: resolved in the pruner's dependency graph on the first call
        self._pending: Optional[Tuple[List[Tuple[object, Tensor]], bool]] = None
        if bound is not None:
            check_structured_support(bound)
            self._bind(entries, logits, bound)
        elif all(isinstance(k, nn.Module) for k, _ in entries):
            self._bind(entries, logits, None)
        else:
            self._pending = (entries, logits)

    # ------------------------------------------------------------------------------ resolution
    @staticmethod
    def _entries(scores: object, scores_are_logits: Optional[bool]) -> Tuple[List[Tuple[object, Tensor]], bool]:
        if isinstance(scores, MaskScores):
            logits = True if scores_are_logits is None else scores_are_logits
            entries: List[Tuple[object, Tensor]] = [(k, p.detach()) for k, p in scores.items()]
        elif isinstance(scores, Mapping):
            logits = bool(scores_are_logits)
            entries = list(scores.items())
        else:
            raise InputTypeError(f"scores must be MaskScores or a dict of tensors, got {type(scores).__name__}")
        if not entries:
            raise InputError("DCWPImportance got no scores")
        return entries, logits

    def _bind(self, entries: List[Tuple[object, Tensor]], logits: bool, model: Optional[nn.Module]) -> None:
        for key, value in entries:
            if isinstance(key, nn.Module):
                name, module, tensor_name = type(key).__name__, key, "weight"
            else:
                if model is None:
                    raise InputError("scores keyed by FQN need the model: DCWPImportance(scores, model=model)")
                module, tensor_name = resolve_tensor(model, str(key))
                name = str(key)
            if tensor_name not in (_MHA_TENSORS if isinstance(module, nn.MultiheadAttention) else ("weight",)):
                raise InputError(f"DCWPImportance scores weights (and attention projections) only, got {name!r}")
            weight = getattr(module, tensor_name, None)
            if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(value.shape):
                shape = tuple(weight.shape) if isinstance(weight, Tensor) else None
                raise DCWPScoreShapeError(f"scores for {name!r} have shape {tuple(value.shape)}, the weight {shape}")
            self._check_module(name, module, tensor_name)
            p = torch.sigmoid(value.detach().float()) if logits else value.detach().float()
            if not logits and (p.min() < 0 or p.max() > 1):
                raise InputError(f"scores for {name!r} are outside [0, 1]; pass scores_are_logits=True for raw logits")
            self._keep[(module, tensor_name)] = ((p >= self.threshold).float() if self.hard else p).to(weight.device)
            self._names[(module, tensor_name)] = name
            if not isinstance(key, nn.Module):
                self._fqns[(module, tensor_name)] = name

    def _rebind_to(self, model: nn.Module) -> None:
        """Scores bound to another instance of the architecture (a deepcopy, a fresh model) are matched to
        ``model``'s layers by parameter name; scores keyed by module objects of another model are refused."""
        present = set(model.modules())
        foreign = [k for k in self._keep if k[0] not in present]
        if not foreign:
            return
        if any(k not in self._fqns for k in foreign):
            raise InputError(
                f"DCWPImportance holds scores for {len(foreign)} layer(s) that are not in the model being pruned "
                f"(e.g. {self._names[foreign[0]]!r}): they belong to another model instance. Key the scores by "
                "parameter name (MaskScores, or {'layer.weight': tensor}) or pass the pruned model's own modules"
            )
        entries = [(self._fqns[k], self._keep[k]) for k in foreign]
        for k in foreign:
            del self._keep[k], self._names[k], self._fqns[k]
        hard, self.hard = self.hard, False  # the stored values are final keep-probabilities already
        try:
            self._bind(entries, False, model)
        finally:
            self.hard = hard

    @staticmethod
    def _check_module(name: str, module: nn.Module, tensor_name: str = "weight") -> None:
        if hasattr(module, f"{tensor_name}_orig") or hasattr(module, "parametrizations"):
            raise RuntimeError(
                f"{name!r} still carries a torch.nn.utils.prune hook or a parametrization; Torch-Pruning "
                "replaces weight Parameters and would break it. Call prune.remove / detach_masks first"
            )
        if not getattr(module, tensor_name).requires_grad:
            raise RuntimeError(
                f"{name!r} has a frozen weight (requires_grad=False): Torch-Pruning traces the model with "
                "autograd and would find no layer, pruning nothing. Call model.requires_grad_(True) first"
            )

    # ------------------------------------------------------------------------------ iterative pruning
    def step(self, pruner: Any) -> int:
        """One step of ``pruner`` (a Torch-Pruning pruner built with this importance) on public API only.

        Does what ``pruner.step()`` does, through ``pruner.step(interactive=True)``: each group the pruner
        yields first slices the scores of its layers the same way, then is pruned (``group.prune()``), so the
        scores stay aligned with the surviving channels across ``iterative_steps``. Returns the number of
        groups pruned. A bare ``pruner.step()`` works too (see :meth:`_follow_privately`).

        Example:
            >>> import torch, torch_pruning as tp
            >>> from torch import nn
            >>> from dcwp_prune import DCWPImportance, MaskScores
            >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
            >>> imp = DCWPImportance(MaskScores.from_model(net))
            >>> pruner = tp.pruner.BasePruner(net, torch.randn(1, 3, 8, 8), importance=imp, pruning_ratio=0.5,
            ...                               iterative_steps=2, ignored_layers=[net[2]])
            >>> [imp.step(pruner) for _ in range(2)], net[0].out_channels
            ([1, 1], 4)
        """
        if getattr(pruner, "importance", None) is not self:
            raise InputError("DCWPImportance.step(pruner) needs a pruner built with this importance (importance=...)")
        self._serve(pruner, pruner.model)
        pruned = 0
        for group in pruner.step(interactive=True):
            self._prune_shadows(group)
            group.prune()
            pruned += 1
        return pruned

    def _serve(self, owner: Any, model: nn.Module) -> bool:
        """Bind the scores to ``model`` for ``owner`` (a pruner, or a dependency graph); False if already done."""
        if self._owner is owner:
            return False
        if self._owner is not None:
            raise RuntimeError("this DCWPImportance already serves another pruner; create one per pruner")
        if self._pending is not None:
            check_structured_support(model)
            self._bind(*self._pending, model)
            self._pending = None
        self._rebind_to(model)
        scored = {m for m, _ in self._keep}
        # an attention layer prunes its out_proj itself: it needs a shadow when only out_proj is scored
        self._layers = scored | {
            m for m in model.modules() if isinstance(m, nn.MultiheadAttention) and m.out_proj in scored
        }
        self._owner = owner
        return True

    def _follow_privately(self, group: Any) -> None:
        """A bare ``pruner.step()``: the pruner gives no public hook between choosing a group and pruning it, so
        the scores follow the pruning by wrapping the group's dependency graph (``group._DG``, its
        ``get_pruning_group`` and ``Group.prune(idxs, record_history)``: Torch-Pruning 1.6 internals, checked by
        ``tests/test_importance.py``). Only this function touches them; :meth:`step` needs none."""
        graph = getattr(group, "_DG", None)
        if graph is None:
            if self._pending is not None:
                raise InputError("scores keyed by FQN need the model: DCWPImportance(scores, model=model)")
            return
        if not self._serve(graph, graph.model):
            return
        build = graph.get_pruning_group
        follower = self

        def get_pruning_group(*args: Any, **kwargs: Any) -> Any:
            group = build(*args, **kwargs)
            prune = group.prune

            def prune_with_scores(idxs: Any = None, record_history: bool = True) -> Any:
                if idxs is None:  # the group's own items; with idxs, prune() builds a new group (hooked too)
                    follower._prune_shadows(group)
                return prune(idxs, record_history)

            group.prune = prune_with_scores
            return group

        graph.get_pruning_group = get_pruning_group

    def _shadow(self, module: nn.Module) -> nn.Module:
        """A shallow copy of ``module`` whose tensors are its keep-probabilities (shared, not copied).

        Created when the layer is first pruned (so it starts from the unpruned layer); tensors that
        carry no scores but that the layer's pruning function slices (an unscored ``out_proj``) are
        zero-stride stand-ins, so the shadow costs no memory beyond the scores themselves.
        """
        if module in self._shadows:
            return self._shadows[module]
        shadow = copy.copy(module)
        shadow._parameters, shadow._buffers, shadow._modules = {}, {}, {}
        for name, value in module._parameters.items():
            keep = self._keep.get((module, name))
            if keep is not None:
                shadow._parameters[name] = nn.Parameter(keep, requires_grad=False)
            elif name == "weight" and value is not None:
                shadow._parameters[name] = nn.Parameter(value.new_zeros(()).expand(value.shape), requires_grad=False)
            else:
                shadow._parameters[name] = None
        if isinstance(module, nn.MultiheadAttention):
            shadow._modules["out_proj"] = self._shadow(module.out_proj)  # shared: either path updates it
        self._shadows[module] = shadow
        return shadow

    @torch.no_grad()
    def _prune_shadows(self, group: Any) -> None:
        """Apply each item of ``group`` (its pruning function and indices) to the shadow of its layer."""
        for dep, idxs in group.items:
            layer = dep.target.module
            if layer not in self._layers:
                continue
            shadow = self._shadow(layer)
            dep.target.module = shadow
            try:
                dep(idxs)
            finally:
                dep.target.module = layer
            # an attention layer's pruning function also slices its out_proj (a shared shadow)
            for module in (layer, layer.out_proj) if isinstance(layer, nn.MultiheadAttention) else (layer,):
                for key in [k for k in self._keep if k[0] is module]:
                    self._keep[key] = self._shadows[module]._parameters[key[1]].detach()

    @torch.no_grad()
    def __call__(self, group: object, **kwargs: object) -> Optional[Tensor]:
        if self._owner is None or isinstance(self._owner, tp.DependencyGraph):  # a bare pruner.step(), not step()
            self._follow_privately(group)
        items = group.items  # type: ignore[attr-defined]
        root = items[0].root_idxs if items[0].root_idxs is not None else items[0].idxs
        pos = {r: i for i, r in enumerate(root)}
        n = len(items[0].idxs)
        num = torch.zeros(n, dtype=torch.float64)
        den = torch.zeros(n, dtype=torch.float64)
        for item in items:
            layer, fn, idxs, ridx = item.dep.layer, item.dep.pruning_fn, item.idxs, item.root_idxs
            if ridx is None or any(r is None or r not in pos for r in ridx):
                continue
            rows = self._channel_rows(layer, fn)
            if rows is None:
                continue
            rows = rows[torch.as_tensor(idxs, dtype=torch.long, device=rows.device)].double().cpu()
            where = torch.as_tensor([pos[r] for r in ridx], dtype=torch.long)
            num.index_add_(0, where, rows.sum(1))
            den.index_add_(0, where, torch.full((len(idxs),), float(rows.shape[1]), dtype=torch.float64))
        if not bool((den > 0).any()):
            return None
        imp = torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))
        if self.normalizer == "mean":
            imp /= imp.mean().clamp_min(1e-12)
        elif self.normalizer == "max":
            imp /= imp.max().clamp_min(1e-12)
        imp += (self._tick + torch.arange(n, dtype=torch.float64)) * _TIE_STEP
        self._tick += n
        self._protect(imp, _channel_groups(group))
        self.groups_scored += 1
        return imp

    def _channel_rows(self, layer: nn.Module, fn: object) -> Optional[Tensor]:
        """The keep-probabilities each channel of ``layer`` removes, one row per channel (None: unscored)."""
        if isinstance(layer, nn.MultiheadAttention):
            parts = []
            ip = self._current(layer, "in_proj_weight")
            if ip is not None:  # channel c: rows c, E + c, 2E + c (q, k, v) and column c
                e = ip.shape[1]
                parts += [ip[:e], ip[e : 2 * e], ip[2 * e :], ip.t()]
            op = self._current(layer.out_proj, "weight")
            if op is not None:  # and row c, column c of the output projection
                parts += [op, op.t()]
            return torch.cat(parts, 1) if parts else None
        keep = self._current(layer, "weight")
        return None if keep is None else _rows(layer, fn, keep)

    def _current(self, module: nn.Module, tensor_name: str) -> Optional[Tensor]:
        keep = self._keep.get((module, tensor_name))
        if keep is None:
            return None
        now = getattr(module, tensor_name)
        if tuple(keep.shape) != tuple(now.shape):
            raise DCWPScoreShapeError(
                f"scores for {self._names[(module, tensor_name)]!r} have shape {tuple(keep.shape)} but the weight is "
                f"now {tuple(now.shape)}: the model was pruned outside the pruner this DCWPImportance serves "
                "(it follows the pruning of one pruner's dependency graph)"
            )
        return keep

    def _protect(self, imp: Tensor, ch_groups: int) -> None:
        """Add a bonus to the ``min_keep`` best channels (per offset within each channel group)."""
        if not self.min_keep:
            return
        ch_groups = ch_groups if imp.numel() % ch_groups == 0 else 1
        view = imp.view(ch_groups, -1)
        k = min(self.min_keep, view.shape[1])
        best = torch.argsort(view.mean(0), descending=True, stable=True)[:k]
        view[:, best] += _BONUS if self.normalizer is None else _NORMALIZED_BONUS
