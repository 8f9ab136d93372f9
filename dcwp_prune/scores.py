"""``MaskScores``: one learnable mask logit per weight, keyed by the weight's fully-qualified name.

DCWP (Park et al., CVPR 2023, https://arxiv.org/abs/2210.05247) learns a logit ``pi`` for every
conv / linear weight; a weight is kept when ``pi >= 0`` (keep-probability ``sigmoid(pi) >= 0.5``).
The scores live outside the model, so the same object drives the learning-time mask
(:mod:`dcwp_prune.masking`), ``torch.nn.utils.prune`` (:class:`dcwp_prune.DCWPMethod`) and
Torch-Pruning (:class:`dcwp_prune.DCWPImportance`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import weakref
from typing import Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from ._atomic import write_bytes
from ._validation import check_fraction
from .errors import InputError, InputTypeError, UnknownNameError
from .version import __version__

__all__ = ["MaskScores", "Normalizer", "PRUNABLE_TYPES", "resolve_tensor"]

#: How :class:`~dcwp_prune.DCWPImportance` divides each group's channel importances (by their mean or
#: max) before one global ranking. Defined here, beside the scores, so that configs can name the choices
#: without importing torch-pruning.
Normalizer = Literal["mean", "max"]

#: Module types whose weights get a mask logit by default (``weight``; for attention, its projections).
PRUNABLE_TYPES: Tuple[Type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.MultiheadAttention,
)
#: The projection weights of an ``nn.MultiheadAttention`` that get logits: the packed q/k/v projection,
#: or the three separate ones when key / value dims differ (``out_proj`` is an ``nn.Linear``).
_ATTENTION_TENSORS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

_FORMAT = "dcwp-prune.mask-scores.v1"


def resolve_tensor(model: nn.Module, fqn: str) -> Tuple[nn.Module, str]:
    """Resolve ``"layer1.0.conv1.weight"`` to ``(model.layer1[0].conv1, "weight")``.

    Works on plain, ``torch.nn.utils.prune``-pruned and parametrized modules.

    Raises:
        KeyError: the module path or the tensor does not exist in ``model``.
    """
    module_name, _, tensor_name = fqn.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise UnknownNameError(f"scores key {fqn!r}: the model has no submodule {module_name!r}") from None
    if not isinstance(getattr(module, tensor_name, None), Tensor):
        raise UnknownNameError(f"scores key {fqn!r}: module {module_name!r} has no tensor {tensor_name!r}")
    return module, tensor_name


def _matches(patterns: Optional[Sequence[str]], *names: str) -> bool:
    return bool(patterns) and any(fnmatch.fnmatchcase(n, p) for p in patterns or () for n in names)


def _mismatch_message(
    expected: Mapping[str, Tuple[int, ...]], got: Mapping[str, Tuple[int, ...]], limit: int = 5
) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k}: expected {expected[k]}, got {got[k]}" for k in expected if k in got and expected[k] != got[k]]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


class MaskScores:
    """Learnable per-weight mask logits, keyed by parameter FQN (``"layer1.0.conv1.weight"``).

    Args:
        logits: mapping from tensor FQN to a logit tensor of that weight's shape.
        model: optional model the FQNs refer to (kept as a weak reference), so that adapters can
            resolve names without being handed the model again.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dcwp_prune import MaskScores
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> scores = MaskScores.from_model(net)
        >>> sorted(scores.keys())
        ['0.weight', '2.weight']
        >>> scores.sparsity()
        0.0
    """

    def __init__(self, logits: Mapping[str, Tensor], *, model: Optional[nn.Module] = None) -> None:
        self._logits: Dict[str, nn.Parameter] = {}
        for fqn, t in logits.items():
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise InputTypeError(f"logits for {fqn!r} must be a floating-point tensor, got {t!r:.60}")
            self._logits[fqn] = t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach().clone())
        self._model_ref = weakref.ref(model) if model is not None else None
        if model is not None:
            self.check_model(model)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        include: Optional[Sequence[str]] = None,
        exclude: Optional[Sequence[str]] = None,
        module_types: Sequence[Type[nn.Module]] = PRUNABLE_TYPES,
        exclude_types: Sequence[Type[nn.Module]] = (),
        init: float = 1.5,
    ) -> "MaskScores":
        """One logit (initialised to ``init``, DCWP's 1.5) per weight of every matching module.

        Args:
            model: any ``nn.Module``.
            include: glob patterns (``fnmatch``) on the module name or weight FQN; if given, only
                matching weights are scored.
            exclude: glob patterns removing weights, e.g. ``["fc.*"]`` to leave the head dense.
            module_types: module classes to score (conv 1d/2d/3d, transposed conv, linear, and
                ``nn.MultiheadAttention``: its ``in_proj_weight`` or ``q/k/v_proj_weight``).
            exclude_types: module classes never scored.
            init: initial logit value.

        Raises:
            ValueError: nothing matched.
        """
        logits: Dict[str, Tensor] = {}
        candidates: List[Tuple[str, str]] = []  # (module name, weight FQN) of every scorable weight
        for name, module in model.named_modules():
            if isinstance(module, tuple(exclude_types)):
                continue
            if isinstance(module, nn.MultiheadAttention) and nn.MultiheadAttention in tuple(module_types):
                tensors = _ATTENTION_TENSORS  # its out_proj is an nn.Linear, scored as one
            elif isinstance(module, tuple(module_types)):
                tensors = ("weight",)
            else:
                continue
            for tensor_name in tensors:
                weight = getattr(module, tensor_name, None)
                if not isinstance(weight, Tensor):
                    continue
                fqn = f"{name}.{tensor_name}" if name else tensor_name
                candidates.append((name, fqn))
                if include and not _matches(include, name, fqn):
                    continue
                if _matches(exclude, name, fqn):
                    continue
                logits[fqn] = torch.full_like(weight, float(init), dtype=torch.float32)
        unmatched = [p for p in include or () if not any(_matches([p], n, f) for n, f in candidates)]
        if unmatched:  # a pattern that names nothing is a typo, never a wish for fewer weights
            shown = ", ".join(f for _, f in candidates[:8]) + (", ..." if len(candidates) > 8 else "")
            raise InputError(
                f"include pattern(s) {unmatched} match no scorable weight of the model; its weights: {shown}"
            )
        if not logits:
            raise InputError(
                f"no weight matched (include={include}, exclude={exclude}, "
                f"module_types={[t.__name__ for t in module_types]}); check the patterns"
            )
        return cls(logits, model=model)

    # ----------------------------------------------------------------------------- mapping API
    def keys(self) -> List[str]:
        return list(self._logits)

    def items(self) -> List[Tuple[str, nn.Parameter]]:
        return list(self._logits.items())

    def __getitem__(self, fqn: str) -> nn.Parameter:
        try:
            return self._logits[fqn]
        except KeyError:
            raise UnknownNameError(
                f"no mask scores for {fqn!r}; scored tensors: {', '.join(list(self._logits)[:8])}"
            ) from None

    def __contains__(self, fqn: object) -> bool:
        return fqn in self._logits

    def __iter__(self) -> Iterator[str]:
        return iter(self._logits)

    def __len__(self) -> int:
        return len(self._logits)

    def __repr__(self) -> str:
        return f"MaskScores({len(self)} tensors, {self.numel()} logits, sparsity={self.sparsity():.4f})"

    def parameters(self) -> List[nn.Parameter]:
        """The logit Parameters (hand these to the mask optimizer)."""
        return list(self._logits.values())

    def numel(self) -> int:
        return sum(p.numel() for p in self._logits.values())

    @property
    def model(self) -> Optional[nn.Module]:
        """The model these scores were bound to, if it is still alive."""
        return self._model_ref() if self._model_ref is not None else None

    def bind(self, model: nn.Module) -> "MaskScores":
        """Check the scores against ``model`` and remember it (weakly); returns ``self``."""
        self.check_model(model)
        self._model_ref = weakref.ref(model)
        return self

    def to(self, device: Union[str, torch.device]) -> "MaskScores":
        """Move the logits in place (the Parameter objects are kept); returns ``self``."""
        for p in self._logits.values():
            p.data = p.data.to(device)
        return self

    # ----------------------------------------------------------------------------- views
    def probs(self) -> Dict[str, Tensor]:
        """Keep-probabilities ``sigmoid(logit)``, detached.

        A logit just below 0 can round to exactly 0.5 in float32; such entries are nudged below 0.5
        so that ``probs >= 0.5`` and the official rule ``logit >= 0`` always select the same weights.
        """
        out = {}
        for fqn, logit in self._logits.items():
            lg = logit.detach()
            p = torch.sigmoid(lg)
            below = torch.nextafter(torch.tensor(0.5, dtype=p.dtype), torch.tensor(0.0, dtype=p.dtype))
            out[fqn] = torch.where((lg < 0) & (p >= 0.5), below.to(p.device), p)
        return out

    def hard_mask(self, threshold: float = 0.5) -> Dict[str, Tensor]:
        """Binary 0/1 masks (dtype of the logits). ``threshold=0.5`` is the official rule ``logit >= 0``."""
        check_fraction(threshold, "threshold")
        if threshold == 0.5:
            return {k: (p.detach() >= 0).to(p.dtype) for k, p in self._logits.items()}
        return {k: (p >= threshold).to(p.dtype) for k, p in self.probs().items()}

    def sparsity(self, per_layer: bool = False, threshold: float = 0.5) -> Union[float, Dict[str, float]]:
        """Fraction of weights the hard mask removes: one float, or ``{fqn: fraction}``."""
        masks = self.hard_mask(threshold)
        if per_layer:
            return {k: 1.0 - float(m.mean()) for k, m in masks.items()}
        kept = sum(float(m.sum()) for m in masks.values())
        return 1.0 - kept / max(self.numel(), 1)

    # ----------------------------------------------------------------------------- models
    def check_model(self, model: nn.Module) -> None:
        """Every FQN must name a tensor of ``model`` with the same shape.

        Raises:
            KeyError: a key is not a tensor of the model.
            ValueError: shapes differ (the message lists the first mismatches).
        """
        got = {k: tuple(v.shape) for k, v in self._logits.items()}
        expected = {}
        for fqn in self._logits:
            module, name = resolve_tensor(model, fqn)
            expected[fqn] = tuple(getattr(module, name).shape)
        if expected != got:
            raise InputError(f"mask scores do not fit the model: {_mismatch_message(expected, got)}")

    def _model_or(self, model: Optional[nn.Module]) -> nn.Module:
        model = model if model is not None else self.model
        if model is None:
            raise InputError("these MaskScores are not bound to a model; pass `model=` (or call `scores.bind(model)`)")
        return model

    def resolve(self, model: Optional[nn.Module] = None) -> Dict[str, Tuple[nn.Module, str]]:
        """``{fqn: (module, tensor_name)}`` in ``model`` (default: the bound model)."""
        model = self._model_or(model)
        return {fqn: resolve_tensor(model, fqn) for fqn in self._logits}

    def to_importance_scores(
        self, model: Optional[nn.Module] = None, kind: str = "probs"
    ) -> Dict[Tuple[nn.Module, str], Tensor]:
        """The ``{(module, "weight"): tensor}`` dict that torch's ``importance_scores=`` takes.

        Args:
            model: the model to resolve FQNs in (default: the bound model).
            kind: ``"probs"`` (keep-probabilities, for :class:`DCWPMethod`) or ``"logits"``.
        """
        if kind not in ("probs", "logits"):
            raise InputError(f"kind must be 'probs' or 'logits', got {kind!r}")
        model = self._model_or(model)
        self.check_model(model)
        values = self.probs() if kind == "probs" else {k: v.detach() for k, v in self._logits.items()}
        return {resolve_tensor(model, fqn): values[fqn] for fqn in self._logits}

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self._logits.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Copy logits in place. Keys and shapes must match exactly (the error lists mismatches)."""
        expected = {k: tuple(v.shape) for k, v in self._logits.items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            raise InputError(f"cannot load mask scores: {_mismatch_message(expected, got)}")
        with torch.no_grad():
            for k, v in state.items():
                self._logits[k].copy_(v)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write a safetensors file atomically (temp file + rename). Loading it runs no code."""
        from safetensors.torch import save

        tensors = {k: v.contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"format": _FORMAT, "dcwp_prune_version": __version__, "keys": json.dumps(list(tensors))}
        write_bytes(path, save(tensors, metadata=meta))

    @classmethod
    def load(
        cls, path: Union[str, os.PathLike], model: Optional[nn.Module] = None, map_location: str = "cpu"
    ) -> "MaskScores":
        """Read a file written by :meth:`save`; with ``model``, check keys and shapes against it.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a mask-scores file, or it does not fit ``model``.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = os.fspath(path)
        if os.path.isdir(path):
            raise InputError(
                f"mask scores file {path!r} is a folder; pass the .safetensors file (a run writes "
                "RUN/scores.safetensors)"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"mask scores file {path!r} does not exist")
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(path, device=map_location)
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(f"{path!r} is not a safetensors mask-scores file ({err})") from None
        if meta.get("format") != _FORMAT:
            raise InputError(f"{path!r} is a safetensors file but not a dcwp-prune mask-scores file")
        order = json.loads(meta.get("keys", "[]")) or sorted(tensors)
        return cls({k: tensors[k] for k in order}, model=model)
