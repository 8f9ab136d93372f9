"""The learning-time mask: a straight-through Gumbel-sigmoid on every scored weight.

Attached with :mod:`torch.nn.utils.parametrize`, so ``module.weight`` reads ``W * m(pi)`` and the
logits ``pi`` (the :class:`~dcwp_prune.MaskScores` Parameters, shared, not copied) receive
gradients. ``detach_masks`` restores the plain modules with the original weight objects.

Modes:
    ``sample``: a fresh hard 0/1 mask per forward pass, straight-through gradient of the soft
        sample (DCWP's pruning stage). In ``eval()`` it falls back to ``deterministic``.
    ``deterministic``: ``1[pi >= 0]`` (DCWP's fixed mask).
    ``soft``: ``sigmoid(pi)``.

Variants of the sampling (the official code's ``prune/GumbelSigmoid.py`` and ``prune/GateLayer.py``):
    ``official``: the official code feeds ``sigmoid(pi)`` as the Gumbel-sigmoid logit, so
        ``P(m = 1) = sigmoid(sigmoid(pi))``, always in (0.5, 0.731).
    ``clean``: the textbook form, ``P(m = 1) = sigmoid(pi / t)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import InputError
from ..options import choices
from ..scores import MaskScores

__all__ = [
    "GUMBEL_VARIANTS",
    "GumbelSigmoidMask",
    "GumbelVariant",
    "attach_masks",
    "detach_masks",
    "has_masks",
    "set_mask_mode",
    "unmasked_state_dict",
]

MaskMode = Literal["sample", "deterministic", "soft"]
GumbelVariant = Literal["official", "clean"]
_MODES = choices(MaskMode)
GUMBEL_VARIANTS = choices(GumbelVariant)
#: The model attribute where :func:`attach_masks` keeps the ``requires_grad`` flags it changed.
_FROZEN_ATTR = "_dcwp_frozen"


def _check_mode(mode: str, variant: str) -> None:
    if mode not in _MODES:
        raise InputError(f"mask mode must be one of {_MODES}, got {mode!r}")
    if variant not in GUMBEL_VARIANTS:
        raise InputError(f"variant must be one of {GUMBEL_VARIANTS}, got {variant!r}")


class _HardConcrete(torch.autograd.Function):
    """Straight-through Gumbel-sigmoid sample, fused: forward returns the hard 0/1 draw, backward
    the gradient of the soft sample ``sigmoid((s + z) / t)`` (``s = sigmoid(logit)`` when official),
    with ``z = log(u / (1 - u))`` Logistic(0, 1) noise from one uniform ``u``.

    The official code draws the noise as a difference of two Gumbels, ``log(-log u0) - log(-log u1)``,
    which has the same distribution. No logarithm is needed at ``t = 1`` (the default): with
    ``p = sigmoid(s)`` and ``q = 1 - p``,

    - the hard sample ``1[s + z > 0]`` is ``1[u > q]`` (so ``P(m = 1) = p``);
    - the soft sample is ``u p / (u p + (1 - u) q)``, and its derivative in ``s`` is
      ``u (1 - u) p q / (u p + (1 - u) q)^2``.

    Every step is an in-place pass over the logits, so a mask step stays close to a plain training
    step in cost (on CPU the elementwise passes over every weight are what a mask step adds).
    """

    @staticmethod
    def forward(ctx: Any, logit: Tensor, official: bool, temperature: float) -> Tensor:  # type: ignore[override]
        u = torch.rand_like(logit).clamp_(1e-10, 1.0 - 1e-7)
        s = torch.sigmoid(logit) if official else logit
        p = torch.sigmoid(s)
        q = torch.rsub(p, 1.0)
        hard = (u > q).to(logit.dtype)
        if temperature == 1.0:
            deriv = torch.lerp(q, p, u).square_()  # (u p + (1 - u) q)^2
            deriv = p.mul_(q).mul_(u.addcmul_(u, u, value=-1.0)).div_(deriv)  # u (1 - u) p q / ...
        else:
            x = torch.log(u).sub_(torch.log(torch.rsub(u, 1.0))).add_(s).div_(temperature)
            deriv = torch.sigmoid(x).mul_(x.neg_().sigmoid_()).div_(temperature)  # soft (1 - soft) / t, no cancellation
        if official:
            deriv.mul_(s.addcmul_(s, s, value=-1.0))  # d sigmoid(logit) / d logit
        ctx.save_for_backward(deriv)
        return hard

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:  # type: ignore[override]
        (deriv,) = ctx.saved_tensors
        return grad * deriv, None, None


class GumbelSigmoidMask(nn.Module):
    """Parametrization ``W -> W * m(logit)`` with a straight-through Gumbel-sigmoid mask.

    Args:
        logit: the mask logits (same shape as the weight); registered as this module's Parameter.
        mode: ``sample``, ``deterministic`` or ``soft``.
        variant: ``official`` (sigmoid(logit) enters the Gumbel-sigmoid) or ``clean``.
        temperature: Gumbel-sigmoid temperature ``t``.

    Example:
        >>> import torch
        >>> m = GumbelSigmoidMask(torch.nn.Parameter(torch.tensor([2.0, -2.0])), mode="deterministic")
        >>> m(torch.ones(2)).tolist()
        [1.0, 0.0]
    """

    def __init__(
        self,
        logit: nn.Parameter,
        mode: MaskMode = "sample",
        variant: GumbelVariant = "official",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        _check_mode(mode, variant)
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        self.logit = logit
        self.mode: str = mode
        self.variant: str = variant
        self.temperature = float(temperature)

    def mask(self) -> Tensor:
        """The mask for the current mode (a fresh sample each call in ``sample`` mode)."""
        mode = self.mode
        if mode == "sample" and not self.training:
            mode = "deterministic"
        if mode == "deterministic":
            return (self.logit >= 0).to(self.logit.dtype)
        if mode == "soft":
            return torch.sigmoid(self.logit)
        return _HardConcrete.apply(self.logit, self.variant == "official", self.temperature)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask().to(weight.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, variant={self.variant}, temperature={self.temperature}"


def has_masks(model: nn.Module) -> bool:
    """True if any module of ``model`` carries a :class:`GumbelSigmoidMask`."""
    return any(isinstance(m, GumbelSigmoidMask) for m in model.modules())


def attach_masks(
    model: nn.Module,
    scores: MaskScores,
    mode: MaskMode = "sample",
    variant: GumbelVariant = "official",
    temperature: float = 1.0,
    freeze_weights: bool = True,
) -> nn.Module:
    """Parametrize every scored weight of ``model`` with a :class:`GumbelSigmoidMask`.

    Args:
        model: the network (plain modules; not already pruned with ``torch.nn.utils.prune``).
        scores: mask logits keyed by FQN; their Parameters are shared with the masks.
        mode, variant, temperature: see :class:`GumbelSigmoidMask`.
        freeze_weights: set ``requires_grad=False`` on every other parameter (DCWP stage 3);
            :func:`detach_masks` restores the previous flags.

    Returns:
        ``model`` (modified in place).

    Raises:
        RuntimeError: masks are already attached, or a weight is under ``torch.nn.utils.prune``.
    """
    _check_mode(mode, variant)
    if has_masks(model):
        raise RuntimeError("masks are already attached to this model; call detach_masks(model) first")
    scores.check_model(model)
    logit_ids = {id(p) for p in scores.parameters()}
    others: List[Tuple[nn.Parameter, bool]] = [
        (p, p.requires_grad) for p in model.parameters() if id(p) not in logit_ids
    ]
    for fqn, (module, name) in scores.resolve(model).items():
        if hasattr(module, f"{name}_orig"):
            raise RuntimeError(
                f"{fqn!r} is pruned with torch.nn.utils.prune; call prune.remove(module, {name!r}) before "
                "attaching masks"
            )
        logit = scores[fqn]
        if logit.device != getattr(module, name).device:
            raise InputError(f"scores for {fqn!r} are on {logit.device}, the weight is not; call scores.to(device)")
        mask = GumbelSigmoidMask(logit, "deterministic", variant, temperature)
        # registering evaluates the parametrization once; in sample mode that would draw noise from the
        # global RNG and shift every later draw (a resumed run would no longer match an uninterrupted one)
        parametrize.register_parametrization(module, name, mask)
        mask.mode = mode
    object.__setattr__(model, _FROZEN_ATTR, others)  # a plain attribute: not a submodule, not in the state dict
    if freeze_weights:
        for p, _ in others:
            p.requires_grad_(False)
    for p in scores.parameters():
        p.requires_grad_(True)
    return model


def set_mask_mode(model: nn.Module, mode: MaskMode) -> None:
    """Switch every attached mask to ``mode``."""
    _check_mode(mode, "official")
    found = False
    for m in model.modules():
        if isinstance(m, GumbelSigmoidMask):
            m.mode = mode
            found = True
    if not found:
        raise RuntimeError("no masks are attached to this model; call attach_masks first")


def detach_masks(model: nn.Module) -> nn.Module:
    """Remove the masks: dense modules with the original (untouched) weight Parameters.

    The ``requires_grad`` flags saved by :func:`attach_masks` are restored.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            plist = module.parametrizations[name]
            if any(isinstance(p, GumbelSigmoidMask) for p in plist):
                parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    for p, flag in model.__dict__.pop(_FROZEN_ATTR, []):
        p.requires_grad_(flag)
    return model


def unmasked_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The model's state dict with plain keys (``conv.weight``), masks left out, weights unmasked."""
    out: Dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if ".parametrizations." in f".{key}":
            head, _, tail = key.partition("parametrizations.")
            tensor_name, _, rest = tail.partition(".")
            if rest != "original":
                continue
            key = f"{head}{tensor_name}"
        out[key] = value
    return out
