"""Named validators shared by the public API. Each message names the bad value and the fix."""

from __future__ import annotations

import numbers
from typing import Optional, Union

import torch

from .errors import InputError, InputTypeError

Amount = Union[int, float]


def check_amount(amount: Amount, name: str = "amount") -> None:
    """``amount`` must be a float in [0, 1] or a non-negative int (the torch prune convention)."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise InputTypeError(f"Expected `{name}` to be a float in [0, 1] or a non-negative int, got {amount!r}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise InputError(f"Expected `{name}` to be a non-negative int, got {amount}")
    elif not 0.0 <= float(amount) <= 1.0:
        raise InputError(f"Expected `{name}` to be a float in [0, 1] or a non-negative int, got {amount}")


def check_fraction(value: float, name: str, *, closed: bool = True) -> None:
    """A float in [0, 1] (or (0, 1) when ``closed`` is False)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"Expected `{name}` to be a float in [0, 1], got {value!r}")
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise InputError(f"Expected `{name}` to be a float in {interval}, got {value}")


def one_of(**kwargs: Optional[object]) -> str:
    """Exactly one keyword may be set; returns its name. None of them set returns ''."""
    given = [k for k, v in kwargs.items() if v is not None]
    if len(given) > 1:
        names = ", ".join(f"`{k}`" for k in kwargs)
        raise InputError(f"Pass at most one of {names}; got {', '.join(given)}")
    return given[0] if given else ""


def n_to_prune(amount: Amount, n: int) -> int:
    """Absolute number of entries that ``amount`` removes out of ``n`` (torch's rounding)."""
    check_amount(amount)
    if isinstance(amount, numbers.Integral):
        if amount > n:
            raise InputError(f"amount={amount} is larger than the number of prunable entries ({n})")
        return int(amount)
    return int(round(float(amount) * n))


def check_scores_tensor(name: str, scores: torch.Tensor, like: torch.Tensor) -> None:
    """Scores must be a floating tensor with ``like``'s shape, on ``like``'s device, free of NaN."""
    if not isinstance(scores, torch.Tensor):
        raise InputTypeError(f"scores for {name!r} must be a torch.Tensor, got {type(scores).__name__}")
    if tuple(scores.shape) != tuple(like.shape):
        raise InputError(
            f"scores for {name!r} have shape {tuple(scores.shape)} but the weight has shape "
            f"{tuple(like.shape)}; were the scores learned on another model or before structural pruning?"
        )
    if scores.device != like.device:
        raise InputError(
            f"scores for {name!r} are on {scores.device} but the weight is on {like.device}; "
            f"call `scores.to({str(like.device)!r})` first"
        )
    if torch.isnan(scores).any():
        raise InputError(f"scores for {name!r} contain NaN; the mask-learning run diverged")
