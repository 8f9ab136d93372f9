"""Rewinding: reset the surviving weights of a pruned network before retraining them (lottery-ticket practice).

Stage 4 of the official code fine-tunes the trained f_D with its mask fixed; on small data that f_D has
memorised its training set and there is little left to learn. Rewinding resets the weights to an earlier
state (f_D's initialisation, an early stage-1 snapshot, or a fresh initialisation) while the mask stays,
so stage 4 retrains the subnetwork with the mined samples upweighted from the start.
"""

from __future__ import annotations

from typing import Dict, Literal, Mapping

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..options import choices

__all__ = ["REWINDS", "Rewind", "rewind_weights"]

#: ``none``: fine-tune the trained f_D (official). ``stage1``: f_D's stage-1 snapshot at ``finetune.rewind_point``
#: of its schedule (0: its initialisation, the lottery ticket; 0.1: late rewinding). ``fresh``: a new random
#: initialisation of the architecture (the run's seed). ``auto``: both arms, the trained f_D fine-tuned and
#: the subnetwork retrained from the ``stage1`` snapshot, and the one whose best iterate is better on valid
#: is kept (DCWP+; a selection on the validation split, never on test).
Rewind = Literal["none", "stage1", "fresh", "auto"]
REWINDS = choices(Rewind)


@torch.no_grad()
def rewind_weights(model: nn.Module, state: Mapping[str, Tensor]) -> Dict[str, int]:
    """Copy ``state`` (a dense ``state_dict`` of the same architecture) into ``model``, mask buffers untouched.

    A tensor pruned with ``torch.nn.utils.prune`` lives in ``NAME_orig`` (its mask in ``NAME_mask``): the
    state's ``NAME`` goes there, so the pruned positions stay zero in the forward. Every other parameter
    and buffer is copied by name. Returns ``{"copied": n, "pruned": k}``; a missing key or a shape that
    differs is refused (a physically smaller, structurally pruned model takes the dense state with its pruning
    history replayed on it: ``DCWPRun.rewind``).
    """
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    copied = pruned = 0
    for key, target in own.items():
        if key.endswith("_mask"):
            continue
        source_key = key[:-5] if key.endswith("_orig") else key
        if source_key not in state:
            raise InputError(f"rewind: the state has no {source_key!r} (it belongs to another architecture)")
        source = state[source_key]
        if tuple(source.shape) != tuple(target.shape):
            raise InputError(
                f"rewind: {source_key!r} is {tuple(source.shape)} in the state and {tuple(target.shape)} "
                "in the model; a structurally pruned model needs the state with its pruning history replayed "
                "on it first (the run layer does that), not the dense one"
            )
        target.copy_(source.to(target.device, target.dtype))
        copied += 1
        pruned += key.endswith("_orig")
    return {"copied": copied, "pruned": pruned}
